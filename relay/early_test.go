package relay

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"testing"
	"testing/synctest"
	"time"

	"golang.org/x/net/ipv4"

	"github.com/parley-p2p/parley/directory/ticket"
)

// rawSide is one side of a channel on a loopRelay, driven packet by packet:
// write hands the relay packets in one go (how depends on the variant), and
// read returns the next relay packet the side receives.
type rawSide struct {
	write   func(t *testing.T, pkts ...[]byte)
	read    func(t *testing.T) (header, []byte)
	nothing func(t *testing.T) // fails t if anything more arrives
}

// newRawSide makes a side of variant via on r:
//
//   - "handle": Server.HandlePacket per packet, from a loopback socket's
//     address, as a plain demultiplexer would;
//   - "batch": Server.handleBatched for all the packets, then one flush: the
//     packets are one batch of the Mux's reader, for certain;
//   - "udp": one datagram per packet, through the relay's Mux;
//   - "sendmmsg": all the packets with one sendmmsg, which the Mux reads
//     with recvmmsg, mostly in one batch;
//   - "tcp": all the packets as frames in one write on a TCP connection.
func newRawSide(t *testing.T, r *loopRelay, via string) *rawSide {
	if via == "tcp" {
		c, err := net.Dial("tcp", r.tcp)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		br := bufio.NewReader(c)
		var buf []byte
		read := func(t *testing.T, wait time.Duration) (header, []byte, error) {
			c.SetReadDeadline(time.Now().Add(wait))
			pkt, err := readFrame(br, &buf)
			if err != nil {
				return header{}, nil, err
			}
			h, body, err := parseHeader(pkt)
			if err != nil {
				t.Fatalf("TCP side received %x: %v", pkt, err)
			}
			return h, body, nil
		}
		return &rawSide{
			write: func(t *testing.T, pkts ...[]byte) {
				var frames []byte
				for _, p := range pkts {
					frames = append(frames, putFrame(make([]byte, frameHeader+len(p)), p)...)
				}
				if _, err := c.Write(frames); err != nil {
					t.Fatal(err)
				}
			},
			read: func(t *testing.T) (header, []byte) {
				h, body, err := read(t, 5*time.Second)
				if err != nil {
					t.Fatal(err)
				}
				return h, body
			},
			nothing: func(t *testing.T) {
				if h, _, err := read(t, 50*time.Millisecond); err == nil {
					t.Fatalf("TCP side received a %v more", h.typ)
				}
			},
		}
	}
	pc := loopUDPConn(t)
	from := pc.LocalAddr().(*net.UDPAddr).AddrPort()
	relay := net.UDPAddrFromAddrPort(r.udp)
	s := &rawSide{
		read:    func(t *testing.T) (header, []byte) { return readRelay(t, pc) },
		nothing: func(t *testing.T) { expectNothing(t, pc) },
	}
	switch via {
	case "handle":
		s.write = func(t *testing.T, pkts ...[]byte) {
			for _, p := range pkts {
				r.srv.HandlePacket(p, from)
			}
		}
	case "batch":
		s.write = func(t *testing.T, pkts ...[]byte) {
			var tx txBatch
			for _, p := range pkts {
				r.srv.handleBatched(bytes.Clone(p), from, &tx) // rewrites in place
			}
			r.srv.flush(&tx)
		}
	case "udp":
		s.write = func(t *testing.T, pkts ...[]byte) {
			for _, p := range pkts {
				if _, err := pc.WriteTo(p, relay); err != nil {
					t.Fatal(err)
				}
			}
		}
	case "sendmmsg":
		s.write = func(t *testing.T, pkts ...[]byte) {
			var msgs []ipv4.Message
			for _, p := range pkts {
				msgs = append(msgs, ipv4.Message{Buffers: [][]byte{p}, Addr: relay})
			}
			if err := sendAll(ipv4.NewPacketConn(pc), msgs); err != nil {
				t.Fatal(err)
			}
		}
	default:
		t.Fatalf("no variant %q", via)
	}
	return s
}

