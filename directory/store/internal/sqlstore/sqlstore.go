// Package sqlstore implements store.Store over database/sql for both SQLite
// and PostgreSQL. The two dialects differ only in placeholders, migrations,
// how conflicts and serialization failures are reported, and how migrations
// are serialised between processes; everything else is one set of
// parameterised SQL statements, so both back ends behave the same and the
// same test suite (storetest) checks both.
package sqlstore

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/parley-p2p/parley/directory/store"
)

// Dialect is what differs between the SQL back ends.
type Dialect struct {
	Name string
	// Dollar placeholders ($1, $2, …) instead of ?.
	Dollar bool
	// Migrations holds files named NNNN_description.sql, applied in order.
	Migrations fs.FS
	// IsUnique reports whether err is a unique-constraint violation.
	IsUnique func(error) bool
	// Retryable reports whether a transaction failed only because of a
	// concurrent one (serialization failure) and may be retried.
	Retryable func(error) bool
	// TxIsolation for read-modify-write transactions.
	TxIsolation sql.IsolationLevel
	// LockMigrations, if set, takes a lock on conn held until unlock is
	// called, so that concurrent processes migrate one at a time.
	LockMigrations func(ctx context.Context, conn *sql.Conn) (unlock func(), err error)
}

// DB is the shared implementation of store.Store, minus Broadcaster.
type DB struct {
	d      Dialect
	writer *sql.DB // single connection for SQLite; the pool for PostgreSQL
	reader *sql.DB

	stmts sync.Map // map[stmtKey]*sql.Stmt
}

type stmtKey struct {
	db *sql.DB
	q  string
}

// Open wraps already-opened writer and reader pools (which may be the same)
// and applies pending migrations.
func Open(ctx context.Context, d Dialect, writer, reader *sql.DB) (*DB, error) {
	s := &DB{d: d, writer: writer, reader: reader}
	if err := s.migrate(ctx); err != nil {
		return nil, err
	}
	return s, nil
}

// Close closes the prepared statements (not the pools, which the caller owns).
func (s *DB) Close() error {
	s.stmts.Range(func(k, v any) bool {
		v.(*sql.Stmt).Close()
		return true
	})
	return nil
}

// Writer returns the pool used for writes.
func (s *DB) Writer() *sql.DB { return s.writer }

func (s *DB) rebind(q string) string {
	if !s.d.Dollar {
		return q
	}
	var b strings.Builder
	n := 0
	for i := 0; i < len(q); i++ {
		if q[i] == '?' {
			n++
			b.WriteByte('$')
			b.WriteString(strconv.Itoa(n))
			continue
		}
		b.WriteByte(q[i])
	}
	return b.String()
}

// stmt returns a prepared statement for q on db, preparing it once.
func (s *DB) stmt(ctx context.Context, db *sql.DB, q string) (*sql.Stmt, error) {
	k := stmtKey{db, q}
	if v, ok := s.stmts.Load(k); ok {
		return v.(*sql.Stmt), nil
	}
	st, err := db.PrepareContext(ctx, s.rebind(q))
	if err != nil {
		return nil, fmt.Errorf("prepare: %w", err)
	}
	if v, loaded := s.stmts.LoadOrStore(k, st); loaded {
		st.Close()
		return v.(*sql.Stmt), nil
	}
	return st, nil
}

// queryer is what both *sql.DB-backed statements and transactions offer.
type queryer interface {
	ExecContext(ctx context.Context, q string, args ...any) (sql.Result, error)
	QueryContext(ctx context.Context, q string, args ...any) (*sql.Rows, error)
	QueryRowContext(ctx context.Context, q string, args ...any) *sql.Row
}

// tx wraps a transaction so statements are rebound for the dialect.
type tx struct {
	s  *DB
	tx *sql.Tx
}

func (t tx) ExecContext(ctx context.Context, q string, args ...any) (sql.Result, error) {
	return t.tx.ExecContext(ctx, t.s.rebind(q), args...)
}
func (t tx) QueryContext(ctx context.Context, q string, args ...any) (*sql.Rows, error) {
	return t.tx.QueryContext(ctx, t.s.rebind(q), args...)
}
func (t tx) QueryRowContext(ctx context.Context, q string, args ...any) *sql.Row {
	return t.tx.QueryRowContext(ctx, t.s.rebind(q), args...)
}

