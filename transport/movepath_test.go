package transport

import (
	"context"
	"net"
	"net/netip"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/parley-p2p/parley/natlab"
)

// forwarder relays datagrams between two fixed peers, like a dumb relay: it
// cannot read them, it only moves them. Closing its socket kills the path.
func forwarder(t *testing.T, pc net.PacketConn, a, b netip.AddrPort) *atomic.Uint64 {
	var n atomic.Uint64
	go func() {
		buf := make([]byte, 65536)
		for {
			m, from, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			src := from.(*net.UDPAddr).AddrPort()
			to := a
			if src == a {
				to = b
			}
			n.Add(1)
			pc.WriteTo(buf[:m], net.UDPAddrFromAddrPort(to))
		}
	}()
	return &n
}

// relayedPair builds alice, bob and a forwarding "relay" host on natlab
// (alice's and bob's links l, the relay's one-way delay relayDelay), has
// alice dial bob through the relay, and returns both sessions, both
// addresses and the relay's socket.
type relayedPair struct {
	client, server *Session
	aAddr, bAddr   netip.AddrPort
	relay          net.PacketConn
	forwarded      *atomic.Uint64
}

func newRelayedPair(t *testing.T, seed uint64, l natlab.Link, relayDelay time.Duration) *relayedPair {
	t.Helper()
	w := natlab.New(natlab.Config{Seed: seed})
	t.Cleanup(func() { w.Close() })
	inet := w.NewNetwork("internet", netip.MustParsePrefix("203.0.113.0/24"))
	alice := w.NewHost("alice", inet, l)
	bob := w.NewHost("bob", inet, l)
	relayHost := w.NewHost("relay", inet, natlab.Link{Delay: relayDelay})
	ctx := context.Background()
	pcA, _ := alice.ListenPacket(ctx, "udp4", ":4000")
	pcB, _ := bob.ListenPacket(ctx, "udp4", ":5000")
	pcR, _ := relayHost.ListenPacket(ctx, "udp4", ":6000")
	rp := &relayedPair{
		aAddr: pcA.LocalAddr().(*net.UDPAddr).AddrPort(),
		bAddr: pcB.LocalAddr().(*net.UDPAddr).AddrPort(),
		relay: pcR,
	}
	rp.forwarded = forwarder(t, pcR, rp.aAddr, rp.bAddr)
	bobKey := newKey(t)
	ln, _ := Listen(pcB, bobKey, nil)
	t.Cleanup(func() { ln.Close() })
	// Alice reaches bob only through the relay at first.
	var err error
	rp.client, err = Dial(ctx, pcA, pcR.LocalAddr(), bobKey.Public(), &Config{PrivateKey: newKey(t)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { rp.client.Close(); <-rp.client.Done() })
	if rp.server, err = ln.Accept(ctx); err != nil {
		t.Fatal(err)
	}
	return rp
}

func TestMovePathRelayToDirectMidTransfer(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		rp := newRelayedPair(t, 11, natlab.Link{Delay: 10 * time.Millisecond, Rate: 100e6, Loss: 0.005}, 30*time.Millisecond)
		client, server, aAddr, bAddr := rp.client, rp.server, rp.aAddr, rp.bAddr
		ctx := context.Background()
		if got := server.CurrentPath().Remote; got != rp.relay.LocalAddr().(*net.UDPAddr).AddrPort() {
			t.Fatalf("bob sees alice at %v, want the relay", got)
		}
		var moved atomic.Bool
		transfer(t, client, server, 2, 4<<20, func(total int64) {
			if total > 3<<20 && !moved.Swap(true) {
				go func() {
					if err := client.MovePath(ctx, bAddr); err != nil {
						t.Errorf("move to direct: %v", err)
						return
					}
					// The relay may now die: the session must not notice.
					rp.relay.Close()
				}()
			}
		})
		if got := client.CurrentPath(); got.Remote != bAddr || !got.Validated {
			t.Fatalf("alice's path is %+v, want direct to %v", got, bAddr)
		}
		if got := server.CurrentPath().Remote; got != aAddr {
			t.Fatalf("bob still sends to %v, want alice directly at %v", got, aAddr)
		}
		if rp.forwarded.Load() == 0 {
			t.Fatal("nothing went through the relay")
		}
		t.Logf("relay forwarded %d packets before the move", rp.forwarded.Load())

		// Moving to an address where nobody answers fails and changes nothing.
		dead := netip.MustParseAddrPort("203.0.113.250:9")
		if err := client.MovePath(ctx, dead); err != ErrPathUnreachable {
			t.Fatalf("move to a dead address: %v", err)
		}
		if client.CurrentPath().Remote != bAddr {
			t.Fatal("a failed move changed the path")
		}
	})
}

