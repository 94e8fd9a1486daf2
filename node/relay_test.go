package node_test

import (
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/parley-p2p/parley/node"
)

// TestRelayed: alice shares no addresses (relay-only), so her session with
// bob goes through carol, a supernode that registered with the directory
// (dial-back verified) and relays on her one socket. All three run on real
// loopback sockets, since the directory's dial-back uses a real socket.
func TestRelayed(t *testing.T) {
	wd := newLoopbackWorld(t)
	dir := t.TempDir()
	carol := wd.startNodeConfig("carol", node.Config{DataDir: filepath.Join(dir, "carol"), Supernode: "on"})
	a := wd.startNodeConfig("alice", node.Config{DataDir: filepath.Join(dir, "alice"), Supernode: "off", RelayOnly: true})
	b := wd.startNodeConfig("bob", node.Config{DataDir: filepath.Join(dir, "bob"), Supernode: "off"})
	a.Handle("echo", echo)
	b.Handle("echo", echo)
	if err := carol.Register(t.Context(), "carol", password); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "carol volunteering", func() bool { return carol.Status().Supernode })
	befriend(t, a, b, "alice", "bob")

	roundTrip(t, a, "bob", pattern(100_000, 5))
	roundTrip(t, b, "alice", pattern(100_000, 6))
	carolAddr := carol.LocalAddr().String()
	for _, c := range []struct {
		d    *daemon
		peer string
		why  string
	}{{a, "bob", "relay-only mode"}, {b, "alice", ""}} {
		var cs node.ContactStatus
		for _, x := range c.d.Status().Contacts {
			if x.Username == c.peer {
				cs = x
			}
		}
		if cs.Path != "relayed" || cs.Relay != carolAddr || cs.RTT <= 0 || cs.Why == "" || !strings.Contains(cs.Why, c.why) {
			t.Errorf("%s's status of %s: %+v, want relayed via %s with an RTT and a reason", c.d.Status().Username, c.peer, cs, carolAddr)
		}
	}
	if s := a.Status(); len(s.Supernodes) != 1 || s.Supernodes[0].Addr != carolAddr || s.Supernodes[0].RTT <= 0 {
		t.Errorf("alice's supernodes: %+v", s.Supernodes)
	}
}