// withTx runs fn in a write transaction, retrying on serialization failures.
func (s *DB) withTx(ctx context.Context, fn func(tx) error) error {
	var err error
	for attempt := 0; attempt < 10; attempt++ {
		var t *sql.Tx
		t, err = s.writer.BeginTx(ctx, &sql.TxOptions{Isolation: s.d.TxIsolation})
		if err != nil {
			return err
		}
		err = fn(tx{s, t})
		if err == nil {
			err = t.Commit()
		} else {
			t.Rollback()
		}
		if err == nil || s.d.Retryable == nil || !s.d.Retryable(err) {
			return err
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(time.Duration(attempt+1) * time.Millisecond):
		}
	}
	return err
}

func (s *DB) exec(ctx context.Context, q string, args ...any) (sql.Result, error) {
	st, err := s.stmt(ctx, s.writer, q)
	if err != nil {
		return nil, err
	}
	return st.ExecContext(ctx, args...)
}

// scanner is a row to scan: *sql.Row, *sql.Rows or errRow.
type scanner interface {
	Scan(dest ...any) error
}

// errRow is a row whose Scan fails, for statements that failed to prepare.
type errRow struct{ err error }

func (r errRow) Scan(...any) error { return r.err }

func (s *DB) queryRow(ctx context.Context, q string, args ...any) scanner {
	st, err := s.stmt(ctx, s.reader, q)
	if err != nil {
		return errRow{err}
	}
	return st.QueryRowContext(ctx, args...)
}

func (s *DB) query(ctx context.Context, q string, args ...any) (*sql.Rows, error) {
	st, err := s.stmt(ctx, s.reader, q)
	if err != nil {
		return nil, err
	}
	return st.QueryContext(ctx, args...)
}

func notFound(err error) error {
	if errors.Is(err, sql.ErrNoRows) {
		return store.ErrNotFound
	}
	return err
}

func affected(r sql.Result, err error) error {
	if err != nil {
		return err
	}
	n, err := r.RowsAffected()
	if err != nil {
		return err
	}
	if n == 0 {
		return store.ErrNotFound
	}
	return nil
}

// migrate applies the embedded migrations newer than the recorded version,
// each in its own transaction.
func (s *DB) migrate(ctx context.Context) error {
	names, err := fs.Glob(s.d.Migrations, "*.sql")
	if err != nil {
		return err
	}
	sort.Strings(names)
	conn, err := s.writer.Conn(ctx)
	if err != nil {
		return fmt.Errorf("migrate: %w", err)
	}
	defer conn.Close()
	if s.d.LockMigrations != nil {
		unlock, err := s.d.LockMigrations(ctx, conn)
		if err != nil {
			return fmt.Errorf("migrate: lock: %w", err)
		}
		defer unlock()
	}
	if _, err := conn.ExecContext(ctx, `CREATE TABLE IF NOT EXISTS schema_migrations (version BIGINT PRIMARY KEY, applied_at BIGINT NOT NULL)`); err != nil {
		return fmt.Errorf("migrate: %w", err)
	}
	var current int64
	if err := conn.QueryRowContext(ctx, `SELECT COALESCE(MAX(version), 0) FROM schema_migrations`).Scan(&current); err != nil {
		return fmt.Errorf("migrate: %w", err)
	}
	for _, name := range names {
		num, _, ok := strings.Cut(name, "_")
		v, err := strconv.ParseInt(num, 10, 64)
		if !ok || err != nil {
			return fmt.Errorf("migrate: bad migration name %q", name)
		}
		if v <= current {
			continue
		}
		body, err := fs.ReadFile(s.d.Migrations, name)
		if err != nil {
			return err
		}
		t, err := conn.BeginTx(ctx, nil)
		if err != nil {
			return err
		}
		if _, err := t.ExecContext(ctx, string(body)); err != nil {
			t.Rollback()
			return fmt.Errorf("migrate %s: %w", name, err)
		}
		if _, err := t.ExecContext(ctx, s.rebind(`INSERT INTO schema_migrations (version, applied_at) VALUES (?, ?)`), v, time.Now().UnixMilli()); err != nil {
			t.Rollback()
			return fmt.Errorf("migrate %s: %w", name, err)
		}
		if err := t.Commit(); err != nil {
			return fmt.Errorf("migrate %s: %w", name, err)
		}
	}
	return nil
}

