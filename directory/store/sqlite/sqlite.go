// Package sqlite is the embedded store.Store: one SQLite file in the server's
// data directory, through modernc.org/sqlite (pure Go, no cgo).
//
// The database runs in WAL mode so readers never block the writer. Writes go
// through a single connection (SQLite allows one writer at a time; one
// connection turns lock contention into queueing in database/sql instead of
// SQLITE_BUSY retries), reads through a pool of connections opened read-only.
// A busy_timeout covers the rare checkpoint contention. Statements are
// prepared once and reused.
//
// SQLite serves one server process: its Broadcaster is in memory. Use the
// postgres store to run several processes.
package sqlite

import (
	"context"
	"database/sql"
	"embed"
	"errors"
	"fmt"
	"io/fs"
	"net/url"
	"runtime"

	"modernc.org/sqlite"
	sqlite3 "modernc.org/sqlite/lib"

	"github.com/parley-p2p/parley/directory/store"
	"github.com/parley-p2p/parley/directory/store/internal/localbus"
	"github.com/parley-p2p/parley/directory/store/internal/sqlstore"
)

//go:embed migrations/*.sql
var migrations embed.FS

// Store is a store.Store in a SQLite file.
type Store struct {
	*sqlstore.DB
	localbus.Bus
	writer, reader *sql.DB
}

var _ store.Store = (*Store)(nil)

// Open opens (creating if needed) the database at path and migrates it.
func Open(ctx context.Context, path string) (*Store, error) {
	pragmas := url.Values{}
	for _, p := range []string{"journal_mode(WAL)", "busy_timeout(10000)", "foreign_keys(1)", "synchronous(NORMAL)"} {
		pragmas.Add("_pragma", p)
	}
	writer, err := sql.Open("sqlite", "file:"+path+"?"+pragmas.Encode()+"&_txlock=immediate")
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", path, err)
	}
	writer.SetMaxOpenConns(1)
	writer.SetMaxIdleConns(1)
	writer.SetConnMaxLifetime(0)
	writer.SetConnMaxIdleTime(0)
	// Create the file and switch it to WAL before readers open it.
	if err := writer.PingContext(ctx); err != nil {
		writer.Close()
		return nil, fmt.Errorf("open %s: %w", path, err)
	}
	rp := url.Values{}
	for _, p := range []string{"busy_timeout(10000)", "foreign_keys(1)", "query_only(1)"} {
		rp.Add("_pragma", p)
	}
	reader, err := sql.Open("sqlite", "file:"+path+"?"+rp.Encode())
	if err != nil {
		writer.Close()
		return nil, fmt.Errorf("open %s: %w", path, err)
	}
	n := max(4, runtime.GOMAXPROCS(0)*2)
	reader.SetMaxOpenConns(n)
	reader.SetMaxIdleConns(n)
	reader.SetConnMaxLifetime(0)
	reader.SetConnMaxIdleTime(0)
	sub, _ := fs.Sub(migrations, "migrations")
	db, err := sqlstore.Open(ctx, sqlstore.Dialect{
		Name:       "sqlite",
		Migrations: sub,
		IsUnique:   isUnique,
	}, writer, reader)
	if err != nil {
		writer.Close()
		reader.Close()
		return nil, fmt.Errorf("open %s: %w", path, err)
	}
	return &Store{DB: db, writer: writer, reader: reader}, nil
}

func isUnique(err error) bool {
	var se *sqlite.Error
	if errors.As(err, &se) {
		switch se.Code() {
		case sqlite3.SQLITE_CONSTRAINT_UNIQUE, sqlite3.SQLITE_CONSTRAINT_PRIMARYKEY:
			return true
		}
	}
	return false
}

// Close closes the database.
func (s *Store) Close() error {
	s.DB.Close()
	err1 := s.reader.Close()
	err2 := s.writer.Close()
	return errors.Join(err1, err2)
}
