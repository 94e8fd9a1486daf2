package relay

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/parley-p2p/parley/directory/ticket"
	"github.com/parley-p2p/parley/natlab"
	"github.com/parley-p2p/parley/transport"
)

// lab is a natlab world with a public supernode running a relay Server,
// and alice and bob each behind a symmetric NAT.
type lab struct {
	w          *natlab.World
	natA, natB *natlab.NAT
	alice, bob *natlab.Host
	srv        *Server
	relayAddr  netip.AddrPort
	dir        ed25519.PrivateKey
	relayKey   transport.PrivateKey

	// tap sees every packet the supernode receives, before the server.
	tap func(b []byte, from netip.AddrPort)
}

func newLab(t *testing.T) *lab {
	t.Helper()
	l := &lab{w: natlab.New(natlab.Config{Seed: 1})}
	t.Cleanup(func() { l.w.Close() })
	inet := l.w.NewNetwork("internet", netip.MustParsePrefix("203.0.113.0/24"))
	lanA := l.w.NewNetwork("lan-a", netip.MustParsePrefix("192.168.1.0/24"))
	lanB := l.w.NewNetwork("lan-b", netip.MustParsePrefix("192.168.1.0/24"))
	symmetric := func(in *natlab.Network) natlab.NATConfig {
		return natlab.NATConfig{Inside: in, Outside: inet, Mapping: natlab.AddressAndPortDependent, Filtering: natlab.AddressAndPortDependent}
	}
	l.natA = l.w.NewNAT("nat-a", symmetric(lanA))
	l.natB = l.w.NewNAT("nat-b", symmetric(lanB))
	super := l.w.NewHost("supernode", inet, natlab.Link{Delay: 5 * time.Millisecond, Rate: 1e9})
	l.alice = l.w.NewHost("alice", lanA, natlab.Link{Delay: 10 * time.Millisecond, Rate: 200e6})
	l.bob = l.w.NewHost("bob", lanB, natlab.Link{Delay: 15 * time.Millisecond, Rate: 200e6})

	pub, priv, err := ed25519.GenerateKey(nil)
	if err != nil {
		t.Fatal(err)
	}
	l.dir = priv
	l.relayKey = newPrivateKey(t)
	pc, err := super.ListenPacket(context.Background(), "udp4", ":7000")
	if err != nil {
		t.Fatal(err)
	}
	l.relayAddr = netip.AddrPortFrom(super.Addr(), 7000)
	l.srv = NewServer(Config{DirectoryKey: pub, Identity: l.relayKey.Public()}, pc)
	// The supernode's demultiplexer, reduced to relay packets.
	done := make(chan struct{})
	go func() {
		defer close(done)
		conn := pc.(*natlab.Conn)
		buf := make([]byte, 65536)
		for {
			n, from, err := conn.ReadFromUDPAddrPort(buf)
			if err != nil {
				return
			}
			if l.tap != nil {
				l.tap(buf[:n], from)
			}
			if IsRelayPacket(buf[:n]) {
				l.srv.HandlePacket(buf[:n], from)
			}
		}
	}()
	t.Cleanup(func() {
		pc.Close()
		<-done
	})
	return l
}

