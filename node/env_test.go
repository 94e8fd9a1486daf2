package node_test

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/parley-p2p/parley/directory"
	"github.com/parley-p2p/parley/directory/store/sqlite"
	"github.com/parley-p2p/parley/natlab"
	"github.com/parley-p2p/parley/node"
	"github.com/parley-p2p/parley/stun"
)

func TestMain(m *testing.M) {
	code := m.Run()
	if code == 0 {
		if leaks := leakedGoroutines(); leaks != "" {
			fmt.Fprintf(os.Stderr, "goroutines left behind:\n%s\n", leaks)
			code = 1
		}
	}
	os.Exit(code)
}

// leakedGoroutines waits for this module's goroutines to end and returns
// the stacks of those that do not.
func leakedGoroutines() string {
	deadline := time.Now().Add(10 * time.Second)
	for {
		buf := make([]byte, 1<<20)
		buf = buf[:runtime.Stack(buf, true)]
		var leaks []string
		for _, g := range strings.Split(string(buf), "\n\n") {
			if strings.Contains(g, "leakedGoroutines") {
				continue
			}
			if strings.Contains(g, "parley-p2p/parley/") || strings.Contains(g, "coder/websocket") {
				leaks = append(leaks, g)
			}
		}
		if len(leaks) == 0 {
			return ""
		}
		if time.Now().After(deadline) {
			return strings.Join(leaks, "\n\n")
		}
		time.Sleep(20 * time.Millisecond)
	}
}

const password = "correct horse battery"

// world is a test network: a natlab internet with a STUN server on it,
// and a real directory server on loopback HTTP (natlab carries only UDP).
type world struct {
	t        *testing.T
	w        *natlab.World
	internet *natlab.Network
	stunAddr netip.AddrPort
	stunAlt  netip.AddrPort
	dir      *directory.Server
	http     *httptest.Server
	nats     int

	// In a synctest bubble (newSyncWorld) the directory is served over
	// an in-memory listener instead of loopback TCP.
	url  string
	hc   *http.Client
	link natlab.Link // every new host's and NAT's link
}

func newWorld(t *testing.T) *world {
	t.Helper()
	w := natlab.New(natlab.Config{Seed: 1})
	t.Cleanup(func() { w.Close() })
	inet := w.NewNetwork("internet", netip.MustParsePrefix("203.0.113.0/24"))
	sh := w.NewHost("stun", inet, natlab.Link{})
	p, err := sh.ListenPacket(t.Context(), "udp4", ":3478")
	if err != nil {
		t.Fatal(err)
	}
	a, err := sh.ListenPacket(t.Context(), "udp4", ":3479")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		(&stun.Server{Primary: p, Alt: a}).Serve(ctx)
	}()
	t.Cleanup(func() { cancel(); p.Close(); a.Close(); <-done })
	wd := &world{t: t, w: w, internet: inet, stunAddr: netip.AddrPortFrom(sh.Addr(), 3478), stunAlt: netip.AddrPortFrom(sh.Addr(), 3479)}
	wd.startServer(filepath.Join(t.TempDir(), "directory.db"))
	return wd
}

