package handshake

import (
	"net/netip"
	"sync"
	"sync/atomic"
	"time"
)

// Per-source limits on initiations that reach Diffie-Hellman while the
// responder is under load, after WireGuard's ratelimiter: a token bucket per
// source IP address.
const (
	sourceRate   = 20 // initiations per second per source IP
	sourceBurst  = 5
	maxSources   = 1 << 16 // bound on tracked sources; beyond it new sources are refused
	sourceExpiry = time.Second

	// loadThreshold is how many initiations in one second put the responder
	// "under load", after which it demands valid mac2 cookies. It is well
	// above what one core completes (about 2,000 a second here), so that
	// legitimate bursts are not slowed by a cookie round trip; a backlog of
	// handshakes (SetBusy) also means load.
	loadThreshold = 4096
	loadHold      = time.Second
)

type bucket struct {
	tokens float64
	last   time.Time
}

// sourceLimiter is a per-IP token bucket. It is safe for concurrent use.
type sourceLimiter struct {
	mu      sync.Mutex // protects the fields below
	buckets map[netip.Addr]*bucket
	swept   time.Time
}

// allow reports whether one more initiation from addr may be processed now.
func (l *sourceLimiter) allow(addr netip.Addr, now time.Time) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.buckets == nil {
		l.buckets = make(map[netip.Addr]*bucket)
	}
	if now.Sub(l.swept) > sourceExpiry {
		for a, b := range l.buckets {
			if now.Sub(b.last) > sourceExpiry {
				delete(l.buckets, a)
			}
		}
		l.swept = now
	}
	b := l.buckets[addr]
	if b == nil {
		if len(l.buckets) >= maxSources {
			return false
		}
		b = &bucket{tokens: sourceBurst, last: now}
		l.buckets[addr] = b
	}
	b.tokens += now.Sub(b.last).Seconds() * sourceRate
	if b.tokens > sourceBurst {
		b.tokens = sourceBurst
	}
	b.last = now
	if b.tokens < 1 {
		return false
	}
	b.tokens--
	return true
}

// loadMeter decides whether the responder is under load: more than
// loadThreshold initiations (valid mac1) within a second. It is safe for
// concurrent use.
type loadMeter struct {
	mu         sync.Mutex // protects the fields below
	windowFrom time.Time
	count      int
	loadedTill time.Time
	forced     bool
	busy       atomic.Bool
}

// observe counts one initiation and reports whether we are under load.
func (m *loadMeter) observe(now time.Time) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	if now.Sub(m.windowFrom) >= time.Second {
		m.windowFrom = now
		m.count = 0
	}
	m.count++
	if m.count > loadThreshold {
		m.loadedTill = now.Add(loadHold)
	}
	return m.forced || m.busy.Load() || now.Before(m.loadedTill)
}

func (m *loadMeter) force(on bool) {
	m.mu.Lock()
	m.forced = on
	m.mu.Unlock()
}
