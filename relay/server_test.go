package relay

import (
	"bytes"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"net"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/parley-p2p/parley/directory/ticket"
	"github.com/parley-p2p/parley/transport"
)

// sentPacket is one datagram a captureConn was asked to send.
type sentPacket struct {
	b  []byte
	to netip.AddrPort
}

// captureConn is a net.PacketConn that records what is written to it and
// never receives: the Server only writes to its socket.
type captureConn struct {
	mu   sync.Mutex
	sent []sentPacket
	keep bool // record packets (else only count)
	n    int
}

func (c *captureConn) WriteToUDPAddrPort(b []byte, to netip.AddrPort) (int, error) {
	c.mu.Lock()
	c.n++
	if c.keep {
		c.sent = append(c.sent, sentPacket{append([]byte(nil), b...), to})
	}
	c.mu.Unlock()
	return len(b), nil
}

func (c *captureConn) WriteTo(b []byte, a net.Addr) (int, error) {
	return c.WriteToUDPAddrPort(b, a.(*net.UDPAddr).AddrPort())
}
func (c *captureConn) ReadFrom([]byte) (int, net.Addr, error) { return 0, nil, net.ErrClosed }
func (c *captureConn) Close() error                           { return nil }
func (c *captureConn) LocalAddr() net.Addr {
	return &net.UDPAddr{IP: net.IPv4(192, 0, 2, 1), Port: 7000}
}
func (c *captureConn) SetDeadline(time.Time) error      { return nil }
func (c *captureConn) SetReadDeadline(time.Time) error  { return nil }
func (c *captureConn) SetWriteDeadline(time.Time) error { return nil }

// take returns and forgets the packets sent so far.
func (c *captureConn) take() []sentPacket {
	c.mu.Lock()
	defer c.mu.Unlock()
	s := c.sent
	c.sent = nil
	return s
}

// fakeClock is a settable clock for Config.Now.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) Add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// rig is a Server under test with the directory's signing key.
type rig struct {
	srv   *Server
	conn  *captureConn
	clock *fakeClock
	dir   ed25519.PrivateKey
	relay transport.PublicKey
	a, b  [32]byte // the two devices of tickets

	notices   []sentPacket // the peer-bound notices the last ALLOCATE sent
	delivered []sentPacket // the held packets it delivered after its answers
}

func newRig(t testing.TB, mod func(*Config)) *rig {
	t.Helper()
	pub, priv, err := ed25519.GenerateKey(nil)
	if err != nil {
		t.Fatal(err)
	}
	r := &rig{
		conn:  &captureConn{keep: true},
		clock: &fakeClock{t: time.Unix(1_700_000_000, 0)},
		dir:   priv,
	}
	r.relay[0], r.a[0], r.b[0] = 'R', 'A', 'B'
	cfg := Config{DirectoryKey: pub, Identity: r.relay, Now: r.clock.Now}
	if mod != nil {
		mod(&cfg)
	}
	r.srv = NewServer(cfg, r.conn)
	return r
}

// ticket signs a valid ticket, changed by mod.
func (r *rig) ticket(mod func(*ticket.Ticket)) []byte {
	now := r.clock.Now()
	tk := ticket.Ticket{
		IssuedAt:  now,
		ExpiresAt: now.Add(10 * time.Minute),
		A:         r.a, B: r.b, Relay: r.relay,
		Budget: 1 << 30, Rate: 1 << 20,
	}
	if mod != nil {
		mod(&tk)
	}
	return ticket.Sign(r.dir, tk)
}

var (
	addrA = netip.MustParseAddrPort("198.51.100.1:4000")
	addrB = netip.MustParseAddrPort("198.51.100.2:5000")
	addrC = netip.MustParseAddrPort("198.51.100.3:6000")
)

