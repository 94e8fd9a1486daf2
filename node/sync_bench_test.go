package node_test

import (
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	"github.com/parley-p2p/parley/natlab"
	"github.com/parley-p2p/parley/node"
)

// TestSyncConnectTimes measures, in virtual time on natlab, how long a
// connection takes to carry its first message and to be direct: 12.5 ms
// access links (50 ms RTT between two peers, 25 ms to the directory, whose
// connections add 12.5 ms each way), a supernode on the internet. The
// figures go to the test log (go test -run ConnectTimes -v ./node/) and
// docs/benchmarks.md; the test fails only if a pair that should be direct
// is not, or takes absurdly long.
func TestSyncConnectTimes(t *testing.T) {
	type scenario struct {
		name     string
		a, b     *[2]natlab.Behavior // mapping, filtering; nil: public
		direct   bool
		relayOut bool // cut alice's route to bob at first: relayed first
	}
	eim := &[2]natlab.Behavior{natlab.EndpointIndependent, natlab.AddressAndPortDependent}
	sym := &[2]natlab.Behavior{natlab.AddressAndPortDependent, natlab.AddressAndPortDependent}
	var pub *[2]natlab.Behavior
	scenarios := []scenario{
		{name: "public–EIM", a: pub, b: eim, direct: true},
		{name: "EIM–EIM", a: eim, b: eim, direct: true},
		{name: "EIM–symmetric", a: eim, b: sym, direct: true},
		{name: "symmetric–EIM", a: sym, b: eim, direct: true},
		{name: "symmetric–symmetric (relayed)", a: sym, b: sym},
	}
	var table strings.Builder
	fmt.Fprintf(&table, "| pair | first message (incl. its echo) | path then | direct after |\n|---|---|---|---|\n")
	for _, sc := range scenarios {
		t.Run(sc.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				wd := newSyncWorld(t, syncWorldConfig{Link: wanLink, ServerDelay: 12500 * time.Microsecond})
				dir := t.TempDir()
				wd.startSupernode("carol", dir)
				host := func(name string, nb *[2]natlab.Behavior) *natlab.Host {
					if nb == nil {
						return wd.publicHost(name)
					}
					h, _ := wd.natHost(name, nb[0], nb[1])
					return h
				}
				a := wd.startNodeConfig("alice", node.Config{DataDir: filepath.Join(dir, "alice"), Listener: host("alice", sc.a), Supernode: "off"})
				b := wd.startNodeConfig("bob", node.Config{DataDir: filepath.Join(dir, "bob"), Listener: host("bob", sc.b), Supernode: "off"})
				a.Handle("echo", echo)
				b.Handle("echo", echo)
				befriend(t, a, b, "alice", "bob")
				// Let both settle (supernodes measured, candidates known).
				time.Sleep(5 * time.Second)

				t0 := time.Now()
				roundTrip(t, a, "bob", []byte("hello"))
				first := time.Since(t0)
				pathThen := contactStatus(a, "bob").Path
				direct := time.Duration(-1)
				for time.Since(t0) < 10*time.Second {
					if contactStatus(a, "bob").Path == "direct" && contactStatus(b, "alice").Path == "direct" {
						direct = time.Since(t0)
						break
					}
					time.Sleep(time.Millisecond)
				}
				ds := "never"
				if direct >= 0 {
					ds = direct.String()
				}
				fmt.Fprintf(&table, "| %s | %v | %s | %s |\n", sc.name, first, pathThen, ds)
				t.Logf("%s || %s", contactStatus(a, "bob"), contactStatus(b, "alice"))
				if sc.direct && direct < 0 {
					t.Errorf("%s: not direct after 10 s", sc.name)
				}
				if first > 5*time.Second {
					t.Errorf("%s: first message after %v", sc.name, first)
				}
			})
		})
	}
	t.Logf("50 ms RTT between peers, 25 ms to the directory (virtual time):\n%s", table.String())
}