// TestAllocateThenSend: each side sends its ALLOCATE and, right behind it,
// SENDs on the channel ID it derives from the ticket, without waiting for
// the ALLOCATED. The relay handles them in order, so the SENDs find their
// side bound: the first side's are held, the second's forwarded, and
// nothing is dropped. This holds for packets handled one by one, in one
// batch of the Mux's reader, and on one TCP connection.
func TestAllocateThenSend(t *testing.T) {
	for _, via := range []string{"handle", "batch", "udp", "sendmmsg", "tcp"} {
		t.Run(via, func(t *testing.T) {
			checkNoLeaks(t)
			r := newLoopRelay(t)
			for round := range 4 {
				tk := r.seqTicket(time.Now(), nil)
				id := ChannelID(tk)
				a, b := newRawSide(t, r, via), newRawSide(t, r, via)
				packets := func(prefix string, side byte, n int) (pkts, payloads [][]byte) {
					pkts = [][]byte{appendAllocate(nil, side, tk, 0)}
					payloads = numbered(fmt.Sprintf("%s %d", prefix, round), n)
					for _, p := range payloads {
						pkts = append(pkts, sendPkt(id, p))
					}
					return pkts, payloads
				}
				allocated := func(s *rawSide, who string, peerBound bool) {
					t.Helper()
					h, body := s.read(t)
					al, err := parseAllocated(body)
					if h.typ != TypeAllocated || err != nil || h.channel != id || al.peerBound != peerBound {
						t.Fatalf("%s: %v on %x (peer bound %v), want ALLOCATED on %x (peer bound %v)", who, h.typ, h.channel, al.peerBound, id, peerBound)
					}
				}
				delivers := func(s *rawSide, who string, want [][]byte) {
					t.Helper()
					for i, w := range want {
						h, body := s.read(t)
						if h.typ != TypeDeliver || h.channel != id || !bytes.Equal(body, w) {
							t.Fatalf("%s: packet %d is %v on %x %q, want DELIVER on %x %q", who, i, h.typ, h.channel, body, id, w)
						}
					}
					s.nothing(t)
				}
				st0 := r.srv.Stats()

				pktsA, early := packets("alice", 0, 5)
				a.write(t, pktsA...)
				allocated(a, "alice", false)
				waitUntil(t, "alice's 5 packets held", func() bool { n, _, _ := holding(r.srv, id); return n == 5 })
				pktsB, replies := packets("bob", 1, 3)
				b.write(t, pktsB...)
				allocated(b, "bob", true)
				delivers(b, "bob", early)
				allocated(a, "alice", true) // the peer-bound notice
				delivers(a, "alice", replies)

				st := r.srv.Stats()
				if st.Held-st0.Held != 5 || st.Forwarded-st0.Forwarded != 8 || st.Drops() != 0 {
					t.Fatalf("held %d, forwarded %d, dropped %v; want 5, 8, none", st.Held-st0.Held, st.Forwarded-st0.Forwarded, st.Dropped)
				}
			}
		})
	}
}

// gate stands between a peer and the relay: it keeps what the peer sends
// until the test opens it, which proves that the peer sent it without any
// answer from the relay; then it forwards both ways.
type gate struct {
	addr string // where the peer sends: "ip:port", UDP or TCP
	// hold reads what the peer sends until it has sent sends SENDs, and
	// returns all of it, in order.
	hold func(t *testing.T, sends int) [][]byte
	// open forwards what hold read to the relay, and from then on
	// everything, both ways.
	open func(t *testing.T)
}

func newGate(t *testing.T, r *loopRelay, via string) *gate {
	var kept [][]byte
	read := func(t *testing.T, sends int, next func() ([]byte, error)) [][]byte {
		for n := 0; n < sends; {
			p, err := next()
			if err != nil {
				t.Fatalf("gate: %v", err)
			}
			if h, _, err := parseHeader(p); err == nil && h.typ == TypeSend {
				n++
			}
			kept = append(kept, bytes.Clone(p))
		}
		return kept
	}
	if via == "tcp" {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { ln.Close() })
		var peer net.Conn
		var br *bufio.Reader
		return &gate{
			addr: ln.Addr().String(),
			hold: func(t *testing.T, sends int) [][]byte {
				ln.(*net.TCPListener).SetDeadline(time.Now().Add(5 * time.Second))
				c, err := ln.Accept()
				if err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() { c.Close() })
				peer, br = c, bufio.NewReader(c)
				c.SetReadDeadline(time.Now().Add(5 * time.Second))
				var buf []byte
				return read(t, sends, func() ([]byte, error) { return readFrame(br, &buf) })
			},
			open: func(t *testing.T) {
				peer.SetReadDeadline(time.Time{})
				rc, err := net.Dial("tcp", r.tcp)
				if err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() { rc.Close() })
				for _, p := range kept {
					if _, err := rc.Write(putFrame(make([]byte, frameHeader+len(p)), p)); err != nil {
						t.Fatal(err)
					}
				}
				go func() { io.Copy(rc, br); rc.Close() }()
				go func() { io.Copy(peer, rc); peer.Close() }()
			},
		}
	}
	front, back := loopUDPConn(t), loopUDPConn(t)
	var from net.Addr
	relay := net.UDPAddrFromAddrPort(r.udp)
	buf := make([]byte, MaxPacketSize)
	return &gate{
		addr: front.LocalAddr().String(),
		hold: func(t *testing.T, sends int) [][]byte {
			front.SetReadDeadline(time.Now().Add(5 * time.Second))
			return read(t, sends, func() ([]byte, error) {
				var n int
				var err error
				n, from, err = front.ReadFrom(buf)
				return buf[:n], err
			})
		},
		open: func(t *testing.T) {
			front.SetReadDeadline(time.Time{})
			for _, p := range kept {
				if _, err := back.WriteTo(p, relay); err != nil {
					t.Fatal(err)
				}
			}
			forward := func(in, out net.PacketConn, to net.Addr) {
				b := make([]byte, MaxPacketSize)
				for {
					n, _, err := in.ReadFrom(b)
					if err != nil {
						return // closed at the end of the test
					}
					out.WriteTo(b[:n], to)
				}
			}
			go forward(front, back, relay)
			go forward(back, front, from)
		},
	}
}

