package relay

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"net"
	"net/netip"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/net/ipv4"

	"github.com/parley-p2p/parley/directory/ticket"
)

// waitUntil waits up to 5 s for cond, failing t with what if it never
// holds.
func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting until %s", what)
		}
		time.Sleep(time.Millisecond) // polling interval
	}
}

// holding returns how many packets and bytes the relay holds on channel id,
// and its bytes held on all channels.
func holding(s *Server, id uint64) (packets, bytes int, total int64) {
	s.mu.RLock()
	a := s.byID[id]
	s.mu.RUnlock()
	if a != nil {
		a.mu.Lock()
		if a.hold != nil {
			packets, bytes = a.hold.n, len(a.hold.data)
		}
		a.mu.Unlock()
	}
	return packets, bytes, s.heldBytes.Load()
}

// readRelay reads one relay packet from pc within 5 s.
func readRelay(t *testing.T, pc *net.UDPConn) (header, []byte) {
	t.Helper()
	buf := make([]byte, MaxPacketSize)
	pc.SetReadDeadline(time.Now().Add(5 * time.Second))
	n, err := pc.Read(buf)
	if err != nil {
		t.Fatalf("%v: %v", pc.LocalAddr(), err)
	}
	h, body, err := parseHeader(buf[:n])
	if err != nil {
		t.Fatalf("%v received %x…: %v", pc.LocalAddr(), buf[:min(n, 16)], err)
	}
	return h, body
}

// readDelivers reads DELIVERs on channel id from pc until it has the
// payloads want, in order, and then checks that nothing more arrives.
func readDelivers(t *testing.T, pc *net.UDPConn, id uint64, want ...[]byte) {
	t.Helper()
	for i, w := range want {
		h, body := readRelay(t, pc)
		if h.typ != TypeDeliver || h.channel != id {
			t.Fatalf("packet %d: %v on channel %x, want a DELIVER on %x", i, h.typ, h.channel, id)
		}
		if !bytes.Equal(body, w) {
			t.Fatalf("packet %d: %d bytes %.16q, want %d bytes %.16q (lost, duplicated or reordered)", i, len(body), body, len(w), w)
		}
	}
	expectNothing(t, pc)
}

// expectNothing fails t if pc receives anything within 50 ms.
func expectNothing(t *testing.T, pc *net.UDPConn) {
	t.Helper()
	buf := make([]byte, MaxPacketSize)
	pc.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
	if n, err := pc.Read(buf); err == nil {
		t.Fatalf("%v received %d bytes more: %x…", pc.LocalAddr(), n, buf[:min(n, 16)])
	}
}

func numbered(prefix string, n int) [][]byte {
	var ps [][]byte
	for i := range n {
		ps = append(ps, []byte(fmt.Sprintf("%s %d", prefix, i)))
	}
	return ps
}

