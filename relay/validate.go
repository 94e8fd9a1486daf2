package relay

import (
	"crypto/rand"
	"crypto/subtle"
	"encoding/binary"
	"net/netip"
	"sync"
	"time"

	"golang.org/x/crypto/blake2s"
)

// Address validation, docs/protocol.md §6.2, after QUIC's (RFC 9000 §8.1).
//
// An ALLOCATE binds a side to the address it came from, and UDP source
// addresses can be forged: a ticket holder could bind a side to a third
// party's address, which would then receive what the other side sends. So
// a UDP side's address starts *unvalidated*, and until it is validated the
// relay sends to it at most AmplificationFactor times the bytes it has
// received from it since the side was bound there (its *credit*): what the
// ticket holder must itself send, forged, to the relay. What the other
// side sends beyond that waits in the channel's hold (hold.go), with its
// limits. Every ALLOCATED carries a token, a MAC of the channel, the side
// and the address it is sent to; a CONFIRM from that address echoing it
// proves the side receives there, and lifts the limit. A client sends
// CONFIRM on every ALLOCATED, and pads its ALLOCATEs (PaddedAllocateSize)
// so that the credit covers a first flight: held packets reach a newly
// bound side at once, without waiting for its CONFIRM. A side bound over
// TCP is validated by the TCP handshake.
//
// A token is stateless, like the transport's cookies (§3.2):
//
//	token = BLAKE2s-128(key = secret, channel ID (8) || side (1) || address (16, IPv4-mapped) || port (2))[:8]
//
// under a 32-byte random secret replaced every tokenSecretLifetime; one
// made with the current or the previous secret is accepted. An address
// that does not receive what the relay sends there never sees its token,
// and guessing one takes 2^64 tries, each a packet.
const (
	tokenSecretLifetime = 2 * time.Minute
	// maxCredit caps a side's credit, far above anything a hold could
	// want, so that it cannot overflow.
	maxCredit = 1 << 40
)

// tokenJar makes and checks tokens. It is safe for concurrent use.
type tokenJar struct {
	mu       sync.Mutex // protects the fields below
	secret   [32]byte
	previous [32]byte
	rotated  time.Time
}

// secrets returns the current and the previous secret at now, replacing
// them first if they are due.
func (j *tokenJar) secrets(now time.Time) (cur, prev [32]byte) {
	j.mu.Lock()
	defer j.mu.Unlock()
	if j.rotated.IsZero() || now.Sub(j.rotated) >= tokenSecretLifetime {
		j.previous = j.secret
		if j.rotated.IsZero() || now.Sub(j.rotated) >= 2*tokenSecretLifetime {
			// Both secrets are stale: the previous one must not live on.
			rand.Read(j.previous[:])
		}
		rand.Read(j.secret[:])
		j.rotated = now
	}
	return j.secret, j.previous
}

// tokenFor computes the token for side d of channel id at addr under
// secret.
func tokenFor(secret *[32]byte, id uint64, d byte, addr netip.AddrPort) [TokenSize]byte {
	var msg [8 + 1 + 16 + 2]byte
	binary.BigEndian.PutUint64(msg[:8], id)
	msg[8] = d
	a16 := addr.Addr().As16()
	copy(msg[9:25], a16[:])
	binary.BigEndian.PutUint16(msg[25:], addr.Port())
	h, _ := blake2s.New128(secret[:])
	h.Write(msg[:])
	var sum [blake2s.Size128]byte
	h.Sum(sum[:0])
	return [TokenSize]byte(sum[:TokenSize])
}

// token returns the token for side d of channel id bound to to, at now;
// zero for a TCP side, which needs none.
func (j *tokenJar) token(id uint64, d byte, to side, now time.Time) [TokenSize]byte {
	if to.tcp != nil || !to.addr.IsValid() {
		return [TokenSize]byte{}
	}
	cur, _ := j.secrets(now)
	return tokenFor(&cur, id, d, to.addr)
}

// valid reports whether tok is the token for side d of channel id at addr,
// made with the current or the previous secret at now.
func (j *tokenJar) valid(tok [TokenSize]byte, id uint64, d byte, addr netip.AddrPort, now time.Time) bool {
	cur, prev := j.secrets(now)
	ok := 0
	for _, s := range [...]*[32]byte{&cur, &prev} {
		want := tokenFor(s, id, d, addr)
		ok |= subtle.ConstantTimeCompare(want[:], tok[:])
	}
	return ok == 1
}

// The credit of a's sides. A validated side (valid) has none and needs
// none; the others' is in credit. The caller holds a.mu.

// receivedLocked credits side d with n bytes received from its address.
func (a *allocation) receivedLocked(d int, n int) {
	if !a.valid[d] {
		a.credit[d] = min(a.credit[d]+AmplificationFactor*int64(n), maxCredit)
	}
}

// mayLocked reports whether the relay may send n bytes to side d now.
func (a *allocation) mayLocked(d int, n int) bool {
	return a.valid[d] || a.credit[d] >= int64(n)
}

// sentLocked takes n bytes sent to side d from its credit.
func (a *allocation) sentLocked(d int, n int) {
	if !a.valid[d] {
		a.credit[d] -= int64(n)
	}
}

// bindLocked binds side d to s. A side bound to a new address (or
// connection) starts unvalidated, with no credit, unless it is a TCP
// connection; a refresh from where it is bound changes nothing.
func (a *allocation) bindLocked(d int, s side) {
	if a.sides[d].is(s) {
		return
	}
	a.sides[d] = s
	a.valid[d] = s.tcp != nil
	a.credit[d] = 0
}