// allocate sends an ALLOCATE and returns the answer sent back. What the
// relay held for the side it binds follows the answers: r.delivered.
func (r *rig) allocate(t *testing.T, from netip.AddrPort, side byte, tk []byte) (header, []byte) {
	t.Helper()
	pkt := appendAllocate(nil, side, tk, 0)
	r.srv.HandlePacket(pkt, from)
	sent := r.conn.take()
	r.delivered = nil
	for i, p := range sent {
		if len(p.b) > offType && Type(p.b[offType]) == TypeDeliver {
			r.delivered = sent[i:]
			sent = sent[:i]
			break
		}
	}
	for _, p := range r.delivered {
		if h, _, err := parseHeader(p.b); err != nil || h.typ != TypeDeliver || p.to != from {
			t.Fatalf("after the answers, %x went to %v; want only DELIVERs to %v", p.b, p.to, from)
		}
	}
	if len(sent) == 0 || len(sent) > 2 {
		t.Fatalf("ALLOCATE got %d answers, want 1 (2 when it binds the second side)", len(sent))
	}
	if sent[0].to != from {
		t.Fatalf("answer went to %v, want %v", sent[0].to, from)
	}
	total := 0
	for _, p := range sent {
		total += len(p.b)
	}
	if total > len(pkt) {
		t.Fatalf("answers of %d bytes to a %d-byte ALLOCATE: amplification", total, len(pkt))
	}
	h, body, err := parseHeader(sent[0].b)
	if err != nil {
		t.Fatalf("answer: %v", err)
	}
	r.notices = sent[1:]
	if len(r.notices) > 0 {
		// The notice to the side bound first: the same channel, peer bound.
		nh, nb, err := parseHeader(r.notices[0].b)
		a, aerr := parseAllocated(nb)
		if err != nil || aerr != nil || nh.typ != TypeAllocated || nh.channel != h.channel || !a.peerBound || r.notices[0].to == from {
			t.Fatalf("second answer %x to %v is not a peer-bound notice for channel %d", r.notices[0].b, r.notices[0].to, h.channel)
		}
	}
	return h, body
}

// bind allocates side, checks it succeeded, and validates the side's
// address with a CONFIRM of the ALLOCATED's token, as a client does. What
// the relay held for the side, delivered after its answers or the CONFIRM,
// is in r.delivered.
func (r *rig) bind(t *testing.T, from netip.AddrPort, side byte, tk []byte) (uint64, allocatedBody) {
	t.Helper()
	id, a := r.bindUnconfirmed(t, from, side, tk)
	r.srv.HandlePacket(appendConfirm(nil, id, confirmBody{side: side, token: a.token}), from)
	for _, p := range r.conn.take() {
		if h, _, err := parseHeader(p.b); err != nil || h.typ != TypeDeliver || p.to != from {
			t.Fatalf("after the CONFIRM, %x went to %v; want only DELIVERs to %v", p.b, p.to, from)
		}
		r.delivered = append(r.delivered, p)
	}
	return id, a
}

// bindUnconfirmed allocates side and checks it succeeded, but sends no
// CONFIRM: the side's address stays unvalidated.
func (r *rig) bindUnconfirmed(t *testing.T, from netip.AddrPort, side byte, tk []byte) (uint64, allocatedBody) {
	t.Helper()
	h, body := r.allocate(t, from, side, tk)
	if h.typ != TypeAllocated {
		code, reason, _ := parseError(body)
		t.Fatalf("ALLOCATE answered %v (%v %q), want ALLOCATED", h.typ, code, reason)
	}
	a, err := parseAllocated(body)
	if err != nil {
		t.Fatal(err)
	}
	return h.channel, a
}

// confirmAt validates side of channel id at from on srv, with the token the
// relay would have sent there: for tests that bind sides without reading
// the ALLOCATEDs.
func confirmAt(srv *Server, id uint64, d byte, from netip.AddrPort) {
	tok := srv.tokens.token(id, d, side{addr: from}, srv.cfg.Now())
	srv.HandlePacket(appendConfirm(nil, id, confirmBody{side: d, token: tok}), from)
}

func sendPkt(ch uint64, payload []byte) []byte {
	return append(appendHeader(nil, TypeSend, ch), payload...)
}

