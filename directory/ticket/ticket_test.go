package ticket

import (
	"bytes"
	"crypto/ed25519"
	"encoding/hex"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func testKey() ed25519.PrivateKey {
	return ed25519.NewKeyFromSeed(bytes.Repeat([]byte{7}, ed25519.SeedSize))
}

func sample() Ticket {
	t := Ticket{
		IssuedAt:  time.Unix(1_800_000_000, 0),
		ExpiresAt: time.Unix(1_800_000_600, 0),
		Budget:    1 << 30,
		Rate:      1 << 20,
	}
	for i := range KeySize {
		t.A[i], t.B[i], t.Relay[i] = 1, 2, 3
	}
	return t
}

func TestRoundTrip(t *testing.T) {
	priv := testKey()
	want := sample()
	b := Sign(priv, want)
	if len(b) != Size || Size != 189 {
		t.Fatalf("ticket is %d bytes, Size %d; want 189", len(b), Size)
	}
	got, err := Verify(priv.Public().(ed25519.PublicKey), b, want.IssuedAt.Add(time.Minute))
	if err != nil {
		t.Fatal(err)
	}
	if !got.IssuedAt.Equal(want.IssuedAt) || !got.ExpiresAt.Equal(want.ExpiresAt) || got.A != want.A || got.B != want.B || got.Relay != want.Relay || got.Budget != want.Budget || got.Rate != want.Rate {
		t.Fatalf("got %+v, want %+v", got, want)
	}
	if !got.Covers(want.B, want.A) || got.Covers(want.A, want.Relay) {
		t.Fatal("Covers wrong")
	}
}

// TestGolden pins the byte layout documented in docs/api.md.
func TestGolden(t *testing.T) {
	b := Sign(testKey(), sample())
	path := filepath.Join("testdata", "ticket_v1.hex")
	if os.Getenv("UPDATE_GOLDEN") != "" {
		os.MkdirAll("testdata", 0o755)
		os.WriteFile(path, []byte(hex.EncodeToString(b)+"\n"), 0o644)
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if got := hex.EncodeToString(b); got != strings.TrimSpace(string(want)) {
		t.Fatalf("layout changed:\n got %s\nwant %s", got, want)
	}
	// Spot-check fields at their documented offsets.
	if b[0] != 1 || b[17] != 1 || b[49] != 2 || b[81] != 3 || b[113+4] != 0x40 || b[121+1] != 0x10 {
		t.Fatalf("fields not at documented offsets: % x", b[:125])
	}
}

func TestVerifyRejects(t *testing.T) {
	priv := testKey()
	pub := priv.Public().(ed25519.PublicKey)
	tk := sample()
	b := Sign(priv, tk)
	now := tk.IssuedAt.Add(time.Second)
	for i := range b {
		c := bytes.Clone(b)
		c[i] ^= 0x01
		if _, err := Verify(pub, c, now); err == nil {
			t.Fatalf("flipped bit in byte %d accepted", i)
		}
	}
	if _, err := Verify(pub, b, tk.ExpiresAt); !errors.Is(err, ErrExpired) {
		t.Fatalf("at expiry: %v", err)
	}
	if _, err := Verify(pub, b, tk.IssuedAt.Add(-2*MaxClockSkew)); !errors.Is(err, ErrNotYet) {
		t.Fatalf("before issue: %v", err)
	}
	other := ed25519.NewKeyFromSeed(bytes.Repeat([]byte{8}, 32)).Public().(ed25519.PublicKey)
	if _, err := Verify(other, b, now); !errors.Is(err, ErrSignature) {
		t.Fatalf("other key: %v", err)
	}
	for n := range len(b) {
		if _, err := Verify(pub, b[:n], now); !errors.Is(err, ErrMalformed) {
			t.Fatalf("truncated to %d: %v", n, err)
		}
	}
}

func FuzzParse(f *testing.F) {
	f.Add(Sign(testKey(), sample()))
	f.Add([]byte{})
	pub := testKey().Public().(ed25519.PublicKey)
	f.Fuzz(func(t *testing.T, b []byte) {
		Parse(b)
		Verify(pub, b, time.Unix(1_800_000_001, 0))
	})
}
