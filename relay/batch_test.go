package relay

import (
	"bytes"
	"encoding/binary"
	"errors"
	"net"
	"net/netip"
	"os"
	"runtime"
	"testing"
	"time"

	"golang.org/x/net/ipv4"

	"github.com/parley-p2p/parley/directory/ticket"
)

// loopUDPConn is a loopback UDP socket with room for a few bursts.
func loopUDPConn(t testing.TB) *net.UDPConn {
	t.Helper()
	pc := loopUDP(t).(*net.UDPConn)
	pc.SetReadBuffer(4 << 20)
	pc.SetWriteBuffer(4 << 20)
	return pc
}

// batchedIO reports whether this platform reads and writes in batches, so
// that the tests can check the batched path is the one they ran.
var batchedIO = runtime.GOOS == "linux"

// fill makes a SEND's payload: an 8-byte sequence number, then bytes
// derived from it, size bytes in all.
func fill(seq uint64, size int) []byte {
	p := make([]byte, size)
	binary.BigEndian.PutUint64(p, seq)
	for i := 8; i < size; i++ {
		p[i] = byte(seq) ^ byte(i)
	}
	return p
}

// burstSizes are the payload sizes of one burst: runs of equal sizes (one
// GSO message each) ended by a shorter packet or a change of size.
var burstSizes = []int{
	1232, 1232, 1232, 1232, 1232, 1232, 1232, 1232, 1232, 1232, 300,
	1452, 1452, 1452, 1452, 1452, 1452, 1452, 1452,
	8, 8, 8, 64, 1232, 1232, 1232, 1232, 1452,
	600, 600, 600, 600, 600, 600, 600, 600, 600, 600, 600, 600, 599,
}

// TestBatchedRelayBothWays sends bursts of SENDs both ways at once through
// a Server on loopback sockets, with malformed and stray packets mixed in:
// the senders use sendmmsg, so the relay's Mux reads them in batches and
// writes their DELIVERs in batches (on Linux, as GSO runs). Every SEND must
// arrive once, intact and in order, and every bad packet be counted and
// dropped without disturbing the others.
func TestBatchedRelayBothWays(t *testing.T) {
	checkNoLeaks(t)
	r := newLoopRelay(t)
	if _, ok := r.srv.batch.(plainWriter); ok == batchedIO {
		t.Fatalf("server writes with %T on %s", r.srv.batch, runtime.GOOS)
	}
	relay := net.UDPAddrFromAddrPort(r.udp)
	pcs := [2]*net.UDPConn{loopUDPConn(t), loopUDPConn(t)}
	var ka, kb [32]byte
	ka[0], kb[0] = 'A', 'B'
	tk := r.ticket(ka, kb)
	id := rawAllocate(t, pcs[0], relay, 0, tk)
	if id2 := rawAllocate(t, pcs[1], relay, 1, tk); id2 != id {
		t.Fatalf("channels %x and %x", id, id2)
	}
	// Side 0 hears that side 1 bound (the peer-bound notice, §6.2).
	{
		buf := make([]byte, 64)
		pcs[0].SetReadDeadline(time.Now().Add(5 * time.Second))
		n, err := pcs[0].Read(buf)
		if err != nil {
			t.Fatalf("side 0: no peer-bound notice: %v", err)
		}
		h, body, err := parseHeader(buf[:n])
		a, aerr := parseAllocated(body)
		if err != nil || aerr != nil || h.typ != TypeAllocated || h.channel != id || !a.peerBound {
			t.Fatalf("side 0 received %x, want a peer-bound ALLOCATED on channel %x", buf[:n], id)
		}
	}

	const rounds = 40
	var wantMalformed, wantUnknown uint64
	// burst returns side's next burst: its SENDs (sequence numbers from
	// seq) with bad packets among them, and the payloads the other side
	// should receive.
	burst := func(side int, seq uint64) (msgs []ipv4.Message, want [][]byte) {
		add := func(b []byte) { msgs = append(msgs, ipv4.Message{Buffers: [][]byte{b}, Addr: relay}) }
		for i, size := range burstSizes {
			p := fill(seq+uint64(i), size)
			want = append(want, p)
			add(sendPkt(id, p))
			switch i % 10 {
			case 3: // reserved bytes set
				b := sendPkt(id, p)
				b[offReserved] = 1
				add(b)
				wantMalformed++
			case 5: // too short for a header
				add([]byte{FormVersion, byte(TypeSend), 0})
				wantMalformed++
			case 6: // a channel the relay does not hold
				add(sendPkt(id^1, p))
				wantUnknown++
			case 8: // a PING without its nonce
				add(appendHeader(nil, TypePing, 0))
				wantMalformed++
			case 9: // a DELIVER: for a peer's Client, which the relay has not
				add(append(appendHeader(nil, TypeDeliver, id), p...))
			}
		}
		return msgs, want
	}
	got := [2]int{}
	buf := make([]byte, 2048)
	var seq [2]uint64
	seq[1] = 1 << 32 // side 1's sequence numbers
	for range rounds {
		var want [2][][]byte
		for side, pc := range pcs {
			msgs, w := burst(side, seq[side])
			seq[side] += uint64(len(w))
			want[1-side] = w
			if err := sendAll(ipv4.NewPacketConn(pc), msgs); err != nil {
				t.Fatal(err)
			}
		}
		for side, pc := range pcs {
			pc.SetReadDeadline(time.Now().Add(5 * time.Second))
			for _, w := range want[side] {
				n, err := pc.Read(buf)
				if err != nil {
					t.Fatalf("side %d, after %d packets: %v", side, got[side], err)
				}
				h, body, err := parseHeader(buf[:n])
				if err != nil || h.typ != TypeDeliver || h.channel != id {
					t.Fatalf("side %d received %x…: want a DELIVER on channel %x", side, buf[:min(n, 16)], id)
				}
				if !bytes.Equal(body, w) {
					gs, ws := uint64(0), binary.BigEndian.Uint64(w)
					if len(body) >= 8 {
						gs = binary.BigEndian.Uint64(body)
					}
					t.Fatalf("side %d: got %d bytes, seq %d; want %d bytes, seq %d (lost, duplicated, reordered or damaged)", side, len(body), gs, len(w), ws)
				}
				got[side]++
			}
		}
	}
	// Nothing more may come: a duplicate would sit in a socket now.
	for side, pc := range pcs {
		pc.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
		if n, err := pc.Read(buf); err == nil {
			t.Errorf("side %d received %d bytes more than was sent", side, n)
		}
	}
	want := uint64(rounds * len(burstSizes))
	st := r.srv.Stats()
	if st.Forwarded != 2*want {
		t.Errorf("Forwarded = %d, want %d", st.Forwarded, 2*want)
	}
	if st.Dropped[DropMalformed] != wantMalformed || st.Dropped[DropUnknownChannel] != wantUnknown || st.Drops() != wantMalformed+wantUnknown {
		t.Errorf("Dropped = %v, want %d malformed and %d unknown-channel", st.Dropped, wantMalformed, wantUnknown)
	}
	if max, ok := gsoMax(r.srv.batch); ok {
		t.Logf("GSO up to %d-byte segments", max)
	}
}

