// Package deadline implements the read/write deadlines of in-process
// net.PacketConns (natlab's sockets, the relay's Mux), after net.Pipe's: a
// channel that closes when the time passes. It uses time.AfterFunc, so
// under testing/synctest it runs on the bubble's clock.
package deadline

import (
	"sync"
	"time"
)

// A Deadline is a channel that closes when a time passes. Use New; it is
// safe for concurrent use.
type Deadline struct {
	mu     sync.Mutex // protects the fields below
	timer  *time.Timer
	cancel chan struct{} // closed when the deadline passes
}

// New returns a disarmed deadline.
func New() Deadline { return Deadline{cancel: make(chan struct{})} }

// Set arms the deadline for t; the zero t disarms it. A t in the past
// closes the channel at once. Waiters on the old channel are woken when it
// closes; after a re-arm they must call Wait again.
func (d *Deadline) Set(t time.Time) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.timer != nil && !d.timer.Stop() {
		<-d.cancel // the timer fired: wait for it to close cancel
	}
	d.timer = nil

	closed := Passed(d.cancel)
	if t.IsZero() {
		if closed {
			d.cancel = make(chan struct{})
		}
		return
	}
	if dur := time.Until(t); dur > 0 {
		if closed {
			d.cancel = make(chan struct{})
		}
		cancel := d.cancel
		d.timer = time.AfterFunc(dur, func() { close(cancel) })
		return
	}
	if !closed {
		close(d.cancel)
	}
}

// Wait returns a channel that is closed when the deadline passes.
func (d *Deadline) Wait() <-chan struct{} {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.cancel
}

// Passed reports whether the channel c from Wait is closed.
func Passed(c <-chan struct{}) bool {
	select {
	case <-c:
		return true
	default:
		return false
	}
}
