package lab_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/parley-p2p/parley/lab"
	"github.com/parley-p2p/parley/node"
)

// TestMatrix runs real `parley` binaries in the lab: a directory server
// and a supernode on the public segment, and peers on public addresses and
// behind EIM, symmetric and UDP-blocked Linux NATs (bare routers). Every
// pair registers, becomes contacts, and exchanges messages both ways with
// `parley debug echo`; the test reports per pair whether the session ended
// direct or relayed, the time to the first message and the time until the
// session was direct, and checks what this kernel allows:
//
//   - a pair with a public or an EIM side ends direct: two EIM sides
//     thanks to the openers (node/opener.go); EIM with symmetric thanks to
//     the port sweep (node/sweep.go), since the symmetric side's probes
//     come from a port the EIM router never sent to, and Linux masquerade
//     filters by address and port (doc.go, TestPunchSymmetric);
//   - symmetric with symmetric cannot be direct;
//   - a UDP-blocked side is relayed over TCP.
//
// Every first message must get through at the first attempt: a failed
// connect fails the test, with its error in the table. eim1 sweeps sym1's
// ports while its three other pairs connect and run, which checks that a
// sweep is paced so as not to starve its host's other paths (node/sweep.go).
func TestMatrix(t *testing.T) {
	if testing.Short() {
		t.Skip("the matrix builds and runs real daemons")
	}
	l := lab.NewTest(t, lab.Config{Name: "matrix"})
	bin := buildParley(t)
	start := time.Now()

	must := func(h *lab.Host, err error) *lab.Host {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		return h
	}
	srvHost := must(l.AddPublicHost("server"))
	snHost := must(l.AddPublicHost("supernode"))
	kinds := []struct {
		name string
		kind lab.NATKind // 0: public
	}{
		{"pub1", 0}, {"pub2", 0},
		{"eim1", lab.EIM}, {"eim2", lab.EIM},
		{"sym1", lab.Symmetric}, {"sym2", lab.Symmetric},
		{"blk1", lab.UDPBlocked}, {"blk2", lab.UDPBlocked},
	}
	hosts := map[string]*lab.Host{}
	for _, k := range kinds {
		if k.kind == 0 {
			hosts[k.name] = must(l.AddPublicHost(k.name))
		} else {
			hosts[k.name] = must(l.AddNATHost(k.name, k.kind))
		}
	}
	t.Logf("lab built in %v", time.Since(start))

	dir := t.TempDir()
	pwFile := filepath.Join(dir, "password")
	if err := os.WriteFile(pwFile, []byte("correct horse battery staple\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	srvAddr := srvHost.Addr().String()
	url := "http://" + srvAddr + ":8080"
	runDaemon(t, srvHost, filepath.Join(dir, "server.log"), bin, "server", "--data", filepath.Join(dir, "server"),
		"--listen", srvAddr+":8080", "--insecure", "--stun", srvAddr+":3478", "--allow-private-supernodes", "--log-level", "debug")
	waitTCP(t, srvHost, srvAddr+":8080")

	const relayTCPPort = "4443"
	up := func(name string, h *lab.Host, supernode string) *peerDaemon {
		data := filepath.Join(dir, name)
		runDaemon(t, h, filepath.Join(dir, name+".log"), bin, "up", "--server", url, "--data", data,
			"--listen", h.Addr().String()+":4000", "--supernode", supernode,
			"--relay-tcp", h.Addr().String()+":"+relayTCPPort, "--web", "off", "--log-level", "debug")
		d := &peerDaemon{t: t, bin: bin, name: name, data: data}
		d.waitSocket()
		d.cli("register", name, "--password-file", pwFile)
		return d
	}
	sn := up("super", snHost, "on")
	waitUntil(t, 20*time.Second, "the supernode to volunteer", func() bool { return sn.status().Supernode })

	daemons := map[string]*peerDaemon{}
	var mu sync.Mutex
	var wg sync.WaitGroup
	for _, k := range kinds {
		wg.Add(1)
		go func() {
			defer wg.Done()
			d := up(k.name, hosts[k.name], "off")
			mu.Lock()
			daemons[k.name] = d
			mu.Unlock()
		}()
	}
	wg.Wait()
	if t.Failed() {
		t.FailNow()
	}

	type pair struct {
		a, b   string
		direct bool   // must end direct
		why    string // why it cannot, when it cannot
		sweep  bool   // direct only through a port sweep
	}
	pairs := []pair{
		{"pub1", "pub2", true, "", false},
		{"pub1", "eim1", true, "", false},
		{"pub2", "sym1", true, "", false},
		{"pub1", "blk1", false, "UDP blocked", false},
		{"eim1", "eim2", true, "", false},
		{"eim2", "sym2", true, "", true},
		{"sym1", "eim1", true, "", true}, // the symmetric side offers
		{"eim1", "blk2", false, "UDP blocked", false},
		{"sym1", "sym2", false, "symmetric on both sides", false},
		{"sym2", "blk1", false, "UDP blocked", false},
		{"blk1", "blk2", false, "UDP blocked", false},
	}
	for _, p := range pairs {
		a, b := daemons[p.a], daemons[p.b]
		a.cli("contacts", "add", p.b)
		b.cli("contacts", "accept", p.a)
	}
	for _, p := range pairs {
		a, b := daemons[p.a], daemons[p.b]
		waitUntil(t, 20*time.Second, p.a+" and "+p.b+" online as contacts", func() bool {
			return a.contact(p.b).Online && b.contact(p.a).Online && len(a.status().Candidates) > 0 && len(b.status().Candidates) > 0
		})
	}
	t.Logf("daemons up, registered and befriended %v after the start", time.Since(start))

	type result struct {
		first, back debugEcho
		direct      time.Duration // until a's status said direct; -1 if never
		final       node.ContactStatus
		natA, natB  string
		err         error
	}
	results := make([]result, len(pairs))
	for i, p := range pairs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := &results[i]
			a, b := daemons[p.a], daemons[p.b]
			t0 := time.Now()
			if r.first, r.err = a.echo(p.b, "hello "+p.b+" from "+p.a); r.err != nil {
				r.err = fmt.Errorf("first message: %w", r.err)
				return
			}
			if r.back, r.err = b.echo(p.a, "hello "+p.a+" from "+p.b); r.err != nil {
				r.err = fmt.Errorf("reply: %w", r.err)
				return
			}
			// Direct promptly when it can be; else past the punch timeout
			// (5 s), so that the reason is final.
			r.direct = -1
			if r.first.Path == "direct" {
				// The first message went direct: the session was direct
				// when it was sent.
				r.direct = time.Duration(r.first.Millis * float64(time.Millisecond))
			}
			// A port sweep (EIM–symmetric) may take up to 15 s on a
			// loaded machine (node/sweep.go, punchOpts.timeout).
			deadline := t0.Add(8 * time.Second)
			if p.sweep {
				deadline = t0.Add(20 * time.Second)
			}
			for r.direct < 0 && time.Now().Before(deadline) {
				if cs := a.contact(p.b); cs.Path == "direct" && b.contact(p.a).Path == "direct" {
					r.direct = time.Since(t0)
					break
				}
				time.Sleep(20 * time.Millisecond)
			}
			if r.direct >= 0 {
				// Settle: the path must stay direct.
				time.Sleep(time.Second)
			} else {
				// Past the punch timeout (5 s), so that the reason is final.
				time.Sleep(time.Until(deadline))
			}
			r.final = a.contact(p.b)
			r.natA, r.natB = a.status().NAT, b.status().NAT
		}()
	}
	wg.Wait()

	var table strings.Builder
	fmt.Fprintf(&table, "| pair | NATs | first message | path then | time to direct | final path | why relayed |\n")
	fmt.Fprintf(&table, "|---|---|---|---|---|---|---|\n")
	for i, p := range pairs {
		r := results[i]
		if r.err != nil {
			t.Errorf("%s → %s: %v", p.a, p.b, r.err)
			fmt.Fprintf(&table, "| %s–%s | | error: %v | | | | |\n", p.a, p.b, r.err)
			continue
		}
		direct := "never"
		if r.direct >= 0 {
			direct = fmt.Sprintf("%.0f ms", float64(r.direct.Microseconds())/1000)
		}
		why := r.final.Why
		if r.final.Path == "direct" {
			why = ""
		} else if r.final.Path == "relayed" && r.final.Relay != "" {
			why = "via " + r.final.Relay + ": " + why
		}
		fmt.Fprintf(&table, "| %s–%s | %s / %s | %.1f ms | %s | %s | %s | %s |\n", p.a, p.b, r.natA, r.natB,
			r.first.Millis, r.first.Path, direct, r.final.Path, why)
		if r.first.Echo != "hello "+p.b+" from "+p.a || r.back.Echo != "hello "+p.a+" from "+p.b {
			t.Errorf("%s–%s: echoes %q and %q", p.a, p.b, r.first.Echo, r.back.Echo)
		}
		switch {
		case p.direct && r.final.Path != "direct":
			t.Errorf("%s–%s: ended %s (%s), want direct", p.a, p.b, r.final.Path, r.final.Why)
		case !p.direct && r.final.Path != "relayed":
			t.Errorf("%s–%s: ended %s, want relayed (%s)", p.a, p.b, r.final.Path, p.why)
		}
	}
	t.Logf("matrix (%s/%s, %d cores), %v in all:\n%s", runtime.GOOS, kernelRelease(), runtime.NumCPU(), time.Since(start), table.String())
	// How the sweeps went: the EIM sides log each round (node/sweep.go).
	for _, p := range pairs {
		if !p.sweep {
			continue
		}
		for _, name := range []string{p.a, p.b} {
			b, _ := os.ReadFile(filepath.Join(dir, name+".log"))
			for line := range strings.Lines(string(b)) {
				if strings.Contains(line, `msg="port sweep`) {
					t.Logf("%s: %s", name, strings.TrimSpace(line))
				}
			}
		}
	}
	if t.Failed() {
		names := []string{"server", "super"}
		for i, p := range pairs {
			r := results[i]
			if r.err != nil || (p.direct && r.final.Path != "direct") || (!p.direct && r.final.Path != "relayed") {
				names = append(names, p.a, p.b)
			}
		}
		slices.Sort(names[2:])
		for _, name := range slices.Compact(names) {
			if b, err := os.ReadFile(filepath.Join(dir, name+".log")); err == nil {
				t.Logf("%s log (tail):\n%s", name, tail(string(b), 60))
			}
		}
	}
}

