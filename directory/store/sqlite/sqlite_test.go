package sqlite_test

import (
	"path/filepath"
	"testing"

	"github.com/parley-p2p/parley/directory/store"
	"github.com/parley-p2p/parley/directory/store/sqlite"
	"github.com/parley-p2p/parley/directory/store/storetest"
)

func TestStore(t *testing.T) {
	storetest.Run(t, func(t *testing.T) store.Store {
		s, err := sqlite.Open(t.Context(), filepath.Join(t.TempDir(), "directory.db"))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Close() })
		return s
	})
}

// TestReopen checks that migrations are recorded and not applied twice, and
// that data survives a restart.
func TestReopen(t *testing.T) {
	path := filepath.Join(t.TempDir(), "directory.db")
	s, err := sqlite.Open(t.Context(), path)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.CreateUser(t.Context(), "alice", "h", storetestTime); err != nil {
		t.Fatal(err)
	}
	v1, _ := s.SchemaVersion(t.Context())
	s.Close()
	s, err = sqlite.Open(t.Context(), path)
	if err != nil {
		t.Fatalf("reopen: %v", err)
	}
	defer s.Close()
	v2, _ := s.SchemaVersion(t.Context())
	if v1 == 0 || v1 != v2 {
		t.Fatalf("schema version %d then %d", v1, v2)
	}
	if _, err := s.UserByName(t.Context(), "alice"); err != nil {
		t.Fatalf("data lost across reopen: %v", err)
	}
}
