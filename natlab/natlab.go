package natlab

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net"
	"net/netip"
	"sync"
	"time"
)

// PacketListener is the seam through which Parley's code opens UDP sockets.
// In production it is a *net.ListenConfig; in tests it is a *Host.
type PacketListener interface {
	ListenPacket(ctx context.Context, network, address string) (net.PacketConn, error)
}

var (
	_ PacketListener = (*net.ListenConfig)(nil)
	_ PacketListener = (*Host)(nil)
)

// DefaultSocketBuffer is the receive queue size of a Conn when
// Config.SocketBuffer is zero.
const DefaultSocketBuffer = 4 << 20

// Config configures a World. The zero Config is valid.
type Config struct {
	// Seed seeds every random choice the World makes: loss, jitter,
	// duplication, reordering, ephemeral and NAT ports. Two Worlds with the
	// same seed driven by the same single-goroutine sequence of calls behave
	// identically. Zero is a valid seed.
	Seed uint64
	// SocketBuffer is the default receive queue of each Conn in bytes; each
	// queued datagram counts its payload plus 64 bytes of overhead, so that
	// empty datagrams cannot queue without bound. Zero means
	// DefaultSocketBuffer. Conn.SetReadBuffer changes it per Conn.
	SocketBuffer int
}

// A World is an emulated IP network: the Networks, Hosts and NATs in it, and
// the one scheduler goroutine that moves delayed datagrams along. Create it
// with New and stop it with Close.
//
// Every method of World, Network, Host and NAT is safe for concurrent use.
type World struct {
	cfg   Config
	epoch time.Time // time zero of every time.Duration in the World

	wake    chan struct{} // tells run the earliest event changed (cap 1)
	done    chan struct{} // closed by Close
	stopped chan struct{} // closed when run returns

	// mu protects every field below and all mutable state of the World's
	// Networks, Hosts, NATs and pipes. Lock order: World.mu, then Conn.mu.
	// Conn.mu is never held while taking World.mu.
	mu      sync.Mutex
	closed  bool
	rand    *rand.Rand
	events  eventHeap
	seq     uint64
	armed   bool          // run's timer is set, for armedAt
	armedAt time.Duration // earliest time run will wake at
	names   map[string]bool
	nets    []*Network
	hosts   []*Host
	nats    []*NAT
}

// New returns a running World configured by cfg.
//
// To use virtual time, call New inside a testing/synctest bubble: the World
// then runs on the bubble's clock, and delays cost no real time.
func New(cfg Config) *World {
	if cfg.SocketBuffer <= 0 {
		cfg.SocketBuffer = DefaultSocketBuffer
	}
	w := &World{
		cfg:     cfg,
		epoch:   time.Now(),
		wake:    make(chan struct{}, 1),
		done:    make(chan struct{}),
		stopped: make(chan struct{}),
		rand:    rand.New(rand.NewPCG(cfg.Seed, cfg.Seed^0x9e3779b97f4a7c15)),
		names:   make(map[string]bool),
	}
	go w.run()
	return w
}

// Close stops the World's goroutine, discards datagrams in flight and closes
// every Conn, unblocking their readers with net.ErrClosed. It is safe to call
// more than once.
func (w *World) Close() error {
	w.mu.Lock()
	if w.closed {
		w.mu.Unlock()
		return nil
	}
	w.closed = true
	for len(w.events) > 0 {
		w.events.pop().p.release()
	}
	var conns []*Conn
	for _, h := range w.hosts {
		for _, c := range h.conns {
			conns = append(conns, c)
		}
	}
	w.mu.Unlock()

	close(w.done)
	<-w.stopped
	for _, c := range conns {
		c.Close()
	}
	return nil
}

// now is the World's clock: time since New.
func (w *World) now() time.Duration { return time.Since(w.epoch) }

// run is the World's only goroutine. It sleeps on one timer set to the
// earliest pending event, delivers every event that is due, and repeats.
func (w *World) run() {
	defer close(w.stopped)
	t := time.NewTimer(time.Hour)
	t.Stop()
	for {
		w.mu.Lock()
		now := w.now()
		for len(w.events) > 0 && w.events[0].at <= now {
			e := w.events.pop()
			// Downstream pipes start from the event's own time, not from
			// now: a late timer in real time then delays delivery but does
			// not add up along the path, and virtual time stays exact.
			e.pipe.exitLocked(w, e.p, e.at)
		}
		var d time.Duration
		w.armed = len(w.events) > 0
		if w.armed {
			w.armedAt = w.events[0].at
			d = w.armedAt - now
		}
		armed := w.armed
		w.mu.Unlock()

		if armed {
			t.Reset(d)
		} else {
			t.Stop()
		}
		select {
		case <-w.done:
			t.Stop()
			return
		case <-w.wake:
		case <-t.C:
		}
	}
}

// scheduleLocked makes p leave pipe pp at time at. A datagram due now (an
// ideal link) is passed on at once, on the caller's goroutine; this keeps a
// zero-delay path free of goroutine hand-offs.
func (w *World) scheduleLocked(at, now time.Duration, p *packet, pp *pipe) {
	if at <= now {
		pp.exitLocked(w, p, at)
		return
	}
	w.seq++
	w.events.push(event{at: at, seq: w.seq, p: p, pipe: pp})
	if !w.armed || at < w.armedAt {
		w.armed, w.armedAt = true, at
		select {
		case w.wake <- struct{}{}:
		default:
		}
	}
}

// claimNameLocked reserves a Host or NAT name; names key Stats.
func (w *World) claimNameLocked(kind, name string) {
	if w.names[name] {
		panic(fmt.Sprintf("natlab: %s name %q already used", kind, name))
	}
	w.names[name] = true
}

// Stats returns a snapshot of every counter in the World.
func (w *World) Stats() Stats {
	w.mu.Lock()
	defer w.mu.Unlock()
	s := Stats{
		Hosts:    make(map[string]HostStats, len(w.hosts)),
		NATs:     make(map[string]NATStats, len(w.nats)),
		Networks: make(map[string]Counters, len(w.nets)),
	}
	for _, h := range w.hosts {
		s.Hosts[h.name] = h.statsLocked()
	}
	for _, n := range w.nats {
		s.NATs[n.name] = n.statsLocked()
	}
	for _, n := range w.nets {
		s.Networks[n.name] = n.c
	}
	return s
}

// NewPair returns a World with one network, 10.0.0.0/24, and two hosts on
// it: a (10.0.0.2), attached by l both ways, and b (10.0.0.3), attached by
// an ideal link with l's MTU. Datagrams between them cross l once each way,
// so the round-trip time is 2×l.Delay and each direction sees l.Loss and
// l.Rate once.
func NewPair(cfg Config, l Link) (w *World, a, b *Host) {
	w = New(cfg)
	n := w.NewNetwork("net", netip.MustParsePrefix("10.0.0.0/24"))
	a = w.NewHost("a", n, l)
	b = w.NewHost("b", n, Link{MTU: l.MTU})
	return w, a, b
}

// Pair is NewPair with the zero Config.
func Pair(l Link) (w *World, a, b *Host) { return NewPair(Config{}, l) }
