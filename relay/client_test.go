package relay

import (
	"context"
	"testing"
	"time"

	"github.com/parley-p2p/parley/directory/ticket"
)

// waitSent waits until the client has sent n packets on c.
func waitSent(t *testing.T, c *captureConn, n int) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		c.mu.Lock()
		got := len(c.sent)
		c.mu.Unlock()
		if got >= n {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("the client sent %d packets, want %d", got, n)
		}
		time.Sleep(time.Millisecond) // polling interval
	}
}

type allocOutcome struct {
	ch  *Channel
	err error
}

func allocateAsync(c *Client, side byte, tk []byte) chan allocOutcome {
	out := make(chan allocOutcome, 1)
	go func() {
		ch, err := c.Allocate(context.Background(), addrC, side, tk)
		out <- allocOutcome{ch, err}
	}()
	return out
}

// TestClientLateAllocated: an ALLOCATED that comes late, for a channel the
// client already holds, must not be taken for the answer to the next
// ALLOCATE to the same relay, even when both tickets expire in the same
// second (the race behind "relay: channel lost" in the lab matrix). It
// updates the channel it belongs to instead; and an ALLOCATED the relay
// sends when the other side binds makes PeerReady fire.
func TestClientLateAllocated(t *testing.T) {
	r := newRig(t, nil)
	conn := &captureConn{keep: true}
	c := NewClient(conn, nil)
	tkX := r.ticket(nil)
	tkY := r.ticket(func(tk *ticket.Ticket) { tk.Budget = 2 << 30 }) // same expiry, other bytes
	expires := r.clock.Now().Add(10 * time.Minute).Unix()
	allocated := func(id uint64, peerBound bool) []byte {
		return appendAllocated(nil, id, allocatedBody{expires: expires, remaining: 1 << 30, rate: 1 << 20, peerBound: peerBound})
	}

	x := allocateAsync(c, 0, tkX)
	waitSent(t, conn, 1)
	c.HandlePacket(allocated(11, false), addrC)
	ox := <-x
	if ox.err != nil || ox.ch.ID() != 11 || ox.ch.PeerBound() {
		t.Fatalf("allocate X: %v, %+v", ox.err, ox.ch)
	}

	y := allocateAsync(c, 0, tkY)
	waitSent(t, conn, 2)
	c.HandlePacket(allocated(11, false), addrC) // X's retransmission answered late
	select {
	case oy := <-y:
		t.Fatalf("allocate Y took X's late answer: channel %d, %v", oy.ch.ID(), oy.err)
	default:
	}
	c.HandlePacket(allocated(22, false), addrC)
	oy := <-y
	if oy.err != nil || oy.ch.ID() != 22 || oy.ch == ox.ch {
		t.Fatalf("allocate Y: %v, channel %d", oy.err, oy.ch.ID())
	}

	// The relay says X's peer bound.
	select {
	case <-ox.ch.PeerReady():
		t.Fatal("PeerReady before the peer bound")
	default:
	}
	c.HandlePacket(allocated(11, true), addrC)
	select {
	case <-ox.ch.PeerReady():
	case <-time.After(5 * time.Second):
		t.Fatal("PeerReady did not fire")
	}
	if !ox.ch.PeerBound() || oy.ch.PeerBound() {
		t.Fatalf("peer bound: X %v, Y %v; want true, false", ox.ch.PeerBound(), oy.ch.PeerBound())
	}
	// A stale answer saying otherwise does not unbind it.
	c.HandlePacket(allocated(11, false), addrC)
	if !ox.ch.PeerBound() {
		t.Fatal("a stale ALLOCATED cleared PeerBound")
	}
}
