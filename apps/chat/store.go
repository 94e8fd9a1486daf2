package chat

import (
	"context"
	"database/sql"
	"embed"
	"errors"
	"fmt"
	"io/fs"
	"net/url"
	"strconv"
	"strings"
	"time"

	_ "modernc.org/sqlite" // the "sqlite" database/sql driver
)

//go:embed migrations/*.sql
var migrations embed.FS

// Store keeps chat history and the outbox in SQLite. Its methods are safe
// for concurrent use.
type Store struct {
	db     *sql.DB
	closes bool // db is ours to close
}

// OpenStore opens (creating if needed) the chat database at path, such as
// DATA/chat.db, and migrates it.
func OpenStore(ctx context.Context, path string) (*Store, error) {
	pragmas := url.Values{}
	for _, p := range []string{"journal_mode(WAL)", "busy_timeout(10000)", "synchronous(FULL)"} {
		pragmas.Add("_pragma", p)
	}
	// synchronous(FULL): a message the user sent survives a power cut
	// once Send has returned.
	db, err := sql.Open("sqlite", "file:"+path+"?"+pragmas.Encode()+"&_txlock=immediate")
	if err != nil {
		return nil, fmt.Errorf("chat: open %s: %w", path, err)
	}
	// One connection: SQLite has one writer anyway, and queueing in
	// database/sql beats SQLITE_BUSY retries.
	db.SetMaxOpenConns(1)
	s, err := NewStore(ctx, db)
	if err != nil {
		db.Close()
		return nil, err
	}
	s.closes = true
	return s, nil
}

// NewStore uses db, an SQLite database opened by the caller (the daemon
// may share its own), and migrates it. Close does not close db.
func NewStore(ctx context.Context, db *sql.DB) (*Store, error) {
	s := &Store{db: db}
	if err := s.migrate(ctx); err != nil {
		return nil, fmt.Errorf("chat: migrate: %w", err)
	}
	return s, nil
}

// Close closes the database if OpenStore opened it.
func (s *Store) Close() error {
	if s.closes {
		return s.db.Close()
	}
	return nil
}

// migrate applies the embedded migrations/NNNN_*.sql files not yet
// recorded in chat_migrations, each in a transaction of its own.
func (s *Store) migrate(ctx context.Context) error {
	if _, err := s.db.ExecContext(ctx, `CREATE TABLE IF NOT EXISTS chat_migrations (version INTEGER PRIMARY KEY)`); err != nil {
		return err
	}
	names, err := fs.Glob(migrations, "migrations/*.sql")
	if err != nil {
		return err
	}
	for _, name := range names { // Glob sorts: 0001 before 0002
		base := strings.TrimPrefix(name, "migrations/")
		v, err := strconv.Atoi(strings.SplitN(base, "_", 2)[0])
		if err != nil {
			return fmt.Errorf("migration %s: bad name", name)
		}
		script, err := migrations.ReadFile(name)
		if err != nil {
			return err
		}
		tx, err := s.db.BeginTx(ctx, nil)
		if err != nil {
			return err
		}
		var done int
		tx.QueryRowContext(ctx, `SELECT count(*) FROM chat_migrations WHERE version = ?`, v).Scan(&done)
		if done == 0 {
			if _, err := tx.ExecContext(ctx, string(script)); err != nil {
				tx.Rollback()
				return fmt.Errorf("migration %s: %w", base, err)
			}
			if _, err := tx.ExecContext(ctx, `INSERT INTO chat_migrations (version) VALUES (?)`, v); err != nil {
				tx.Rollback()
				return err
			}
		}
		if err := tx.Commit(); err != nil {
			return err
		}
	}
	return nil
}

const messageColumns = `peer, outgoing, id, body, sent_at, stored_at, state`

func scanMessages(rows *sql.Rows) ([]Message, error) {
	defer rows.Close()
	var l []Message
	for rows.Next() {
		var m Message
		var id string
		var sent, stored int64
		if err := rows.Scan(&m.Peer, &m.Outgoing, &id, &m.Body, &sent, &stored, &m.State); err != nil {
			return nil, err
		}
		var err error
		if m.ID, err = ParseID(id); err != nil {
			return nil, err
		}
		m.Time, m.Stored = time.UnixMilli(sent), time.UnixMilli(stored)
		l = append(l, m)
	}
	return l, rows.Err()
}

