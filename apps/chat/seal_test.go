package chat_test

import (
	"context"
	"errors"
	"testing"
	"testing/synctest"
	"time"

	"github.com/parley-p2p/parley/apps/chat"
	"github.com/parley-p2p/parley/transport"
)

func key(t *testing.T) transport.PrivateKey {
	k, err := transport.GeneratePrivateKey()
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func TestSealRoundTrip(t *testing.T) {
	alice, bob, eve := key(t), key(t), key(t)
	m := chat.Message{ID: newID(), Body: "meet me at 8 ✓", Time: time.UnixMilli(1_700_000_000_001)}
	blob, err := chat.Seal(bob.Public(), alice, m)
	if err != nil {
		t.Fatal(err)
	}
	if len(blob) != 1+32+48+16+len(`{"id":"`)+32+len(`","ts":1700000000001,"body":"meet me at 8 ✓"}`) {
		t.Errorf("sealed %d bytes", len(blob))
	}
	from, got, err := chat.Unseal(bob, blob)
	if err != nil {
		t.Fatal(err)
	}
	if from != alice.Public() || got.ID != m.ID || got.Body != m.Body || !got.Time.Equal(m.Time) {
		t.Fatalf("Unseal = %v %+v", from, got)
	}
	// Only bob can open it.
	if _, _, err := chat.Unseal(eve, blob); !errors.Is(err, chat.ErrSealed) {
		t.Fatalf("eve opened it: %v", err)
	}
	// Any change is detected.
	for i := range blob {
		bad := append([]byte(nil), blob...)
		bad[i] ^= 0x01
		if _, _, err := chat.Unseal(bob, bad); !errors.Is(err, chat.ErrSealed) {
			t.Fatalf("byte %d flipped: %v", i, err)
		}
	}
	for n := range blob {
		if _, _, err := chat.Unseal(bob, blob[:n]); !errors.Is(err, chat.ErrSealed) {
			t.Fatalf("truncated to %d: %v", n, err)
		}
	}
	// Two seals of one message differ (fresh ephemeral keys).
	again, _ := chat.Seal(bob.Public(), alice, m)
	if string(again) == string(blob) {
		t.Fatal("sealing is deterministic")
	}
}

func FuzzUnseal(f *testing.F) {
	k, _ := transport.GeneratePrivateKey()
	blob, _ := chat.Seal(k.Public(), k, chat.Message{Body: "x"})
	f.Add(blob)
	f.Add([]byte{1})
	f.Fuzz(func(t *testing.T, b []byte) {
		chat.Unseal(k, b) // must not panic
	})
}

// TestMailboxThenDirect: bob is offline, alice seals her message for the
// mailbox; bob receives it from the mailbox, then alice's retry on a
// session: bob shows it once, and alice learns it was delivered.
func TestMailboxThenDirect(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		p := newPair(t)
		ctx := context.Background()
		aliceKey, bobKey := key(t), key(t)
		p.disconnect()
		m, err := p.alice.Send(ctx, "bob", "offline hello")
		if err != nil {
			t.Fatal(err)
		}
		sealed, err := p.alice.SealOutbox(ctx, "bob", bobKey.Public(), aliceKey)
		if err != nil || len(sealed) != 1 || sealed[0].ID != m.ID {
			t.Fatalf("SealOutbox = %v, %v", sealed, err)
		}
		if h := history(t, p.aliceStore, "bob"); h[0].State != chat.Sent {
			t.Fatalf("mailboxed message is %v", h[0].State)
		}
		ev, stop := p.bob.Subscribe(16)
		defer stop()
		if _, err := p.bob.ReceiveSealed(ctx, "alice", key(t).Public(), bobKey, sealed[0].Blob); !errors.Is(err, chat.ErrWrongSender) {
			t.Fatalf("blob from an unexpected device: %v", err)
		}
		for range 2 { // the directory may hand a blob out twice
			got, err := p.bob.ReceiveSealed(ctx, "alice", aliceKey.Public(), bobKey, sealed[0].Blob)
			if err != nil || got.ID != m.ID || got.Body != "offline hello" {
				t.Fatalf("ReceiveSealed = %+v, %v", got, err)
			}
		}
		p.connect()
		if err := p.alice.Flush(ctx, "bob"); err != nil {
			t.Fatal(err)
		}
		if l := drain(ev); len(l) != 1 {
			t.Fatalf("bob saw %d events for one message", len(l))
		}
		if h := history(t, p.bobStore, "alice"); len(h) != 1 {
			t.Fatalf("bob has %d copies", len(h))
		}
		if h := history(t, p.aliceStore, "bob"); h[0].State != chat.Delivered {
			t.Fatalf("alice's message is %v", h[0].State)
		}
	})
}
