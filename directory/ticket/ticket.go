// Package ticket defines relay tickets: short-lived permissions, signed by
// the directory server with Ed25519, for a supernode to relay between two
// devices. A supernode checks a ticket offline, with only the server's
// public key (GET /v1/server-key), so relaying needs no round trip to the
// server and keeps working while it is down, until tickets expire.
//
// Layout (big-endian), 189 bytes:
//
//	offset size field
//	     0    1 version = 1
//	     1    8 issued at, Unix seconds
//	     9    8 expires at, Unix seconds
//	    17   32 device A's public key (Curve25519; the requester)
//	    49   32 device B's public key
//	    81   32 relay's device public key
//	   113    8 byte budget: bytes the relay may forward for the pair, both
//	            directions together
//	   121    4 rate limit: bytes per second for the pair
//	   125   64 Ed25519 signature of Context || bytes 0..124
//
// The signature covers a context string first so that no other message the
// server signs can be mistaken for a ticket.
package ticket

import (
	"crypto/ed25519"
	"encoding/binary"
	"errors"
	"fmt"
	"time"
)

// Version is the layout version this package reads and writes.
const Version = 1

// Layout offsets and sizes.
const (
	offVersion = 0
	offIssued  = 1
	offExpires = 9
	offA       = 17
	offB       = 49
	offRelay   = 81
	offBudget  = 113
	offRate    = 121
	offSig     = 125

	KeySize  = 32
	BodySize = offSig                           // signed part
	Size     = BodySize + ed25519.SignatureSize // 189
)

// Context is prepended to the body before signing.
const Context = "parley relay ticket v1\x00"

// MaxClockSkew is how far in the future a ticket's issue time may be, to
// allow for clocks that disagree.
const MaxClockSkew = time.Minute

// Ticket is a relay permission.
type Ticket struct {
	IssuedAt  time.Time // second precision
	ExpiresAt time.Time
	A, B      [KeySize]byte // the two devices, A the one that asked
	Relay     [KeySize]byte
	Budget    uint64 // bytes
	Rate      uint32 // bytes per second
}

// Errors Verify returns.
var (
	ErrMalformed = errors.New("ticket: malformed")
	ErrSignature = errors.New("ticket: bad signature")
	ErrExpired   = errors.New("ticket: expired")
	ErrNotYet    = errors.New("ticket: not yet valid")
)

// Append appends t's unsigned body to b.
func (t *Ticket) appendBody(b []byte) []byte {
	b = append(b, Version)
	b = binary.BigEndian.AppendUint64(b, uint64(t.IssuedAt.Unix()))
	b = binary.BigEndian.AppendUint64(b, uint64(t.ExpiresAt.Unix()))
	b = append(b, t.A[:]...)
	b = append(b, t.B[:]...)
	b = append(b, t.Relay[:]...)
	b = binary.BigEndian.AppendUint64(b, t.Budget)
	b = binary.BigEndian.AppendUint32(b, t.Rate)
	return b
}

// Sign returns t encoded and signed with priv.
func Sign(priv ed25519.PrivateKey, t Ticket) []byte {
	msg := t.appendBody([]byte(Context))
	sig := ed25519.Sign(priv, msg)
	out := make([]byte, 0, Size)
	out = append(out, msg[len(Context):]...)
	return append(out, sig...)
}

// Parse decodes b without checking its signature or validity period.
func Parse(b []byte) (Ticket, error) {
	var t Ticket
	if len(b) != Size {
		return t, fmt.Errorf("%w: %d bytes, want %d", ErrMalformed, len(b), Size)
	}
	if b[offVersion] != Version {
		return t, fmt.Errorf("%w: version %d", ErrMalformed, b[offVersion])
	}
	issued := int64(binary.BigEndian.Uint64(b[offIssued:]))
	expires := int64(binary.BigEndian.Uint64(b[offExpires:]))
	if issued < 0 || expires < issued {
		return t, fmt.Errorf("%w: validity period", ErrMalformed)
	}
	t.IssuedAt, t.ExpiresAt = time.Unix(issued, 0), time.Unix(expires, 0)
	copy(t.A[:], b[offA:])
	copy(t.B[:], b[offB:])
	copy(t.Relay[:], b[offRelay:])
	t.Budget = binary.BigEndian.Uint64(b[offBudget:])
	t.Rate = binary.BigEndian.Uint32(b[offRate:])
	return t, nil
}

// Verify checks b's signature under pub and that it is valid at now, and
// returns the ticket.
func Verify(pub ed25519.PublicKey, b []byte, now time.Time) (Ticket, error) {
	t, err := Parse(b)
	if err != nil {
		return t, err
	}
	if len(pub) != ed25519.PublicKeySize {
		return t, fmt.Errorf("%w: bad public key", ErrSignature)
	}
	msg := make([]byte, 0, len(Context)+BodySize)
	msg = append(msg, Context...)
	msg = append(msg, b[:BodySize]...)
	if !ed25519.Verify(pub, msg, b[offSig:]) {
		return t, ErrSignature
	}
	if !now.Before(t.ExpiresAt) {
		return t, ErrExpired
	}
	if t.IssuedAt.After(now.Add(MaxClockSkew)) {
		return t, ErrNotYet
	}
	return t, nil
}

// Covers reports whether t permits relaying between x and y, in either
// order.
func (t *Ticket) Covers(x, y [KeySize]byte) bool {
	return t.A == x && t.B == y || t.A == y && t.B == x
}
