package relay

import (
	"bufio"
	"bytes"
	"fmt"
	"net"
	"testing"
	"time"

	"golang.org/x/net/ipv4"
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
					pkts = [][]byte{appendAllocate(nil, side, tk)}
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