// SchemaVersion returns the highest applied migration.
func (s *DB) SchemaVersion(ctx context.Context) (int64, error) {
	var v int64
	err := s.reader.QueryRowContext(ctx, `SELECT COALESCE(MAX(version), 0) FROM schema_migrations`).Scan(&v)
	return v, err
}

// ---- users ----

const userCols = `id, username, password_hash, created_at, updated_at`

func scanUser(r scanner) (store.User, error) {
	var u store.User
	var c, m int64
	err := r.Scan(&u.ID, &u.Username, &u.PasswordHash, &c, &m)
	u.CreatedAt, u.UpdatedAt = store.FromMillis(c), store.FromMillis(m)
	return u, notFound(err)
}

func (s *DB) CreateUser(ctx context.Context, username, hash string, now time.Time) (store.User, error) {
	st, err := s.stmt(ctx, s.writer, `INSERT INTO users (username, password_hash, created_at, updated_at) VALUES (?, ?, ?, ?) RETURNING `+userCols)
	if err != nil {
		return store.User{}, err
	}
	u, err := scanUser(st.QueryRowContext(ctx, username, hash, store.Millis(now), store.Millis(now)))
	if err != nil && s.d.IsUnique(err) {
		return store.User{}, fmt.Errorf("user %q: %w", username, store.ErrConflict)
	}
	return u, err
}

func (s *DB) UserByID(ctx context.Context, id int64) (store.User, error) {
	return scanUser(s.queryRow(ctx, `SELECT `+userCols+` FROM users WHERE id = ?`, id))
}

func (s *DB) UserByName(ctx context.Context, name string) (store.User, error) {
	return scanUser(s.queryRow(ctx, `SELECT `+userCols+` FROM users WHERE username = ?`, name))
}

func (s *DB) SearchUsers(ctx context.Context, prefix string, limit int) ([]store.User, error) {
	// A range scan on the username index rather than LIKE, so that the
	// prefix needs no escaping and the query is the same in both dialects.
	// Usernames are ASCII, so prefix+"\x7f" bounds every name starting with
	// prefix.
	rows, err := s.query(ctx, `SELECT `+userCols+` FROM users WHERE username >= ? AND username < ? ORDER BY username LIMIT ?`, prefix, prefix+"\x7f", limit)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []store.User
	for rows.Next() {
		u, err := scanUser(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, u)
	}
	return out, rows.Err()
}

func (s *DB) SetPasswordHash(ctx context.Context, userID int64, hash string, now time.Time) error {
	return affected(s.exec(ctx, `UPDATE users SET password_hash = ?, updated_at = ? WHERE id = ?`, hash, store.Millis(now), userID))
}

func (s *DB) DeleteUser(ctx context.Context, userID int64) error {
	// Foreign keys cascade from users to devices, tokens, contacts, mail
	// and supernodes.
	return affected(s.exec(ctx, `DELETE FROM users WHERE id = ?`, userID))
}

// ---- devices ----

const deviceCols = `id, user_id, name, public_key, created_at, last_seen, online, online_server, endpoints, updated_at`

func scanDevice(r scanner) (store.Device, error) {
	var d store.Device
	var key []byte
	var c, ls, up int64
	var online int64
	var eps string
	err := r.Scan(&d.ID, &d.UserID, &d.Name, &key, &c, &ls, &online, &d.OnlineServer, &eps, &up)
	if err != nil {
		return d, notFound(err)
	}
	copy(d.PublicKey[:], key)
	d.CreatedAt, d.LastSeen, d.UpdatedAt = store.FromMillis(c), store.FromMillis(ls), store.FromMillis(up)
	d.Online = online != 0
	if eps != "" {
		if err := json.Unmarshal([]byte(eps), &d.Endpoints); err != nil {
			return d, fmt.Errorf("device %d endpoints: %w", d.ID, err)
		}
	}
	return d, nil
}

