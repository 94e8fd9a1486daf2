package relay

import (
	"bytes"
	"fmt"
	"net"
	"net/netip"
	"testing"
	"testing/synctest"
	"time"

	"github.com/parley-p2p/parley/directory/ticket"
)

// received reads what pc receives until nothing comes for 50 ms, and
// returns the bytes and the DELIVERs among the packets. The relay writes
// synchronously and loopback delivers synchronously, so once the relay
// has handled what it was sent, all it will send is in pc.
func received(t *testing.T, pc *net.UDPConn) (bytes, delivers int) {
	t.Helper()
	buf := make([]byte, MaxPacketSize)
	for {
		pc.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
		n, err := pc.Read(buf)
		if err != nil {
			return bytes, delivers
		}
		bytes += n
		if h, _, err := parseHeader(buf[:n]); err == nil && h.typ == TypeDeliver {
			delivers++
		}
	}
}

// sendAndSettle sends n SENDs of size bytes on channel id from pc, and
// waits until the relay has handled them: forwarded, held or dropped.
func sendAndSettle(t *testing.T, r *loopRelay, pc *net.UDPConn, id uint64, n, size int) {
	t.Helper()
	relay := net.UDPAddrFromAddrPort(r.udp)
	settled := func() uint64 {
		st := r.srv.Stats()
		return st.Forwarded + st.Held + st.Drops()
	}
	before := settled()
	for i := range n {
		if _, err := pc.WriteTo(sendPkt(id, fill(uint64(i), size)), relay); err != nil {
			t.Fatal(err)
		}
		// One at a time, so that the count below cannot mistake a held
		// packet's later delivery for another SEND.
		waitUntil(t, fmt.Sprintf("SEND %d handled", i), func() bool { return settled() >= before+uint64(i+1) })
	}
}

// TestUnvalidatedSideCredit: a ticket holder who can forge source addresses
// binds side B to a victim's address, which never sends anything, and
// sends from side A as much as the ticket allows. The victim receives at
// most AmplificationFactor times what was forged in its name; the rest is
// held, then dropped, and counted. Whether the forged ALLOCATE binds B for
// the first time or moves it from the holder's own validated address.
func TestUnvalidatedSideCredit(t *testing.T) {
	for _, tc := range []struct {
		name string
		move bool // B first bound, and validated, from the holder's socket
		pad  int  // the forged ALLOCATE's size (0: 202)
	}{{"bind", false, PaddedAllocateSize}, {"move", true, 0}} {
		t.Run(tc.name, func(t *testing.T) {
			checkNoLeaks(t)
			r := newLoopRelay(t)
			relay := net.UDPAddrFromAddrPort(r.udp)
			pcA, victim := loopUDPConn(t), loopUDPConn(t)
			id, tk := r.rawChannel(t, pcA, time.Now(), nil) // A validated
			if tc.move {
				rawAllocate(t, loopUDPConn(t), relay, 1, tk)
				received(t, pcA) // the peer-bound notice
			}
			// What the relay believes the victim sent it: a forged ALLOCATE
			// (the test hands it to the server with the victim's address;
			// the server's answers go out on its real socket).
			vAddr := victim.LocalAddr().(*net.UDPAddr).AddrPort()
			forged := appendAllocate(nil, 1, tk, tc.pad)
			r.srv.HandlePacket(forged, vAddr)
			credit := AmplificationFactor * len(forged)

			sendAndSettle(t, r, pcA, id, 40, 1200)
			got, delivers := received(t, victim)
			if got > credit {
				t.Fatalf("the victim received %d bytes on a %d-byte forged ALLOCATE: more than %d×", got, len(forged), AmplificationFactor)
			}
			if got == 0 || (tc.pad > 0 && delivers == 0) {
				t.Fatalf("the victim received %d bytes (%d DELIVERs): not even the ALLOCATED, or no DELIVER in a padded ALLOCATE's credit", got, delivers)
			}
			st := r.srv.Stats()
			if st.Dropped[DropUnvalidated] != uint64(40-delivers-MaxHeldPackets) || st.Held != MaxHeldPackets {
				t.Errorf("held %d, dropped %v; want %d held, %d unvalidated", st.Held, st.Dropped, MaxHeldPackets, 40-delivers-MaxHeldPackets)
			}
			t.Logf("forged %d bytes; the victim received %d (%d DELIVERs); held %d, dropped %d", len(forged), got, delivers, st.Held, st.Dropped[DropUnvalidated])

			// A second forged ALLOCATE adds its credit, which releases held
			// packets; still no more than AmplificationFactor× in all.
			r.srv.HandlePacket(forged, vAddr)
			more, _ := received(t, victim)
			if got+more > 2*credit {
				t.Fatalf("the victim received %d bytes on 2 forged ALLOCATEs of %d: more than %d×", got+more, len(forged), AmplificationFactor)
			}
			if st := r.srv.Stats(); st.Validated != 1+b2i(tc.move) {
				t.Errorf("%d sides validated, want only the holder's", st.Validated)
			}
		})
	}
}