// debugEcho is the output of `parley debug echo` (cli/debug.go).
type debugEcho struct {
	Echo   string  `json:"echo"`
	Millis float64 `json:"ms"`
	Path   string  `json:"path"`
	Why    string  `json:"why"`
	Relay  string  `json:"relay"`
}

// peerDaemon is a `parley up` in a namespace, driven by the CLI (whose
// Unix socket needs no namespace).
type peerDaemon struct {
	t         *testing.T
	bin, name string
	data      string
}

func (d *peerDaemon) run(args ...string) ([]byte, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 40*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, d.bin, append(args, "--data", d.data)...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return out, fmt.Errorf("parley %s (%s): %v: %s", strings.Join(args, " "), d.name, err, strings.TrimSpace(stderr.String()))
	}
	return out, nil
}

func (d *peerDaemon) cli(args ...string) []byte {
	d.t.Helper()
	out, err := d.run(args...)
	if err != nil {
		d.t.Fatal(err)
	}
	return out
}

func (d *peerDaemon) status() node.Status {
	var st node.Status
	out, err := d.run("status", "--json")
	if err == nil {
		json.Unmarshal(out, &st)
	}
	return st
}

func (d *peerDaemon) contact(name string) node.ContactStatus {
	for _, c := range d.status().Contacts {
		if c.Username == name {
			return c
		}
	}
	return node.ContactStatus{}
}

