package chat_test

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"path/filepath"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/parley-p2p/parley/apps/appmux"
	"github.com/parley-p2p/parley/apps/chat"
	"github.com/parley-p2p/parley/apps/internal/apptest"
	"github.com/parley-p2p/parley/natlab"
	"github.com/parley-p2p/parley/transport"
)

var quiet = slog.New(slog.DiscardHandler)

var errOffline = errors.New("offline")

// pair is alice and bob with a chat.Service each, over sessions of one
// natlab lab that the test can cut and reconnect.
type pair struct {
	t          *testing.T
	lab        *apptest.Lab
	dir        string
	alice, bob *chat.Service
	aliceStore *chat.Store
	bobStore   *chat.Store

	mu     sync.Mutex // protects the fields below
	ab, ba *transport.Session
}

func openStore(t *testing.T, path string) *chat.Store {
	st, err := chat.OpenStore(context.Background(), path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return st
}

func newPair(t *testing.T) *pair {
	p := &pair{t: t, lab: apptest.NewLab(t, natlab.Link{Delay: 10 * time.Millisecond}, nil), dir: t.TempDir()}
	p.aliceStore = openStore(t, filepath.Join(p.dir, "alice.db"))
	p.alice = chat.NewService(chat.Config{Store: p.aliceStore, Session: p.session(true), Logger: quiet})
	bs := openStore(t, filepath.Join(p.dir, "bob.db"))
	p.bob = chat.NewService(chat.Config{Store: bs, Session: p.session(false), Logger: quiet})
	p.bobStore = bs
	p.connect()
	return p
}

func (p *pair) session(alice bool) func(context.Context, string) (appmux.Opener, error) {
	return func(context.Context, string) (appmux.Opener, error) {
		p.mu.Lock()
		defer p.mu.Unlock()
		s := p.ba
		if alice {
			s = p.ab
		}
		if s == nil {
			return nil, errOffline
		}
		return s, nil
	}
}

func (p *pair) connect() {
	ab, ba := p.lab.Connect()
	p.mu.Lock()
	p.ab, p.ba = ab, ba
	p.mu.Unlock()
	route := func(svc func() *chat.Service, peer string) func(appmux.App, net.Conn) {
		return func(app appmux.App, c net.Conn) {
			if app == appmux.Chat {
				svc().HandleStream(context.Background(), c, peer)
			}
		}
	}
	apptest.Serve(p.t, ab, route(func() *chat.Service { p.mu.Lock(); defer p.mu.Unlock(); return p.alice }, "bob"))
	apptest.Serve(p.t, ba, route(func() *chat.Service { return p.bob }, "alice"))
}

func (p *pair) disconnect() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.ab.Close()
	p.ba.Close()
	p.ab, p.ba = nil, nil
}

func history(t *testing.T, s *chat.Store, peer string) []chat.Message {
	l, err := s.History(context.Background(), peer, 100)
	if err != nil {
		t.Fatal(err)
	}
	return l
}

// drain returns the events waiting on c.
func drain(c <-chan chat.Event) []chat.Event {
	var l []chat.Event
	for {
		select {
		case e := <-c:
			l = append(l, e)
		default:
			return l
		}
	}
}

func TestSendDeliveredRead(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		p := newPair(t)
		ctx := context.Background()
		aliceEvents, stopA := p.alice.Subscribe(16)
		defer stopA()
		bobEvents, stopB := p.bob.Subscribe(16)
		defer stopB()

		m, err := p.alice.Send(ctx, "bob", "hello bob\n")
		if err != nil {
			t.Fatal(err)
		}
		if m.State != chat.Delivered || m.Body != "hello bob" || !m.Outgoing {
			t.Fatalf("Send returned %+v", m)
		}
		synctest.Wait()
		ev := drain(bobEvents)
		if len(ev) != 1 || ev[0].Kind != chat.EventMessage || ev[0].Message.ID != m.ID || ev[0].Peer != "alice" || ev[0].Message.Body != "hello bob" {
			t.Fatalf("bob's events: %+v", ev)
		}
		got := history(t, p.bobStore, "alice")
		if len(got) != 1 || got[0].State != chat.Delivered || got[0].Outgoing {
			t.Fatalf("bob's history: %+v", got)
		}

		if err := p.bob.MarkRead(ctx, "alice"); err != nil {
			t.Fatal(err)
		}
		synctest.Wait()
		var states []chat.State
		for _, e := range drain(aliceEvents) {
			if e.Kind == chat.EventState {
				states = append(states, e.Message.State)
			}
		}
		if len(states) == 0 || states[len(states)-1] != chat.Read {
			t.Fatalf("alice's state events: %v", states)
		}
		if h := history(t, p.aliceStore, "bob"); h[0].State != chat.Read {
			t.Fatalf("alice's message is %v", h[0].State)
		}
		if h := history(t, p.bobStore, "alice"); h[0].State != chat.Read {
			t.Fatalf("bob's message is %v", h[0].State)
		}
		// Nothing is left to send either way.
		if err := p.bob.Flush(ctx, "alice"); err != nil {
			t.Fatal(err)
		}
		if l, _ := p.aliceStore.Outbox(ctx, "bob"); len(l) != 0 {
			t.Fatalf("alice's outbox: %v", l)
		}
	})
}

