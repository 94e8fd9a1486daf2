package files_test

import (
	"context"
	"crypto/sha256"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/parley-p2p/parley/apps/appmux"
	"github.com/parley-p2p/parley/apps/files"
	"github.com/parley-p2p/parley/apps/internal/apptest"
	"github.com/parley-p2p/parley/natlab"
	"github.com/parley-p2p/parley/transport"
)

// pair is alice (sending) and bob (receiving) with a files.Service each,
// over sessions of one natlab lab that the test can cut and reconnect.
type pair struct {
	t          *testing.T
	lab        *apptest.Lab
	alice, bob *files.Service
	aliceDir   string
	bobDir     string

	mu     sync.Mutex // protects ab, ba
	ab, ba *transport.Session
}

func newPair(t *testing.T, l natlab.Link, cfg *transport.Config, bobCfg files.Config) *pair {
	p := &pair{t: t, lab: apptest.NewLab(t, l, cfg), aliceDir: t.TempDir(), bobDir: t.TempDir()}
	var err error
	p.alice, err = files.New(files.Config{Dir: p.aliceDir, Session: p.session(true), Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.alice.Close() })
	p.bob = p.newBob(bobCfg)
	p.connect()
	return p
}

// newBob opens (or, after a simulated restart, reopens) bob's service.
func (p *pair) newBob(cfg files.Config) *files.Service {
	cfg.Dir = p.bobDir
	cfg.Session = p.session(false)
	cfg.Logger = quiet
	s, err := files.New(cfg)
	if err != nil {
		p.t.Fatal(err)
	}
	p.t.Cleanup(func() { s.Close() })
	p.mu.Lock()
	p.bob = s
	p.mu.Unlock()
	return s
}

func (p *pair) session(alice bool) func(context.Context, string) (appmux.Opener, error) {
	return func(context.Context, string) (appmux.Opener, error) {
		p.mu.Lock()
		defer p.mu.Unlock()
		if alice {
			return p.ab, nil
		}
		return p.ba, nil
	}
}

// connect opens a new session between alice and bob and routes its file
// streams to the current services.
func (p *pair) connect() {
	ab, ba := p.lab.Connect()
	p.mu.Lock()
	p.ab, p.ba = ab, ba
	p.mu.Unlock()
	route := func(svc func() *files.Service, peer string) func(appmux.App, net.Conn) {
		return func(app appmux.App, c net.Conn) {
			if app == appmux.File {
				svc().HandleStream(context.Background(), c, peer)
			}
		}
	}
	apptest.Serve(p.t, ab, route(func() *files.Service { return p.alice }, "bob"))
	apptest.Serve(p.t, ba, route(func() *files.Service {
		p.mu.Lock()
		defer p.mu.Unlock()
		return p.bob
	}, "alice"))
}

// writeFile writes size pseudo-random bytes to dir/name and returns the path
// and SHA-256, holding only a small buffer.
func writeFile(t *testing.T, dir, name string, size int64, seed uint64) (string, [32]byte) {
	path := filepath.Join(dir, name)
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	h := sha256.New()
	r := io.LimitReader(rand.NewChaCha8([32]byte{byte(seed)}), size)
	if _, err := io.CopyBuffer(io.MultiWriter(f, h), r, make([]byte, 64<<10)); err != nil {
		t.Fatal(err)
	}
	return path, [32]byte(h.Sum(nil))
}

func sumFile(t *testing.T, path string) [32]byte {
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.CopyBuffer(h, f, make([]byte, 64<<10)); err != nil {
		t.Fatal(err)
	}
	return [32]byte(h.Sum(nil))
}

func timeout(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

var quiet = slog.New(slog.DiscardHandler)

func transferSize() int64 {
	if raceEnabled {
		return 16 << 20 // the race detector slows the transport ~10x
	}
	return 64 << 20
}

// TestTransferLossy moves a file over a lossy, delayed link and checks the
// saved file, the progress reports on both sides, and that the heap stays
// bounded: no more than a few fixed buffers, whatever the file's size.
func TestTransferLossy(t *testing.T) {
	var mu sync.Mutex
	var last map[files.Direction]files.Progress = map[files.Direction]files.Progress{}
	var peak atomic.Uint64
	var nextSample atomic.Int64
	var ms runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&ms)
	base := ms.HeapAlloc
	sample := func(done int64) {
		// Sampling the heap stops the world: every 4 MiB is enough.
		if done < nextSample.Load() {
			return
		}
		nextSample.Store(done + 4<<20)
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		for {
			old := peak.Load()
			if ms.HeapAlloc <= old || peak.CompareAndSwap(old, ms.HeapAlloc) {
				break
			}
		}
	}
	progress := func(p files.Progress) {
		mu.Lock()
		last[p.Direction] = p
		mu.Unlock()
		if p.Direction == files.Incoming {
			sample(p.Done)
		}
	}
	// Small transport windows bound the transport's own buffering, so the
	// heap measures what the application holds.
	tcfg := &transport.Config{MaxStreamWindow: 1 << 20, MaxSessionWindow: 2 << 20}
	p := newPair(t, natlab.Link{Delay: 2 * time.Millisecond, Loss: 0.005}, tcfg, files.Config{Progress: progress})
	p.alice.Close()
	var err error
	p.alice, err = files.New(files.Config{Dir: p.aliceDir, Session: p.session(true), Progress: progress, Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	size := transferSize()
	path, want := writeFile(t, p.aliceDir, "big.bin", size, 1)
	ctx := timeout(t, 2*time.Minute)

	offer, err := p.alice.Send(ctx, "bob", path)
	if err != nil {
		t.Fatal(err)
	}
	in, ok := p.bob.Transfer(offer.ID)
	if !ok || in.State != files.Offered || in.Name != "big.bin" || in.Size != size || in.Peer != "alice" {
		t.Fatalf("bob's record of the offer: %+v", in)
	}
	start := time.Now()
	got, err := p.bob.Accept(ctx, offer.ID)
	if err != nil {
		t.Fatal(err)
	}
	elapsed := time.Since(start)
	if got.State != files.Done || got.Path != filepath.Join(p.bobDir, "big.bin") {
		t.Fatalf("after Accept: %+v", got)
	}
	if sumFile(t, got.Path) != want {
		t.Fatal("saved file differs")
	}
	waitState(t, p.alice, offer.ID, files.Done)
	mu.Lock()
	for _, d := range []files.Direction{files.Outgoing, files.Incoming} {
		pr := last[d]
		if pr.Done != size || pr.Size != size || pr.Rate <= 0 || pr.ETA != 0 {
			t.Errorf("last %v progress: %+v", d, pr)
		}
	}
	mu.Unlock()
	growth := int64(peak.Load()) - int64(base)
	t.Logf("%d MiB in %v: %.1f MiB/s; heap peak %+.1f MiB over %.1f MiB", size>>20, elapsed.Round(time.Millisecond),
		float64(size)/(1<<20)/elapsed.Seconds(), float64(growth)/(1<<20), float64(base)/(1<<20))
	if growth > 8<<20 {
		t.Errorf("heap grew by %d MiB while moving %d MiB", growth>>20, size>>20)
	}
}

func waitState(t *testing.T, s *files.Service, id files.ID, want files.State) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		tr, _ := s.Transfer(id)
		if tr.State == want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("transfer %v is %v, want %v", id, tr.State, want)
		}
		time.Sleep(time.Millisecond) // polling a condition, bounded by the deadline
	}
}