// sendAll writes msgs with sendmmsg, in as many calls as it takes.
func sendAll(pc *ipv4.PacketConn, msgs []ipv4.Message) error {
	for len(msgs) > 0 {
		n, err := pc.WriteBatch(msgs, 0)
		if err != nil {
			return err
		}
		msgs = msgs[n:]
	}
	return nil
}

// TestBatchWriter gives a writer a batch that must be cut into several
// messages: a run longer than a GSO message may be, in segments and in
// bytes; runs ended by a shorter datagram or a longer one; two addresses'
// datagrams interleaved; and an address the socket cannot reach. Each receiver must get
// its datagrams whole and in order, and only the unreachable one fail.
func TestBatchWriter(t *testing.T) {
	pc := loopUDPConn(t)
	w := newBatchWriter(pc)
	if _, ok := w.(plainWriter); ok == batchedIO {
		t.Fatalf("writer %T on %s", w, runtime.GOOS)
	}
	dst := [2]*net.UDPConn{loopUDPConn(t), loopUDPConn(t)}
	addr := [2]netip.AddrPort{dst[0].LocalAddr().(*net.UDPAddr).AddrPort(), dst[1].LocalAddr().(*net.UDPAddr).AddrPort()}
	unreachable := netip.MustParseAddrPort("[2001:db8::1]:9") // IPv6, from an IPv4 socket

	var tx txBatch
	var want [2][][]byte
	seq := uint64(0)
	add := func(to int, size int) {
		p := fill(seq, size)
		seq++
		tx.msgs = append(tx.msgs, txMsg{b: p, to: addr[to]})
		want[to] = append(want[to], p)
	}
	for range 70 { // more than maxGSOSegments
		add(0, 1000)
	}
	add(0, 500) // shorter: ends the run
	add(0, 1000)
	for range 60 { // more than maxGSOBytes
		add(0, 1400)
	}
	for range 20 { // two addresses in turn: a message each
		add(0, 1000)
		add(1, 300)
	}
	add(1, 800)
	add(1, 800)
	add(1, 1200) // longer: a new message
	add(1, 1200)
	add(0, 1200) // another address: a new message
	tx.msgs = append(tx.msgs, txMsg{b: fill(seq, 100), to: unreachable})
	add(1, 1200)
	add(1, 12)

	if err := w.writeBatch(&tx); err == nil {
		t.Error("writeBatch returned no error for an unreachable address")
	}
	for i, m := range tx.msgs {
		if m.failed != (m.to == unreachable) {
			t.Errorf("message %d to %v: failed = %v", i, m.to, m.failed)
		}
	}
	buf := make([]byte, 2048)
	for i, pc := range dst {
		pc.SetReadDeadline(time.Now().Add(5 * time.Second))
		for k, w := range want[i] {
			n, err := pc.Read(buf)
			if err != nil {
				t.Fatalf("receiver %d, datagram %d of %d: %v", i, k, len(want[i]), err)
			}
			if !bytes.Equal(buf[:n], w) {
				t.Fatalf("receiver %d, datagram %d: got %d bytes %x…, want %d bytes %x…", i, k, n, buf[:min(n, 8)], len(w), w[:8])
			}
		}
		pc.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
		if n, err := pc.Read(buf); err == nil {
			t.Errorf("receiver %d got %d bytes more", i, n)
		}
	}
	if max, ok := gsoMax(w); ok && max != 0 && max != MaxPacketSize {
		t.Errorf("GSO limited to %d-byte segments on loopback", max)
	}
}

