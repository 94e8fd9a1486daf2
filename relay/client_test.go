package relay

import (
	"context"
	"errors"
	"testing"
	"testing/synctest"
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

// TestClientMatchesAnswers: ALLOCATEs to one relay may be outstanding
// together; each answer goes to the channel its ID names, in any order. An
// ALLOCATED that comes late, for a channel the client already holds, only
// updates it (an ALLOCATED the relay sends when the other side binds makes
// PeerReady fire); one for a channel the client does not hold, or from
// another address, is dropped; an ERROR fails only its own channel's
// Allocate.
func TestClientMatchesAnswers(t *testing.T) {
	r := newRig(t, nil)
	conn := &captureConn{keep: true}
	c := NewClient(conn, nil)
	tkX := r.ticket(nil)
	tkY := r.ticket(func(tk *ticket.Ticket) { tk.Budget = 2 << 30 }) // same expiry, other bytes
	tkZ := r.ticket(func(tk *ticket.Ticket) { tk.Budget = 3 << 30 })
	idX, idY, idZ := ChannelID(tkX), ChannelID(tkY), ChannelID(tkZ)
	expires := r.clock.Now().Add(10 * time.Minute).Unix()
	allocated := func(id uint64, peerBound bool) []byte {
		return appendAllocated(nil, id, allocatedBody{expires: expires, remaining: 1 << 30, rate: 1 << 20, peerBound: peerBound})
	}

	x := allocateAsync(c, 0, tkX)
	y := allocateAsync(c, 0, tkY)
	z := allocateAsync(c, 1, tkZ)
	waitSent(t, conn, 3)
	c.HandlePacket(allocated(idY^1, false), addrC) // no such channel
	c.HandlePacket(allocated(idX, false), addrA)   // from another address
	c.HandlePacket(appendError(nil, idZ, CodeExpired, "expired", 100), addrC)
	c.HandlePacket(allocated(idY, false), addrC)
	oy := <-y
	if oy.err != nil || oy.ch.ID() != idY {
		t.Fatalf("allocate Y: %v, %+v", oy.err, oy.ch)
	}
	oz := <-z
	var ae *AllocateError
	if !errors.As(oz.err, &ae) || ae.Code != CodeExpired {
		t.Fatalf("allocate Z = %v, want the relay's ERROR", oz.err)
	}
	select {
	case ox := <-x:
		t.Fatalf("allocate X took another's answer: %v, %v", ox.ch, ox.err)
	default:
	}
	c.HandlePacket(allocated(idX, false), addrC)
	ox := <-x
	if ox.err != nil || ox.ch.ID() != idX || ox.ch == oy.ch || ox.ch.PeerBound() {
		t.Fatalf("allocate X: %v, %+v", ox.err, ox.ch)
	}
	if d := c.Dropped(); d != 2 {
		t.Errorf("dropped %d answers, want 2", d)
	}

	// The relay says X's peer bound.
	select {
	case <-ox.ch.PeerReady():
		t.Fatal("PeerReady before the peer bound")
	default:
	}
	c.HandlePacket(allocated(idX, true), addrC)
	select {
	case <-ox.ch.PeerReady():
	case <-time.After(5 * time.Second):
		t.Fatal("PeerReady did not fire")
	}
	if !ox.ch.PeerBound() || oy.ch.PeerBound() {
		t.Fatalf("peer bound: X %v, Y %v; want true, false", ox.ch.PeerBound(), oy.ch.PeerBound())
	}
	// A stale answer saying otherwise does not unbind it.
	c.HandlePacket(allocated(idX, false), addrC)
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
	id := ChannelID(tk)
	body := allocatedBody{expires: r.clock.Now().Add(10 * time.Minute).Unix(), remaining: 1 << 30, rate: 1 << 20}
	for range 20 {
		out := allocateAsync(c, 0, tk)
		waitSent(t, conn, 1)
		conn.take()
		c.HandlePacket(appendAllocated(nil, id, body), addrC)
		notice := body
		notice.peerBound = true
		c.HandlePacket(appendAllocated(nil, id, notice), addrC)
		o := <-out
		if o.err != nil {
			t.Fatal(o.err)
		}
		if o.ch.ID() != id || !o.ch.PeerBound() {
			t.Fatalf("channel %x, peer bound %v; want %x, true", o.ch.ID(), o.ch.PeerBound(), id)
		}
		o.ch.Close()
		conn.take() // the CONFIRMs of both ALLOCATEDs
	}
	if d := c.Dropped(); d != 0 {
		t.Errorf("the client dropped %d packets", d)
	}
}

// TestClientAllocateGivesUp: an Allocate that gives up closes the channel
// it created, with the reason, and its late answer is dropped; one that
// refreshes a channel the client holds leaves it open.
func TestClientAllocateGivesUp(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		r := newRig(t, nil)
		conn := &captureConn{keep: true}
		c := NewClient(conn, nil)
		defer c.Close()
		tk := r.ticket(nil)
		id := ChannelID(tk)
		body := allocatedBody{expires: r.clock.Now().Add(10 * time.Minute).Unix()}

		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		if _, err := c.Allocate(ctx, addrC, 0, tk); !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("Allocate = %v, want the deadline", err)
		}
		if len(c.chans) != 0 {
			t.Fatal("the channel outlived the Allocate that gave up")
		}
		c.HandlePacket(appendAllocated(nil, id, body), addrC)
		if c.Dropped() != 1 || len(c.chans) != 0 {
			t.Fatal("an answer after the caller returned created a channel")
		}

		out := allocateAsync(c, 0, tk)
		synctest.Wait()
		c.HandlePacket(appendAllocated(nil, id, body), addrC)
		o := <-out
		if o.err != nil {
			t.Fatal(o.err)
		}
		// A refresh the relay refuses, and one it does not answer.
		out = allocateAsync(c, 0, tk)
		synctest.Wait()
		c.HandlePacket(appendError(nil, id, CodeExpired, "expired", 100), addrC)
		if o2 := <-out; o2.err == nil {
			t.Fatal("a refused Allocate succeeded")
		}
		ctx, cancel = context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		if err := o.ch.Refresh(ctx); !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("Refresh = %v, want the deadline", err)
		}
		if o.ch.Err() != nil || o.ch.Send([]byte{1}) != nil {
			t.Fatalf("a failed refresh closed the channel: %v", o.ch.Err())
		}
	})
}
