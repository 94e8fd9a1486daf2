package lab_test

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/parley-p2p/parley/lab"
)

// labpeer is the path of the prober binary TestMain builds.
var labpeer string

func TestMain(m *testing.M) {
	os.Exit(testMain(m))
}

func testMain(m *testing.M) int {
	dir, err := os.MkdirTemp("", "labpeer")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	gobin, err := exec.LookPath("go")
	if err != nil {
		gobin = filepath.Join(runtime.GOROOT(), "bin", "go")
	}
	labpeer = filepath.Join(dir, "labpeer")
	build := exec.Command(gobin, "build", "-o", labpeer, "./cmd/labpeer")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "build labpeer: %v\n%s", err, out)
		return 1
	}
	code := m.Run()
	if parleyBin != "" {
		os.RemoveAll(filepath.Dir(parleyBin))
	}
	return code
}

// commander is a lab node that can run commands: a *lab.Host or *lab.Router.
type commander interface {
	Command(ctx context.Context, name string, args ...string) *exec.Cmd
	Name() string
}

// proc is a labpeer process in a namespace, with its stdout kept as lines.
type proc struct {
	t     testing.TB
	name  string
	stdin io.WriteCloser

	mu      sync.Mutex // protects the fields below
	lines   []string
	changed chan struct{} // closed and replaced when lines grows or exited
	exited  bool
}

// start runs labpeer with args in n, and stops it when the test ends.
func start(t testing.TB, n commander, args ...string) *proc {
	t.Helper()
	cmd := n.Command(context.Background(), labpeer, args...)
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr strings.Builder
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p := &proc{t: t, name: n.Name() + " " + args[0], stdin: stdin, changed: make(chan struct{})}
	done := make(chan struct{})
	go func() {
		defer close(done)
		s := bufio.NewScanner(stdout)
		for s.Scan() {
			p.mu.Lock()
			p.lines = append(p.lines, s.Text())
			close(p.changed)
			p.changed = make(chan struct{})
			p.mu.Unlock()
		}
		p.mu.Lock()
		p.exited = true
		close(p.changed)
		p.changed = make(chan struct{})
		p.mu.Unlock()
	}()
	t.Cleanup(func() {
		// EOF on stdin stops every labpeer command; kill is the fallback.
		stdin.Close()
		timer := time.AfterFunc(5*time.Second, func() { cmd.Process.Kill() })
		<-done
		err := cmd.Wait()
		if !timer.Stop() {
			t.Errorf("%s: did not exit at EOF; killed", p.name)
		} else if err != nil {
			t.Errorf("%s: %v: %s", p.name, err, stderr.String())
		}
	})
	return p
}

// send writes a command line to the process.
func (p *proc) send(line string) {
	p.t.Helper()
	if _, err := io.WriteString(p.stdin, line+"\n"); err != nil {
		p.t.Fatalf("%s: send %q: %v", p.name, line, err)
	}
}

// wait returns the first output line beginning with one of prefixes, and
// fails the test if none comes within 10 seconds.
func (p *proc) wait(prefixes ...string) string {
	p.t.Helper()
	timeout := time.After(10 * time.Second)
	for {
		p.mu.Lock()
		for _, l := range p.lines {
			for _, pre := range prefixes {
				if strings.HasPrefix(l, pre) {
					p.mu.Unlock()
					return l
				}
			}
		}
		exited, changed, lines := p.exited, p.changed, strings.Join(p.lines, " | ")
		p.mu.Unlock()
		if exited {
			p.t.Fatalf("%s exited without printing %q; output: %s", p.name, prefixes, lines)
		}
		select {
		case <-changed:
		case <-timeout:
			p.t.Fatalf("%s: no %q within 10s; output: %s", p.name, prefixes, lines)
		}
	}
}

// output returns everything the process printed so far.
func (p *proc) output() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return strings.Join(p.lines, " | ")
}

// addrField parses field i of line as an address and port.
func addrField(t testing.TB, line string, i int) netip.AddrPort {
	t.Helper()
	f := strings.Fields(line)
	if len(f) <= i {
		t.Fatalf("line %q: no field %d", line, i)
	}
	ap, err := netip.ParseAddrPort(f[i])
	if err != nil {
		t.Fatalf("line %q: %v", line, err)
	}
	return ap
}

