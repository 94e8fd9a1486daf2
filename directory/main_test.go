package directory_test

import (
	"context"
	"crypto/rand"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/parley-p2p/parley/directory"
	"github.com/parley-p2p/parley/directory/client"
	"github.com/parley-p2p/parley/directory/store"
	"github.com/parley-p2p/parley/directory/store/sqlite"
	"github.com/parley-p2p/parley/internal/pgtest"
)

func TestMain(m *testing.M) {
	code := pgtest.Main(m)
	if code == 0 {
		if leaks := leakedGoroutines(); leaks != "" {
			fmt.Fprintf(os.Stderr, "goroutines left behind:\n%s\n", leaks)
			code = 1
		}
	}
	os.Exit(code)
}

// leakedGoroutines waits for the goroutines of this module and its
// WebSocket library to end, and returns the stacks of those that do not.
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

// cheap keeps password hashing fast in tests; the production cost is
// exercised by TestPasswordHashCost.
var cheap = directory.Argon2Params{Time: 1, MemoryKiB: 64, Threads: 1}

const password = "correct horse battery"

type env struct {
	t     *testing.T
	srv   *directory.Server
	http  *httptest.Server
	store store.Store
}

func openSQLite(t *testing.T) store.Store {
	t.Helper()
	st, err := sqlite.Open(t.Context(), filepath.Join(t.TempDir(), "directory.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return st
}

func newEnv(t *testing.T, mod ...func(*directory.Config)) *env {
	t.Helper()
	return newEnvOn(t, openSQLite(t), mod...)
}

func newEnvOn(t *testing.T, st store.Store, mod ...func(*directory.Config)) *env {
	t.Helper()
	// Generous limits: the tests that check limits set their own.
	loose := directory.Rate{Every: time.Millisecond, Burst: 1000}
	cfg := directory.Config{Store: st, Argon2: cheap, AllowPrivateSupernodes: true, DialbackTimeout: 2 * time.Second,
		LoginPerIP: loose, LoginPerAccount: loose, RegisterPerIP: loose, SearchPerUser: loose, DialbackPerUser: loose}
	for _, f := range mod {
		f(&cfg)
	}
	srv, err := directory.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ts := httptest.NewServer(srv)
	t.Cleanup(func() {
		srv.Close()
		ts.Close()
	})
	return &env{t: t, srv: srv, http: ts, store: st}
}

func (e *env) client() *client.Client { return client.New(e.http.URL, e.http.Client()) }

func newKey(t *testing.T) client.Key {
	var k client.Key
	rand.Read(k[:])
	return k
}

// user registers name and logs in one device.
func (e *env) user(name string) (*client.Client, client.Key) {
	e.t.Helper()
	c := e.client()
	if _, err := c.Register(e.t.Context(), name, password); err != nil {
		e.t.Fatalf("register %s: %v", name, err)
	}
	return e.login(name)
}

func (e *env) login(name string) (*client.Client, client.Key) {
	e.t.Helper()
	c := e.client()
	k := newKey(e.t)
	if _, err := c.Login(e.t.Context(), name, password, name+"-laptop", k); err != nil {
		e.t.Fatalf("login %s: %v", name, err)
	}
	return c, k
}

// befriend makes a and b mutual contacts.
func befriend(t *testing.T, a, b *client.Client, bName, aName string) {
	t.Helper()
	if _, err := a.RequestContact(t.Context(), bName); err != nil {
		t.Fatal(err)
	}
	if err := b.AcceptContact(t.Context(), aName); err != nil {
		t.Fatal(err)
	}
}

func wantStatus(t *testing.T, err error, status int, code string) {
	t.Helper()
	if client.StatusOf(err) != status || (code != "" && !client.IsCode(err, code)) {
		t.Fatalf("err = %v; want %d %s", err, status, code)
	}
}

// nextEvent waits for the next event of type typ, skipping others.
func nextEvent(t *testing.T, s *client.EventStream, typ string) client.Event {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	for {
		ev, err := s.Next(ctx)
		if err != nil {
			t.Fatalf("waiting for %s event: %v", typ, err)
		}
		if ev.Type == typ {
			return ev
		}
	}
}

func events(t *testing.T, c *client.Client) *client.EventStream {
	t.Helper()
	s, err := c.Events(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.CloseNow() })
	nextEvent(t, s, "hello")
	return s
}

// raw sends a request and returns the response with its body read.
func (e *env) raw(method, path, token string, body string, hdr map[string]string) (*http.Response, string) {
	e.t.Helper()
	var r *http.Request
	if body != "" {
		r = httptest.NewRequest(method, e.http.URL+path, stringsReader(body))
		r.Header.Set("Content-Type", "application/json")
	} else {
		r = httptest.NewRequest(method, e.http.URL+path, nil)
	}
	r.RequestURI = ""
	if token != "" {
		r.Header.Set("Authorization", "Bearer "+token)
	}
	for k, v := range hdr {
		r.Header.Set(k, v)
	}
	resp, err := e.http.Client().Do(r)
	if err != nil {
		e.t.Fatal(err)
	}
	defer resp.Body.Close()
	b := readAll(resp)
	return resp, b
}

// Benchmark variants of the helpers.

func newEnvB(b *testing.B) *env {
	st, err := sqlite.Open(b.Context(), filepath.Join(b.TempDir(), "directory.db"))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { st.Close() })
	srv, err := directory.New(directory.Config{Store: st, Argon2: cheap, NoRateLimits: true})
	if err != nil {
		b.Fatal(err)
	}
	ts := httptest.NewServer(srv)
	b.Cleanup(func() { srv.Close(); ts.Close() })
	return &env{srv: srv, http: ts, store: st}
}

func (e *env) userB(b *testing.B, name string) (*client.Client, client.Key) {
	c := e.client()
	if _, err := c.Register(b.Context(), name, password); err != nil {
		b.Fatal(err)
	}
	var k client.Key
	rand.Read(k[:])
	if _, err := c.Login(b.Context(), name, password, "d", k); err != nil {
		b.Fatal(err)
	}
	return c, k
}

func befriendB(b *testing.B, x, y *client.Client, yName, xName string) {
	if _, err := x.RequestContact(b.Context(), yName); err != nil {
		b.Fatal(err)
	}
	if err := y.AcceptContact(b.Context(), xName); err != nil {
		b.Fatal(err)
	}
}