func TestAllocateRejects(t *testing.T) {
	other, otherPriv, _ := ed25519.GenerateKey(nil)
	_ = other
	tests := []struct {
		name   string
		packet func(r *rig) []byte
		code   ErrorCode
	}{
		{"forged signature", func(r *rig) []byte {
			tk := r.ticket(nil)
			tk[ticket.Size-1] ^= 1
			return appendAllocate(nil, 0, tk, 0)
		}, CodeBadTicket},
		{"signed by another key", func(r *rig) []byte {
			now := r.clock.Now()
			tk := ticket.Sign(otherPriv, ticket.Ticket{IssuedAt: now, ExpiresAt: now.Add(time.Hour), A: r.a, B: r.b, Relay: r.relay, Budget: 1, Rate: 1})
			return appendAllocate(nil, 0, tk, 0)
		}, CodeBadTicket},
		{"altered budget", func(r *rig) []byte {
			tk := r.ticket(nil)
			tk[113] ^= 0x80
			return appendAllocate(nil, 1, tk, 0)
		}, CodeBadTicket},
		{"expired", func(r *rig) []byte {
			return appendAllocate(nil, 0, r.ticket(func(tk *ticket.Ticket) {
				tk.IssuedAt = tk.IssuedAt.Add(-time.Hour)
				tk.ExpiresAt = r.clock.Now()
			}), 0)
		}, CodeExpired},
		{"not yet valid", func(r *rig) []byte {
			return appendAllocate(nil, 0, r.ticket(func(tk *ticket.Ticket) {
				tk.IssuedAt = tk.IssuedAt.Add(2 * ticket.MaxClockSkew)
				tk.ExpiresAt = tk.IssuedAt.Add(time.Hour)
			}), 0)
		}, CodeBadTicket},
		{"for another relay", func(r *rig) []byte {
			return appendAllocate(nil, 0, r.ticket(func(tk *ticket.Ticket) { tk.Relay[1] = 1 }), 0)
		}, CodeNotForUs},
		{"side 2", func(r *rig) []byte { return appendAllocate(nil, 2, r.ticket(nil), 0) }, CodeMalformed},
		{"short ticket", func(r *rig) []byte { return appendAllocate(nil, 0, r.ticket(nil)[:ticket.Size-1], 0) }, CodeMalformed},
		{"padding not zero", func(r *rig) []byte { return appendAllocate(nil, 0, append(r.ticket(nil), 0, 1), 0) }, CodeMalformed},
		{"too long", func(r *rig) []byte { return appendAllocate(nil, 0, r.ticket(nil), MaxAllocateSize+1) }, CodeMalformed},
		{"ticket version", func(r *rig) []byte {
			tk := r.ticket(nil)
			tk[0] = 9
			return appendAllocate(nil, 0, tk, 0)
		}, CodeMalformed},
		{"empty body", func(r *rig) []byte {
			// A bare 12-byte header cannot be answered within its own size
			// plus a code, so this one must be answered by nothing at all.
			return appendHeader(nil, TypeAllocate, 0)
		}, 0},
		{"body of 4", func(r *rig) []byte { return append(appendHeader(nil, TypeAllocate, 0), 0, 0, 0, 0) }, CodeMalformed},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := newRig(t, nil)
			pkt := tt.packet(r)
			r.srv.HandlePacket(pkt, addrA)
			sent := r.conn.take()
			if tt.code == 0 {
				if len(sent) != 0 {
					t.Fatalf("sent %d packets, want none", len(sent))
				}
			} else {
				if len(sent) != 1 {
					t.Fatalf("sent %d packets, want 1 ERROR", len(sent))
				}
				if len(sent[0].b) > len(pkt) {
					t.Errorf("ERROR of %d bytes answers %d bytes", len(sent[0].b), len(pkt))
				}
				h, body, err := parseHeader(sent[0].b)
				if err != nil || h.typ != TypeError {
					t.Fatalf("answer %x is not an ERROR", sent[0].b)
				}
				// It names the channel its ticket derives, if it has one.
				var id uint64
				if req, err := parseAllocate(pkt[HeaderSize:]); err == nil {
					id = ChannelID(req.ticket)
				}
				if h.channel != id {
					t.Errorf("ERROR on channel %x, want %x", h.channel, id)
				}
				code, reason, err := parseError(body)
				if err != nil || code != tt.code {
					t.Fatalf("code %v (%q), want %v", code, reason, tt.code)
				}
				if st := r.srv.Stats(); st.Rejected[tt.code] != 1 {
					t.Errorf("Rejected[%v] = %d, want 1", tt.code, st.Rejected[tt.code])
				}
			}
			if st := r.srv.Stats(); st.Allocations != 0 || st.AllocationsTotal != 0 {
				t.Errorf("a rejected ALLOCATE left %d allocations", st.Allocations)
			}
		})
	}
}