// TestHoldUntilPeerBinds: alice binds her side and sends at once, as a
// dialling peer sends its handshake initiation; bob binds after the relay
// has held her packets, and his Mux reads them exactly once and in order,
// from the channel's virtual address; then packets flow both ways as usual.
// Each side binds over UDP or TCP.
func TestHoldUntilPeerBinds(t *testing.T) {
	for _, tc := range []struct{ alice, bob string }{{"udp", "udp"}, {"udp", "tcp"}, {"tcp", "udp"}, {"tcp", "tcp"}} {
		t.Run(tc.alice+"-"+tc.bob, func(t *testing.T) {
			checkNoLeaks(t)
			r := newLoopRelay(t)
			alice, bob := newPeer(t, loopUDP(t)), newPeer(t, loopUDP(t))
			tk := r.ticket(alice.key.Public(), bob.key.Public())
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			allocate := func(p *peer, via string, side byte) *Channel {
				t.Helper()
				var ch *Channel
				var err error
				if via == "tcp" {
					ch, err = p.client.AllocateTCP(ctx, r.tcp, nil, side, tk)
				} else {
					ch, err = p.client.Allocate(ctx, r.udp, side, tk)
				}
				if err != nil {
					t.Fatal(err)
				}
				return ch
			}

			chA := allocate(alice, tc.alice, 0)
			if chA.PeerBound() {
				t.Fatal("alice bound first, yet her peer is bound")
			}
			toBob := alice.mux.VirtualAddr(chA)
			early := numbered("early", 3)
			for _, p := range early {
				if _, err := alice.mux.WriteToUDPAddrPort(p, toBob); err != nil {
					t.Fatalf("send before the peer bound: %v", err)
				}
			}
			waitUntil(t, "the relay holds 3 packets", func() bool { return r.srv.Stats().Held == 3 })

			chB := allocate(bob, tc.bob, 1)
			if !chB.PeerBound() || chB.ID() != chA.ID() {
				t.Fatalf("bob: peer bound %v, channel %x; want true, %x", chB.PeerBound(), chB.ID(), chA.ID())
			}
			fromAlice := bob.mux.VirtualAddr(chB)
			checkHeldThenForwarded(t, ctx, alice, bob, chA, toBob, fromAlice, early)

			st := r.srv.Stats()
			if st.Held != 3 || st.Forwarded != 5 || st.Drops() != 0 {
				t.Errorf("relay: held %d, forwarded %d, dropped %v; want 3, 5, none", st.Held, st.Forwarded, st.Dropped)
			}
			if n, b, total := holding(r.srv, chA.ID()); n != 0 || b != 0 || total != 0 {
				t.Errorf("after the flush the relay holds %d packets, %d bytes (%d in all)", n, b, total)
			}
			if d := bob.client.Dropped(); d != 0 {
				t.Errorf("bob's client dropped %d relay packets", d)
			}
		})
	}
}

// ticketSeq makes rawChannel's tickets distinct.
var ticketSeq atomic.Uint64

// seqTicket signs a ticket for the loop relay issued at now, distinct from
// every other it signs; mod changes it.
func (r *loopRelay) seqTicket(now time.Time, mod func(*ticket.Ticket)) []byte {
	tk := ticket.Ticket{IssuedAt: now, ExpiresAt: now.Add(time.Hour), Relay: r.relayID, Budget: 1 << 40, Rate: 1 << 30}
	tk.A[0], tk.B[0] = 'A', 'B'
	binary.BigEndian.PutUint64(tk.A[1:], ticketSeq.Add(1))
	if mod != nil {
		mod(&tk)
	}
	return ticket.Sign(r.dir, tk)
}

// rawChannel binds side 0 of a new channel from pcA, with a ticket issued
// at now, and returns the channel ID and the ticket; mod changes the
// ticket.
func (r *loopRelay) rawChannel(t *testing.T, pcA *net.UDPConn, now time.Time, mod func(*ticket.Ticket)) (uint64, []byte) {
	t.Helper()
	b := r.seqTicket(now, mod)
	return rawAllocate(t, pcA, net.UDPAddrFromAddrPort(r.udp), 0, b), b
}