// TestAllocateEarly: alice allocates her side with AllocateEarly, over UDP
// or TCP, and sends her first packets at once, before the relay can have
// answered (a gate keeps them from it until they are all sent). Bob binds
// later, and reads them exactly once and in order; then packets flow both
// ways. Both sides compute the channel ID from the ticket, and it is the
// relay's.
func TestAllocateEarly(t *testing.T) {
	for _, tc := range []struct{ alice, bob string }{{"udp", "udp"}, {"udp", "tcp"}, {"tcp", "udp"}, {"tcp", "tcp"}} {
		t.Run(tc.alice+"-"+tc.bob, func(t *testing.T) {
			checkNoLeaks(t)
			r := newLoopRelay(t)
			g := newGate(t, r, tc.alice)
			alice, bob := newPeer(t, loopUDP(t)), newPeer(t, loopUDP(t))
			tk := r.ticket(alice.key.Public(), bob.key.Public())
			id := ChannelID(tk)
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()

			var chA *Channel
			var err error
			if tc.alice == "tcp" {
				chA, err = alice.client.AllocateTCPEarly(ctx, g.addr, nil, 0, tk)
			} else {
				chA, err = alice.client.AllocateEarly(ctx, netip.MustParseAddrPort(g.addr), 0, tk)
			}
			if err != nil {
				t.Fatal(err)
			}
			if chA.ID() != id {
				t.Fatalf("alice's channel %x, want ChannelID %x", chA.ID(), id)
			}
			toBob := alice.mux.VirtualAddr(chA)
			early := numbered("early", 5)
			for _, p := range early {
				if _, err := alice.mux.WriteToUDPAddrPort(p, toBob); err != nil {
					t.Fatalf("send before ALLOCATED: %v", err)
				}
			}
			kept := g.hold(t, len(early))
			if h, body, err := parseHeader(kept[0]); err != nil || h.typ != TypeAllocate || !bytes.Equal(body[1:1+ticket.Size], tk) {
				t.Fatalf("alice's first packet %x…, want her ALLOCATE", kept[0][:min(len(kept[0]), 16)])
			}
			// Padded over UDP, for the credit of an unvalidated address.
			if wantSize := map[string]int{"udp": PaddedAllocateSize, "tcp": AllocateSize}[tc.alice]; len(kept[0]) != wantSize {
				t.Fatalf("alice's ALLOCATE over %s is %d bytes, want %d", tc.alice, len(kept[0]), wantSize)
			}
			var sent [][]byte
			for _, p := range kept {
				if h, body, _ := parseHeader(p); h.typ == TypeSend {
					if h.channel != id {
						t.Fatalf("SEND on %x, want %x", h.channel, id)
					}
					sent = append(sent, body)
				}
			}
			if fmt.Sprint(sent) != fmt.Sprint(early) {
				t.Fatalf("alice sent %q, want %q", sent, early)
			}
			if budget, _ := chA.Remaining(); budget != 0 || chA.Err() != nil {
				t.Fatalf("before any answer: budget %d, err %v", budget, chA.Err())
			}

			g.open(t)
			waitUntil(t, "the relay holds alice's packets", func() bool { return r.srv.Stats().Held == uint64(len(early)) })
			// A blocking Allocate of the same ticket returns the same
			// channel, once the relay has answered.
			if tc.alice == "udp" {
				if ch, err := alice.client.Allocate(ctx, netip.MustParseAddrPort(g.addr), 0, tk); err != nil || ch != chA {
					t.Fatalf("Allocate after AllocateEarly: %v, %p; want %p", err, ch, chA)
				}
			}

			var chB *Channel
			if tc.bob == "tcp" {
				chB, err = bob.client.AllocateTCP(ctx, r.tcp, nil, 1, tk)
			} else {
				chB, err = bob.client.Allocate(ctx, r.udp, 1, tk)
			}
			if err != nil {
				t.Fatal(err)
			}
			if chB.ID() != id || !chB.PeerBound() {
				t.Fatalf("bob: channel %x, peer bound %v; want %x, true", chB.ID(), chB.PeerBound(), id)
			}
			fromAlice := bob.mux.VirtualAddr(chB)
			checkHeldThenForwarded(t, ctx, alice, bob, chA, toBob, fromAlice, early)

			if budget, _ := chA.Remaining(); budget == 0 || chA.Err() != nil {
				t.Errorf("after the answer: budget %d, err %v", budget, chA.Err())
			}
			st := r.srv.Stats()
			if st.Held != 5 || st.Forwarded != 7 || st.Drops() != 0 {
				t.Errorf("relay: held %d, forwarded %d, dropped %v; want 5, 7, none", st.Held, st.Forwarded, st.Dropped)
			}
			if da, db := alice.client.Dropped(), bob.client.Dropped(); da != 0 || db != 0 {
				t.Errorf("the clients dropped %d and %d relay packets", da, db)
			}
		})
	}
}