// Enqueue stores an outgoing message and puts it in the outbox, in one
// transaction.
func (s *Store) Enqueue(ctx context.Context, m Message) error {
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer tx.Rollback()
	now := time.Now().UnixMilli()
	if _, err := tx.ExecContext(ctx, `INSERT INTO chat_messages (`+messageColumns+`, updated_at) VALUES (?, 1, ?, ?, ?, ?, ?, ?)`,
		m.Peer, m.ID.String(), m.Body, m.Time.UnixMilli(), now, Pending, now); err != nil {
		return fmt.Errorf("chat: store message: %w", err)
	}
	if _, err := tx.ExecContext(ctx, `INSERT INTO chat_outbox (peer, id) VALUES (?, ?)`, m.Peer, m.ID.String()); err != nil {
		return fmt.Errorf("chat: store message: %w", err)
	}
	return tx.Commit()
}

// Receive stores an incoming message as Delivered. It reports false, and
// changes nothing, for a message already stored (a retried or relayed
// copy).
func (s *Store) Receive(ctx context.Context, m Message) (bool, error) {
	now := time.Now().UnixMilli()
	res, err := s.db.ExecContext(ctx, `INSERT INTO chat_messages (`+messageColumns+`, updated_at) VALUES (?, 0, ?, ?, ?, ?, ?, ?)
		ON CONFLICT DO NOTHING`,
		m.Peer, m.ID.String(), m.Body, m.Time.UnixMilli(), now, Delivered, now)
	if err != nil {
		return false, fmt.Errorf("chat: store message: %w", err)
	}
	n, err := res.RowsAffected()
	return n == 1, err
}

// Advance moves an outgoing message's state forward to st (never back) and
// reports whether it changed. Reaching Delivered takes it out of the
// outbox.
func (s *Store) Advance(ctx context.Context, peer string, id ID, st State) (bool, error) {
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return false, err
	}
	defer tx.Rollback()
	res, err := tx.ExecContext(ctx, `UPDATE chat_messages SET state = ?, updated_at = ?
		WHERE peer = ? AND outgoing = 1 AND id = ? AND state < ?`,
		st, time.Now().UnixMilli(), peer, id.String(), st)
	if err != nil {
		return false, err
	}
	n, _ := res.RowsAffected()
	if st >= Delivered {
		if _, err := tx.ExecContext(ctx, `DELETE FROM chat_outbox WHERE peer = ? AND id = ?`, peer, id.String()); err != nil {
			return false, err
		}
	}
	return n == 1, tx.Commit()
}

// Outbox returns peer's messages awaiting delivery, oldest first, and
// counts an attempt for each.
func (s *Store) Outbox(ctx context.Context, peer string) ([]Message, error) {
	if _, err := s.db.ExecContext(ctx, `UPDATE chat_outbox SET attempts = attempts + 1 WHERE peer = ?`, peer); err != nil {
		return nil, err
	}
	rows, err := s.db.QueryContext(ctx, `SELECT m.peer, m.outgoing, m.id, m.body, m.sent_at, m.stored_at, m.state
		FROM chat_outbox o JOIN chat_messages m ON m.peer = o.peer AND m.outgoing = 1 AND m.id = o.id
		WHERE o.peer = ? ORDER BY m.stored_at, m.rowid`, peer)
	if err != nil {
		return nil, err
	}
	return scanMessages(rows)
}

// OutboxPeers returns the peers with messages awaiting delivery.
func (s *Store) OutboxPeers(ctx context.Context) ([]string, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT DISTINCT peer FROM chat_outbox ORDER BY peer`)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var l []string
	for rows.Next() {
		var p string
		if err := rows.Scan(&p); err != nil {
			return nil, err
		}
		l = append(l, p)
	}
	return l, rows.Err()
}

// History returns the last limit messages with peer, oldest first.
func (s *Store) History(ctx context.Context, peer string, limit int) ([]Message, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT `+messageColumns+` FROM (SELECT `+messageColumns+`, rowid AS r FROM chat_messages
		WHERE peer = ? ORDER BY stored_at DESC, rowid DESC LIMIT ?) ORDER BY stored_at, r`, peer, limit)
	if err != nil {
		return nil, err
	}
	return scanMessages(rows)
}