func TestAllocateAndForward(t *testing.T) {
	r := newRig(t, nil)
	tk := r.ticket(nil)
	idA, a := r.bind(t, addrA, 0, tk)
	if a.peerBound {
		t.Error("first side: peer bound, want not yet")
	}
	if a.expires != r.clock.Now().Add(10*time.Minute).Unix() || a.remaining != 1<<30 || a.rate != 1<<20 {
		t.Errorf("ALLOCATED = %+v, want the ticket's expiry, budget and rate", a)
	}
	// Before B binds, A's packets wait for it.
	r.srv.HandlePacket(sendPkt(idA, []byte("early")), addrA)
	if sent := r.conn.take(); len(sent) != 0 {
		t.Fatalf("forwarded to an unbound side: %v", sent)
	}
	if st := r.srv.Stats(); st.Held != 1 || st.Drops() != 0 {
		t.Errorf("Held = %d, Dropped = %v; want 1 held, no drops", st.Held, st.Dropped)
	}
	idB, b := r.bind(t, addrB, 1, tk)
	if idB != idA {
		t.Fatalf("sides got channels %x and %x, want one", idA, idB)
	}
	if !b.peerBound {
		t.Error("second side: peer not bound")
	}
	if len(r.delivered) != 1 || !bytes.Equal(r.delivered[0].b, append(appendHeader(nil, TypeDeliver, idA), "early"...)) {
		t.Fatalf("B's ALLOCATE delivered %v, want the packet A sent before", r.delivered)
	}
	for _, c := range []struct {
		from, to netip.AddrPort
		msg      string
	}{{addrA, addrB, "from a"}, {addrB, addrA, "from b, longer"}} {
		pkt := sendPkt(idA, []byte(c.msg))
		r.srv.HandlePacket(pkt, c.from)
		sent := r.conn.take()
		if len(sent) != 1 || sent[0].to != c.to {
			t.Fatalf("SEND from %v: sent %v, want one DELIVER to %v", c.from, sent, c.to)
		}
		h, body, err := parseHeader(sent[0].b)
		if err != nil || h.typ != TypeDeliver || h.channel != idA || string(body) != c.msg {
			t.Fatalf("DELIVER = %x, want channel %x body %q", sent[0].b, idA, c.msg)
		}
		if pkt[offType] != byte(TypeSend) {
			t.Fatal("HandlePacket modified its input")
		}
	}
	st := r.srv.Stats()
	if st.Forwarded != 3 || st.ForwardedBytes != uint64(len("early")+len("from a")+len("from b, longer")) || st.Allocations != 1 {
		t.Errorf("stats %+v", st)
	}
	// The budget reported on a refresh has gone down by what was forwarded.
	_, a = r.bind(t, addrA, 0, tk)
	if want := uint64(1<<30) - st.ForwardedBytes; a.remaining != want {
		t.Errorf("remaining after forwarding = %d, want %d", a.remaining, want)
	}
}

func TestThirdPartyCannotInject(t *testing.T) {
	r := newRig(t, nil)
	tk := r.ticket(nil)
	id, _ := r.bind(t, addrA, 0, tk)
	r.bind(t, addrB, 1, tk)
	// C knows the channel ID (say, it sniffed one packet) but is no side;
	// nor is A's address with another port.
	for _, from := range []netip.AddrPort{addrC, netip.AddrPortFrom(addrA.Addr(), addrA.Port()+1)} {
		r.srv.HandlePacket(sendPkt(id, []byte("injected")), from)
	}
	// Nor can anyone use a channel ID that does not exist.
	r.srv.HandlePacket(sendPkt(id+1, []byte("guess")), addrA)
	if sent := r.conn.take(); len(sent) != 0 {
		t.Fatalf("forwarded a third party's packets: %v", sent)
	}
	st := r.srv.Stats()
	if st.Dropped[DropNotSide] != 2 || st.Dropped[DropUnknownChannel] != 1 || st.Forwarded != 0 {
		t.Errorf("drops %v, want 2 not-a-side and 1 unknown-channel", st.Dropped)
	}
}