func b2i(b bool) uint64 {
	if b {
		return 1
	}
	return 0
}

// TestConfirmLiftsCredit: a side bound by an unpadded ALLOCATE receives at
// most 3 × 202 bytes, its ALLOCATED included, until its CONFIRM; what the
// other side sends beyond that is held, in order (even a packet the credit
// would cover waits behind one it does not); the CONFIRM delivers it, and
// from then on everything goes through.
func TestConfirmLiftsCredit(t *testing.T) {
	checkNoLeaks(t)
	r := newLoopRelay(t)
	relay := net.UDPAddrFromAddrPort(r.udp)
	pcA, pcB := loopUDPConn(t), loopUDPConn(t)
	id, tk := r.rawChannel(t, pcA, time.Now(), nil)
	_, al := rawAllocatedUnconfirmed(t, pcB, relay, 1, tk, 0)
	received(t, pcA) // the peer-bound notice

	// The credit is 3 × 202 − 41 = 565: the 500 and the 10 (512 + 22
	// bytes) fit; the 600 does not, and the 8 waits behind it though its
	// 20 bytes would fit the 31 left.
	sizes := []int{500, 10, 600, 8, 1000}
	var want [][]byte
	for i, n := range sizes {
		p := fill(uint64(i), n)
		want = append(want, p)
		pcA.WriteTo(sendPkt(id, p), relay)
	}
	waitUntil(t, "2 forwarded, 3 held", func() bool { st := r.srv.Stats(); return st.Forwarded == 2 && st.Held == 3 })
	readDelivers(t, pcB, id, want[0], want[1]) // and nothing more
	if got := AllocatedSize + 2*HeaderSize + len(want[0]) + len(want[1]); got > AmplificationFactor*AllocateSize {
		t.Fatalf("B received %d bytes before its CONFIRM, more than %d × %d", got, AmplificationFactor, AllocateSize)
	}
	pcB.WriteTo(appendConfirm(nil, id, confirmBody{side: 1, token: al.token}), relay)
	readDelivers(t, pcB, id, want[2:]...)
	var after [][]byte
	for i := range 20 {
		p := fill(uint64(100+i), 1200)
		after = append(after, p)
		pcA.WriteTo(sendPkt(id, p), relay)
	}
	readDelivers(t, pcB, id, after...)
	st := r.srv.Stats()
	if st.Validated != 2 || st.Forwarded != uint64(len(sizes)+20) || st.Drops() != 0 {
		t.Errorf("validated %d, forwarded %d, dropped %v; want 2, %d, none", st.Validated, st.Forwarded, st.Dropped, len(sizes)+20)
	}
	if n, _, total := holding(r.srv, id); n != 0 || total != 0 {
		t.Errorf("still holding %d packets, %d bytes", n, total)
	}
}

