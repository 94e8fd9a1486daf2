package node_test

import (
	"bytes"
	"context"
	"io"
	"path/filepath"
	"testing"
	"time"

	"github.com/parley-p2p/parley/natlab"
	"github.com/parley-p2p/parley/node"
	"github.com/parley-p2p/parley/transport"
)

// echo serves the "echo" service: it writes back what it reads.
func echo(_ node.Peer, st *transport.Stream) {
	io.Copy(st, st)
	st.Close()
}

// roundTrip opens an echo stream from a to username and checks that msg
// comes back.
func roundTrip(t *testing.T, a *daemon, username string, msg []byte) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 15*time.Second)
	defer cancel()
	st, err := a.OpenStream(ctx, username, "echo")
	if err != nil {
		t.Fatalf("open stream to %s: %v", username, err)
	}
	defer st.Close()
	st.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := st.Write(msg); err != nil {
		t.Fatal(err)
	}
	if err := st.CloseWrite(); err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(st)
	if err != nil {
		t.Fatalf("read echo: %v", err)
	}
	if !bytes.Equal(got, msg) {
		t.Fatalf("echo: got %d bytes, want %d", len(got), len(msg))
	}
}

func pattern(n int, seed byte) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = seed + byte(i*7)
	}
	return b
}

// checkDirect waits until d's session with username is direct (the first
// message may go relayed while the punch runs) and returns its status.
func checkDirect(t *testing.T, d *daemon, username string) node.ContactStatus {
	t.Helper()
	var cs node.ContactStatus
	found := false
	direct := func() bool {
		for _, c := range d.Status().Contacts {
			if c.Username == username {
				cs, found = c, true
				return c.Path == "direct" && c.RTT > 0 && c.Remote != ""
			}
		}
		return false
	}
	deadline := time.Now().Add(10 * time.Second)
	for !direct() {
		if time.Now().After(deadline) {
			if !found {
				t.Fatalf("no status for %s", username)
			}
			t.Fatalf("status of %s: %+v, want direct with an RTT", username, cs)
		}
		time.Sleep(5 * time.Millisecond)
	}
	return cs
}

func TestConnectPublicToNAT(t *testing.T) {
	wd := newWorld(t)
	ah := wd.publicHost("alice")
	bh, _ := wd.natHost("bob", natlab.EndpointIndependent, natlab.AddressAndPortDependent)
	dir := t.TempDir()
	a := wd.startNode("alice", filepath.Join(dir, "alice"), ah)
	b := wd.startNode("bob", filepath.Join(dir, "bob"), bh)
	a.Handle("echo", echo)
	b.Handle("echo", echo)
	befriend(t, a, b, "alice", "bob")

	roundTrip(t, a, "bob", pattern(100_000, 1))
	roundTrip(t, b, "alice", pattern(50_000, 2))
	ca := checkDirect(t, a, "bob")
	cb := checkDirect(t, b, "alice")
	if ca.NAT != "public" || cb.NAT != "endpoint-independent" {
		t.Errorf("NAT types: alice sees %q, bob sees %q", ca.NAT, cb.NAT)
	}
	waitFor(t, 5*time.Second, "peer NAT types exchanged", func() bool {
		return checkDirect(t, a, "bob").PeerNAT == "endpoint-independent" && checkDirect(t, b, "alice").PeerNAT == "public"
	})
}

func TestConnectBothBehindNAT(t *testing.T) {
	wd := newWorld(t)
	ah, _ := wd.natHost("alice", natlab.EndpointIndependent, natlab.AddressAndPortDependent)
	bh, _ := wd.natHost("bob", natlab.EndpointIndependent, natlab.AddressAndPortDependent)
	dir := t.TempDir()
	a := wd.startNode("alice", filepath.Join(dir, "alice"), ah)
	b := wd.startNode("bob", filepath.Join(dir, "bob"), bh)
	a.Handle("echo", echo)
	b.Handle("echo", echo)
	befriend(t, a, b, "alice", "bob")

	roundTrip(t, b, "alice", pattern(64_000, 3))
	roundTrip(t, a, "bob", pattern(64_000, 4))
	checkDirect(t, a, "bob")
	checkDirect(t, b, "alice")
}