func (s *DB) UpsertDevice(ctx context.Context, userID int64, key store.Key, name string, now time.Time) (store.Device, error) {
	var d store.Device
	err := s.withTx(ctx, func(t tx) error {
		var err error
		d, err = scanDevice(t.QueryRowContext(ctx, `SELECT `+deviceCols+` FROM devices WHERE public_key = ?`, key[:]))
		switch {
		case err == nil && d.UserID != userID:
			return fmt.Errorf("device key: %w", store.ErrConflict)
		case err == nil:
			_, err = t.ExecContext(ctx, `UPDATE devices SET name = ?, last_seen = ?, updated_at = ? WHERE id = ?`, name, store.Millis(now), store.Millis(now), d.ID)
			d.Name, d.LastSeen, d.UpdatedAt = name, now, now
			return err
		case !errors.Is(err, store.ErrNotFound):
			return err
		}
		d, err = scanDevice(t.QueryRowContext(ctx, `INSERT INTO devices (user_id, name, public_key, created_at, last_seen, online, online_server, endpoints, updated_at)
			VALUES (?, ?, ?, ?, ?, 0, '', '', ?) RETURNING `+deviceCols, userID, name, key[:], store.Millis(now), store.Millis(now), store.Millis(now)))
		if err != nil && s.d.IsUnique(err) {
			return fmt.Errorf("device key: %w", store.ErrConflict)
		}
		return err
	})
	return d, err
}

func (s *DB) Devices(ctx context.Context, userID int64) ([]store.Device, error) {
	rows, err := s.query(ctx, `SELECT `+deviceCols+` FROM devices WHERE user_id = ? ORDER BY id`, userID)
	if err != nil {
		return nil, err
	}
	return collectDevices(rows)
}

func collectDevices(rows *sql.Rows) ([]store.Device, error) {
	defer rows.Close()
	var out []store.Device
	for rows.Next() {
		d, err := scanDevice(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, d)
	}
	return out, rows.Err()
}

// placeholders returns "?, ?, …" for n arguments.
func placeholders(n int) string {
	return strings.TrimSuffix(strings.Repeat("?, ", n), ", ")
}

func (s *DB) DevicesOfUsers(ctx context.Context, userIDs []int64) ([]store.Device, error) {
	var out []store.Device
	// Chunked so that no statement exceeds the dialects' parameter limits.
	for len(userIDs) > 0 {
		n := min(len(userIDs), 500)
		args := make([]any, n)
		for i, id := range userIDs[:n] {
			args[i] = id
		}
		userIDs = userIDs[n:]
		rows, err := s.reader.QueryContext(ctx, s.rebind(`SELECT `+deviceCols+` FROM devices WHERE user_id IN (`+placeholders(n)+`) ORDER BY user_id, id`), args...)
		if err != nil {
			return nil, err
		}
		ds, err := collectDevices(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, ds...)
	}
	return out, nil
}

func (s *DB) DeviceByID(ctx context.Context, id int64) (store.Device, error) {
	return scanDevice(s.queryRow(ctx, `SELECT `+deviceCols+` FROM devices WHERE id = ?`, id))
}

func (s *DB) DeviceByKey(ctx context.Context, key store.Key) (store.Device, error) {
	return scanDevice(s.queryRow(ctx, `SELECT `+deviceCols+` FROM devices WHERE public_key = ?`, key[:]))
}

func (s *DB) DeleteDevice(ctx context.Context, userID, deviceID int64) error {
	return affected(s.exec(ctx, `DELETE FROM devices WHERE id = ? AND user_id = ?`, deviceID, userID))
}

func (s *DB) SetDeviceOnline(ctx context.Context, deviceID int64, server string, online bool, now time.Time) error {
	if online {
		return affected(s.exec(ctx, `UPDATE devices SET online = 1, online_server = ?, last_seen = ? WHERE id = ?`, server, store.Millis(now), deviceID))
	}
	_, err := s.exec(ctx, `UPDATE devices SET online = 0, online_server = '', last_seen = ? WHERE id = ? AND online_server = ?`, store.Millis(now), deviceID, server)
	return err
}