// TestConfirmRejects: a CONFIRM validates nothing with a wrong token, with
// a token made for another address, from an address that is not the side,
// or for the other side; each is counted. The right one then does.
func TestConfirmRejects(t *testing.T) {
	checkNoLeaks(t)
	r := newLoopRelay(t)
	relay := net.UDPAddrFromAddrPort(r.udp)
	pcA, pcB, pcZ := loopUDPConn(t), loopUDPConn(t), loopUDPConn(t)
	id, tk := r.rawChannel(t, pcA, time.Now(), nil)
	// Z binds side B first, so it holds a token of its own, then B moves
	// to pcB.
	_, alZ := rawAllocatedUnconfirmed(t, pcZ, relay, 1, tk, 0)
	_, al := rawAllocatedUnconfirmed(t, pcB, relay, 1, tk, 0)
	early := [][]byte{fill(1, 1000), fill(2, 1000), fill(3, 1000)}
	for _, p := range early {
		pcA.WriteTo(sendPkt(id, p), relay)
	}
	waitUntil(t, "3 held", func() bool { return r.srv.Stats().Held == 3 })

	bad := al.token
	bad[3] ^= 0x10
	bAddr := pcB.LocalAddr().(*net.UDPAddr).AddrPort()
	confirm := func(pc *net.UDPConn, side byte, tok [TokenSize]byte) {
		if _, err := pc.WriteTo(appendConfirm(nil, id, confirmBody{side: side, token: tok}), relay); err != nil {
			t.Fatal(err)
		}
	}
	confirm(pcB, 1, bad)                                                                      // a wrong token
	r.srv.HandlePacket(appendConfirm(nil, id, confirmBody{side: 1, token: alZ.token}), bAddr) // Z's token, forged from B's address
	confirm(pcZ, 1, al.token)                                                                 // B's token, from Z
	confirm(pcZ, 1, alZ.token)                                                                // Z's own: Z is no side now
	confirm(pcB, 0, al.token)                                                                 // B is not side A
	r.srv.HandlePacket(appendConfirm(nil, id^1, confirmBody{side: 1, token: al.token}), bAddr)
	waitUntil(t, "the CONFIRMs counted", func() bool {
		st := r.srv.Stats()
		return st.Dropped[DropBadToken] == 2 && st.Dropped[DropNotSide] == 3 && st.Dropped[DropUnknownChannel] == 1
	})
	expectNothing(t, pcB)
	if st := r.srv.Stats(); st.Validated != 1 || st.Forwarded != 0 {
		t.Fatalf("validated %d, forwarded %d; want 1 (side A), 0", st.Validated, st.Forwarded)
	}
	confirm(pcB, 1, al.token)
	readDelivers(t, pcB, id, early...)
	if st := r.srv.Stats(); st.Validated != 2 {
		t.Errorf("validated %d, want 2", st.Validated)
	}
}

// TestFirstFlightOnBind: what the first side sent before the second bound
// (here three 1,000-byte packets, a handshake initiation and early data
// in size) reaches the second side right behind its ALLOCATED, before any
// CONFIRM, when its ALLOCATE is padded as a client pads it: its credit
// covers the flight. An unpadded ALLOCATE, as older peers send, still
// binds the side, but the flight waits for the CONFIRM. A side bound over
// TCP needs neither.
func TestFirstFlightOnBind(t *testing.T) {
	for _, tc := range []struct {
		name   string
		tcp    bool
		pad    int
		atOnce bool // the flight comes before any CONFIRM
	}{
		{"padded", false, PaddedAllocateSize, true},
		{"unpadded", false, 0, false},
		{"tcp", true, 0, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			checkNoLeaks(t)
			r := newLoopRelay(t)
			relay := net.UDPAddrFromAddrPort(r.udp)
			pcA := loopUDPConn(t)
			id, tk := r.rawChannel(t, pcA, time.Now(), nil)
			flight := [][]byte{fill(1, 1000), fill(2, 1000), fill(3, 1000)}
			for _, p := range flight {
				pcA.WriteTo(sendPkt(id, p), relay)
			}
			waitUntil(t, "the flight held", func() bool { return r.srv.Stats().Held == 3 })

			var read func() (header, []byte)
			var nothing func()
			var confirm func(tok [TokenSize]byte)
			if tc.tcp {
				b := newRawSide(t, r, "tcp")
				b.write(t, appendAllocate(nil, 1, tk, tc.pad))
				read = func() (header, []byte) { return b.read(t) }
				nothing = func() { b.nothing(t) }
			} else {
				pcB := loopUDPConn(t)
				pcB.WriteTo(appendAllocate(nil, 1, tk, tc.pad), relay)
				read = func() (header, []byte) { return readRelay(t, pcB) }
				nothing = func() { expectNothing(t, pcB) }
				confirm = func(tok [TokenSize]byte) {
					pcB.WriteTo(appendConfirm(nil, id, confirmBody{side: 1, token: tok}), relay)
				}
			}
			h, body := read()
			al, err := parseAllocated(body)
			if h.typ != TypeAllocated || err != nil || !al.peerBound {
				t.Fatalf("B's first packet: %v, want ALLOCATED, peer bound", h.typ)
			}
			if !tc.atOnce {
				nothing()
				confirm(al.token)
			}
			for i, w := range flight {
				h, body := read()
				if h.typ != TypeDeliver || h.channel != id || !bytes.Equal(body, w) {
					t.Fatalf("packet %d: %v on %x, %d bytes; want the flight's DELIVER", i, h.typ, h.channel, len(body))
				}
			}
			nothing()
			st := r.srv.Stats()
			if wantValid := uint64(1) + b2i(!tc.atOnce); st.Validated != wantValid || st.Forwarded != 3 || st.Drops() != 0 {
				t.Errorf("validated %d, forwarded %d, dropped %v; want %d, 3, none", st.Validated, st.Forwarded, st.Dropped, wantValid)
			}
		})
	}
}