// Search returns up to limit messages with peer (any peer if peer is "")
// containing every word of query, newest first. Words match whole tokens or,
// with a trailing *, prefixes; the query has no other syntax.
func (s *Store) Search(ctx context.Context, peer, query string, limit int) ([]Message, error) {
	match := ftsQuery(query)
	if match == "" {
		return nil, nil
	}
	rows, err := s.db.QueryContext(ctx, `SELECT m.peer, m.outgoing, m.id, m.body, m.sent_at, m.stored_at, m.state
		FROM chat_fts f JOIN chat_messages m ON m.rowid = f.rowid
		WHERE chat_fts MATCH ? AND (? = '' OR m.peer = ?)
		ORDER BY m.stored_at DESC, m.rowid DESC LIMIT ?`, match, peer, peer, limit)
	if err != nil {
		return nil, fmt.Errorf("chat: search: %w", err)
	}
	return scanMessages(rows)
}

// ftsQuery turns user words into an FTS5 query of quoted strings, so that
// no input is FTS5 syntax: `a "b` becomes `"a" """b"`.
func ftsQuery(q string) string {
	var terms []string
	for _, w := range strings.Fields(q) {
		prefix := strings.HasSuffix(w, "*")
		w = strings.TrimRight(w, "*")
		if w == "" {
			continue
		}
		t := `"` + strings.ReplaceAll(w, `"`, `""`) + `"`
		if prefix {
			t += "*"
		}
		terms = append(terms, t)
	}
	return strings.Join(terms, " ")
}

// MarkRead marks peer's unread incoming messages as read, with their
// receipts pending, and returns them.
func (s *Store) MarkRead(ctx context.Context, peer string) ([]ID, error) {
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return nil, err
	}
	defer tx.Rollback()
	rows, err := tx.QueryContext(ctx, `UPDATE chat_messages SET state = ?, receipt_pending = 1, updated_at = ?
		WHERE peer = ? AND outgoing = 0 AND state < ? RETURNING id`, Read, time.Now().UnixMilli(), peer, Read)
	if err != nil {
		return nil, err
	}
	ids, err := scanIDs(rows)
	if err != nil {
		return nil, err
	}
	return ids, tx.Commit()
}

// PendingReceipts returns the incoming messages from peer whose read
// receipts have not been delivered.
func (s *Store) PendingReceipts(ctx context.Context, peer string) ([]ID, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT id FROM chat_messages WHERE peer = ? AND outgoing = 0 AND receipt_pending = 1 ORDER BY rowid`, peer)
	if err != nil {
		return nil, err
	}
	return scanIDs(rows)
}

// ReceiptsDelivered clears the pending receipts of ids.
func (s *Store) ReceiptsDelivered(ctx context.Context, peer string, ids []ID) error {
	for _, id := range ids {
		if _, err := s.db.ExecContext(ctx, `UPDATE chat_messages SET receipt_pending = 0 WHERE peer = ? AND outgoing = 0 AND id = ?`, peer, id.String()); err != nil {
			return err
		}
	}
	return nil
}

// Message returns one stored message.
func (s *Store) Message(ctx context.Context, peer string, outgoing bool, id ID) (Message, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT `+messageColumns+` FROM chat_messages WHERE peer = ? AND outgoing = ? AND id = ?`, peer, outgoing, id.String())
	if err != nil {
		return Message{}, err
	}
	l, err := scanMessages(rows)
	if err != nil {
		return Message{}, err
	}
	if len(l) == 0 {
		return Message{}, ErrNotFound
	}
	return l[0], nil
}

// ErrNotFound is returned for a message the store does not have.
var ErrNotFound = errors.New("chat: no such message")

func scanIDs(rows *sql.Rows) ([]ID, error) {
	defer rows.Close()
	var ids []ID
	for rows.Next() {
		var s string
		if err := rows.Scan(&s); err != nil {
			return nil, err
		}
		id, err := ParseID(s)
		if err != nil {
			return nil, err
		}
		ids = append(ids, id)
	}
	return ids, rows.Err()
}
