package node

import (
	"bytes"
	"net/netip"
	"testing"

	"github.com/parley-p2p/parley/transport"
)

func testKeys(t testing.TB) (a, b transport.PrivateKey) {
	var err error
	if a, err = transport.GeneratePrivateKey(); err != nil {
		t.Fatal(err)
	}
	if b, err = transport.GeneratePrivateKey(); err != nil {
		t.Fatal(err)
	}
	return a, b
}

func TestPairKeysAgree(t *testing.T) {
	a, b := testKeys(t)
	ka, ida, ok1 := pairKeys(a, b.Public())
	kb, idb, ok2 := pairKeys(b, a.Public())
	if !ok1 || !ok2 || ka != kb || ida != idb {
		t.Fatalf("the two sides derive different pair keys")
	}
	c, _ := testKeys(t)
	if kc, _, _ := pairKeys(c, b.Public()); kc == ka {
		t.Fatalf("a third device derives the pair's key")
	}
	if _, _, ok := pairKeys(a, transport.PublicKey{}); ok {
		t.Errorf("a low-order peer key was accepted")
	}
}

func TestProbeRoundTrip(t *testing.T) {
	a, b := testKeys(t)
	k, id, _ := pairKeys(a, b.Public())
	for _, addr := range []netip.AddrPort{{}, netip.MustParseAddrPort("203.0.113.7:4000"), netip.MustParseAddrPort("[2001:db8::1]:9")} {
		p := probe{Type: probeTypePong, Pair: id, Tx: [8]byte{1, 2, 3, 4, 5, 6, 7, 8}, Addr: addr}
		buf := appendProbe(nil, p, &k, a.Public())
		if len(buf) != probeSize {
			t.Fatalf("probe is %d bytes, want %d", len(buf), probeSize)
		}
		got, err := parseProbe(buf)
		if err != nil || got != p {
			t.Fatalf("round trip: %+v, %v; want %+v", got, err, p)
		}
		if !verifyProbe(buf, &k, a.Public()) {
			t.Fatalf("MAC does not verify")
		}
		// A probe reflected back to its sender does not verify as the
		// peer's.
		if verifyProbe(buf, &k, b.Public()) {
			t.Fatalf("a reflected probe verifies")
		}
		for i := range buf {
			bad := bytes.Clone(buf)
			bad[i] ^= 0x40
			if verifyProbe(bad, &k, a.Public()) {
				t.Fatalf("flipping byte %d still verifies", i)
			}
		}
		for n := range len(buf) {
			if _, err := parseProbe(buf[:n]); err == nil {
				t.Fatalf("a %d-byte prefix parses", n)
			}
		}
	}
}

func FuzzParseProbe(f *testing.F) {
	a, b := testKeys(f)
	k, id, _ := pairKeys(a, b.Public())
	f.Add(appendProbe(nil, probe{Type: probeTypePing, Pair: id}, &k, a.Public()))
	f.Add([]byte(probeMagic))
	f.Fuzz(func(t *testing.T, buf []byte) {
		p, err := parseProbe(buf)
		if err != nil {
			return
		}
		// What parses has one encoding: it re-encodes to the same bytes.
		out := appendProbe(nil, p, &k, a.Public())
		if !bytes.Equal(out[:probeOffMAC], buf[:probeOffMAC]) {
			t.Fatalf("re-encoding differs:\n%x\n%x", out[:probeOffMAC], buf[:probeOffMAC])
		}
	})
}