// TestClientConfirms: a client pads its UDP ALLOCATEs to
// PaddedAllocateSize, and answers every ALLOCATED of a UDP channel (the
// answer, a late one, the peer-bound notice) with a CONFIRM of its side
// that echoes the ALLOCATED's token.
func TestClientConfirms(t *testing.T) {
	synctest.Test(t, testClientConfirms)
}

func testClientConfirms(t *testing.T) {
	r := newRig(t, nil)
	conn := &captureConn{keep: true}
	c := NewClient(conn, nil)
	defer c.Close()
	tk := r.ticket(nil)
	id := ChannelID(tk)
	out := allocateAsync(c, 1, tk)
	synctest.Wait()
	if sent := conn.take(); len(sent[0].b) != PaddedAllocateSize || sent[0].to != addrC {
		t.Fatalf("the client's ALLOCATE is %d bytes to %v, want %d to %v", len(sent[0].b), sent[0].to, PaddedAllocateSize, addrC)
	}
	body := allocatedBody{expires: r.clock.Now().Add(10 * time.Minute).Unix()}
	for i, tok := range [][TokenSize]byte{{1, 2, 3}, {1, 2, 3}, {4, 5, 6}} {
		body.token = tok
		body.peerBound = i == 2
		c.HandlePacket(appendAllocated(nil, id, body), addrC)
		sent := conn.take()
		want := appendConfirm(nil, id, confirmBody{side: 1, token: tok})
		if len(sent) != 1 || sent[0].to != addrC || !bytes.Equal(sent[0].b, want) {
			t.Fatalf("ALLOCATED %d: sent %v, want the CONFIRM %x to %v", i, sent, want, addrC)
		}
	}
	if o := <-out; o.err != nil {
		t.Fatal(o.err)
	}
	// The relay answers no CONFIRM, so each is sent again, in case it
	// was lost: three ALLOCATEDs, each CONFIRM repeated at confirmResends.
	time.Sleep(confirmResends[len(confirmResends)-1] + time.Second)
	if sent := conn.take(); len(sent) != 3*len(confirmResends) {
		t.Fatalf("%d packets after the CONFIRMs, want their %d repeats", len(sent), 3*len(confirmResends))
	}
}

// TestTokenLifetime: a token is accepted while its secret is the current
// or the previous one: for at least tokenSecretLifetime, at most twice
// that. (One made as its secret starts, as here, is accepted through the
// next secret's lifetime.)
func TestTokenLifetime(t *testing.T) {
	for _, tc := range []struct {
		wait  time.Duration
		valid bool
	}{{tokenSecretLifetime - time.Second, true}, {tokenSecretLifetime + time.Second, true}, {2*tokenSecretLifetime + time.Second, false}} {
		r := newRig(t, nil)
		tk := r.ticket(func(tk *ticket.Ticket) { tk.ExpiresAt = tk.IssuedAt.Add(time.Hour) })
		r.bind(t, addrA, 0, tk)
		id, al := r.bindUnconfirmed(t, addrB, 1, tk)
		r.clock.Add(tc.wait)
		r.srv.HandlePacket(appendConfirm(nil, id, confirmBody{side: 1, token: al.token}), addrB)
		st := r.srv.Stats()
		if got := st.Validated == 2; got != tc.valid || st.Dropped[DropBadToken] != b2i(!tc.valid) {
			t.Errorf("a token %v old: validated %v, %d bad tokens; want %v", tc.wait, got, st.Dropped[DropBadToken], tc.valid)
		}
	}
}

