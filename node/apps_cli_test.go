package node_test

import (
	"context"
	"crypto/rand"
	"io"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/parley-p2p/parley/localapi"
	"github.com/parley-p2p/parley/natlab"
	"github.com/parley-p2p/parley/node"
)

// serveAppsAPI serves d's local API, with its applications, on its data
// directory's socket.
func serveAppsAPI(t *testing.T, d *daemon, a *node.Apps) {
	t.Helper()
	ln, err := localapi.Listen(d.DataDir())
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		(&localapi.Server{Node: d.Node, Apps: a}).Serve(ctx, ln)
	}()
	t.Cleanup(func() { cancel(); <-done })
}

// appsPair is two befriended daemons with their applications and local
// APIs.
func appsPair(t *testing.T) (wd *world, a, b *daemon, aa, ba *node.Apps) {
	wd = newWorld(t)
	ah, _ := wd.natHost("alice", natlab.EndpointIndependent, natlab.EndpointIndependent)
	bh, _ := wd.natHost("bob", natlab.EndpointIndependent, natlab.AddressAndPortDependent)
	dir := t.TempDir()
	a = wd.startNode("alice", filepath.Join(dir, "alice"), ah)
	b = wd.startNode("bob", filepath.Join(dir, "bob"), bh)
	aa, ba = enableApps(t, a), enableApps(t, b)
	serveAppsAPI(t, a, aa)
	serveAppsAPI(t, b, ba)
	befriend(t, a, b, "alice", "bob")
	return wd, a, b, aa, ba
}

// TestAppsCLI drives the applications through the real local API socket
// with the CLI: msg, history and search, send with files accept, expose,
// and a tunnel through the socket's upgrade.
func TestAppsCLI(t *testing.T) {
	_, a, b, _, _ := appsPair(t)
	ad, bd := a.DataDir(), b.DataDir()

	if out := mustParley(t, "msg", "bob", "--data", ad, "lunch", "at", "noon?"); !strings.Contains(out, "delivered to bob") {
		t.Errorf("msg: %q", out)
	}
	mustParley(t, "msg", "alice", "--data", bd, "sure, the usual place")
	out := mustParley(t, "history", "bob", "--data", ad)
	if !strings.Contains(out, "me → bob: lunch at noon?  [delivered]") || !strings.Contains(out, "bob: sure, the usual place") {
		t.Errorf("history:\n%s", out)
	}
	out = mustParley(t, "history", "bob", "--data", ad, "--search", "noon")
	if !strings.Contains(out, "lunch at noon?") || strings.Contains(out, "usual") {
		t.Errorf("history --search noon:\n%s", out)
	}
	if code, _, errs := parley(t, "msg", "mallory", "--data", ad, "hi"); code == 0 || !strings.Contains(errs, "mallory") {
		t.Errorf("msg to a stranger: exit %d, %q", code, errs)
	}

	// Files: offer without waiting, accept by ID prefix with a progress
	// bar, and the sender's wait ends when the file is verified.
	src := filepath.Join(t.TempDir(), "notes.bin")
	data := make([]byte, 1<<20+3)
	rand.Read(data)
	if err := os.WriteFile(src, data, 0o600); err != nil {
		t.Fatal(err)
	}
	out = mustParley(t, "send", "bob", src, "--data", ad, "--no-wait")
	i := strings.Index(out, "transfer ")
	if i < 0 {
		t.Fatalf("send: %q", out)
	}
	id := strings.TrimSpace(out[i+len("transfer "):])
	waitFor(t, 5*time.Second, "offer listed at bob", func() bool {
		_, out, _ := parley(t, "files", "--data", bd)
		return strings.Contains(out, id) && strings.Contains(out, "parley files accept "+id)
	})
	out = mustParley(t, "files", "accept", id, "--data", bd)
	if !strings.Contains(out, "SHA-256 verified") {
		t.Errorf("files accept: %q", out)
	}
	got, err := os.ReadFile(filepath.Join(bd, "downloads", "notes.bin"))
	if err != nil || string(got) != string(data) {
		t.Fatalf("received file differs (%v)", err)
	}
	waitFor(t, 5*time.Second, "sender sees the transfer done", func() bool {
		_, out, _ := parley(t, "files", "--data", ad)
		return strings.Contains(out, "notes.bin to bob") && strings.Contains(out, "done")
	})

	// Tunnels: refused until exposed, with the reason on the caller's
	// side; then bytes go both ways through the socket's upgrade.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() { io.Copy(c, c); c.Close() }()
		}
	}()
	port := uint16(ln.Addr().(*net.TCPAddr).Port)
	lc := localapi.NewClient(ad)
	defer lc.Close()
	if _, err := lc.Connect(t.Context(), "bob", port); err == nil || !strings.Contains(err.Error(), "bob does not expose port "+strconv.Itoa(int(port))) {
		t.Fatalf("connect to an unexposed port: %v", err)
	}
	if out := mustParley(t, "expose", strconv.Itoa(int(port)), "--data", bd); !strings.Contains(out, strconv.Itoa(int(port))) {
		t.Errorf("expose: %q", out)
	}
	c, err := lc.Connect(t.Context(), "bob", port)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := c.Write([]byte("through the socket")); err != nil {
		t.Fatal(err)
	}
	if err := c.(interface{ CloseWrite() error }).CloseWrite(); err != nil {
		t.Fatal(err)
	}
	back, err := io.ReadAll(c)
	if err != nil || string(back) != "through the socket" {
		t.Fatalf("echo %q, %v", back, err)
	}
	if out := mustParley(t, "expose", "--off", strconv.Itoa(int(port)), "--data", bd); !strings.Contains(out, "no ports exposed") {
		t.Errorf("expose --off: %q", out)
	}
}