func TestSideRebinding(t *testing.T) {
	r := newRig(t, nil)
	tk := r.ticket(nil)
	id, _ := r.bind(t, addrA, 0, tk)
	r.bind(t, addrB, 1, tk)
	// A's NAT rebinds: A allocates again from its new address.
	newA := netip.MustParseAddrPort("198.51.100.1:4999")
	if id2, _ := r.bind(t, newA, 0, tk); id2 != id {
		t.Fatalf("re-ALLOCATE gave channel %x, want %x", id2, id)
	}
	r.srv.HandlePacket(sendPkt(id, []byte("to a")), addrB)
	if sent := r.conn.take(); len(sent) != 1 || sent[0].to != newA {
		t.Fatalf("after rebinding, DELIVER went to %v, want %v", sent, newA)
	}
	// The old address is no longer a side.
	r.srv.HandlePacket(sendPkt(id, []byte("stale")), addrA)
	if sent := r.conn.take(); len(sent) != 0 {
		t.Fatalf("the old address still forwards: %v", sent)
	}
	r.srv.HandlePacket(sendPkt(id, []byte("fresh")), newA)
	if sent := r.conn.take(); len(sent) != 1 || sent[0].to != addrB {
		t.Fatalf("the new address does not forward: %v", sent)
	}
	if n := r.srv.Stats().AllocationsTotal; n != 1 {
		t.Errorf("%d allocations created, want 1", n)
	}
}

func TestBudgetExhaustion(t *testing.T) {
	r := newRig(t, nil)
	tk := r.ticket(func(tk *ticket.Ticket) { tk.Budget = 3500 })
	id, _ := r.bind(t, addrA, 0, tk)
	r.bind(t, addrB, 1, tk)
	payload := make([]byte, 1000)
	var forwarded int
	for i := 0; i < 6; i++ {
		from := addrA
		if i%2 == 1 {
			from = addrB // the budget is for both directions together
		}
		r.srv.HandlePacket(sendPkt(id, payload), from)
		forwarded += len(r.conn.take())
	}
	if forwarded != 3 {
		t.Errorf("forwarded %d 1000-byte packets on a 3500-byte budget, want 3", forwarded)
	}
	// What is left still lets a small packet through.
	r.srv.HandlePacket(sendPkt(id, make([]byte, 500)), addrA)
	if len(r.conn.take()) != 1 {
		t.Error("a packet within the remaining budget was dropped")
	}
	r.srv.HandlePacket(sendPkt(id, []byte{1}), addrA)
	if len(r.conn.take()) != 0 {
		t.Error("forwarded past the budget")
	}
	if d := r.srv.Stats().Dropped[DropBudget]; d != 4 {
		t.Errorf("Dropped[budget] = %d, want 4", d)
	}
}

func TestRateLimit(t *testing.T) {
	r := newRig(t, nil)
	const rate = 200_000 // bytes/s: the burst is one second of it
	tk := r.ticket(func(tk *ticket.Ticket) { tk.Rate = rate })
	id, _ := r.bind(t, addrA, 0, tk)
	r.bind(t, addrB, 1, tk)
	payload := make([]byte, 1000)
	send := func(n int) (fwd int) {
		for range n {
			r.srv.HandlePacket(sendPkt(id, payload), addrA)
			fwd += len(r.conn.take())
		}
		return fwd
	}
	if got := send(250); got != rate/1000 {
		t.Errorf("burst: forwarded %d packets, want %d", got, rate/1000)
	}
	if d := r.srv.Stats().Dropped[DropRate]; d != 50 {
		t.Errorf("Dropped[rate] = %d, want 50", d)
	}
	// 10 ms later, 2000 bytes of credit.
	r.clock.Add(10 * time.Millisecond)
	if got := send(5); got != 2 {
		t.Errorf("after 10 ms: forwarded %d packets, want 2", got)
	}
	// The bucket never holds more than its burst.
	r.clock.Add(5 * time.Minute)
	if got := send(300); got != rate/1000 {
		t.Errorf("after 5 minutes: forwarded %d packets, want %d", got, rate/1000)
	}
}