func (s *DB) ClearOnline(ctx context.Context, server string, now time.Time) error {
	if server == "" {
		_, err := s.exec(ctx, `UPDATE devices SET online = 0, online_server = '', last_seen = ? WHERE online <> 0`, store.Millis(now))
		return err
	}
	_, err := s.exec(ctx, `UPDATE devices SET online = 0, online_server = '', last_seen = ? WHERE online_server = ?`, store.Millis(now), server)
	return err
}

func (s *DB) SetDeviceEndpoints(ctx context.Context, deviceID int64, endpoints []string, now time.Time) error {
	b, err := json.Marshal(endpoints)
	if err != nil {
		return err
	}
	return affected(s.exec(ctx, `UPDATE devices SET endpoints = ?, updated_at = ? WHERE id = ?`, string(b), store.Millis(now), deviceID))
}

func (s *DB) DevicesHeldBy(ctx context.Context, server string) ([]store.Device, error) {
	rows, err := s.query(ctx, `SELECT `+deviceCols+` FROM devices WHERE online <> 0 AND online_server = ? ORDER BY id`, server)
	if err != nil {
		return nil, err
	}
	return collectDevices(rows)
}

func (s *DB) Heartbeat(ctx context.Context, server string, now time.Time) error {
	_, err := s.exec(ctx, `INSERT INTO servers (id, heartbeat_at) VALUES (?, ?)
		ON CONFLICT (id) DO UPDATE SET heartbeat_at = excluded.heartbeat_at`, server, store.Millis(now))
	return err
}

func (s *DB) StaleServers(ctx context.Context, before time.Time) ([]string, error) {
	rows, err := s.query(ctx, `SELECT id FROM servers WHERE heartbeat_at < ? ORDER BY id`, store.Millis(before))
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var id string
		if err := rows.Scan(&id); err != nil {
			return nil, err
		}
		out = append(out, id)
	}
	return out, rows.Err()
}

func (s *DB) DeleteServer(ctx context.Context, server string) (bool, error) {
	err := affected(s.exec(ctx, `DELETE FROM servers WHERE id = ?`, server))
	if errors.Is(err, store.ErrNotFound) {
		return false, nil
	}
	return err == nil, err
}

func (s *DB) CountOnline(ctx context.Context) (int, error) {
	var n int
	err := s.queryRow(ctx, `SELECT COUNT(*) FROM devices WHERE online <> 0`).Scan(&n)
	return n, err
}

// ---- tokens ----

func (s *DB) CreateToken(ctx context.Context, t store.Token) error {
	_, err := s.exec(ctx, `INSERT INTO tokens (hash, user_id, device_id, created_at, expires_at) VALUES (?, ?, ?, ?, ?)`,
		t.Hash[:], t.UserID, t.DeviceID, store.Millis(t.CreatedAt), store.Millis(t.ExpiresAt))
	if err != nil && s.d.IsUnique(err) {
		return fmt.Errorf("token: %w", store.ErrConflict)
	}
	return err
}

func (s *DB) TokenByHash(ctx context.Context, hash [32]byte) (store.Token, error) {
	var t store.Token
	var c, e int64
	err := s.queryRow(ctx, `SELECT user_id, device_id, created_at, expires_at FROM tokens WHERE hash = ?`, hash[:]).Scan(&t.UserID, &t.DeviceID, &c, &e)
	if err != nil {
		return t, notFound(err)
	}
	t.Hash = hash
	t.CreatedAt, t.ExpiresAt = store.FromMillis(c), store.FromMillis(e)
	return t, nil
}

func (s *DB) DeleteToken(ctx context.Context, hash [32]byte) error {
	return affected(s.exec(ctx, `DELETE FROM tokens WHERE hash = ?`, hash[:]))
}

func (s *DB) DeleteUserTokens(ctx context.Context, userID int64, keep [32]byte) ([][32]byte, error) {
	var out [][32]byte
	err := s.withTx(ctx, func(t tx) error {
		out = out[:0]
		rows, err := t.QueryContext(ctx, `SELECT hash FROM tokens WHERE user_id = ? AND hash <> ?`, userID, keep[:])
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			var b []byte
			if err := rows.Scan(&b); err != nil {
				return err
			}
			var h [32]byte
			copy(h[:], b)
			out = append(out, h)
		}
		if err := rows.Err(); err != nil {
			return err
		}
		_, err = t.ExecContext(ctx, `DELETE FROM tokens WHERE user_id = ? AND hash <> ?`, userID, keep[:])
		return err
	})
	return out, err
}

