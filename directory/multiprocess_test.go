package directory_test

import (
	"testing"
	"time"

	"github.com/parley-p2p/parley/directory/client"
	"github.com/parley-p2p/parley/directory/store/postgres"
	"github.com/parley-p2p/parley/internal/pgtest"
)

// TestTwoServersPostgres runs two directory servers on one PostgreSQL
// database, as two processes behind a load balancer would be: each has its
// own store connections, its own LISTEN connection and no shared memory.
// Presence and an offer raised on one reach a device on the other.
func TestTwoServersPostgres(t *testing.T) {
	url := pgtest.NewDatabase(t)
	open := func() *env {
		st, err := postgres.Open(t.Context(), url, nil)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { st.Close() })
		return newEnvOn(t, st)
	}
	e1, e2 := open(), open()
	ctx := t.Context()
	a, aKey := e1.user("alice") // alice uses server 1
	e2.client().Register(ctx, "bob", password)
	b, bKey := e2.login("bob") // bob uses server 2
	befriend(t, a, b, "bob", "alice")

	bs := events(t, b)
	as := events(t, a)
	if ev := nextEvent(t, bs, "presence"); ev.Username != "alice" || !ev.Online || *ev.Device != aKey {
		t.Fatalf("presence across servers: %s", ev.Raw)
	}
	// Bob's contact list on server 2 shows alice online (shared store).
	cs, _, _, err := b.Contacts(ctx, "")
	if err != nil || len(cs) != 1 || !cs[0].Online {
		t.Fatalf("bob's contacts on server 2: %+v, %v", cs, err)
	}
	if err := a.SendOffer(ctx, client.Offer{To: bKey, Kind: "offer", Session: "x1", Candidates: []string{"192.0.2.1:1"}}); err != nil {
		t.Fatal(err)
	}
	if ev := nextEvent(t, bs, "offer"); ev.From != "alice" || *ev.FromDevice != aKey || ev.Session != "x1" {
		t.Fatalf("offer across servers: %s", ev.Raw)
	}
	if err := b.SendOffer(ctx, client.Offer{To: aKey, Kind: "answer", Session: "x1"}); err != nil {
		t.Fatal(err)
	}
	if ev := nextEvent(t, as, "offer"); ev.Kind != "answer" {
		t.Fatalf("answer across servers: %s", ev.Raw)
	}
	// A token revoked through server 1 stops working on server 2 as soon
	// as the NOTIFY arrives, although server 2 had it cached.
	b1 := e1.client().WithToken(b.Token)
	if _, err := b.Account(ctx); err != nil {
		t.Fatal(err)
	}
	if err := b1.Logout(ctx); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		_, err = b.Account(ctx)
		if client.StatusOf(err) == 401 || time.Now().After(deadline) {
			break
		}
		time.Sleep(5 * time.Millisecond)
	}
	wantStatus(t, err, 401, "unauthorized")
	// Bob's stream on server 2 is closed by the revocation, and alice on
	// server 1 sees him go offline.
	if ev := nextEvent(t, as, "presence"); ev.Username != "bob" || ev.Online {
		t.Fatalf("offline across servers: %s", ev.Raw)
	}
	// Moving a device between servers: bob logs in again on server 1
	// while alice watches; the stream on server 2 is kicked without an
	// offline announcement.
	b2, _ := e2.login("bob")
	s2 := events(t, b2)
	nextEvent(t, as, "presence")
	b3 := e1.client().WithToken(b2.Token)
	events(t, b3)
	if ev := nextEvent(t, s2, "closing"); ev.Reason != "connected elsewhere" {
		t.Fatalf("old stream: %s", ev.Raw)
	}
	if ev := nextEvent(t, as, "presence"); !ev.Online {
		t.Fatalf("after move: %s", ev.Raw)
	}
}
