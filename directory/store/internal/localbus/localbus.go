// Package localbus is an in-process store.Broadcaster, for back ends that
// serve a single process (SQLite).
package localbus

import (
	"context"
	"sync"

	"github.com/parley-p2p/parley/directory/store"
)

// Bus delivers published messages synchronously to every subscriber. The
// zero value is ready to use.
type Bus struct {
	mu   sync.Mutex // protects subs and serialises delivery
	subs map[int]func([]byte)
	next int
}

// Publish calls every subscriber with payload before returning. Subscribers
// are called one at a time, in no particular order.
func (b *Bus) Publish(ctx context.Context, payload []byte) error {
	if len(payload) > store.MaxBroadcast {
		return store.ErrTooLarge
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, fn := range b.subs {
		fn(payload)
	}
	return nil
}

// Subscribe registers fn. onReset is never called: nothing is ever lost.
func (b *Bus) Subscribe(fn func([]byte), onReset func()) (cancel func()) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.subs == nil {
		b.subs = make(map[int]func([]byte))
	}
	id := b.next
	b.next++
	b.subs[id] = fn
	return func() {
		b.mu.Lock()
		defer b.mu.Unlock()
		delete(b.subs, id)
	}
}