func (s *DB) DeleteExpiredTokens(ctx context.Context, now time.Time) (int, error) {
	r, err := s.exec(ctx, `DELETE FROM tokens WHERE expires_at <= ?`, store.Millis(now))
	if err != nil {
		return 0, err
	}
	n, err := r.RowsAffected()
	return int(n), err
}

// ---- contacts ----

// state reads userID's row about other inside t; 0 if none.
func state(ctx context.Context, t queryer, userID, other int64) (store.ContactState, error) {
	var st int
	err := t.QueryRowContext(ctx, `SELECT state FROM contacts WHERE user_id = ? AND other_id = ?`, userID, other).Scan(&st)
	if errors.Is(err, sql.ErrNoRows) {
		return 0, nil
	}
	return store.ContactState(st), err
}

func setState(ctx context.Context, t queryer, userID, other int64, st store.ContactState, now time.Time) error {
	_, err := t.ExecContext(ctx, `INSERT INTO contacts (user_id, other_id, state, updated_at) VALUES (?, ?, ?, ?)
		ON CONFLICT (user_id, other_id) DO UPDATE SET state = excluded.state, updated_at = excluded.updated_at`,
		userID, other, int(st), store.Millis(now))
	return err
}

func delState(ctx context.Context, t queryer, userID, other int64) error {
	_, err := t.ExecContext(ctx, `DELETE FROM contacts WHERE user_id = ? AND other_id = ?`, userID, other)
	return err
}

func (s *DB) RequestContact(ctx context.Context, from, to int64, now time.Time) (store.ContactState, error) {
	if from == to {
		return 0, fmt.Errorf("contact with oneself: %w", store.ErrConflict)
	}
	var result store.ContactState
	err := s.withTx(ctx, func(t tx) error {
		mine, err := state(ctx, t, from, to)
		if err != nil {
			return err
		}
		theirs, err := state(ctx, t, to, from)
		if err != nil {
			return err
		}
		switch mine {
		case store.Blocked:
			return store.ErrBlocked
		case store.Mutual:
			return fmt.Errorf("already contacts: %w", store.ErrConflict)
		case store.Outgoing:
			result = store.Outgoing
			return nil
		case store.Incoming:
			result = store.Mutual
			if err := setState(ctx, t, from, to, store.Mutual, now); err != nil {
				return err
			}
			return setState(ctx, t, to, from, store.Mutual, now)
		}
		if theirs == store.Outgoing {
			// They asked while from blocked them, and from has since
			// unblocked: their request stands, so this makes it mutual.
			result = store.Mutual
			if err := setState(ctx, t, from, to, store.Mutual, now); err != nil {
				return err
			}
			return setState(ctx, t, to, from, store.Mutual, now)
		}
		result = store.Outgoing
		if err := setState(ctx, t, from, to, store.Outgoing, now); err != nil {
			return err
		}
		if theirs == store.Blocked {
			return nil // silently: the requester must not learn of the block
		}
		return setState(ctx, t, to, from, store.Incoming, now)
	})
	return result, err
}

func (s *DB) AcceptContact(ctx context.Context, userID, from int64, now time.Time) error {
	return s.withTx(ctx, func(t tx) error {
		mine, err := state(ctx, t, userID, from)
		if err != nil {
			return err
		}
		if mine != store.Incoming {
			return store.ErrNotFound
		}
		if err := setState(ctx, t, userID, from, store.Mutual, now); err != nil {
			return err
		}
		return setState(ctx, t, from, userID, store.Mutual, now)
	})
}

func (s *DB) DeclineContact(ctx context.Context, userID, from int64) error {
	return s.withTx(ctx, func(t tx) error {
		mine, err := state(ctx, t, userID, from)
		if err != nil {
			return err
		}
		if mine != store.Incoming {
			return store.ErrNotFound
		}
		if err := delState(ctx, t, userID, from); err != nil {
			return err
		}
		return delState(ctx, t, from, userID)
	})
}

