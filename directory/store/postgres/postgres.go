// Package postgres is the store.Store for several directory server processes
// sharing one PostgreSQL database, through pgx.
//
// Its Broadcaster is PostgreSQL's LISTEN/NOTIFY on one channel: each Store
// holds one dedicated connection that LISTENs, and Publish is a pg_notify on
// the pool. That is how an event raised on one server process reaches a
// device whose event stream is held by another.
//
// Read-modify-write transactions run at SERIALIZABLE isolation and are
// retried on serialization failures, so concurrent processes cannot, for
// example, both push a mailbox past its quota.
package postgres

import (
	"context"
	"database/sql"
	"embed"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/stdlib"

	"github.com/parley-p2p/parley/directory/store"
	"github.com/parley-p2p/parley/directory/store/internal/sqlstore"
)

//go:embed migrations/*.sql
var migrations embed.FS

// channel is the NOTIFY channel every server process listens on.
const channel = "parley_directory"

// migrationLock is the pg_advisory_lock key that serialises migrations
// between processes starting at the same time.
const migrationLock = 0x7061726c6579 // "parley"

// Store is a store.Store in PostgreSQL.
type Store struct {
	*sqlstore.DB
	pool    *sql.DB
	connCfg *pgx.ConnConfig
	log     *slog.Logger

	listenCtx  context.Context
	stopListen context.CancelFunc
	listenDone chan struct{}

	mu   sync.Mutex // protects subs
	subs map[int]subscriber
	next int
}

type subscriber struct {
	fn      func([]byte)
	onReset func()
}

var _ store.Store = (*Store)(nil)

// Open connects to the database at url (postgres://…), migrates it and
// starts listening for broadcasts. log may be nil.
func Open(ctx context.Context, url string, log *slog.Logger) (*Store, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	cfg, err := pgx.ParseConfig(url)
	if err != nil {
		return nil, fmt.Errorf("postgres: %w", err)
	}
	pool := stdlib.OpenDB(*cfg)
	pool.SetMaxOpenConns(16)
	pool.SetMaxIdleConns(16)
	pool.SetConnMaxIdleTime(5 * time.Minute)
	if err := pool.PingContext(ctx); err != nil {
		pool.Close()
		return nil, fmt.Errorf("postgres: %w", err)
	}
	migs, _ := fs.Sub(migrations, "migrations")
	db, err := sqlstore.Open(ctx, sqlstore.Dialect{
		Name:        "postgres",
		Dollar:      true,
		Migrations:  migs,
		IsUnique:    func(err error) bool { return pgCode(err) == "23505" },
		Retryable:   func(err error) bool { c := pgCode(err); return c == "40001" || c == "40P01" },
		TxIsolation: sql.LevelSerializable,
		LockMigrations: func(ctx context.Context, conn *sql.Conn) (func(), error) {
			if _, err := conn.ExecContext(ctx, `SELECT pg_advisory_lock($1)`, int64(migrationLock)); err != nil {
				return nil, err
			}
			return func() {
				conn.ExecContext(context.Background(), `SELECT pg_advisory_unlock($1)`, int64(migrationLock))
			}, nil
		},
	}, pool, pool)
	if err != nil {
		pool.Close()
		return nil, fmt.Errorf("postgres: %w", err)
	}
	s := &Store{DB: db, pool: pool, connCfg: cfg, log: log, subs: make(map[int]subscriber), listenDone: make(chan struct{})}
	// LISTEN before returning, so that a message published by another
	// process after Open returns is never missed.
	conn, err := s.listen(ctx)
	if err != nil {
		db.Close()
		pool.Close()
		return nil, fmt.Errorf("postgres: listen: %w", err)
	}
	s.listenCtx, s.stopListen = context.WithCancel(context.Background())
	go s.listenLoop(conn)
	return s, nil
}

func pgCode(err error) string {
	var pe *pgconn.PgError
	if errors.As(err, &pe) {
		return pe.Code
	}
	return ""
}

func (s *Store) listen(ctx context.Context) (*pgx.Conn, error) {
	conn, err := pgx.ConnectConfig(ctx, s.connCfg)
	if err != nil {
		return nil, err
	}
	if _, err := conn.Exec(ctx, "LISTEN "+channel); err != nil {
		conn.Close(ctx)
		return nil, err
	}
	return conn, nil
}

// listenLoop owns the LISTEN connection; it reconnects with backoff when the
// connection breaks and tells subscribers that messages may have been lost.
func (s *Store) listenLoop(conn *pgx.Conn) {
	defer close(s.listenDone)
	ctx := s.listenCtx
	backoff := 100 * time.Millisecond
	for {
		for conn != nil {
			n, err := conn.WaitForNotification(ctx)
			if err != nil {
				conn.Close(context.Background())
				conn = nil
				if ctx.Err() != nil {
					return
				}
				s.log.Warn("postgres listen connection lost", "err", err)
				break
			}
			backoff = 100 * time.Millisecond
			s.deliver([]byte(n.Payload))
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(backoff):
		}
		backoff = min(backoff*2, 5*time.Second)
		c, err := s.listen(ctx)
		if err != nil {
			s.log.Warn("postgres listen reconnect failed", "err", err)
			continue
		}
		conn = c
		s.mu.Lock()
		for _, sb := range s.subs {
			if sb.onReset != nil {
				sb.onReset()
			}
		}
		s.mu.Unlock()
	}
}

func (s *Store) deliver(p []byte) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, sb := range s.subs {
		sb.fn(p)
	}
}

// Publish sends payload to every process's subscribers with NOTIFY.
func (s *Store) Publish(ctx context.Context, payload []byte) error {
	if len(payload) > store.MaxBroadcast {
		return store.ErrTooLarge
	}
	_, err := s.pool.ExecContext(ctx, `SELECT pg_notify($1, $2)`, channel, string(payload))
	return err
}

// Subscribe registers fn for every message received from now on.
func (s *Store) Subscribe(fn func([]byte), onReset func()) (cancel func()) {
	s.mu.Lock()
	defer s.mu.Unlock()
	id := s.next
	s.next++
	s.subs[id] = subscriber{fn, onReset}
	return func() {
		s.mu.Lock()
		defer s.mu.Unlock()
		delete(s.subs, id)
	}
}

// Close stops listening and closes the pool.
func (s *Store) Close() error {
	s.stopListen()
	<-s.listenDone
	s.DB.Close()
	return s.pool.Close()
}