// TestHoldLimits: a channel holds at most MaxHeldPackets packets and
// MaxHeldBytes opaque bytes; what does not fit is dropped and counted as
// hold-full, and what fits is delivered in order.
func TestHoldLimits(t *testing.T) {
	checkNoLeaks(t)
	r := newLoopRelay(t)
	relay := net.UDPAddrFromAddrPort(r.udp)
	send := func(pc *net.UDPConn, id uint64, ps ...[]byte) {
		for _, p := range ps {
			if _, err := pc.WriteTo(sendPkt(id, p), relay); err != nil {
				t.Fatal(err)
			}
		}
	}
	waitHeld := func(held, full uint64) {
		t.Helper()
		waitUntil(t, fmt.Sprintf("%d held and %d dropped as hold-full", held, full), func() bool {
			st := r.srv.Stats()
			return st.Held == held && st.Dropped[DropHoldFull] == full
		})
	}

	t.Run("packets", func(t *testing.T) {
		pcA, pcB := loopUDPConn(t), loopUDPConn(t)
		id, tk := r.rawChannel(t, pcA, time.Now(), nil)
		ps := numbered("packet", MaxHeldPackets+1)
		send(pcA, id, ps...)
		waitHeld(8, 1)
		if n, _, _ := holding(r.srv, id); n != MaxHeldPackets {
			t.Fatalf("holding %d packets, want %d", n, MaxHeldPackets)
		}
		rawAllocate(t, pcB, relay, 1, tk)
		readDelivers(t, pcB, id, ps[:MaxHeldPackets]...)
	})

	t.Run("bytes", func(t *testing.T) {
		pcA, pcB := loopUDPConn(t), loopUDPConn(t)
		id, tk := r.rawChannel(t, pcA, time.Now(), nil)
		big := [][]byte{fill(0, 5000), fill(1, 5000), fill(2, 5000)} // 15,000 bytes
		send(pcA, id, big...)
		send(pcA, id, fill(3, 5000)) // 20,000: too many
		fits := fill(4, MaxHeldBytes-15000)
		send(pcA, id, fits) // exactly MaxHeldBytes
		send(pcA, id, nil)  // an empty packet still fits
		send(pcA, id, []byte{1})
		waitHeld(8+5, 1+2)
		rawAllocate(t, pcB, relay, 1, tk)
		readDelivers(t, pcB, id, big[0], big[1], big[2], fits, nil)
	})

	if st := r.srv.Stats(); st.Forwarded != 13 || st.Drops() != 3 {
		t.Errorf("forwarded %d, dropped %v; want 13, 3 hold-full", st.Forwarded, st.Dropped)
	}
	if total := r.srv.heldBytes.Load(); total != 0 {
		t.Errorf("the relay still counts %d bytes held", total)
	}
}

// TestHoldOrderWithBatches: alice's SENDs keep coming while bob binds, so
// that the relay reads bob's ALLOCATE amid them: over UDP, in the same
// batch as some of them, which it forwards in the batch's sendmmsg after
// writing what it held; over TCP, on another goroutine than bob's ALLOCATE.
// Bob's ALLOCATE is not padded, so his credit covers only the first few
// packets: the others wait for his CONFIRM, which he sends on reading his
// ALLOCATED, and alice's later SENDs join them in the hold. Bob must still
// receive each packet once, in order.
func TestHoldOrderWithBatches(t *testing.T) {
	for _, via := range []string{"udp", "tcp"} {
		t.Run(via, func(t *testing.T) {
			checkNoLeaks(t)
			r := newLoopRelay(t)
			relay := net.UDPAddrFromAddrPort(r.udp)
			const rounds = 20
			for round := range rounds {
				pcA, pcB := loopUDPConn(t), loopUDPConn(t)
				var sendA func(pkts [][]byte)
				var id uint64
				var tk []byte
				if via == "udp" {
					id, tk = r.rawChannel(t, pcA, time.Now(), nil)
					sendA = func(pkts [][]byte) {
						var msgs []ipv4.Message
						for _, p := range pkts {
							msgs = append(msgs, ipv4.Message{Buffers: [][]byte{p}, Addr: relay})
						}
						if err := sendAll(ipv4.NewPacketConn(pcA), msgs); err != nil {
							t.Fatal(err)
						}
					}
				} else {
					var c net.Conn
					c, id, tk = r.rawTCPChannel(t)
					sendA = func(pkts [][]byte) {
						var frames []byte
						for _, p := range pkts {
							frames = append(frames, putFrame(make([]byte, frameHeader+len(p)), p)...)
						}
						if _, err := c.Write(frames); err != nil {
							t.Fatal(err)
						}
					}
				}
				var want, pkts [][]byte
				for i := range MaxHeldPackets {
					p := fill(uint64(round<<8|i), 100+i)
					want = append(want, p)
					pkts = append(pkts, sendPkt(id, p))
				}
				// Three held for certain; then bob's ALLOCATE and five
				// more at once.
				sendA(pkts[:3])
				waitUntil(t, "3 packets held", func() bool { n, _, _ := holding(r.srv, id); return n == 3 })
				if _, err := pcB.WriteTo(appendAllocate(nil, 1, tk, 0), relay); err != nil {
					t.Fatal(err)
				}
				sendA(pkts[3:])
				h, body := readRelay(t, pcB)
				al, err := parseAllocated(body)
				if h.typ != TypeAllocated || h.channel != id || err != nil {
					t.Fatalf("bob's first packet: %v on %x, want ALLOCATED on %x", h.typ, h.channel, id)
				}
				if _, err := pcB.WriteTo(appendConfirm(nil, id, confirmBody{side: 1, token: al.token}), relay); err != nil {
					t.Fatal(err)
				}
				readDelivers(t, pcB, id, want...)
			}
			if st := r.srv.Stats(); st.Forwarded != rounds*MaxHeldPackets || st.Drops() != 0 {
				t.Errorf("forwarded %d, dropped %v; want %d, none", st.Forwarded, st.Dropped, rounds*MaxHeldPackets)
			}
		})
	}
}