func (s *DB) RemoveContact(ctx context.Context, userID, other int64) error {
	return s.withTx(ctx, func(t tx) error {
		mine, err := state(ctx, t, userID, other)
		if err != nil {
			return err
		}
		if mine != store.Mutual && mine != store.Outgoing {
			return store.ErrNotFound
		}
		theirs, err := state(ctx, t, other, userID)
		if err != nil {
			return err
		}
		if err := delState(ctx, t, userID, other); err != nil {
			return err
		}
		if theirs == store.Blocked {
			return nil
		}
		return delState(ctx, t, other, userID)
	})
}

func (s *DB) Block(ctx context.Context, userID, other int64, now time.Time) error {
	if userID == other {
		return fmt.Errorf("block oneself: %w", store.ErrConflict)
	}
	return s.withTx(ctx, func(t tx) error {
		theirs, err := state(ctx, t, other, userID)
		if err != nil {
			return err
		}
		if err := setState(ctx, t, userID, other, store.Blocked, now); err != nil {
			return err
		}
		if theirs == store.Blocked {
			return nil
		}
		return delState(ctx, t, other, userID)
	})
}

func (s *DB) Unblock(ctx context.Context, userID, other int64) error {
	return affected(s.exec(ctx, `DELETE FROM contacts WHERE user_id = ? AND other_id = ? AND state = ?`, userID, other, int(store.Blocked)))
}

func (s *DB) Contacts(ctx context.Context, userID int64) ([]store.Contact, error) {
	rows, err := s.query(ctx, `SELECT c.other_id, u.username, c.state, c.updated_at FROM contacts c JOIN users u ON u.id = c.other_id WHERE c.user_id = ? ORDER BY u.username`, userID)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []store.Contact
	for rows.Next() {
		var c store.Contact
		var st int
		var up int64
		if err := rows.Scan(&c.UserID, &c.Username, &st, &up); err != nil {
			return nil, err
		}
		c.State, c.UpdatedAt = store.ContactState(st), store.FromMillis(up)
		out = append(out, c)
	}
	return out, rows.Err()
}

func (s *DB) ContactState(ctx context.Context, userID, other int64) (store.ContactState, error) {
	var st int
	err := s.queryRow(ctx, `SELECT state FROM contacts WHERE user_id = ? AND other_id = ?`, userID, other).Scan(&st)
	return store.ContactState(st), notFound(err)
}

func (s *DB) MutualContacts(ctx context.Context, userID int64) ([]int64, error) {
	rows, err := s.query(ctx, `SELECT other_id FROM contacts WHERE user_id = ? AND state = ? ORDER BY other_id`, userID, int(store.Mutual))
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []int64
	for rows.Next() {
		var id int64
		if err := rows.Scan(&id); err != nil {
			return nil, err
		}
		out = append(out, id)
	}
	return out, rows.Err()
}

// ---- mailbox ----

func (s *DB) PutMail(ctx context.Context, m store.Mail, maxCount int, maxBytes int64) (store.Mail, error) {
	err := s.withTx(ctx, func(t tx) error {
		var n, size int64
		if err := t.QueryRowContext(ctx, `SELECT COUNT(*), COALESCE(SUM(LENGTH(blob)), 0) FROM mail WHERE recipient_device = ?`, m.RecipientDevice).Scan(&n, &size); err != nil {
			return err
		}
		if n+1 > int64(maxCount) || size+int64(len(m.Blob)) > maxBytes {
			return store.ErrLimit
		}
		return t.QueryRowContext(ctx, `INSERT INTO mail (recipient_device, sender_user, sender_key, blob, created_at) VALUES (?, ?, ?, ?, ?) RETURNING id`,
			m.RecipientDevice, m.SenderUser, m.SenderKey[:], m.Blob, store.Millis(m.CreatedAt)).Scan(&m.ID)
	})
	return m, err
}

