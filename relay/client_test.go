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

// TestClientAnswerThenNotice: the relay may send the peer-bound notice, or
// held DELIVERs, right behind the ALLOCATED that answers an Allocate, and
// the reader handles them before the Allocate call has woken: the channel
// must already exist then, or the notice is lost (and the caller waits for
// a refresh to learn that its peer is there).
func TestClientAnswerThenNotice(t *testing.T) {
	r := newRig(t, nil)
	conn := &captureConn{keep: true}
	c := NewClient(conn, nil)
	tk := r.ticket(nil)
	body := allocatedBody{expires: r.clock.Now().Add(10 * time.Minute).Unix(), remaining: 1 << 30, rate: 1 << 20}
	for range 20 {
		out := allocateAsync(c, 0, tk)
		waitSent(t, conn, 1)
		conn.take()
		c.HandlePacket(appendAllocated(nil, 11, body), addrC)
		notice := body
		notice.peerBound = true
		c.HandlePacket(appendAllocated(nil, 11, notice), addrC)
		o := <-out
		if o.err != nil {
			t.Fatal(o.err)
		}
		if o.ch.ID() != 11 || !o.ch.PeerBound() {
			t.Fatalf("channel %d, peer bound %v; want 11, true", o.ch.ID(), o.ch.PeerBound())
		}
		o.ch.Close()
	}
	if d := c.Dropped(); d != 0 {
		t.Errorf("the client dropped %d packets", d)
	}
}

// TestClientAllocateGivesUp: an answer that creates a channel as its
// Allocate call gives up does not leave the channel behind.
func TestClientAllocateGivesUp(t *testing.T) {
	r := newRig(t, nil)
	c := NewClient(&captureConn{}, nil)
	tk := r.ticket(nil)
	body := allocatedBody{expires: r.clock.Now().Add(10 * time.Minute).Unix()}
	w := &allocWait{relay: addrC, ticket: tk, expires: body.expires, res: make(chan allocResult, 1)}
	ch := c.bind(chanKey{addrC, 11}, nil, 0, tk, body, w)
	c.finish(w, nil) // the caller returned an error
	if !ch.closed.Load() || c.chans[chanKey{addrC, 11}] != nil {
		t.Fatal("the channel outlived the Allocate that gave up")
	}
	if c.bind(chanKey{addrC, 12}, nil, 0, tk, body, w) != nil {
		t.Fatal("an answer after the caller returned created a channel")
	}
	w2 := &allocWait{relay: addrC, ticket: tk, expires: body.expires, res: make(chan allocResult, 1)}
	ch2 := c.bind(chanKey{addrC, 13}, nil, 0, tk, body, w2)
	c.finish(w2, ch2) // the caller returned it
	if ch2.closed.Load() {
		t.Fatal("the channel Allocate returned was closed")
	}
}