// rawTCPChannel binds side 0 of a new channel over a new TCP connection
// to the relay and returns the connection, the channel ID and the ticket.
func (r *loopRelay) rawTCPChannel(t *testing.T) (net.Conn, uint64, []byte) {
	t.Helper()
	c, err := net.Dial("tcp", r.tcp)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	b := r.seqTicket(time.Now(), nil)
	alloc := appendAllocate(nil, 0, b, 0)
	if _, err := c.Write(putFrame(make([]byte, frameHeader+len(alloc)), alloc)); err != nil {
		t.Fatal(err)
	}
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	var buf []byte
	pkt, err := readFrame(bufio.NewReader(c), &buf)
	if err != nil {
		t.Fatal(err)
	}
	h, _, err := parseHeader(pkt)
	if err != nil || h.typ != TypeAllocated {
		t.Fatalf("TCP ALLOCATE answered %x", pkt)
	}
	return c, h.channel, b
}

// TestHoldExpires: a packet held MaxHoldTime is discarded, when the next
// SEND on its channel comes or when the other side binds; and all of a
// channel's hold goes when the channel expires, at its next SEND or in the
// sweep. Each discarded packet counts as hold-expired.
func TestHoldExpires(t *testing.T) {
	checkNoLeaks(t)
	clock := &fakeClock{t: time.Now()}
	r := newLoopRelayWith(t, func(c *Config) { c.Now = clock.Now })
	relay := net.UDPAddrFromAddrPort(r.udp)
	send := func(pc *net.UDPConn, id uint64, p []byte, held, expired uint64) {
		t.Helper()
		if _, err := pc.WriteTo(sendPkt(id, p), relay); err != nil {
			t.Fatal(err)
		}
		waitUntil(t, fmt.Sprintf("%d held, %d expired", held, expired), func() bool {
			st := r.srv.Stats()
			return st.Held == held && st.Dropped[DropHoldExpired] == expired
		})
	}

	t.Run("held too long", func(t *testing.T) {
		pcA, pcB := loopUDPConn(t), loopUDPConn(t)
		id, tk := r.rawChannel(t, pcA, clock.Now(), nil)
		ps := numbered("packet", 4)
		send(pcA, id, ps[0], 1, 0)
		send(pcA, id, ps[1], 2, 0)
		clock.Add(3 * time.Second)
		send(pcA, id, ps[2], 3, 0)
		clock.Add(2 * time.Second) // 0 and 1 held 5 s, 2 for 2 s
		send(pcA, id, ps[3], 4, 2)
		if n, _, _ := holding(r.srv, id); n != 2 {
			t.Fatalf("holding %d packets, want 2", n)
		}
		clock.Add(3 * time.Second) // 2 held 5 s, 3 for 3 s
		rawAllocate(t, pcB, relay, 1, tk)
		readDelivers(t, pcB, id, ps[3])
		if st := r.srv.Stats(); st.Dropped[DropHoldExpired] != 3 || st.Forwarded != 1 {
			t.Errorf("expired %d, forwarded %d; want 3, 1", st.Dropped[DropHoldExpired], st.Forwarded)
		}
	})

	t.Run("channel expires", func(t *testing.T) {
		pcA := loopUDPConn(t)
		st0 := r.srv.Stats()
		// One channel's next SEND finds it expired; the other's sweep.
		id1, _ := r.rawChannel(t, pcA, clock.Now(), func(tk *ticket.Ticket) { tk.ExpiresAt = tk.IssuedAt.Add(2 * time.Second) })
		id2, _ := r.rawChannel(t, pcA, clock.Now(), func(tk *ticket.Ticket) { tk.ExpiresAt = tk.IssuedAt.Add(3 * time.Second) })
		send(pcA, id1, []byte("one"), st0.Held+1, st0.Dropped[DropHoldExpired])
		send(pcA, id1, []byte("two"), st0.Held+2, st0.Dropped[DropHoldExpired])
		send(pcA, id2, []byte("three"), st0.Held+3, st0.Dropped[DropHoldExpired])
		clock.Add(2 * time.Second)
		send(pcA, id1, []byte("late"), st0.Held+3, st0.Dropped[DropHoldExpired]+2)
		if d := r.srv.Stats().Dropped[DropExpired]; d != st0.Dropped[DropExpired]+1 {
			t.Errorf("Dropped[expired] = %d, want %d", d, st0.Dropped[DropExpired]+1)
		}
		if n, b, total := holding(r.srv, id1); n != 0 || b != 0 || total != 5 {
			t.Errorf("expired channel holds %d packets, %d bytes; all channels %d bytes; want 0, 0, 5", n, b, total)
		}
		// The sweep runs when a channel is created, every half idle
		// timeout. It removes every channel but the new one: expired, or
		// idle.
		clock.Add(DefaultIdleTimeout)
		r.rawChannel(t, pcA, clock.Now(), nil)
		if st := r.srv.Stats(); st.Dropped[DropHoldExpired] != st0.Dropped[DropHoldExpired]+3 || st.Allocations != 1 {
			t.Errorf("after the sweep: expired %d, allocations %d; want %d, 1", st.Dropped[DropHoldExpired], st.Allocations, st0.Dropped[DropHoldExpired]+3)
		}
		if total := r.srv.heldBytes.Load(); total != 0 {
			t.Errorf("the relay still counts %d bytes held", total)
		}
	})
}