// serve runs the reflector on h port 3478 (UDP and TCP) and returns its
// address.
func serve(t testing.TB, h *lab.Host) netip.AddrPort {
	t.Helper()
	p := start(t, h, "serve", "-udp", ":3478", "-tcp", ":3478")
	p.wait("READY")
	return netip.AddrPortFrom(h.Addr(), 3478)
}

func must[T any](t testing.TB) func(T, error) T {
	return func(v T, err error) T {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
}

// TestPublicEcho: two public hosts reach each other across the internet
// router, through the prober binary and through in-process sockets.
func TestPublicEcho(t *testing.T) {
	l := lab.NewTest(t, lab.Config{Name: "echo"})
	host := must[*lab.Host](t)
	srv := host(l.AddPublicHost("server"))
	cli := host(l.AddPublicHost("client"))

	addr := serve(t, srv)
	m := start(t, cli, "map", "-bind", ":5000", "-to", addr.String())
	line := m.wait("MAPPED", "TIMEOUT")
	want := netip.AddrPortFrom(cli.Addr(), 5000)
	if got := addrField(t, line, 2); got != want {
		t.Fatalf("server saw %v, want %v (no NAT between public hosts)", got, want)
	}

	// The same, in process: sockets opened in the namespaces with Run.
	sc, err := srv.ListenPacket("udp4", ":7")
	if err != nil {
		t.Fatal(err)
	}
	defer sc.Close()
	cc, err := cli.ListenPacket("udp4", ":0")
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	to := net.UDPAddrFromAddrPort(netip.AddrPortFrom(srv.Addr(), 7))
	if _, err := cc.WriteTo([]byte("hello"), to); err != nil {
		t.Fatal(err)
	}
	sc.SetReadDeadline(time.Now().Add(5 * time.Second))
	buf := make([]byte, 100)
	n, from, err := sc.ReadFrom(buf)
	if err != nil {
		t.Fatal(err)
	}
	if string(buf[:n]) != "hello" || from.(*net.UDPAddr).AddrPort().Addr() != cli.Addr() {
		t.Fatalf("got %q from %v", buf[:n], from)
	}
	if _, err := sc.WriteTo(buf[:n], from); err != nil {
		t.Fatal(err)
	}
	cc.SetReadDeadline(time.Now().Add(5 * time.Second))
	if n, _, err = cc.ReadFrom(buf); err != nil || string(buf[:n]) != "hello" {
		t.Fatalf("echo: %q, %v", buf[:n], err)
	}
}

// TestCloseAndSweep: Close removes every namespace, and New sweeps away
// those of a dead earlier run.
func TestCloseAndSweep(t *testing.T) {
	lab.Require(t)
	ctx := t.Context()
	// A namespace that a crashed run (a pid that cannot exist) left behind.
	stale := lab.NamePrefix + "sweep-999999999-alice"
	if out, err := exec.Command("ip", "netns", "add", stale).CombinedOutput(); err != nil {
		t.Fatalf("ip netns add: %v: %s", err, out)
	}
	t.Cleanup(func() { exec.Command("ip", "netns", "del", stale).Run() })

	l, err := lab.New(ctx, lab.Config{Name: "sweep"})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	if have(t, stale) {
		t.Errorf("New did not sweep stale namespace %s", stale)
	}
	if _, err := lab.New(ctx, lab.Config{Name: "sweep"}); err == nil {
		t.Error("second open lab with the same name: no error")
	}
	h, err := l.AddNATHost("alice", lab.EIM)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := l.AddPublicHost("alice"); err == nil {
		t.Error("duplicate node name: no error")
	}
	names := []string{l.Internet().Namespace(), h.Namespace(), h.Router().Namespace()}
	for _, ns := range names {
		if !have(t, ns) {
			t.Errorf("namespace %s missing", ns)
		}
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	for _, ns := range names {
		if have(t, ns) {
			t.Errorf("namespace %s left after Close", ns)
		}
	}
	if err := l.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
}

// have reports whether the named network namespace exists.
func have(t testing.TB, ns string) bool {
	t.Helper()
	out, err := exec.Command("ip", "netns", "list").Output()
	if err != nil {
		t.Fatal(err)
	}
	for line := range strings.Lines(string(out)) {
		if f := strings.Fields(line); len(f) > 0 && f[0] == ns {
			return true
		}
	}
	return false
}
