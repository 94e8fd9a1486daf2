package relay

import (
	"context"
	"crypto/ed25519"
	"errors"
	"net"
	"net/netip"
	"runtime"
	"sync/atomic"
	"testing"
	"time"

	"github.com/parley-p2p/parley/directory/ticket"
)

// blockedUDP is a socket on a network that drops all UDP: writes fail,
// nothing arrives.
type blockedUDP struct {
	net.PacketConn
	writes atomic.Int64
}

var errBlocked = errors.New("test: UDP blocked")

func (b *blockedUDP) WriteTo(p []byte, a net.Addr) (int, error) {
	b.writes.Add(1)
	return 0, errBlocked
}

// loopRelay is a supernode on real loopback sockets: a UDP socket served
// through a Mux (ServeRelay) and a TCP listener.
type loopRelay struct {
	srv     *Server
	udp     netip.AddrPort
	tcp     string
	dir     ed25519.PrivateKey
	relayID [32]byte
}

func newLoopRelay(t testing.TB) *loopRelay { return newLoopRelayWith(t, nil) }

// newLoopRelayWith is newLoopRelay with its Config changed by mod.
func newLoopRelayWith(t testing.TB, mod func(*Config)) *loopRelay {
	t.Helper()
	pub, priv, _ := ed25519.GenerateKey(nil)
	r := &loopRelay{dir: priv}
	r.relayID = newPrivateKey(t).Public()
	pc := loopUDP(t)
	r.udp = pc.LocalAddr().(*net.UDPAddr).AddrPort()
	cfg := Config{DirectoryKey: pub, Identity: r.relayID}
	if mod != nil {
		mod(&cfg)
	}
	r.srv = NewServer(cfg, pc)
	mux := NewMux(pc, nil)
	mux.ServeRelay(r.srv)
	t.Cleanup(func() { mux.Close() })
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	r.tcp = ln.Addr().String()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.srv.ServeTCP(ctx, ln) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("ServeTCP: %v", err)
		}
	})
	return r
}

func (r *loopRelay) ticket(a, b [32]byte) []byte {
	now := time.Now()
	return ticket.Sign(r.dir, ticket.Ticket{IssuedAt: now, ExpiresAt: now.Add(time.Hour), A: a, B: b, Relay: r.relayID, Budget: 1 << 40, Rate: 1 << 30})
}

func loopUDP(t testing.TB) net.PacketConn {
	t.Helper()
	pc, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pc.Close() })
	return pc
}

// checkNoLeaks fails t if goroutines started during the test outlive it.
func checkNoLeaks(t *testing.T) {
	before := runtime.NumGoroutine()
	t.Cleanup(func() {
		deadline := time.Now().Add(5 * time.Second)
		for runtime.NumGoroutine() > before {
			if time.Now().After(deadline) {
				buf := make([]byte, 1<<16)
				t.Errorf("%d goroutines left behind:\n%s", runtime.NumGoroutine()-before, buf[:runtime.Stack(buf, true)])
				return
			}
			time.Sleep(10 * time.Millisecond)
		}
	})
}

// TestTCPFallback: alice's UDP is blocked, so she binds her side over TCP;
// bob binds his over UDP; a transport session between them works.
func TestTCPFallback(t *testing.T) {
	checkNoLeaks(t)
	r := newLoopRelay(t)
	blocked := &blockedUDP{PacketConn: loopUDP(t)}
	alice, bob := newPeer(t, blocked), newPeer(t, loopUDP(t))
	tk := r.ticket(alice.key.Public(), bob.key.Public())
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()

	// Over UDP alice gets nowhere.
	short, cancelShort := context.WithTimeout(ctx, 300*time.Millisecond)
	if _, err := alice.client.Allocate(short, r.udp, 0, tk); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("UDP allocate with UDP blocked: %v", err)
	}
	cancelShort()

	chA, err := alice.client.AllocateTCP(ctx, r.tcp, nil, 0, tk)
	if err != nil {
		t.Fatal(err)
	}
	if chA.Relay() != "tcp:"+r.tcp {
		t.Errorf("Relay() = %q", chA.Relay())
	}
	chB, err := bob.client.Allocate(ctx, r.udp, 1, tk)
	if err != nil {
		t.Fatal(err)
	}
	if chA.ID() != chB.ID() || !chB.PeerBound() {
		t.Fatalf("channels %x, %x; bob's peer bound %v", chA.ID(), chB.ID(), chB.PeerBound())
	}
	writesBefore := blocked.writes.Load()
	cs, ss := session(t, alice, bob, chA)
	transferStreams(t, cs, ss, 2, 2<<20)
	// And the other way.
	transferStreams(t, ss, cs, 1, 1<<20)
	if w := blocked.writes.Load(); w != writesBefore {
		t.Errorf("alice's transport wrote %d datagrams to UDP, want all over TCP", w-writesBefore)
	}
	if st := r.srv.Stats(); st.ForwardedBytes < 5<<20 || st.Drops() != 0 {
		t.Errorf("relay stats %+v", st)
	}

	// A second channel shares the TCP connection.
	tk2 := r.ticket(alice.key.Public(), [32]byte{9})
	ch2, err := alice.client.AllocateTCP(ctx, r.tcp, nil, 0, tk2)
	if err != nil {
		t.Fatal(err)
	}
	if ch2.tcp != chA.tcp {
		t.Error("a second TCP channel to the same relay dialled a new connection")
	}
	// Refreshing over TCP keeps the channel.
	if err := chA.Refresh(ctx); err != nil {
		t.Fatal(err)
	}
	// A refused ALLOCATE over TCP is an AllocateError.
	bad := r.ticket(alice.key.Public(), bob.key.Public())
	bad[10] ^= 1
	var ae *AllocateError
	if _, err := alice.client.AllocateTCP(ctx, r.tcp, nil, 0, bad); !errors.As(err, &ae) || ae.Code != CodeBadTicket {
		t.Errorf("AllocateTCP with a forged ticket: %v", err)
	}
}

// TestTCPJunk: a TCP client sending a bad frame length is disconnected;
// junk packets inside good frames are dropped and counted.
func TestTCPJunk(t *testing.T) {
	checkNoLeaks(t)
	r := newLoopRelay(t)
	c, err := net.Dial("tcp", r.tcp)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	junk := []byte{0, 12, 0xD1, 9, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0}
	if _, err := c.Write(junk); err != nil {
		t.Fatal(err)
	}
	// A PING over TCP is answered over TCP.
	ping := appendPing([]byte{0, PingSize}, TypePing, 77)
	if _, err := c.Write(ping); err != nil {
		t.Fatal(err)
	}
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	got := make([]byte, 2+PingSize)
	if _, err := readFull(c, got); err != nil {
		t.Fatal(err)
	}
	if want := appendPing([]byte{0, PingSize}, TypePong, 77); string(got) != string(want) {
		t.Fatalf("PONG over TCP = %x, want %x", got, want)
	}
	if d := r.srv.Stats().Dropped[DropMalformed]; d != 1 {
		t.Errorf("Dropped[malformed] = %d, want 1", d)
	}
	// A frame too short for a header ends the connection.
	c.Write([]byte{0, 3, 1, 2, 3})
	if _, err := c.Read(make([]byte, 1)); err == nil {
		t.Error("connection still open after a bad frame length")
	}
}

func readFull(c net.Conn, b []byte) (int, error) {
	n := 0
	for n < len(b) {
		m, err := c.Read(b[n:])
		n += m
		if err != nil {
			return n, err
		}
	}
	return n, nil
}