// TestCreditUnits: the credit rules on a rig, byte for byte: an ALLOCATE
// of n bytes adds 3n and its ALLOCATED takes 41; a SEND or CONFIRM from
// the side's address adds 3 × its size; a DELIVER takes its size; a
// refresh from where the side is bound keeps what it had (and its
// validation), and a move starts afresh.
func TestCreditUnits(t *testing.T) {
	r := newRig(t, nil)
	tk := r.ticket(nil)
	id, _ := r.bind(t, addrA, 0, tk)
	r.bindUnconfirmed(t, addrB, 1, tk)
	a := r.srv.byID[id]
	credit := func() int64 { a.mu.Lock(); defer a.mu.Unlock(); return a.credit[1] }
	want := int64(3*AllocateSize - AllocatedSize)
	if c := credit(); c != want {
		t.Fatalf("after a %d-byte ALLOCATE: credit %d, want %d", AllocateSize, c, want)
	}
	r.srv.HandlePacket(sendPkt(id, make([]byte, 100)), addrB)
	r.srv.HandlePacket(sendPkt(id, make([]byte, 300)), addrA)
	want += 3*112 - 312
	if c := credit(); c != want {
		t.Fatalf("after a SEND each way: credit %d, want %d", c, want)
	}
	r.srv.HandlePacket(appendConfirm(nil, id, confirmBody{side: 1}), addrB) // a bad token still counts as received
	want += 3 * ConfirmSize
	if c := credit(); c != want {
		t.Fatalf("after a bad CONFIRM: credit %d, want %d", c, want)
	}
	r.srv.HandlePacket(appendAllocate(nil, 1, tk, 1000), addrB)
	want += 3*1000 - AllocatedSize
	if c := credit(); c != want {
		t.Fatalf("after a refresh: credit %d, want %d", c, want)
	}
	moved := netip.AddrPortFrom(addrB.Addr(), addrB.Port()+1)
	r.srv.HandlePacket(appendAllocate(nil, 1, tk, 0), moved)
	if c := credit(); c != 3*AllocateSize-AllocatedSize {
		t.Fatalf("after a move: credit %d, want %d", c, 3*AllocateSize-AllocatedSize)
	}
	// Validated sides stay so on a refresh, not on a move.
	confirmAt(r.srv, id, 1, moved)
	r.srv.HandlePacket(appendAllocate(nil, 1, tk, 0), moved)
	a.mu.Lock()
	v1 := a.valid[1]
	a.mu.Unlock()
	r.srv.HandlePacket(appendAllocate(nil, 1, tk, 0), addrB)
	a.mu.Lock()
	v2 := a.valid[1]
	a.mu.Unlock()
	if !v1 || v2 {
		t.Errorf("validated after a refresh %v, after a move %v; want true, false", v1, v2)
	}
}

// TestConfirmInBatchKeepsOrder: in one batch of the Mux's reader, a SEND
// the credit covers is queued for the batch's sendmmsg, the next is held,
// and then the CONFIRM lets it go: the queued DELIVER must still leave
// first.
func TestConfirmInBatchKeepsOrder(t *testing.T) {
	checkNoLeaks(t)
	r := newLoopRelay(t)
	relay := net.UDPAddrFromAddrPort(r.udp)
	pcA, pcB := loopUDPConn(t), loopUDPConn(t)
	id, tk := r.rawChannel(t, pcA, time.Now(), nil)
	_, al := rawAllocatedUnconfirmed(t, pcB, relay, 1, tk, 0)
	received(t, pcA) // the peer-bound notice
	aAddr := pcA.LocalAddr().(*net.UDPAddr).AddrPort()
	bAddr := pcB.LocalAddr().(*net.UDPAddr).AddrPort()
	p1, p2, p3 := fill(1, 500), fill(2, 1000), fill(3, 100)
	var tx txBatch
	r.srv.handleBatched(sendPkt(id, p1), aAddr, &tx) // within the credit: queued
	r.srv.handleBatched(sendPkt(id, p2), aAddr, &tx) // beyond: held
	r.srv.handleBatched(appendConfirm(nil, id, confirmBody{side: 1, token: al.token}), bAddr, &tx)
	r.srv.handleBatched(sendPkt(id, p3), aAddr, &tx)
	r.srv.flush(&tx)
	readDelivers(t, pcB, id, p1, p2, p3)
}