func (s *DB) Mail(ctx context.Context, deviceID int64) ([]store.Mail, error) {
	rows, err := s.query(ctx, `SELECT m.id, m.sender_user, u.username, m.sender_key, m.blob, m.created_at FROM mail m JOIN users u ON u.id = m.sender_user WHERE m.recipient_device = ? ORDER BY m.id`, deviceID)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []store.Mail
	for rows.Next() {
		m := store.Mail{RecipientDevice: deviceID}
		var key []byte
		var c int64
		if err := rows.Scan(&m.ID, &m.SenderUser, &m.SenderUsername, &key, &m.Blob, &c); err != nil {
			return nil, err
		}
		copy(m.SenderKey[:], key)
		m.CreatedAt = store.FromMillis(c)
		out = append(out, m)
	}
	return out, rows.Err()
}

func (s *DB) DeleteMail(ctx context.Context, deviceID int64, ids []int64) (int, error) {
	total := 0
	for len(ids) > 0 {
		n := min(len(ids), 500)
		args := []any{deviceID}
		for _, id := range ids[:n] {
			args = append(args, id)
		}
		ids = ids[n:]
		r, err := s.writer.ExecContext(ctx, s.rebind(`DELETE FROM mail WHERE recipient_device = ? AND id IN (`+placeholders(n)+`)`), args...)
		if err != nil {
			return total, err
		}
		k, err := r.RowsAffected()
		if err != nil {
			return total, err
		}
		total += int(k)
	}
	return total, nil
}

func (s *DB) CountMail(ctx context.Context, deviceID int64) (int, error) {
	var n int
	err := s.queryRow(ctx, `SELECT COUNT(*) FROM mail WHERE recipient_device = ?`, deviceID).Scan(&n)
	return n, err
}

// ---- supernodes ----

func (s *DB) PutSupernode(ctx context.Context, sn store.Supernode) error {
	_, err := s.exec(ctx, `INSERT INTO supernodes (device_id, addr, tcp_port, verified_at, reported_at, load, sessions, budget_rate, budget_bytes)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)
		ON CONFLICT (device_id) DO UPDATE SET addr = excluded.addr, tcp_port = excluded.tcp_port, verified_at = excluded.verified_at,
			reported_at = excluded.reported_at, load = excluded.load, sessions = excluded.sessions, budget_rate = excluded.budget_rate,
			budget_bytes = excluded.budget_bytes`,
		sn.DeviceID, sn.Addr, sn.TCPPort, store.Millis(sn.VerifiedAt), store.Millis(sn.ReportedAt), sn.Load, sn.Sessions, sn.BudgetRate, sn.BudgetBytes)
	return err
}

func (s *DB) ReportLoad(ctx context.Context, deviceID int64, load, sessions int, now time.Time) error {
	return affected(s.exec(ctx, `UPDATE supernodes SET load = ?, sessions = ?, reported_at = ? WHERE device_id = ?`, load, sessions, store.Millis(now), deviceID))
}

func (s *DB) Supernodes(ctx context.Context, since time.Time) ([]store.Supernode, error) {
	rows, err := s.query(ctx, `SELECT s.device_id, d.user_id, d.public_key, s.addr, s.tcp_port, s.verified_at, s.reported_at, s.load, s.sessions, s.budget_rate, s.budget_bytes
		FROM supernodes s JOIN devices d ON d.id = s.device_id WHERE s.reported_at >= ? ORDER BY s.load, s.device_id`, store.Millis(since))
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []store.Supernode
	for rows.Next() {
		var sn store.Supernode
		var key []byte
		var v, r int64
		if err := rows.Scan(&sn.DeviceID, &sn.UserID, &key, &sn.Addr, &sn.TCPPort, &v, &r, &sn.Load, &sn.Sessions, &sn.BudgetRate, &sn.BudgetBytes); err != nil {
			return nil, err
		}
		copy(sn.PublicKey[:], key)
		sn.VerifiedAt, sn.ReportedAt = store.FromMillis(v), store.FromMillis(r)
		out = append(out, sn)
	}
	return out, rows.Err()
}

func (s *DB) DeleteSupernode(ctx context.Context, deviceID int64) error {
	return affected(s.exec(ctx, `DELETE FROM supernodes WHERE device_id = ?`, deviceID))
}
