package node

import (
	"context"
	"database/sql"
	"embed"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net/url"
	"os"
	"sort"
	"strconv"
	"strings"
	"time"

	_ "modernc.org/sqlite" // registers the "sqlite" driver

	"github.com/parley-p2p/parley/transport"
)

//go:embed migrations/*.sql
var migrations embed.FS

// state is the daemon's SQLite database (DATA/state.db). One connection:
// the daemon is its only user and writes are few, so there is nothing to
// gain from a pool and SQLITE_BUSY cannot happen.
type state struct {
	db *sql.DB
}

// Settings keys.
const (
	settingToken    = "token"    // the directory token (the file is 0600)
	settingUsername = "username" // who the token belongs to
	settingServer   = "server"   // the directory URL last used
	settingPort     = "port"     // the UDP port last bound, tried again first
)

// openState opens (creating with mode 0600) and migrates path.
func openState(ctx context.Context, path string) (*state, error) {
	// Create the file ourselves so that it is 0600 from the start; SQLite
	// gives its WAL and shared-memory files the database's mode.
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, err
	}
	f.Close()
	if err := os.Chmod(path, 0o600); err != nil {
		return nil, err
	}
	q := url.Values{}
	for _, p := range []string{"journal_mode(WAL)", "busy_timeout(5000)", "foreign_keys(1)", "synchronous(NORMAL)"} {
		q.Add("_pragma", p)
	}
	db, err := sql.Open("sqlite", "file:"+path+"?"+q.Encode())
	if err != nil {
		return nil, err
	}
	db.SetMaxOpenConns(1)
	db.SetConnMaxLifetime(0)
	db.SetConnMaxIdleTime(0)
	s := &state{db: db}
	if err := s.migrate(ctx); err != nil {
		db.Close()
		return nil, fmt.Errorf("migrate %s: %w", path, err)
	}
	return s, nil
}

func (s *state) Close() error { return s.db.Close() }

// migrate applies the embedded migrations NNNN_name.sql not yet applied, in
// order, each in its own transaction.
func (s *state) migrate(ctx context.Context) error {
	if _, err := s.db.ExecContext(ctx, `CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY)`); err != nil {
		return err
	}
	var have int
	if err := s.db.QueryRowContext(ctx, `SELECT COALESCE(MAX(version), 0) FROM schema_migrations`).Scan(&have); err != nil {
		return err
	}
	names, err := fs.Glob(migrations, "migrations/*.sql")
	if err != nil {
		return err
	}
	sort.Strings(names)
	for _, name := range names {
		base := strings.TrimPrefix(name, "migrations/")
		v, err := strconv.Atoi(strings.SplitN(base, "_", 2)[0])
		if err != nil {
			return fmt.Errorf("migration %s: bad name", base)
		}
		if v <= have {
			continue
		}
		body, err := migrations.ReadFile(name)
		if err != nil {
			return err
		}
		tx, err := s.db.BeginTx(ctx, nil)
		if err != nil {
			return err
		}
		if _, err := tx.ExecContext(ctx, string(body)); err != nil {
			tx.Rollback()
			return fmt.Errorf("migration %s: %w", base, err)
		}
		if _, err := tx.ExecContext(ctx, `INSERT INTO schema_migrations (version) VALUES (?)`, v); err != nil {
			tx.Rollback()
			return err
		}
		if err := tx.Commit(); err != nil {
			return err
		}
	}
	return nil
}

func (s *state) setting(ctx context.Context, key string) (string, error) {
	var v string
	err := s.db.QueryRowContext(ctx, `SELECT value FROM settings WHERE key = ?`, key).Scan(&v)
	if errors.Is(err, sql.ErrNoRows) {
		return "", nil
	}
	return v, err
}

// setSetting stores value under key; an empty value deletes it.
func (s *state) setSetting(ctx context.Context, key, value string) error {
	if value == "" {
		_, err := s.db.ExecContext(ctx, `DELETE FROM settings WHERE key = ?`, key)
		return err
	}
	_, err := s.db.ExecContext(ctx, `INSERT INTO settings (key, value) VALUES (?, ?)
		ON CONFLICT (key) DO UPDATE SET value = excluded.value`, key, value)
	return err
}

// cachedContact is a contact as the daemon last saw it.
type cachedContact struct {
	Username string
	State    string
	Devices  []cachedDevice
}

