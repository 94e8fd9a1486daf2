package node_test

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/parley-p2p/parley/cli"
	"github.com/parley-p2p/parley/localapi"
	"github.com/parley-p2p/parley/natlab"
)

// serveAPI serves d's local API on its data directory's socket.
func serveAPI(t *testing.T, d *daemon) {
	t.Helper()
	ln, err := localapi.Listen(d.DataDir())
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		(&localapi.Server{Node: d.Node}).Serve(ctx, ln)
	}()
	t.Cleanup(func() { cancel(); <-done })
}

// parley runs the CLI and returns its exit code and output.
func parley(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	var out, errb bytes.Buffer
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	code := cli.Run(ctx, args, &out, &errb)
	return code, out.String(), errb.String()
}

func mustParley(t *testing.T, args ...string) string {
	t.Helper()
	code, out, errs := parley(t, args...)
	if code != 0 {
		t.Fatalf("parley %s: exit %d: %s", strings.Join(args, " "), code, errs)
	}
	return out
}

// TestCLI drives two daemons through the real local API socket with the
// CLI: register, contacts add/accept/list, status after a session.
func TestCLI(t *testing.T) {
	wd := newWorld(t)
	ah := wd.publicHost("alice")
	bh, _ := wd.natHost("bob", natlab.EndpointIndependent, natlab.AddressAndPortDependent)
	dir := t.TempDir()
	a := wd.startNode("alice", filepath.Join(dir, "alice"), ah)
	b := wd.startNode("bob", filepath.Join(dir, "bob"), bh)
	b.Handle("echo", echo)
	serveAPI(t, a)
	serveAPI(t, b)

	fi, err := os.Stat(localapi.SocketPath(a.DataDir()))
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode()&os.ModeSocket == 0 || fi.Mode().Perm() != 0o600 {
		t.Errorf("socket mode %v, want a socket with 0600", fi.Mode())
	}

	pw := filepath.Join(dir, "pw")
	if err := os.WriteFile(pw, []byte(password+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	mustParley(t, "register", "alice", "--data", a.DataDir(), "--password-file", pw)
	mustParley(t, "register", "bob", "--data", b.DataDir(), "--password-file", pw)
	if out := mustParley(t, "contacts", "add", "bob", "--data", a.DataDir()); !strings.Contains(out, "asked bob") {
		t.Errorf("contacts add: %q", out)
	}
	out := mustParley(t, "contacts", "list", "--data", b.DataDir())
	if !strings.Contains(out, "alice") || !strings.Contains(out, "incoming") {
		t.Errorf("bob's list before accepting: %q", out)
	}
	mustParley(t, "contacts", "accept", "alice", "--data", b.DataDir())
	waitFor(t, 10*time.Second, "alice sees bob online", func() bool {
		s := a.Status()
		return s.ServerUp && len(s.Candidates) > 0 && len(s.Contacts) == 1 && s.Contacts[0].Online
	})
	waitFor(t, 10*time.Second, "bob online", func() bool {
		s := b.Status()
		return s.ServerUp && len(s.Candidates) > 0
	})
	if out := mustParley(t, "status", "--data", a.DataDir()); !strings.Contains(out, "bob (mutual, online): no session") {
		t.Errorf("status before a session: %q", out)
	}
	roundTrip(t, a, "bob", []byte("hello over the CLI-made contact"))
	// The peers tell each other their NAT types on a stream of their own,
	// which may land just after the echo.
	waitFor(t, 10*time.Second, "status after a session to show a direct path and both NAT types", func() bool {
		out = mustParley(t, "status", "--data", a.DataDir())
		return strings.Contains(out, "bob: direct to ") && strings.Contains(out, "NAT: ours public, theirs endpoint-independent")
	})

	// Errors are one sentence with what to do.
	code, _, errs := parley(t, "contacts", "add", "nobody", "--data", a.DataDir())
	if code != 1 || errs != "parley: no user \"nobody\" (or no request from them): check the name\n" {
		t.Errorf("add unknown user: exit %d, %q", code, errs)
	}
	empty := filepath.Join(dir, "nodaemon")
	code, _, errs = parley(t, "status", "--data", empty)
	want := "parley: no daemon running for " + empty + ": start one with `parley up --server URL`\n"
	if code != 1 || errs != want {
		t.Errorf("status without a daemon: exit %d, %q, want %q", code, errs, want)
	}
	code, _, errs = parley(t, "login", "alice", "--data", a.DataDir(), "--password-file", filepath.Join(dir, "missing"))
	if code != 1 || !strings.HasPrefix(errs, "parley: password file: ") {
		t.Errorf("login with a missing password file: exit %d, %q", code, errs)
	}
	mustParley(t, "logout", "--data", b.DataDir())
	if s := b.Status(); s.Username != "" {
		t.Errorf("after logout, status says user %q", s.Username)
	}
}

// TestUp runs `parley up` on real loopback sockets and stops it.
func TestUp(t *testing.T) {
	wd := newLoopbackWorld(t)
	dir := filepath.Join(t.TempDir(), "d")
	ctx, cancel := context.WithCancel(t.Context())
	var out, errb bytes.Buffer
	done := make(chan int, 1)
	go func() {
		done <- cli.Run(ctx, []string{"up", "--server", wd.http.URL, "--data", dir, "--listen", "127.0.0.1:0", "--log-level", "error"}, &out, &errb)
	}()
	waitFor(t, 10*time.Second, "the daemon's socket", func() bool {
		code, _, _ := parley(t, "status", "--data", dir)
		return code == 0
	})
	code, _, errs := parley(t, "up", "--server", wd.http.URL, "--data", dir, "--listen", "127.0.0.1:0")
	if code != 1 || !strings.Contains(errs, "a daemon is already running for "+dir) {
		t.Errorf("second daemon: exit %d, %q", code, errs)
	}
	cancel()
	if code := <-done; code != 0 {
		t.Fatalf("parley up: exit %d: %s", code, errb.String())
	}
	if _, err := os.Stat(localapi.SocketPath(dir)); !os.IsNotExist(err) {
		t.Errorf("socket left behind: %v", err)
	}
	if !strings.Contains(out.String(), "parley daemon up: device ") {
		t.Errorf("up printed %q", out.String())
	}
}
