package directory

import (
	"sync"
	"time"
)

// Rate is a token bucket's refill rate and burst.
type Rate struct {
	Every time.Duration // one token per Every; zero disables the limit
	Burst int
}

// limiter is a set of token buckets keyed by string ("login-ip:192.0.2.1",
// "login-user:alice", …). It lives in memory: with several server
// processes each limits independently, so the effective limit is the
// configured one times the number of processes.
type limiter struct {
	rate Rate

	mu      sync.Mutex // protects the fields below
	buckets map[string]*bucket
	swept   time.Time
}

type bucket struct {
	tokens float64
	last   time.Time
}

func newLimiter(r Rate) *limiter {
	return &limiter{rate: r, buckets: make(map[string]*bucket)}
}

// allow takes a token for key at now, or reports how long until one is due.
func (l *limiter) allow(key string, now time.Time) (bool, time.Duration) {
	if l == nil || l.rate.Every <= 0 {
		return true, 0
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	l.sweepLocked(now)
	b, ok := l.buckets[key]
	if !ok {
		b = &bucket{tokens: float64(l.rate.Burst), last: now}
		l.buckets[key] = b
	}
	b.tokens = min(float64(l.rate.Burst), b.tokens+float64(now.Sub(b.last))/float64(l.rate.Every))
	b.last = now
	if b.tokens >= 1 {
		b.tokens--
		return true, 0
	}
	return false, time.Duration((1 - b.tokens) * float64(l.rate.Every))
}

// sweepLocked forgets buckets that have refilled, once a minute, so the
// map does not grow with every address ever seen.
func (l *limiter) sweepLocked(now time.Time) {
	if now.Sub(l.swept) < time.Minute {
		return
	}
	l.swept = now
	full := l.rate.Every * time.Duration(l.rate.Burst)
	for k, b := range l.buckets {
		if now.Sub(b.last) > full {
			delete(l.buckets, k)
		}
	}
}