func newPrivateKey(t testing.TB) transport.PrivateKey {
	t.Helper()
	k, err := transport.GeneratePrivateKey()
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// ticket signs a ticket for a and b through the lab's supernode.
func (l *lab) ticket(a, b transport.PublicKey, mod func(*ticket.Ticket)) []byte {
	now := time.Now()
	tk := ticket.Ticket{
		IssuedAt: now, ExpiresAt: now.Add(10 * time.Minute),
		A: a, B: b, Relay: l.relayKey.Public(),
		Budget: 1 << 30, Rate: 100 << 20,
	}
	if mod != nil {
		mod(&tk)
	}
	return ticket.Sign(l.dir, tk)
}

// peer is one device: its socket, relay client and Mux.
type peer struct {
	key    transport.PrivateKey
	pc     net.PacketConn
	client *Client
	mux    *Mux
}

func newPeer(t testing.TB, pc net.PacketConn) *peer {
	t.Helper()
	p := &peer{key: newPrivateKey(t), pc: pc}
	p.client = NewClient(pc, nil)
	p.mux = NewMux(pc, p.client)
	t.Cleanup(func() {
		p.mux.Close()
		p.client.Close()
		pc.Close()
	})
	return p
}

func labPeer(t *testing.T, h *natlab.Host) *peer {
	t.Helper()
	pc, err := h.ListenPacket(context.Background(), "udp4", ":4000")
	if err != nil {
		t.Fatal(err)
	}
	return newPeer(t, pc)
}

// marker is the plaintext the transfers are made of: if the relay ever
// saw it, the transport would not be encrypting.
var marker = []byte("PARLEY/RELAY/PLAINTEXT/MARKER/0123456789/abcdef/")

// markerData is a stream's content: 64-byte blocks, each the marker and the
// block's number, so that a misplaced block changes the hash.
type markerData struct{ block, end uint64 }

func (d *markerData) Read(b []byte) (int, error) {
	n := 0
	for len(b)-n >= 64 && d.block < d.end {
		copy(b[n:], marker)
		copy(b[n+48:], fmt.Sprintf("%016x", d.block))
		n += 64
		d.block++
	}
	if n == 0 {
		return 0, io.EOF
	}
	return n, nil
}

// transferStreams sends size bytes (a multiple of 64) on each of n streams
// from client to server and checks each arrives byte-exact by SHA-256.
func transferStreams(t testing.TB, client, server *transport.Session, n int, size int64) {
	t.Helper()
	ctx := context.Background()
	var wg sync.WaitGroup
	got := make([][32]byte, n)
	want := make([][32]byte, n)
	ids := make(map[uint64]int)
	var mu sync.Mutex
	for i := range n {
		st, err := client.OpenStream(ctx)
		if err != nil {
			t.Fatal(err)
		}
		ids[st.ID()] = i
		wg.Go(func() {
			h := sha256.New()
			src := &markerData{block: uint64(i) << 40, end: uint64(i)<<40 + uint64(size/64)}
			if _, err := io.Copy(io.MultiWriter(st, h), src); err != nil {
				t.Errorf("stream %d: write: %v", i, err)
			}
			st.CloseWrite()
			want[i] = [32]byte(h.Sum(nil))
		})
	}
	for range n {
		st, err := server.AcceptStream(ctx)
		if err != nil {
			t.Fatal(err)
		}
		wg.Go(func() {
			h := sha256.New()
			m, err := io.Copy(h, st)
			if err != nil || m != size {
				t.Errorf("stream %d: read %d bytes, %v; want %d", st.ID(), m, err, size)
			}
			mu.Lock()
			got[ids[st.ID()]] = [32]byte(h.Sum(nil))
			mu.Unlock()
		})
	}
	wg.Wait()
	for i := range n {
		if got[i] != want[i] {
			t.Errorf("stream %d: received data differs from sent data", i)
		}
	}
}

// session dials bob from alice through their relay channels and returns
// both ends.
func session(t testing.TB, alice, bob *peer, aliceCh *Channel) (*transport.Session, *transport.Session) {
	t.Helper()
	ctx := context.Background()
	ln, err := transport.Listen(bob.mux, bob.key, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	ep := transport.NewEndpoint(alice.mux, alice.key, nil)
	t.Cleanup(func() { ep.Close() })
	cs, err := ep.Dial(ctx, alice.mux.VirtualAddr(aliceCh), bob.key.Public())
	if err != nil {
		t.Fatalf("dial through the relay: %v", err)
	}
	t.Cleanup(func() {
		cs.Close()
		<-cs.Done()
	})
	ss, err := ln.Accept(ctx)
	if err != nil {
		t.Fatal(err)
	}
	return cs, ss
}

func TestEndToEndThroughRelay(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		l := newLab(t)
		var sends, leaks atomic.Int64
		l.tap = func(b []byte, from netip.AddrPort) {
			if len(b) > 1 && b[0] == FormVersion && Type(b[1]) == TypeSend {
				sends.Add(1)
				if bytes.Contains(b, marker[:24]) {
					leaks.Add(1)
				}
			}
		}
		alice, bob := labPeer(t, l.alice), labPeer(t, l.bob)
		tk := l.ticket(alice.key.Public(), bob.key.Public(), nil)
		ctx := context.Background()
		chA, err := alice.client.Allocate(ctx, l.relayAddr, 0, tk)
		if err != nil {
			t.Fatal(err)
		}
		if chA.PeerBound() {
			t.Error("alice allocated first, yet her peer is bound")
		}
		chB, err := bob.client.Allocate(ctx, l.relayAddr, 1, tk)
		if err != nil {
			t.Fatal(err)
		}
		if !chB.PeerBound() || chA.ID() != chB.ID() {
			t.Fatalf("bob: peer bound %v, channels %x and %x", chB.PeerBound(), chA.ID(), chB.ID())
		}

		// The tap can see plaintext: a raw SEND of the marker is caught.
		// (Bob's Mux drops it: it is not a Parley packet.)
		if err := chA.Send(marker); err != nil {
			t.Fatal(err)
		}
		if !eventually(func() bool { return leaks.Load() == 1 }) {
			t.Fatal("the tap did not see a plaintext SEND")
		}
		leaks.Store(0)

		cs, ss := session(t, alice, bob, chA)
		if !bob.mux.IsVirtual(ss.RemoteAddr().(*net.UDPAddr).AddrPort()) {
			t.Errorf("bob sees alice at %v, want a virtual address", ss.RemoteAddr())
		}
		start := time.Now()
		const size = 4 << 20
		transferStreams(t, cs, ss, 2, size)
		el := time.Since(start)
		st := l.srv.Stats()
		t.Logf("8 MiB through the relay in %v virtual (%.0f Mbit/s); relay %+v", el, 8*8*(1<<20)/el.Seconds()/1e6, st)
		if leaks.Load() != 0 {
			t.Errorf("%d of %d packets the relay forwarded contained plaintext", leaks.Load(), sends.Load())
		}
		if st.ForwardedBytes < 2*size {
			t.Errorf("the relay forwarded %d bytes, less than the %d transferred", st.ForwardedBytes, 2*size)
		}
		if sends.Load() < 1000 {
			t.Errorf("the tap saw only %d SENDs", sends.Load())
		}
	})
}

