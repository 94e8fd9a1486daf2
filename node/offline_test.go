package node_test

import (
	"path/filepath"
	"testing"
	"time"

	"github.com/parley-p2p/parley/natlab"
)

// TestServerDownMidSession: an established session keeps working while
// the directory server is down.
func TestServerDownMidSession(t *testing.T) {
	wd := newWorld(t)
	ah := wd.publicHost("alice")
	bh, _ := wd.natHost("bob", natlab.EndpointIndependent, natlab.AddressAndPortDependent)
	dir := t.TempDir()
	a := wd.startNode("alice", filepath.Join(dir, "alice"), ah)
	b := wd.startNode("bob", filepath.Join(dir, "bob"), bh)
	a.Handle("echo", echo)
	b.Handle("echo", echo)
	befriend(t, a, b, "alice", "bob")
	roundTrip(t, a, "bob", pattern(10_000, 1))

	wd.stopServer()
	for _, d := range []*daemon{a, b} {
		waitFor(t, 10*time.Second, "the daemon to notice the server is down", func() bool { return !d.Status().ServerUp })
	}
	roundTrip(t, a, "bob", pattern(200_000, 2))
	roundTrip(t, b, "alice", pattern(200_000, 3))
	checkDirect(t, a, "bob")
	checkDirect(t, b, "alice")
	if s := a.Status(); s.ServerError == "" {
		t.Errorf("status does not say why the server is unreachable: %+v", s)
	}
}

// TestRestartReconnectsWithoutServer: a daemon restarted with the same
// data directory while the server is down reconnects by itself to a known
// contact from its cached endpoints, with the same identity.
func TestRestartReconnectsWithoutServer(t *testing.T) {
	for _, restart := range []string{"bob", "alice"} {
		t.Run(restart, func(t *testing.T) {
			wd := newWorld(t)
			ah := wd.publicHost("alice")
			bh, _ := wd.natHost("bob", natlab.EndpointIndependent, natlab.AddressDependent)
			dir := t.TempDir()
			a := wd.startNode("alice", filepath.Join(dir, "alice"), ah)
			b := wd.startNode("bob", filepath.Join(dir, "bob"), bh)
			a.Handle("echo", echo)
			b.Handle("echo", echo)
			befriend(t, a, b, "alice", "bob")
			roundTrip(t, a, "bob", pattern(1000, 1))
			roundTrip(t, b, "alice", pattern(1000, 2))

			wd.stopServer()
			var d, other *daemon
			var host *natlab.Host
			var peerName string
			if restart == "bob" {
				d, other, host, peerName = b, a, bh, "alice"
			} else {
				d, other, host, peerName = a, b, ah, "bob"
			}
			key := d.PublicKey()
			d.stop()
			d2 := wd.startNode(restart, d.dir, host)
			d2.Handle("echo", echo)
			if d2.PublicKey() != key {
				t.Fatalf("identity changed across the restart")
			}
			if s := d2.Status(); s.ServerUp || s.Username != restart || len(s.Contacts) != 1 {
				t.Fatalf("restarted status: %+v", s)
			}
			// It reconnects by itself, before anything is sent.
			waitFor(t, 20*time.Second, restart+" reconnected at startup", func() bool {
				return contactStatus(d2, peerName).Path == "direct"
			})
			roundTrip(t, d2, peerName, pattern(50_000, 3))
			roundTrip(t, other, restart, pattern(50_000, 4))
			checkDirect(t, d2, peerName)
			checkDirect(t, other, restart)
		})
	}
}