// TestUsePathSkipsValidation: a path the caller vouches for is used at
// once, and the peer follows one way later (MovePath would first spend a
// round trip on PATH_CHALLENGE); the session keeps working across it.
func TestUsePathSkipsValidation(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		// 20 ms one way, alice to bob.
		rp := newRelayedPair(t, 12, natlab.Link{Delay: 10 * time.Millisecond}, 30*time.Millisecond)
		client, server, aAddr, bAddr := rp.client, rp.server, rp.aAddr, rp.bAddr
		start := time.Now()
		if err := client.UsePath(context.Background(), bAddr); err != nil {
			t.Fatal(err)
		}
		if got := client.CurrentPath(); got.Remote != bAddr || time.Since(start) != 0 {
			t.Fatalf("after UsePath alice's path is %+v, %v later; want %v at once", got, time.Since(start), bAddr)
		}
		for server.CurrentPath().Remote != aAddr {
			if time.Since(start) > time.Second {
				t.Fatalf("bob still sends to %v", server.CurrentPath().Remote)
			}
			time.Sleep(time.Millisecond) // virtual time: a poll, not a wait for luck
		}
		if d := time.Since(start); d > 21*time.Millisecond {
			t.Errorf("bob followed %v after UsePath; want one way, 20 ms", d)
		}
		rp.relay.Close() // the relay is gone: the session must not need it
		transfer(t, client, server, 1, 256<<10, nil)
		if got := client.Stats().PathChanges; got != 1 {
			t.Errorf("alice's path changes = %d, want 1", got)
		}
	})
}

// TestMoveDoesNotFlap: while the peer streams to us over a relay, we move
// the session onto the direct path. The peer's packets still in flight on
// the relay (with higher packet numbers than anything it has sent direct)
// must not pull us back, and the peer's PATH_CHALLENGE alone must not move
// it: each side changes path exactly once (RFC 9000 §9.3).
func TestMoveDoesNotFlap(t *testing.T) {
	for _, mode := range []string{"MovePath", "UsePath"} {
		t.Run(mode, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				rp := newRelayedPair(t, 13, natlab.Link{Delay: 5 * time.Millisecond, Rate: 50e6}, 40*time.Millisecond)
				client, server, aAddr, bAddr := rp.client, rp.server, rp.aAddr, rp.bAddr
				ctx := context.Background()
				var moved atomic.Bool
				// bob streams to alice; alice moves in the middle.
				transfer(t, server, client, 1, 2<<20, func(total int64) {
					if total > 512<<10 && !moved.Swap(true) {
						go func() {
							var err error
							if mode == "UsePath" {
								err = client.UsePath(ctx, bAddr)
							} else {
								err = client.MovePath(ctx, bAddr)
							}
							if err != nil {
								t.Errorf("%s: %v", mode, err)
							}
						}()
					}
				})
				if got := client.CurrentPath().Remote; got != bAddr {
					t.Errorf("alice ended on %v, want direct %v", got, bAddr)
				}
				if got := server.CurrentPath().Remote; got != aAddr {
					t.Errorf("bob ended on %v, want direct %v", got, aAddr)
				}
				if n := client.Stats().PathChanges; n != 1 {
					t.Errorf("alice changed path %d times, want 1", n)
				}
				if n := server.Stats().PathChanges; n != 1 {
					t.Errorf("bob changed path %d times, want 1", n)
				}
			})
		})
	}
}

// TestPeerMoveValidatedUnderFullWindow: alice streams to bob over a relay
// that dies; her congestion window fills with packets lost there, and her
// probe timeouts back off. Eight seconds later bob moves the session onto the direct path (as a daemon
// does when it finds the relay dead). Alice follows and must validate bob's
// new address: her PATH_CHALLENGE cannot wait behind the full window, or
// validation times out and sends her back to the dead relay.
func TestPeerMoveValidatedUnderFullWindow(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		rp := newRelayedPair(t, 14, natlab.Link{Delay: 5 * time.Millisecond, Rate: 20e6}, 40*time.Millisecond)
		client, server, aAddr, bAddr := rp.client, rp.server, rp.aAddr, rp.bAddr
		var moved atomic.Bool
		transfer(t, client, server, 1, 4<<20, func(total int64) {
			if total > 1<<20 && !moved.Swap(true) {
				go func() {
					rp.relay.Close()
					time.Sleep(8 * time.Second)
					if err := server.UsePath(context.Background(), aAddr); err != nil {
						t.Errorf("bob's UsePath: %v", err)
					}
				}()
			}
		})
		if got := client.CurrentPath(); got.Remote != bAddr || !got.Validated {
			t.Errorf("alice's path is %+v, want bob's direct address %v, validated", got, bAddr)
		}
		// Once: a failed validation would have sent her back to the relay
		// and onto the direct path again at bob's next keepalive.
		if n := client.Stats().PathChanges; n != 1 {
			t.Errorf("alice changed path %d times, want 1", n)
		}
	})
}
