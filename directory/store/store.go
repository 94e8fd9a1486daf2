// Package store defines the directory server's persistent state behind one
// interface, Store, so that the server runs unchanged on the embedded SQLite
// database (package store/sqlite, one machine) or on PostgreSQL (package
// store/postgres, several server processes sharing one database).
//
// The store is the source of truth. The server may cache what it reads (token
// lookups, encoded contact lists) but invalidates those caches through
// Broadcast whenever it writes, so every process sees every write.
//
// Times are stored as Unix milliseconds; all methods take the current time as
// an argument where it matters, so tests can drive the clock.
package store

import (
	"context"
	"errors"
	"time"
)

// Errors callers branch on. Implementations wrap them with context.
var (
	// ErrNotFound: the row asked for does not exist (or is not visible to
	// the caller, which the server reports the same way).
	ErrNotFound = errors.New("not found")
	// ErrConflict: the write clashes with an existing row (username taken,
	// device key registered to another account, already contacts).
	ErrConflict = errors.New("conflict")
	// ErrBlocked: the caller has blocked the other user and must unblock
	// them before asking to be their contact.
	ErrBlocked = errors.New("blocked")
	// ErrLimit: a per-recipient quota (mailbox count or bytes) is full.
	ErrLimit = errors.New("limit reached")
)

// KeySize is the size of a device public key: a Curve25519 point.
const KeySize = 32

// Key is a device's Curve25519 public key, which is also its identity.
type Key [KeySize]byte

// User is an account.
type User struct {
	ID           int64
	Username     string
	PasswordHash string // argon2id, PHC string format
	CreatedAt    time.Time
	UpdatedAt    time.Time // last change of the account's own fields
}

// Device is one of a user's devices.
type Device struct {
	ID        int64
	UserID    int64
	Name      string
	PublicKey Key
	CreatedAt time.Time
	LastSeen  time.Time
	// Online is true while the device holds an event stream on some
	// server process. OnlineServer names that process.
	Online       bool
	OnlineServer string
	// Endpoints are the candidate addresses ("ip:port") the device last
	// reported for itself.
	Endpoints []string
	UpdatedAt time.Time
}

// Token is a session token, stored only by its SHA-256 hash.
type Token struct {
	Hash      [32]byte
	UserID    int64
	DeviceID  int64
	CreatedAt time.Time
	ExpiresAt time.Time
}

// ContactState is the state of a relationship as seen from one side. Each
// side has its own row:
//
//	A requests B:      A: Outgoing   B: Incoming
//	B accepts:         A: Mutual     B: Mutual
//	B declines:        (both rows deleted)
//	either removes:    (both rows deleted)
//	A blocks B:        A: Blocked    B: (row deleted)
//	B requests A while A blocks B: B: Outgoing, A stays Blocked, so that B
//	cannot tell it is blocked.
type ContactState int

const (
	Outgoing ContactState = iota + 1 // I asked them
	Incoming                         // they asked me
	Mutual                           // both agreed
	Blocked                          // I blocked them
)

func (s ContactState) String() string {
	switch s {
	case Outgoing:
		return "outgoing"
	case Incoming:
		return "incoming"
	case Mutual:
		return "mutual"
	case Blocked:
		return "blocked"
	}
	return "unknown"
}

// Contact is one row of a user's contact list.
type Contact struct {
	UserID    int64 // the other user
	Username  string
	State     ContactState
	UpdatedAt time.Time
}

// Mail is an end-to-end encrypted blob waiting for an offline device.
type Mail struct {
	ID              int64
	RecipientDevice int64
	SenderUser      int64
	SenderUsername  string
	SenderKey       Key
	Blob            []byte
	CreatedAt       time.Time
}