func TestSmallRateGetsMinimumBurst(t *testing.T) {
	r := newRig(t, nil)
	tk := r.ticket(func(tk *ticket.Ticket) { tk.Rate = 1000 })
	id, _ := r.bind(t, addrA, 0, tk)
	r.bind(t, addrB, 1, tk)
	var fwd int
	for range 100 {
		r.srv.HandlePacket(sendPkt(id, make([]byte, 1024)), addrA)
		fwd += len(r.conn.take())
	}
	if fwd != minBurst/1024 {
		t.Errorf("forwarded %d KiB at once on a 1000 B/s ticket, want the %d KiB minimum burst", fwd, minBurst/1024)
	}
}

func TestSessionCap(t *testing.T) {
	r := newRig(t, func(c *Config) { c.MaxSessions = 2; c.IdleTimeout = time.Minute })
	t1, t2, t3 := r.ticket(nil), r.ticket(func(tk *ticket.Ticket) { tk.Budget = 2 }), r.ticket(func(tk *ticket.Ticket) { tk.Budget = 3 })
	r.bind(t, addrA, 0, t1)
	r.bind(t, addrA, 0, t2)
	h, body := r.allocate(t, addrA, 0, t3)
	if code, _, _ := parseError(body); h.typ != TypeError || code != CodeFull {
		t.Fatalf("third allocation: %v %x, want ERROR full", h.typ, body)
	}
	// Existing allocations are still served while full.
	r.bind(t, addrB, 1, t1)
	// t2 idles out; t1 stays active; then t3 fits.
	r.clock.Add(40 * time.Second)
	r.bind(t, addrB, 1, t1)
	r.clock.Add(30 * time.Second)
	r.bind(t, addrA, 0, t3)
	if st := r.srv.Stats(); st.Allocations != 2 || st.AllocationsTotal != 3 {
		t.Errorf("allocations %d (total %d), want 2 (3)", st.Allocations, st.AllocationsTotal)
	}
}

func TestChannelExpires(t *testing.T) {
	r := newRig(t, nil)
	tk := r.ticket(func(tk *ticket.Ticket) { tk.ExpiresAt = tk.IssuedAt.Add(time.Minute) })
	id, _ := r.bind(t, addrA, 0, tk)
	r.bind(t, addrB, 1, tk)
	r.clock.Add(59 * time.Second)
	r.srv.HandlePacket(sendPkt(id, []byte("x")), addrA)
	if len(r.conn.take()) != 1 {
		t.Fatal("not forwarded before expiry")
	}
	r.clock.Add(time.Second)
	r.srv.HandlePacket(sendPkt(id, []byte("x")), addrA)
	if len(r.conn.take()) != 0 {
		t.Fatal("forwarded at expiry")
	}
	if d := r.srv.Stats().Dropped[DropExpired]; d != 1 {
		t.Errorf("Dropped[expired] = %d, want 1", d)
	}
	h, body := r.allocate(t, addrA, 0, tk)
	if code, _, _ := parseError(body); h.typ != TypeError || code != CodeExpired {
		t.Errorf("re-ALLOCATE after expiry: %v %v, want ERROR expired", h.typ, code)
	}
}

func TestPingPong(t *testing.T) {
	r := newRig(t, nil)
	for _, pad := range []int{0, 100} {
		ping := append(appendPing(nil, TypePing, 0x0102030405060708), make([]byte, pad)...)
		r.srv.HandlePacket(ping, addrC)
		sent := r.conn.take()
		if len(sent) != 1 || sent[0].to != addrC {
			t.Fatalf("PING: sent %v", sent)
		}
		if !bytes.Equal(sent[0].b, appendPing(nil, TypePong, 0x0102030405060708)) {
			t.Fatalf("PONG = %x", sent[0].b)
		}
	}
	// Too short, or on a channel: dropped, unanswered.
	r.srv.HandlePacket(appendHeader(nil, TypePing, 0), addrC)
	bad := appendPing(nil, TypePing, 1)
	binary.BigEndian.PutUint64(bad[offChannel:], 5)
	r.srv.HandlePacket(bad, addrC)
	if sent := r.conn.take(); len(sent) != 0 {
		t.Fatalf("answered a bad PING: %v", sent)
	}
	if st := r.srv.Stats(); st.Pings != 2 || st.Dropped[DropMalformed] != 2 {
		t.Errorf("stats %+v", st)
	}
}