// TestHoldChargesBudget: a held packet takes its bytes from the ticket's
// budget when the relay holds it, as if forwarded then: one that does not
// fit the budget is not held, and bob's ALLOCATED reports the budget left
// after what was held for him.
func TestHoldChargesBudget(t *testing.T) {
	checkNoLeaks(t)
	r := newLoopRelay(t)
	relay := net.UDPAddrFromAddrPort(r.udp)
	pcA, pcB := loopUDPConn(t), loopUDPConn(t)
	id, tk := r.rawChannel(t, pcA, time.Now(), func(tk *ticket.Ticket) { tk.Budget = 3000 })
	for _, n := range []int{2000, 1500, 1000} { // the 1500 would pass the budget
		pcA.WriteTo(sendPkt(id, fill(uint64(n), n)), relay)
	}
	waitUntil(t, "2 held and 1 over budget", func() bool {
		st := r.srv.Stats()
		return st.Held == 2 && st.Dropped[DropBudget] == 1
	})
	_, a := rawAllocated(t, pcB, relay, 1, tk)
	if a.remaining != 0 {
		t.Errorf("bob's ALLOCATED reports %d bytes of budget left, want 0", a.remaining)
	}
	readDelivers(t, pcB, id, fill(2000, 2000), fill(1000, 1000))
	pcB.WriteTo(sendPkt(id, []byte{1}), relay)
	waitUntil(t, "bob's SEND dropped for the budget", func() bool { return r.srv.Stats().Dropped[DropBudget] == 2 })
	if st := r.srv.Stats(); st.Forwarded != 2 || st.Drops() != 2 {
		t.Errorf("forwarded %d, dropped %v; want 2, 2 for the budget", st.Forwarded, st.Dropped)
	}
}