// TestBatchReader reads datagrams of every size class, from two senders,
// through the reader the Mux uses, and then times out on the deadline.
func TestBatchReader(t *testing.T) {
	pc := loopUDPConn(t)
	r, size := newBatchReader(pc)
	if (size > 1) != batchedIO {
		t.Fatalf("reader %T reads %d at once on %s", r, size, runtime.GOOS)
	}
	msgs := make([]rxMsg, size)
	for i := range msgs {
		msgs[i].buf = make([]byte, MaxPacketSize+1)
	}
	src := [2]*net.UDPConn{loopUDPConn(t), loopUDPConn(t)}
	type sent struct {
		b    []byte
		from netip.AddrPort
	}
	var want []sent
	sizes := []int{8, 1232, MaxPacketSize, 1452, 8, 20}
	for i := range 3 * batchSize {
		s := src[i%2]
		p := fill(uint64(i), sizes[i%len(sizes)])
		if _, err := s.WriteTo(p, pc.LocalAddr()); err != nil {
			t.Fatal(err)
		}
		want = append(want, sent{p, s.LocalAddr().(*net.UDPAddr).AddrPort()})
	}
	pc.SetReadDeadline(time.Now().Add(5 * time.Second))
	for len(want) > 0 {
		n, err := r.readBatch(msgs)
		if err != nil {
			t.Fatalf("%d datagrams left: %v", len(want), err)
		}
		if n < 1 || n > len(msgs) {
			t.Fatalf("readBatch = %d", n)
		}
		for _, m := range msgs[:n] {
			if !bytes.Equal(m.buf[:m.n], want[0].b) || m.from != want[0].from {
				t.Fatalf("got %d bytes from %v, want %d from %v", m.n, m.from, len(want[0].b), want[0].from)
			}
			want = want[1:]
		}
	}
	pc.SetReadDeadline(time.Now().Add(20 * time.Millisecond))
	if _, err := r.readBatch(msgs); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Errorf("read past the deadline: %v, want a timeout", err)
	}
	pc.Close()
	if _, err := r.readBatch(msgs); !errors.Is(err, net.ErrClosed) {
		t.Errorf("read on a closed socket: %v, want net.ErrClosed", err)
	}
}

// TestBatchedForwardDoesNotAllocate forwards batches on a real socket, as
// the Mux does: reading, forwarding and writing a batch allocates nothing.
func TestBatchedForwardDoesNotAllocate(t *testing.T) {
	r := newRig(t, func(c *Config) { c.Now = time.Now })
	r.clock.t = time.Now()
	pc := loopUDPConn(t)
	srv := NewServer(r.srv.cfg, pc)
	sinkA, sinkB := loopUDPConn(t), loopUDPConn(t)
	a, b := sinkA.LocalAddr().(*net.UDPAddr).AddrPort(), sinkB.LocalAddr().(*net.UDPAddr).AddrPort()
	tk := r.ticket(func(tk *ticket.Ticket) { tk.Rate = 1<<32 - 1; tk.Budget = 1 << 62 })
	srv.HandlePacket(appendAllocate(nil, 0, tk, 0), a)
	srv.HandlePacket(appendAllocate(nil, 1, tk, 0), b)
	var id uint64
	for k := range srv.byID {
		id = k
	}
	confirmAt(srv, id, 0, a)
	confirmAt(srv, id, 1, b)
	slots := make([][]byte, batchSize)
	for i := range slots {
		slots[i] = make([]byte, MaxPacketSize+1)
	}
	pkt := sendPkt(id, make([]byte, 1232))
	var tx txBatch
	allocs := testing.AllocsPerRun(100, func() {
		for _, s := range slots {
			n := copy(s, pkt)
			srv.handleBatched(s[:n], a, &tx)
		}
		srv.flush(&tx)
	})
	if allocs != 0 {
		t.Errorf("a batch of %d allocates %v times", batchSize, allocs)
	}
	if st := srv.Stats(); st.Forwarded < 100*batchSize || st.Drops() != 0 {
		t.Errorf("stats %+v", st)
	}
}
