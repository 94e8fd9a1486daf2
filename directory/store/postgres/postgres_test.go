package postgres_test

import (
	"os"
	"testing"
	"time"

	"github.com/parley-p2p/parley/directory/store"
	"github.com/parley-p2p/parley/directory/store/postgres"
	"github.com/parley-p2p/parley/directory/store/storetest"
	"github.com/parley-p2p/parley/internal/pgtest"
)

func TestMain(m *testing.M) { os.Exit(pgtest.Main(m)) }

func TestStore(t *testing.T) {
	storetest.Run(t, func(t *testing.T) store.Store {
		s, err := postgres.Open(t.Context(), pgtest.NewDatabase(t), nil)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Close() })
		return s
	})
}

// TestTwoProcesses opens the same database twice, as two server processes
// would: both migrate (one waits for the other's lock), and a message
// published through one reaches a subscriber of the other.
func TestTwoProcesses(t *testing.T) {
	url := pgtest.NewDatabase(t)
	type res struct {
		s   *postgres.Store
		err error
	}
	ch := make(chan res, 2)
	for range 2 {
		go func() {
			s, err := postgres.Open(t.Context(), url, nil)
			ch <- res{s, err}
		}()
	}
	var ss []*postgres.Store
	for range 2 {
		r := <-ch
		if r.err != nil {
			t.Fatalf("concurrent open: %v", r.err)
		}
		t.Cleanup(func() { r.s.Close() })
		ss = append(ss, r.s)
	}
	got := make(chan string, 1)
	cancel := ss[1].Subscribe(func(p []byte) { got <- string(p) }, nil)
	defer cancel()
	if err := ss[0].Publish(t.Context(), []byte("ping")); err != nil {
		t.Fatal(err)
	}
	select {
	case p := <-got:
		if p != "ping" {
			t.Fatalf("got %q", p)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("NOTIFY from one store did not reach the other")
	}
	if _, err := ss[0].CreateUser(t.Context(), "alice", "h", time.Now()); err != nil {
		t.Fatal(err)
	}
	if _, err := ss[1].UserByName(t.Context(), "alice"); err != nil {
		t.Fatalf("write through one store not visible through the other: %v", err)
	}
}
