package transport

import (
	"context"
	"net/netip"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/parley-p2p/parley/natlab"
)

func TestPingMeasuresRTT(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		_, a, b := labWorld(t, natlab.Link{Delay: 20 * time.Millisecond})
		client, server := labPair(t, a, b, nil)
		for i := 0; i < 3; i++ {
			rtt, err := client.Ping(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			// 40 ms of link plus at most the peer's ACK delay.
			if rtt < 40*time.Millisecond || rtt > 40*time.Millisecond+defaultMaxAckDelay+time.Millisecond {
				t.Fatalf("ping %d: rtt %v on a 40 ms link", i, rtt)
			}
		}
		if time.Since(server.LastReceived()) > 50*time.Millisecond {
			t.Fatalf("server last heard from the client %v ago", time.Since(server.LastReceived()))
		}
		// On a dead link Ping waits until its context ends.
		a.SetLink(natlab.Link{Loss: 1})
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		if _, err := client.Ping(ctx); err != context.DeadlineExceeded {
			t.Fatalf("ping on a dead link: %v", err)
		}
		a.SetLink(natlab.Link{Delay: 20 * time.Millisecond})
	})
}

func TestNATRebindingMidTransfer(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		w := natlab.New(natlab.Config{Seed: 5})
		t.Cleanup(func() { w.Close() })
		inet := w.NewNetwork("internet", netip.MustParsePrefix("203.0.113.0/24"))
		lan := w.NewNetwork("lan", netip.MustParsePrefix("192.168.1.0/24"))
		nat := w.NewNAT("nat", natlab.NATConfig{Inside: lan, Outside: inet, Mapping: natlab.EndpointIndependent, Filtering: natlab.AddressAndPortDependent})
		alice := w.NewHost("alice", lan, natlab.Link{Delay: 5 * time.Millisecond, Rate: 100e6})
		bob := w.NewHost("bob", inet, natlab.Link{Delay: 15 * time.Millisecond})
		client, server := labPair(t, alice, bob, nil)
		before := server.CurrentPath().Remote
		var rebound atomic.Bool
		transfer(t, client, server, 2, 3<<20, func(total int64) {
			if total > 2<<20 && !rebound.Swap(true) {
				nat.Rebind() // the NAT forgets alice's mapping: her next packet gets a new port
			}
		})
		after := server.CurrentPath()
		if after.Remote == before || after.Remote.Addr() != nat.PublicAddr() || !after.Validated {
			t.Fatalf("bob's path to alice: %v → %+v", before, after)
		}
	})
}