// TestAllocateEarlyRefused: when the relay refuses an early allocation,
// the channel closes, its Err is the relay's ERROR, and its virtual
// address stops working. Over TCP, the connection stays up for others.
func TestAllocateEarlyRefused(t *testing.T) {
	for _, via := range []string{"udp", "tcp"} {
		t.Run(via, func(t *testing.T) {
			checkNoLeaks(t)
			r := newLoopRelay(t)
			alice := newPeer(t, loopUDP(t))
			tk := r.seqTicket(time.Now(), nil)
			tk[ticket.Size-1] ^= 1 // the signature no longer verifies
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			allocate := func(tk []byte) (*Channel, error) {
				if via == "tcp" {
					return alice.client.AllocateTCPEarly(ctx, r.tcp, nil, 0, tk)
				}
				return alice.client.AllocateEarly(ctx, r.udp, 0, tk)
			}
			ch, err := allocate(tk)
			if err != nil {
				t.Fatal(err)
			}
			addr := alice.mux.VirtualAddr(ch)
			select {
			case <-ch.Done():
			case <-ctx.Done():
				t.Fatal("the refused channel did not close")
			}
			var ae *AllocateError
			if err := ch.Err(); !errors.As(err, &ae) || ae.Code != CodeBadTicket {
				t.Fatalf("Err = %v, want the relay's bad ticket", err)
			}
			if alice.mux.VirtualAddr(ch) != addr || alice.mux.Channel(addr) != nil {
				t.Error("the closed channel keeps its virtual address")
			}
			if _, err := alice.mux.WriteToUDPAddrPort([]byte{0xC1}, addr); !errors.Is(err, errNoChannel) {
				t.Errorf("write to the closed channel's address: %v", err)
			}
			if err := ch.Send([]byte{1}); !errors.Is(err, ErrChannelClosed) {
				t.Errorf("Send = %v, want ErrChannelClosed", err)
			}
			// A good ticket works, on the same TCP connection if TCP.
			good, err := allocate(r.seqTicket(time.Now(), nil))
			if err != nil {
				t.Fatal(err)
			}
			if err := good.Refresh(ctx); err != nil || good.Err() != nil {
				t.Fatalf("good ticket: %v, %v", err, good.Err())
			}
		})
	}
}