// TestHoldMemory: the relay's bytes held on all channels together are
// bounded by Config.HoldMemory.
func TestHoldMemory(t *testing.T) {
	checkNoLeaks(t)
	r := newLoopRelayWith(t, func(c *Config) { c.HoldMemory = 10000 })
	relay := net.UDPAddrFromAddrPort(r.udp)
	pcA := loopUDPConn(t)
	id1, _ := r.rawChannel(t, pcA, time.Now(), nil)
	id2, _ := r.rawChannel(t, pcA, time.Now(), nil)
	pcA.WriteTo(sendPkt(id1, make([]byte, 6000)), relay)
	waitUntil(t, "6000 bytes held", func() bool { return r.srv.Stats().Held == 1 })
	pcA.WriteTo(sendPkt(id2, make([]byte, 5000)), relay) // 11,000 in all
	pcA.WriteTo(sendPkt(id2, make([]byte, 4000)), relay) // 10,000
	waitUntil(t, "one dropped, one held", func() bool {
		st := r.srv.Stats()
		return st.Held == 2 && st.Dropped[DropHoldFull] == 1
	})
	if _, _, total := holding(r.srv, id1); total != 10000 {
		t.Errorf("holding %d bytes in all, want 10000", total)
	}
}

// TestHoldBuffer: the hold discards what it has held too long and keeps the
// rest whole and in order, whatever order the times come in.
func TestHoldBuffer(t *testing.T) {
	var h *hold
	if !h.fits(MaxHeldBytes) || h.fits(MaxHeldBytes+1) {
		t.Fatal("an empty hold does not take exactly MaxHeldBytes")
	}
	h = new(hold)
	sec := int64(time.Second)
	at := []int64{0, 1, 0, 4, 2, 6, 0, 7} // seconds; not in order
	var want [][]byte
	for i, s := range at {
		p := fill(uint64(i), 10+i)
		if !h.fits(len(p)) {
			t.Fatalf("packet %d does not fit", i)
		}
		h.add(p, s*sec)
		if s > 2 {
			want = append(want, p)
		}
	}
	if h.fits(0) {
		t.Fatal("a full hold takes another packet")
	}
	packets, n := h.expire(7 * sec) // held ≥ 5 s: those of 0, 1 and 2 s
	if wantN := 10 + 11 + 12 + 14 + 16; packets != 5 || n != wantN {
		t.Errorf("expired %d packets, %d bytes; want 5, %d", packets, n, wantN)
	}
	if h.n != len(want) {
		t.Fatalf("%d packets left, want %d", h.n, len(want))
	}
	for i, w := range want {
		if !bytes.Equal(h.packet(i), w) {
			t.Errorf("packet %d = %x, want %x", i, h.packet(i), w)
		}
	}
	if !h.fits(MaxHeldBytes - len(h.data)) {
		t.Error("the room freed is not reusable")
	}
}

// checkHeldThenForwarded: bob reads what alice sent before bob bound
// (early), once and in order; alice hears that bob bound; then packets go
// both ways, and nothing more arrives (a duplicate of a held packet would
// come before these).
func checkHeldThenForwarded(t *testing.T, ctx context.Context, alice, bob *peer, chA *Channel, toBob, fromAlice netip.AddrPort, early [][]byte) {
	t.Helper()
	buf := make([]byte, 2048)
	read := func(p *peer, from netip.AddrPort, want []byte) {
		t.Helper()
		p.mux.SetReadDeadline(time.Now().Add(5 * time.Second))
		n, a, err := p.mux.ReadFromUDPAddrPort(buf)
		if err != nil {
			t.Fatal(err)
		}
		if a != from || !bytes.Equal(buf[:n], want) {
			t.Fatalf("read %q from %v, want %q from %v", buf[:n], a, want, from)
		}
	}
	for _, p := range early {
		read(bob, fromAlice, p)
	}
	select {
	case <-chA.PeerReady():
	case <-ctx.Done():
		t.Fatal("alice did not hear that bob bound")
	}
	alice.mux.WriteToUDPAddrPort([]byte("after"), toBob)
	read(bob, fromAlice, []byte("after"))
	bob.mux.WriteToUDPAddrPort([]byte("reply"), fromAlice)
	read(alice, toBob, []byte("reply"))
	bob.mux.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
	if n, a, err := bob.mux.ReadFromUDPAddrPort(buf); err == nil {
		t.Fatalf("bob read %q from %v more", buf[:n], a)
	}
}