// newLoopbackWorld is a world for daemons on real sockets: a STUN server
// and the directory on 127.0.0.1, so that nothing leaves loopback.
func newLoopbackWorld(t *testing.T) *world {
	t.Helper()
	var conns [2]net.PacketConn
	for i := range conns {
		c, err := net.ListenPacket("udp4", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		conns[i] = c
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		(&stun.Server{Primary: conns[0], Alt: conns[1]}).Serve(ctx)
	}()
	t.Cleanup(func() { cancel(); conns[0].Close(); conns[1].Close(); <-done })
	wd := &world{t: t,
		stunAddr: conns[0].LocalAddr().(*net.UDPAddr).AddrPort(),
		stunAlt:  conns[1].LocalAddr().(*net.UDPAddr).AddrPort()}
	wd.startServer(filepath.Join(t.TempDir(), "directory.db"))
	return wd
}

// startServer starts the directory server (again) on path. It keeps the
// same loopback address across restarts.
func (wd *world) startServer(path string) {
	t := wd.t
	st, err := sqlite.Open(context.Background(), path)
	if err != nil {
		t.Fatal(err)
	}
	srv, err := directory.New(directory.Config{
		Store:        st,
		Argon2:       directory.Argon2Params{Time: 1, MemoryKiB: 64, Threads: 1},
		NoRateLimits: true,
		STUN:         wd.stunAddr.String(),
		STUNAlt:      wd.stunAlt.String(),
		// Supernodes in tests live on loopback.
		AllowPrivateSupernodes: true,
	})
	if err != nil {
		t.Fatal(err)
	}
	var ts *httptest.Server
	if wd.http == nil {
		ts = httptest.NewServer(srv)
	} else {
		ts = httptest.NewUnstartedServer(srv)
		ln, err := net.Listen("tcp", wd.http.Listener.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		ts.Listener = ln
		ts.Start()
	}
	wd.dir, wd.http = srv, ts
	t.Cleanup(func() { wd.stopServer(); st.Close() })
}

// stopServer stops the directory server: event streams end, the HTTP
// listener closes.
func (wd *world) stopServer() {
	if wd.dir == nil {
		return
	}
	wd.http.CloseClientConnections()
	wd.dir.Close()
	wd.http.Close()
	wd.dir = nil
}

// publicHost is a host with a public address.
func (wd *world) publicHost(name string) *natlab.Host {
	return wd.w.NewHost(name, wd.internet, wd.link)
}

// natHost is a host behind its own NAT with the given mapping and
// filtering behaviour.
func (wd *world) natHost(name string, mapping, filtering natlab.Behavior) (*natlab.Host, *natlab.NAT) {
	wd.nats++
	lan := wd.w.NewNetwork(name+"-lan", netip.MustParsePrefix(fmt.Sprintf("192.168.%d.0/24", wd.nats)))
	nat := wd.w.NewNAT(name+"-nat", natlab.NATConfig{Inside: lan, Outside: wd.internet, Mapping: mapping, Filtering: filtering, Link: wd.link})
	return wd.w.NewHost(name, lan, natlab.Link{}), nat
}

// daemon is a running node.
type daemon struct {
	*node.Node
	dir    string
	cancel context.CancelFunc
	done   chan error
}

func (wd *world) startNode(name, dir string, h *natlab.Host) *daemon {
	return wd.startNodeConfig(name, node.Config{DataDir: dir, Listener: h, Supernode: "off"})
}

// startNodeConfig starts a node with cfg completed by the world's defaults.
func (wd *world) startNodeConfig(name string, cfg node.Config) *daemon {
	t := wd.t
	t.Helper()
	if wd.url != "" {
		cfg.Server, cfg.HTTPClient = wd.url, wd.hc
	} else {
		cfg.Server = wd.http.URL
	}
	cfg.DeviceName = name
	cfg.Logger = testLogger(t, name)
	cfg.PunchTimeout = 5 * time.Second
	if cfg.RefreshInterval == 0 {
		cfg.RefreshInterval = time.Hour
	}
	if cfg.Listener == nil && cfg.ListenAddr == "" {
		cfg.ListenAddr = "127.0.0.1:0"
	}
	dir := cfg.DataDir
	n, err := node.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	d := &daemon{Node: n, dir: dir, cancel: cancel, done: make(chan error, 1)}
	go func() { d.done <- n.Run(ctx) }()
	t.Cleanup(d.stop)
	return d
}

func (d *daemon) stop() {
	d.cancel()
	<-d.done
	d.done <- nil // let a second stop return
}

func testLogger(t *testing.T, name string) *slog.Logger {
	if os.Getenv("NODE_TEST_LOG") == "" {
		return slog.New(slog.DiscardHandler)
	}
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug})).With("node", name)
}

// waitFor polls cond until it holds or timeout passes.
func waitFor(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// befriend registers both users (alice asks, bob accepts) and waits until
// both daemons are online with each other as mutual contacts.
func befriend(t *testing.T, a, b *daemon, an, bn string) {
	t.Helper()
	ctx := t.Context()
	if err := a.Register(ctx, an, password); err != nil {
		t.Fatal(err)
	}
	if err := b.Register(ctx, bn, password); err != nil {
		t.Fatal(err)
	}
	if st, err := a.AddContact(ctx, bn); err != nil || st != "outgoing" {
		t.Fatalf("add contact: %q, %v", st, err)
	}
	if err := b.AcceptContact(ctx, an); err != nil {
		t.Fatal(err)
	}
	for _, d := range []*daemon{a, b} {
		waitFor(t, 10*time.Second, "online with a mutual contact", func() bool {
			s := d.Status()
			return s.ServerUp && len(s.Candidates) > 0 && len(s.Contacts) == 1 && s.Contacts[0].State == "mutual" && s.Contacts[0].Online
		})
	}
}

func mustPrefix(s string) netip.Prefix { return netip.MustParsePrefix(s) }