type cachedDevice struct {
	Key        transport.PublicKey
	Name       string
	Endpoints  []string
	LastDirect string
}

// replaceContacts makes the cache hold exactly list, keeping each device's
// last direct address.
func (s *state) replaceContacts(ctx context.Context, list []cachedContact) error {
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer tx.Rollback()
	last := map[string]string{}
	rows, err := tx.QueryContext(ctx, `SELECT key, last_direct FROM devices`)
	if err != nil {
		return err
	}
	for rows.Next() {
		var k, d string
		if err := rows.Scan(&k, &d); err != nil {
			rows.Close()
			return err
		}
		last[k] = d
	}
	rows.Close()
	if _, err := tx.ExecContext(ctx, `DELETE FROM contacts`); err != nil {
		return err
	}
	now := time.Now().Unix()
	for _, c := range list {
		if _, err := tx.ExecContext(ctx, `INSERT INTO contacts (username, state, updated_at) VALUES (?, ?, ?)`, c.Username, c.State, now); err != nil {
			return err
		}
		for _, d := range c.Devices {
			eps, _ := json.Marshal(d.Endpoints)
			k := d.Key.String()
			if _, err := tx.ExecContext(ctx, `INSERT INTO devices (key, username, name, endpoints, last_direct, updated_at)
				VALUES (?, ?, ?, ?, ?, ?)`, k, c.Username, d.Name, string(eps), last[k], now); err != nil {
				return err
			}
		}
	}
	return tx.Commit()
}

func (s *state) contacts(ctx context.Context) ([]cachedContact, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT c.username, c.state, COALESCE(d.key, ''), COALESCE(d.name, ''), COALESCE(d.endpoints, '[]'), COALESCE(d.last_direct, '')
		FROM contacts c LEFT JOIN devices d ON d.username = c.username ORDER BY c.username, d.key`)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var list []cachedContact
	for rows.Next() {
		var user, st, key, name, eps, last string
		if err := rows.Scan(&user, &st, &key, &name, &eps, &last); err != nil {
			return nil, err
		}
		if len(list) == 0 || list[len(list)-1].Username != user {
			list = append(list, cachedContact{Username: user, State: st})
		}
		if key == "" {
			continue
		}
		pk, err := transport.ParsePublicKey(key)
		if err != nil {
			continue // written by us; skip rather than fail the daemon
		}
		d := cachedDevice{Key: pk, Name: name, LastDirect: last}
		json.Unmarshal([]byte(eps), &d.Endpoints)
		c := &list[len(list)-1]
		c.Devices = append(c.Devices, d)
	}
	return list, rows.Err()
}

func (s *state) setLastDirect(ctx context.Context, key transport.PublicKey, addr string) error {
	_, err := s.db.ExecContext(ctx, `UPDATE devices SET last_direct = ? WHERE key = ?`, addr, key.String())
	return err
}

type cachedSupernode struct {
	Key     transport.PublicKey
	Addr    string
	TCPPort int // relay over TCP on Addr's host; 0: not announced
	RTT     time.Duration
}

func (s *state) replaceSupernodes(ctx context.Context, list []cachedSupernode) error {
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer tx.Rollback()
	if _, err := tx.ExecContext(ctx, `DELETE FROM supernodes`); err != nil {
		return err
	}
	now := time.Now().Unix()
	for _, sn := range list {
		if _, err := tx.ExecContext(ctx, `INSERT INTO supernodes (key, addr, tcp_port, rtt_ms, updated_at) VALUES (?, ?, ?, ?, ?)`,
			sn.Key.String(), sn.Addr, sn.TCPPort, float64(sn.RTT)/float64(time.Millisecond), now); err != nil {
			return err
		}
	}
	return tx.Commit()
}

func (s *state) supernodes(ctx context.Context) ([]cachedSupernode, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT key, addr, tcp_port, rtt_ms FROM supernodes ORDER BY rtt_ms, key`)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var list []cachedSupernode
	for rows.Next() {
		var k, a string
		var port int
		var ms float64
		if err := rows.Scan(&k, &a, &port, &ms); err != nil {
			return nil, err
		}
		pk, err := transport.ParsePublicKey(k)
		if err != nil {
			continue
		}
		list = append(list, cachedSupernode{Key: pk, Addr: a, TCPPort: port, RTT: time.Duration(ms * float64(time.Millisecond))})
	}
	return list, rows.Err()
}