// TestRetryShownOnce cuts the session after bob stored a message but before
// its acknowledgement reached alice. Alice retries on the next session:
// bob acknowledges the copy without storing or showing it again.
func TestRetryShownOnce(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		p := newPair(t)
		ctx := context.Background()
		bobEvents, stop := p.bob.Subscribe(16)
		defer stop()
		sent := make(chan chat.Message)
		go func() {
			m, err := p.alice.Send(ctx, "bob", "are you there?")
			if err != nil {
				t.Error(err)
			}
			sent <- m
		}()
		e := <-bobEvents // bob stored it; its ACK is on the 10 ms link
		p.disconnect()
		m := <-sent
		if m.State != chat.Sent {
			t.Fatalf("after the cut alice's message is %v, want sent", m.State)
		}
		if l, _ := p.aliceStore.Outbox(ctx, "bob"); len(l) != 1 {
			t.Fatalf("alice's outbox has %d messages", len(l))
		}

		p.connect()
		if err := p.alice.Flush(ctx, "bob"); err != nil {
			t.Fatal(err)
		}
		synctest.Wait()
		if more := drain(bobEvents); len(more) != 0 {
			t.Fatalf("bob saw the message again: %+v", more)
		}
		if h := history(t, p.bobStore, "alice"); len(h) != 1 || h[0].ID != e.Message.ID {
			t.Fatalf("bob's history: %+v", h)
		}
		if h := history(t, p.aliceStore, "bob"); h[0].State != chat.Delivered {
			t.Fatalf("alice's message is %v after the retry", h[0].State)
		}
		if l, _ := p.aliceStore.Outbox(ctx, "bob"); len(l) != 0 {
			t.Fatalf("alice's outbox still has %d messages", len(l))
		}
	})
}

// TestCrashKeepsOutbox sends while bob is offline, "crashes" alice (closes
// her store without any goodbye), reopens the database and flushes: the
// message arrives.
func TestCrashKeepsOutbox(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		p := newPair(t)
		ctx := context.Background()
		p.disconnect()
		m, err := p.alice.Send(ctx, "bob", "sent while you were away")
		if err != nil {
			t.Fatal(err)
		}
		if m.State != chat.Pending {
			t.Fatalf("offline Send: %v", m.State)
		}
		p.aliceStore.Close()

		store := openStore(t, filepath.Join(p.dir, "alice.db"))
		p.mu.Lock()
		p.aliceStore = store
		p.alice = chat.NewService(chat.Config{Store: store, Session: p.session(true), Logger: quiet})
		p.mu.Unlock()
		peers, err := store.OutboxPeers(ctx)
		if err != nil || len(peers) != 1 || peers[0] != "bob" {
			t.Fatalf("OutboxPeers after reopening = %v, %v", peers, err)
		}
		p.connect()
		if err := p.alice.Flush(ctx, "bob"); err != nil {
			t.Fatal(err)
		}
		h := history(t, p.bobStore, "alice")
		if len(h) != 1 || h[0].ID != m.ID || h[0].Body != "sent while you were away" {
			t.Fatalf("bob's history: %+v", h)
		}
		if h := history(t, store, "bob"); h[0].State != chat.Delivered {
			t.Fatalf("alice's message is %v", h[0].State)
		}
	})
}

func TestTyping(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		p := newPair(t)
		ctx := context.Background()
		ev, stop := p.bob.Subscribe(16)
		defer stop()
		for range 5 { // keystrokes within the interval: one indicator
			if err := p.alice.Typing(ctx, "bob"); err != nil {
				t.Fatal(err)
			}
		}
		synctest.Wait()
		time.Sleep(100 * time.Millisecond) // virtual: the link's delay
		synctest.Wait()
		if l := drain(ev); len(l) != 1 || l[0].Kind != chat.EventTyping || l[0].Peer != "alice" {
			t.Fatalf("bob's events: %+v", l)
		}
		time.Sleep(3 * time.Second)
		p.alice.Typing(ctx, "bob")
		time.Sleep(100 * time.Millisecond)
		synctest.Wait()
		if l := drain(ev); len(l) != 1 {
			t.Fatalf("after the interval: %+v", l)
		}
	})
}