// TestAllocateEarlyUnreachable: a relay that never answers, over UDP or
// TCP, or that drops the TCP connection: the channel closes when ctx ends,
// or when the connection does, and Err says so.
func TestAllocateEarlyUnreachable(t *testing.T) {
	for _, via := range []string{"udp", "tcp", "tcp-closed"} {
		t.Run(via, func(t *testing.T) {
			checkNoLeaks(t)
			r := newLoopRelay(t) // only to sign tickets
			alice := newPeer(t, loopUDP(t))
			tk := r.seqTicket(time.Now(), nil)
			ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
			defer cancel()
			var ch *Channel
			var err error
			if via == "udp" {
				silent := loopUDPConn(t)
				ch, err = alice.client.AllocateEarly(ctx, silent.LocalAddr().(*net.UDPAddr).AddrPort(), 0, tk)
				if err != nil {
					t.Fatal(err)
				}
				if h, _ := readRelay(t, silent); h.typ != TypeAllocate {
					t.Fatalf("the relay received a %v, want ALLOCATE", h.typ)
				}
			} else {
				ln, err := net.Listen("tcp", "127.0.0.1:0")
				if err != nil {
					t.Fatal(err)
				}
				defer ln.Close()
				accepted := make(chan net.Conn, 1)
				go func() {
					c, err := ln.Accept()
					if err == nil {
						accepted <- c
					}
				}()
				ch, err = alice.client.AllocateTCPEarly(ctx, ln.Addr().String(), nil, 0, tk)
				if err != nil {
					t.Fatal(err)
				}
				c := <-accepted
				defer c.Close()
				if via == "tcp-closed" {
					c.Close()
				}
			}
			addr := alice.mux.VirtualAddr(ch)
			select {
			case <-ch.Done():
			case <-time.After(5 * time.Second):
				t.Fatal("the channel did not close")
			}
			want := context.DeadlineExceeded
			if via == "tcp-closed" {
				want = ErrChannelClosed
			}
			if err := ch.Err(); !errors.Is(err, want) {
				t.Fatalf("Err = %v, want %v", err, want)
			}
			if alice.mux.Channel(addr) != nil {
				t.Error("the closed channel keeps its virtual address")
			}
		})
	}
}

// TestAllocateEarlyRetransmits: the ALLOCATE is retransmitted in the
// background after 250 ms, doubling to 2 s, until the relay answers or ctx
// ends; then the channel closes, at once. Closing the client ends the wait
// too.
func TestAllocateEarlyRetransmits(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		r := newRig(t, nil)
		conn := &captureConn{keep: true}
		c := NewClient(conn, nil)
		tk := r.ticket(nil)
		start := time.Now()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		ch, err := c.AllocateEarly(ctx, addrC, 0, tk)
		if err != nil {
			t.Fatal(err)
		}
		if n := len(conn.take()); n != 1 {
			t.Fatalf("AllocateEarly returned after sending %d packets, want the ALLOCATE", n)
		}
		if err := ch.Send([]byte("first")); err != nil {
			t.Fatal(err)
		}
		<-ch.Done()
		if el := time.Since(start); el != 5*time.Second {
			t.Errorf("closed after %v, want 5s", el)
		}
		if !errors.Is(ch.Err(), context.DeadlineExceeded) {
			t.Errorf("Err = %v", ch.Err())
		}
		// The SEND, then ALLOCATEs at 0.25, 0.75, 1.75, 3.75 s.
		if n := len(conn.take()); n != 5 {
			t.Errorf("sent %d more packets, want the SEND and 4 retransmissions", n)
		}

		// Answered: no more retransmissions, and the channel stays.
		tk2 := r.ticket(func(tk *ticket.Ticket) { tk.Budget++ })
		ch2, err := c.AllocateEarly(context.Background(), addrC, 0, tk2)
		if err != nil {
			t.Fatal(err)
		}
		time.Sleep(300 * time.Millisecond) // in the bubble: one retransmission
		c.HandlePacket(appendAllocated(nil, ch2.ID(), allocatedBody{expires: ch2.Expires().Unix()}), addrC)
		time.Sleep(time.Minute)
		if n := len(conn.take()); n != 2+1+len(confirmResends) || ch2.Err() != nil {
			t.Errorf("sent %d packets, err %v; want 2 ALLOCATEs and a CONFIRM with its %d repeats, no error", n, ch2.Err(), len(confirmResends))
		}

		// Unanswered, and the client closes.
		ch3, err := c.AllocateEarly(context.Background(), addrC, 0, r.ticket(func(tk *ticket.Ticket) { tk.Budget += 2 }))
		if err != nil {
			t.Fatal(err)
		}
		c.Close()
		synctest.Wait()
		if !errors.Is(ch3.Err(), ErrChannelClosed) || !errors.Is(ch2.Err(), ErrChannelClosed) {
			t.Errorf("after Close: Err = %v and %v, want ErrChannelClosed", ch3.Err(), ch2.Err())
		}
		if _, err := c.AllocateEarly(context.Background(), addrC, 0, tk); !errors.Is(err, net.ErrClosed) {
			t.Errorf("AllocateEarly after Close = %v", err)
		}
	})
}