func (d *peerDaemon) echo(to, text string) (debugEcho, error) {
	var e debugEcho
	out, err := d.run("debug", "echo", to, text)
	if err != nil {
		return e, err
	}
	return e, json.Unmarshal(out, &e)
}

// waitSocket waits for the daemon's local API socket.
func (d *peerDaemon) waitSocket() {
	d.t.Helper()
	waitUntil(d.t, 20*time.Second, d.name+"'s daemon to answer", func() bool {
		_, err := d.run("status", "--json")
		return err == nil
	})
}

// runDaemon runs a long-lived parley process in h with its output in
// logPath, and stops it (SIGTERM, then SIGKILL after 5 s) when the test
// ends, before the lab is closed.
func runDaemon(t *testing.T, h *lab.Host, logPath string, bin string, args ...string) {
	t.Helper()
	logf, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	cmd := h.Command(context.Background(), bin, args...)
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		logf.Close()
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGTERM)
		timer := time.AfterFunc(5*time.Second, func() { cmd.Process.Kill() })
		cmd.Wait()
		timer.Stop()
		logf.Close()
	})
}

// waitTCP waits until addr accepts TCP connections from inside h.
func waitTCP(t *testing.T, h *lab.Host, addr string) {
	t.Helper()
	waitUntil(t, 20*time.Second, "TCP "+addr, func() bool {
		return h.Run(func() error {
			c, err := net.DialTimeout("tcp", addr, time.Second)
			if err == nil {
				c.Close()
			}
			return err
		}) == nil
	})
}

func waitUntil(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

var (
	parleyOnce sync.Once
	parleyBin  string
	parleyErr  error
)

// buildParley builds cmd/parley once per test binary into a temporary
// directory.
func buildParley(t *testing.T) string {
	t.Helper()
	parleyOnce.Do(func() {
		dir, err := os.MkdirTemp("", "parley-matrix")
		if err != nil {
			parleyErr = err
			return
		}
		gobin, err := exec.LookPath("go")
		if err != nil {
			gobin = filepath.Join(runtime.GOROOT(), "bin", "go")
		}
		parleyBin = filepath.Join(dir, "parley")
		build := exec.Command(gobin, "build", "-o", parleyBin, "../cmd/parley")
		build.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err := build.CombinedOutput(); err != nil {
			parleyErr = fmt.Errorf("build parley: %v\n%s", err, out)
		}
	})
	if parleyErr != nil {
		t.Fatal(parleyErr)
	}
	return parleyBin
}

func kernelRelease() string {
	var u syscall.Utsname
	if syscall.Uname(&u) != nil {
		return "?"
	}
	var b []byte
	for _, c := range u.Release {
		if c == 0 {
			break
		}
		b = append(b, byte(c))
	}
	return string(b)
}

func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}