func TestUnexpectedTypesDropped(t *testing.T) {
	r := newRig(t, nil)
	for _, typ := range []Type{TypeAllocated, TypeDeliver, TypeError, TypePong} {
		r.srv.HandlePacket(append(appendHeader(nil, typ, 1), make([]byte, 30)...), addrC)
	}
	if sent := r.conn.take(); len(sent) != 0 {
		t.Fatalf("answered: %v", sent)
	}
	if d := r.srv.Stats().Dropped[DropUnexpected]; d != 4 {
		t.Errorf("Dropped[unexpected] = %d, want 4", d)
	}
}

func TestForwardDoesNotAllocate(t *testing.T) {
	r := newRig(t, nil)
	r.conn.keep = false
	tk := r.ticket(func(tk *ticket.Ticket) { tk.Rate = 1 << 31; tk.Budget = 1 << 62 })
	id, _ := func() (uint64, allocatedBody) {
		r.conn.keep = true
		defer func() { r.conn.keep = false }()
		r.bind(t, addrB, 1, tk)
		return r.bind(t, addrA, 0, tk)
	}()
	pkt := sendPkt(id, make([]byte, 1200))
	if n := testing.AllocsPerRun(1000, func() { r.srv.HandlePacket(pkt, addrA) }); n != 0 {
		t.Errorf("forwarding allocates %v times per packet, want 0", n)
	}
	if st := r.srv.Stats(); st.Forwarded < 1000 {
		t.Errorf("forwarded %d, want ≥ 1000", st.Forwarded)
	}
}

func TestAllocateErrorString(t *testing.T) {
	var err error = &AllocateError{Code: CodeFull, Reason: "full"}
	var ae *AllocateError
	if !errors.As(err, &ae) || ae.Code != CodeFull || err.Error() == "" {
		t.Fatal(err)
	}
}

// TestPeerBoundNotice: when the second side binds, the first hears of it in
// an ALLOCATED of its own (peer bound), once; refreshes send no notice.
func TestPeerBoundNotice(t *testing.T) {
	r := newRig(t, nil)
	tk := r.ticket(nil)
	if _, a := r.bind(t, addrA, 0, tk); a.peerBound || len(r.notices) != 0 {
		t.Fatalf("first side: peer bound %v, %d notices; want false, 0", a.peerBound, len(r.notices))
	}
	id, b := r.bind(t, addrB, 1, tk)
	if !b.peerBound || len(r.notices) != 1 || r.notices[0].to != addrA {
		t.Fatalf("second side: peer bound %v, notices %v; want true and one to %v", b.peerBound, r.notices, addrA)
	}
	for _, refresh := range []struct {
		from netip.AddrPort
		side byte
	}{{addrA, 0}, {addrB, 1}} {
		if got, a := r.bind(t, refresh.from, refresh.side, tk); got != id || !a.peerBound || len(r.notices) != 0 {
			t.Fatalf("refresh of side %d: channel %d, peer bound %v, %d notices", refresh.side, got, a.peerBound, len(r.notices))
		}
	}
}

// TestChannelIDDerived: the relay gives a ticket's allocation the channel
// ID both sides compute from the ticket, ChannelID; never zero.
func TestChannelIDDerived(t *testing.T) {
	r := newRig(t, nil)
	for i := range 20 {
		tk := r.ticket(func(tk *ticket.Ticket) { tk.Budget = uint64(i + 1) })
		want := ChannelID(tk)
		sum := sha256.Sum256(tk)
		if want != binary.BigEndian.Uint64(sum[:8]) {
			t.Fatalf("ChannelID = %x, want the first 8 bytes of %x", want, sum)
		}
		idA, _ := r.bind(t, addrA, 0, tk)
		idB, _ := r.bind(t, addrB, 1, tk)
		if idA != want || idB != want {
			t.Fatalf("ticket %d: channels %x and %x, want %x", i, idA, idB, want)
		}
	}
	if id := channelID([sha256.Size]byte{8: 0xff}); id != 1 {
		t.Errorf("a hash starting with 8 zero bytes gives channel %x, want 1", id)
	}
}