// eventually waits, in a synctest bubble's virtual time, up to a second
// for cond.
func eventually(cond func() bool) bool {
	for range 1000 {
		if cond() {
			return true
		}
		time.Sleep(time.Millisecond)
	}
	return cond()
}

func TestLabAllocateRefused(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		l := newLab(t)
		alice := labPeer(t, l.alice)
		tk := l.ticket(alice.key.Public(), alice.key.Public(), func(tk *ticket.Ticket) { tk.Relay[0] ^= 1 })
		_, err := alice.client.Allocate(context.Background(), l.relayAddr, 0, tk)
		var ae *AllocateError
		if !errors.As(err, &ae) || ae.Code != CodeNotForUs {
			t.Fatalf("Allocate = %v, want AllocateError not for this relay", err)
		}
	})
}

func TestLabAllocateTimeout(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		l := newLab(t)
		alice := labPeer(t, l.alice)
		tk := l.ticket(alice.key.Public(), alice.key.Public(), nil)
		nowhere := netip.AddrPortFrom(l.relayAddr.Addr(), 7001)
		start := time.Now()
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		defer cancel()
		_, err := alice.client.Allocate(ctx, nowhere, 0, tk)
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("Allocate to nowhere = %v", err)
		}
		if el := time.Since(start); el != 3*time.Second {
			t.Errorf("gave up after %v, want 3s", el)
		}
	})
}

func TestLabPing(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		l := newLab(t)
		alice := labPeer(t, l.alice)
		rtt, err := alice.client.Ping(context.Background(), l.relayAddr)
		if err != nil {
			t.Fatal(err)
		}
		// alice's link 10 ms and the supernode's 5 ms, each way, plus a
		// few microseconds of serialization.
		if rtt < 30*time.Millisecond || rtt > 30100*time.Microsecond {
			t.Errorf("RTT %v, want 30ms", rtt)
		}
		if l.srv.Stats().Pings != 1 {
			t.Errorf("pings %d", l.srv.Stats().Pings)
		}
	})
}

// TestLabRebinding: alice's NAT rebinds mid-session; her relay side moves
// when she refreshes her channel, and the session carries on.
func TestLabRebinding(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		l := newLab(t)
		alice, bob := labPeer(t, l.alice), labPeer(t, l.bob)
		tk := l.ticket(alice.key.Public(), bob.key.Public(), nil)
		ctx := context.Background()
		chA, err := alice.client.Allocate(ctx, l.relayAddr, 0, tk)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := bob.client.Allocate(ctx, l.relayAddr, 1, tk); err != nil {
			t.Fatal(err)
		}
		cs, ss := session(t, alice, bob, chA)
		transferStreams(t, cs, ss, 1, 64<<10)

		l.natA.Rebind()
		// alice's packets now come from a new port: the relay drops them.
		before := l.srv.Stats().Dropped[DropNotSide]
		if err := chA.Send([]byte{0xC1}); err != nil {
			t.Fatal(err)
		}
		if !eventually(func() bool { return l.srv.Stats().Dropped[DropNotSide] == before+1 }) {
			t.Fatal("the relay accepted a packet from alice's new port before she refreshed")
		}
		if err := chA.Refresh(ctx); err != nil {
			t.Fatal(err)
		}
		transferStreams(t, cs, ss, 1, 64<<10)
	})
}