// Supernode is a device verified to be publicly reachable on Addr, which
// volunteers relay capacity.
type Supernode struct {
	DeviceID   int64
	UserID     int64
	PublicKey  Key
	Addr       string // "ip:port", verified by dial-back
	TCPPort    int    // the relay's TCP fallback port on Addr's host; 0: none
	VerifiedAt time.Time
	ReportedAt time.Time // last load report
	Load       int       // percent of budget in use, 0..100
	Sessions   int       // relayed sessions now
	// Budget the supernode volunteers: bytes per second across all
	// sessions, and bytes per relayed session.
	BudgetRate  int64
	BudgetBytes int64
}

// Store is the directory server's persistent state. All methods are safe for
// concurrent use. Methods that write take effect atomically.
type Store interface {
	// CreateUser adds an account; ErrConflict if the username is taken.
	CreateUser(ctx context.Context, username, passwordHash string, now time.Time) (User, error)
	UserByID(ctx context.Context, id int64) (User, error)
	UserByName(ctx context.Context, username string) (User, error)
	// SearchUsers returns up to limit users whose name starts with prefix,
	// in name order.
	SearchUsers(ctx context.Context, prefix string, limit int) ([]User, error)
	SetPasswordHash(ctx context.Context, userID int64, hash string, now time.Time) error
	// DeleteUser removes the account and everything it owns: devices,
	// tokens, contact rows on both sides, mail to and from it, supernodes.
	DeleteUser(ctx context.Context, userID int64) error

	// UpsertDevice registers key for the user, or renames the device if the
	// user already has it. ErrConflict if another user owns the key.
	UpsertDevice(ctx context.Context, userID int64, key Key, name string, now time.Time) (Device, error)
	Devices(ctx context.Context, userID int64) ([]Device, error)
	// DevicesOfUsers returns the devices of all the given users.
	DevicesOfUsers(ctx context.Context, userIDs []int64) ([]Device, error)
	DeviceByID(ctx context.Context, id int64) (Device, error)
	DeviceByKey(ctx context.Context, key Key) (Device, error)
	// DeleteDevice revokes a device of userID with its tokens, mail and
	// supernode entry; ErrNotFound if userID has no such device.
	DeleteDevice(ctx context.Context, userID, deviceID int64) error
	// SetDeviceOnline records that the device's event stream is held by
	// server (online) or was closed. Going offline only applies if server
	// still holds it, so a late close on one process does not undo a newer
	// connection on another.
	SetDeviceOnline(ctx context.Context, deviceID int64, server string, online bool, now time.Time) error
	// ClearOnline marks offline every device held by server, or by any
	// server if server is "".
	ClearOnline(ctx context.Context, server string, now time.Time) error
	SetDeviceEndpoints(ctx context.Context, deviceID int64, endpoints []string, now time.Time) error
	// DevicesHeldBy returns the devices whose event stream server holds.
	DevicesHeldBy(ctx context.Context, server string) ([]Device, error)

	// Heartbeat records that server is alive at now.
	Heartbeat(ctx context.Context, server string, now time.Time) error
	// StaleServers returns the servers whose last heartbeat is before
	// the given time.
	StaleServers(ctx context.Context, before time.Time) ([]string, error)
	// DeleteServer forgets server and reports whether this call did, so
	// that of several processes reaping a dead one only one acts.
	DeleteServer(ctx context.Context, server string) (bool, error)
	CountOnline(ctx context.Context) (int, error)

	CreateToken(ctx context.Context, t Token) error
	// TokenByHash returns the token if it exists, whatever its expiry.
	TokenByHash(ctx context.Context, hash [32]byte) (Token, error)
	DeleteToken(ctx context.Context, hash [32]byte) error
	// DeleteUserTokens deletes all tokens of the user but keep (which may
	// be the zero hash) and returns the hashes deleted.
	DeleteUserTokens(ctx context.Context, userID int64, keep [32]byte) ([][32]byte, error)
	DeleteExpiredTokens(ctx context.Context, now time.Time) (int, error)

	// RequestContact records that from asks to to be contacts, and returns
	// the resulting state of from's row: Outgoing, or Mutual if to had
	// already asked. ErrConflict if they are already mutual, ErrBlocked
	// if from blocks to.
	RequestContact(ctx context.Context, from, to int64, now time.Time) (ContactState, error)
	// AcceptContact makes an incoming request from `from` mutual;
	// ErrNotFound if there is none.
	AcceptContact(ctx context.Context, userID, from int64, now time.Time) error
	// DeclineContact drops an incoming request; ErrNotFound if none.
	DeclineContact(ctx context.Context, userID, from int64) error
	// RemoveContact ends a mutual contact or cancels an outgoing request;
	// ErrNotFound if there is neither.
	RemoveContact(ctx context.Context, userID, other int64) error
	Block(ctx context.Context, userID, other int64, now time.Time) error
	// Unblock removes a block; ErrNotFound if there was none.
	Unblock(ctx context.Context, userID, other int64) error
	// Contacts lists all of the user's rows, every state, by username.
	Contacts(ctx context.Context, userID int64) ([]Contact, error)
	// ContactState returns userID's row about other; ErrNotFound if none.
	ContactState(ctx context.Context, userID, other int64) (ContactState, error)
	// MutualContacts returns the IDs of the user's mutual contacts.
	MutualContacts(ctx context.Context, userID int64) ([]int64, error)

	// PutMail stores m unless the recipient device already holds maxCount
	// messages or the new total would exceed maxBytes (ErrLimit).
	PutMail(ctx context.Context, m Mail, maxCount int, maxBytes int64) (Mail, error)
	// Mail returns the messages waiting for the device, oldest first.
	Mail(ctx context.Context, deviceID int64) ([]Mail, error)
	// DeleteMail deletes the device's messages with the given IDs and
	// returns how many there were; IDs of other devices are ignored.
	DeleteMail(ctx context.Context, deviceID int64, ids []int64) (int, error)
	CountMail(ctx context.Context, deviceID int64) (int, error)

	// PutSupernode lists (or re-verifies) a supernode.
	PutSupernode(ctx context.Context, sn Supernode) error
	// ReportLoad updates a supernode's load; ErrNotFound if not listed.
	ReportLoad(ctx context.Context, deviceID int64, load, sessions int, now time.Time) error
	// Supernodes returns supernodes that reported at or after since,
	// least loaded first.
	Supernodes(ctx context.Context, since time.Time) ([]Supernode, error)
	DeleteSupernode(ctx context.Context, deviceID int64) error

	// Broadcaster passes small messages between all server processes
	// sharing this store.
	Broadcaster

	Close() error
}

// Broadcaster delivers each published message to every subscriber in every
// server process using the same database, including the publisher's own.
// Delivery is at most once and may be lost if a process's connection to the
// database breaks; Subscribe's onReset callback tells a subscriber when
// messages may have been lost so it can drop its caches.
type Broadcaster interface {
	// Publish sends payload (at most MaxBroadcast bytes).
	Publish(ctx context.Context, payload []byte) error
	// Subscribe calls fn for each message until the returned function is
	// called. fn is called from one goroutine at a time and must not block
	// for long. onReset (may be nil) is called after a reconnection.
	Subscribe(fn func(payload []byte), onReset func()) (cancel func())
}

// MaxBroadcast is the largest payload Publish accepts: PostgreSQL's NOTIFY
// limit is 8000 bytes.
const MaxBroadcast = 7900

// ErrTooLarge is returned by Publish for payloads over MaxBroadcast.
var ErrTooLarge = errors.New("broadcast payload too large")

// Millis converts t to Unix milliseconds, the stores' time format.
func Millis(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixMilli()
}

// FromMillis is the inverse of Millis.
func FromMillis(ms int64) time.Time {
	if ms == 0 {
		return time.Time{}
	}
	return time.UnixMilli(ms)
}
