package node_test

import (
	"context"
	"errors"
	"net"
	"net/http"
	"net/netip"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/parley-p2p/parley/directory"
	"github.com/parley-p2p/parley/directory/store/sqlite"
	"github.com/parley-p2p/parley/natlab"
	"github.com/parley-p2p/parley/stun"
)

// This file builds worlds for tests in a testing/synctest bubble: the
// natlab network, the STUN server, the directory and the daemons all run in
// the bubble, on its virtual clock. natlab carries only UDP, so the
// directory's HTTP runs over an in-memory listener (net.Pipe connections,
// which block durably, so the bubble's clock advances while requests are
// in flight); its dial-back socket is a natlab host, so supernodes are
// verified inside the emulated network.

// pipeListener is a net.Listener whose connections are net.Pipes made by
// its dial method.
type pipeListener struct {
	delay  time.Duration // on every write
	conns  chan net.Conn
	closed chan struct{}
	once   sync.Once
}

func newPipeListener() *pipeListener {
	return &pipeListener{conns: make(chan net.Conn), closed: make(chan struct{})}
}

func (l *pipeListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.conns:
		return c, nil
	case <-l.closed:
		return nil, net.ErrClosed
	}
}

func (l *pipeListener) Close() error {
	l.once.Do(func() { close(l.closed) })
	return nil
}

func (l *pipeListener) Addr() net.Addr { return pipeAddr{} }

func (l *pipeListener) dial(ctx context.Context, _, _ string) (net.Conn, error) {
	c, s := net.Pipe()
	if l.delay > 0 {
		c, s = &delayConn{c, l.delay}, &delayConn{s, l.delay}
	}
	select {
	case l.conns <- s:
		return c, nil
	case <-l.closed:
		return nil, errors.New("connection refused")
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// delayConn delays each write, as a network's one-way delay would (but
// without pipelining: good enough for request-response and event traffic).
type delayConn struct {
	net.Conn
	d time.Duration
}

func (c *delayConn) Write(b []byte) (int, error) {
	time.Sleep(c.d)
	return c.Conn.Write(b)
}

type pipeAddr struct{}

func (pipeAddr) Network() string { return "pipe" }
func (pipeAddr) String() string  { return "directory.test:80" }

// syncWorldConfig shapes a bubble world.
type syncWorldConfig struct {
	// Link is every host's and NAT's link to the internet (both ways).
	Link natlab.Link
	// TicketLifetime is the relay tickets'; zero means the directory's.
	TicketLifetime time.Duration
	// ServerDelay delays every write on the directory's connections, both
	// ways: half the HTTP round trip to the server.
	ServerDelay time.Duration
}

// newSyncWorld is newWorld for a synctest bubble; call it inside one.
func newSyncWorld(t *testing.T, cfg syncWorldConfig) *world {
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
	stunDone := make(chan struct{})
	go func() {
		defer close(stunDone)
		(&stun.Server{Primary: p, Alt: a}).Serve(ctx)
	}()
	t.Cleanup(func() { cancel(); p.Close(); a.Close(); <-stunDone })
	wd := &world{t: t, w: w, internet: inet, link: cfg.Link,
		stunAddr: netip.AddrPortFrom(sh.Addr(), 3478), stunAlt: netip.AddrPortFrom(sh.Addr(), 3479)}

	st, err := sqlite.Open(context.Background(), filepath.Join(t.TempDir(), "directory.db"))
	if err != nil {
		t.Fatal(err)
	}
	dh := w.NewHost("directory", inet, natlab.Link{})
	srv, err := directory.New(directory.Config{
		Store:                  st,
		Argon2:                 directory.Argon2Params{Time: 1, MemoryKiB: 64, Threads: 1},
		NoRateLimits:           true,
		STUN:                   wd.stunAddr.String(),
		STUNAlt:                wd.stunAlt.String(),
		AllowPrivateSupernodes: true,
		DialbackListener:       dh,
		TicketLifetime:         cfg.TicketLifetime,
	})
	if err != nil {
		t.Fatal(err)
	}
	ln := newPipeListener()
	ln.delay = cfg.ServerDelay
	hs := &http.Server{Handler: srv}
	served := make(chan struct{})
	go func() {
		defer close(served)
		hs.Serve(ln)
	}()
	tr := &http.Transport{DialContext: ln.dial}
	wd.url, wd.hc = "http://directory.test", &http.Client{Transport: tr}
	t.Cleanup(func() {
		srv.Close()
		hs.Close()
		<-served
		tr.CloseIdleConnections()
		st.Close()
	})
	return wd
}