// TestChannelIDCollision: a ticket whose channel ID another ticket's
// allocation already has is refused with 4 full, on that channel ID, and
// the holder keeps its channel.
func TestChannelIDCollision(t *testing.T) {
	r := newRig(t, nil)
	tk1 := r.ticket(nil)
	tk2 := r.ticket(func(tk *ticket.Ticket) { tk.Budget++ })
	id1, _ := r.bind(t, addrA, 0, tk1)
	// Make tk2's ID collide with tk1's: move tk1's allocation there.
	id2 := ChannelID(tk2)
	r.srv.mu.Lock()
	a := r.srv.byID[id1]
	delete(r.srv.byID, id1)
	a.id = id2
	r.srv.byID[id2] = a
	r.srv.mu.Unlock()

	h, body := r.allocate(t, addrB, 0, tk2)
	code, reason, err := parseError(body)
	if h.typ != TypeError || err != nil || code != CodeFull || h.channel != id2 {
		t.Fatalf("colliding ALLOCATE answered %v on %x: %v %q; want ERROR 4 on %x", h.typ, h.channel, code, reason, id2)
	}
	if reason != "channel ID in use" {
		t.Errorf("reason %q", reason)
	}
	if st := r.srv.Stats(); st.Allocations != 1 || st.Rejected[CodeFull] != 1 {
		t.Errorf("allocations %d, rejected full %d; want 1, 1", st.Allocations, st.Rejected[CodeFull])
	}
	// tk1's refresh still finds its allocation.
	if id, _ := r.bind(t, addrA, 0, tk1); id != id2 {
		t.Errorf("tk1's refresh: channel %x, want %x", id, id2)
	}
}

// TestDerivedIDGrantsNothing: anyone who has seen the ticket, or one
// packet, knows the channel ID; the ID was never a secret. What the relay
// checks is the sender: before any ALLOCATE the channel does not exist,
// and once a side is bound only that side's address may send, and nobody
// else's packets are held for the other side.
func TestDerivedIDGrantsNothing(t *testing.T) {
	r := newRig(t, nil)
	tk := r.ticket(nil)
	id := ChannelID(tk)
	r.srv.HandlePacket(sendPkt(id, []byte("before")), addrC)
	r.bind(t, addrA, 0, tk)
	r.srv.HandlePacket(sendPkt(id, []byte("held?")), addrC)
	r.bind(t, addrB, 1, tk)
	if len(r.delivered) != 0 {
		t.Fatalf("bob received %d packets from a third party", len(r.delivered))
	}
	st := r.srv.Stats()
	if st.Dropped[DropUnknownChannel] != 1 || st.Dropped[DropNotSide] != 1 || st.Held != 0 {
		t.Errorf("dropped %v, held %d; want 1 unknown-channel, 1 not-a-side, none held", st.Dropped, st.Held)
	}
}

// TestTCPSideIsTheConnection: a side bound over TCP is its connection, not
// an address: a UDP datagram from the connection's own address and port
// is a third party's.
func TestTCPSideIsTheConnection(t *testing.T) {
	checkNoLeaks(t)
	r := newLoopRelay(t)
	relay := net.UDPAddrFromAddrPort(r.udp)
	for try := 0; ; try++ {
		c, id, _ := r.rawTCPChannel(t)
		// The UDP port with the TCP connection's number: free, nearly
		// always.
		pc, err := net.ListenUDP("udp4", net.UDPAddrFromAddrPort(c.LocalAddr().(*net.TCPAddr).AddrPort()))
		if err != nil {
			if try < 5 {
				continue
			}
			t.Fatal(err)
		}
		defer pc.Close()
		pc.WriteTo(sendPkt(id, []byte("spoof")), relay)
		waitUntil(t, "the datagram dropped as a third party's", func() bool { return r.srv.Stats().Dropped[DropNotSide] == 1 })
		if st := r.srv.Stats(); st.Held != 0 {
			t.Errorf("held %d packets from a third party", st.Held)
		}
		return
	}
}
