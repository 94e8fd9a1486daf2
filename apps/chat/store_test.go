package chat_test

import (
	"context"
	"crypto/rand"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/parley-p2p/parley/apps/chat"
)

func newID() chat.ID {
	var id chat.ID
	rand.Read(id[:])
	return id
}

func TestSearch(t *testing.T) {
	ctx := context.Background()
	st := openStore(t, filepath.Join(t.TempDir(), "chat.db"))
	msgs := []struct {
		peer, body string
		out        bool
	}{
		{"bob", "the meeting is at noon", true},
		{"bob", "Meeting moved to Tuesday", false},
		{"carol", "no meeting today", false},
		{"bob", "lunch?", false},
	}
	for _, m := range msgs {
		msg := chat.Message{ID: newID(), Peer: m.peer, Body: m.body, Time: time.Now()}
		var err error
		if m.out {
			err = st.Enqueue(ctx, msg)
		} else {
			_, err = st.Receive(ctx, msg)
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	bodies := func(l []chat.Message) []string {
		var b []string
		for _, m := range l {
			b = append(b, m.Body)
		}
		slices.Sort(b)
		return b
	}
	for _, tc := range []struct {
		peer, q string
		want    []string
	}{
		{"bob", "meeting", []string{"Meeting moved to Tuesday", "the meeting is at noon"}},
		{"", "meeting", []string{"Meeting moved to Tuesday", "no meeting today", "the meeting is at noon"}},
		{"bob", "meeting tuesday", []string{"Meeting moved to Tuesday"}},
		{"bob", "tues*", []string{"Meeting moved to Tuesday"}},
		{"bob", "tues", nil},
		{"carol", "lunch", nil},
		{"bob", `"unbalanced AND OR NEAR( *`, nil}, // FTS5 syntax in the query is text
		{"bob", "   ", nil},
	} {
		got, err := st.Search(ctx, tc.peer, tc.q, 10)
		if err != nil {
			t.Errorf("Search(%q, %q): %v", tc.peer, tc.q, err)
			continue
		}
		if !slices.Equal(bodies(got), tc.want) {
			t.Errorf("Search(%q, %q) = %q, want %q", tc.peer, tc.q, bodies(got), tc.want)
		}
	}
	h, err := st.History(ctx, "bob", 2)
	if err != nil || len(h) != 2 || h[0].Body != "Meeting moved to Tuesday" || h[1].Body != "lunch?" {
		t.Fatalf("History(bob, 2) = %+v, %v", h, err)
	}
}

func TestStoreDedupAndStates(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "chat.db")
	st := openStore(t, path)
	m := chat.Message{ID: newID(), Peer: "bob", Body: "hi", Time: time.UnixMilli(1_700_000_000_123)}
	for i, want := range []bool{true, false, false} {
		isNew, err := st.Receive(ctx, m)
		if err != nil || isNew != want {
			t.Fatalf("Receive #%d = %v, %v", i, isNew, err)
		}
	}
	// The same ID from another peer, or our own outgoing one, is another
	// message.
	if isNew, _ := st.Receive(ctx, chat.Message{ID: m.ID, Peer: "carol", Body: "x", Time: time.Now()}); !isNew {
		t.Fatal("same ID from another peer was dropped")
	}
	out := chat.Message{ID: newID(), Peer: "bob", Body: "out", Time: time.Now()}
	if err := st.Enqueue(ctx, out); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		st      chat.State
		changed bool
	}{{chat.Sent, true}, {chat.Read, true}, {chat.Delivered, false}, {chat.Read, false}} {
		changed, err := st.Advance(ctx, "bob", out.ID, tc.st)
		if err != nil || changed != tc.changed {
			t.Fatalf("Advance(%v) = %v, %v", tc.st, changed, err)
		}
	}
	got, err := st.Message(ctx, "bob", true, out.ID)
	if err != nil || got.State != chat.Read {
		t.Fatalf("after Advance: %+v, %v", got, err)
	}
	if l, _ := st.Outbox(ctx, "bob"); len(l) != 0 {
		t.Fatal("a read message is still in the outbox")
	}
	// Reopening migrates nothing twice and keeps everything.
	st.Close()
	st = openStore(t, path)
	got, err = st.Message(ctx, "bob", false, m.ID)
	if err != nil || got.Time != m.Time || got.Body != "hi" || got.State != chat.Delivered {
		t.Fatalf("after reopening: %+v, %v", got, err)
	}
	ids, err := st.MarkRead(ctx, "bob")
	if err != nil || len(ids) != 1 || ids[0] != m.ID {
		t.Fatalf("MarkRead = %v, %v", ids, err)
	}
	if ids, _ := st.PendingReceipts(ctx, "bob"); len(ids) != 1 {
		t.Fatalf("PendingReceipts = %v", ids)
	}
	st.ReceiptsDelivered(ctx, "bob", ids)
	if ids, _ := st.PendingReceipts(ctx, "bob"); len(ids) != 0 {
		t.Fatalf("PendingReceipts after delivery = %v", ids)
	}
}
