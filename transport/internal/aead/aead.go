// Package aead protects Parley data packets: AES-256-GCM with the packet
// number as the nonce and the 20-byte header as associated data, and key
// updates in the manner of QUIC (RFC 9001 §6).
//
// Nonce: 4 zero bytes || packet number (8 bytes, big-endian). Packet numbers
// are never reused within a key phase, so nonces never repeat under a key.
//
// Key update: the next key of a direction is
//
//	k[n+1] = HKDF-Expand-SHA256(prk = k[n], info = "parley key update", 32)
//
// and the header's key-phase bit flips with each update. Both directions move
// together: a receiver that authenticates a packet under its next receive key
// switches its send key too.
package aead

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/hkdf"
	"crypto/sha256"
	"encoding/binary"
	"errors"
)

// Overhead is the size of the authentication tag added to each packet.
const Overhead = 16

const keyUpdateLabel = "parley key update"

// ErrAuth means a packet failed authentication: forged, corrupted, or under
// a key we no longer hold. The packet is dropped.
var ErrAuth = errors.New("aead: packet authentication failed")

// NextKey derives the key that follows k in a key update.
func NextKey(k [32]byte) [32]byte {
	out, err := hkdf.Expand(sha256.New, k[:], keyUpdateLabel, 32)
	if err != nil {
		panic(err) // cannot happen: 32 bytes is well within HKDF's limit
	}
	var n [32]byte
	copy(n[:], out)
	return n
}

func newGCM(k [32]byte) cipher.AEAD {
	b, err := aes.NewCipher(k[:])
	if err != nil {
		panic(err) // cannot happen: the key is 32 bytes
	}
	g, err := cipher.NewGCM(b)
	if err != nil {
		panic(err)
	}
	return g
}

func nonce(n *[12]byte, pn uint64) []byte {
	binary.BigEndian.PutUint64(n[4:], pn)
	return n[:]
}

// Sealer encrypts the packets of one direction. It is not safe for
// concurrent use.
type Sealer struct {
	key   [32]byte
	gcm   cipher.AEAD
	phase bool
	nonce [12]byte
}

// NewSealer returns a sealer for key in key phase 0.
func NewSealer(key [32]byte) *Sealer {
	return &Sealer{key: key, gcm: newGCM(key)}
}

// KeyPhase is the key-phase bit to put in the header of the next packet.
func (s *Sealer) KeyPhase() bool { return s.phase }

// Update moves to the next key phase.
func (s *Sealer) Update() {
	s.key = NextKey(s.key)
	s.gcm = newGCM(s.key)
	s.phase = !s.phase
}

// Seal encrypts plaintext in place (dst must be plaintext[:0] or not overlap
// it) and appends the result to dst. header is the associated data.
func (s *Sealer) Seal(dst, header, plaintext []byte, pn uint64) []byte {
	return s.gcm.Seal(dst, nonce(&s.nonce, pn), plaintext, header)
}

// Opener decrypts the packets of one direction, across key updates. It is
// not safe for concurrent use.
type Opener struct {
	phase      bool
	cur        cipher.AEAD
	next       cipher.AEAD
	nextKey    [32]byte
	prev       cipher.AEAD // nil once dropped
	phaseStart uint64      // first packet number seen in the current phase
	nonce      [12]byte
}

// NewOpener returns an opener for key in key phase 0.
func NewOpener(key [32]byte) *Opener {
	nk := NextKey(key)
	return &Opener{cur: newGCM(key), next: newGCM(nk), nextKey: nk}
}

// Open authenticates and decrypts ciphertext in place, appending the
// plaintext to dst (use ciphertext[:0]). updated reports that this packet
// began a new key phase: the caller must update its Sealer if it has not
// already, and call DropPrevious some time later (three PTOs, RFC 9001 §6.5).
func (o *Opener) Open(dst, header, ciphertext []byte, pn uint64, phase bool) (plain []byte, updated bool, err error) {
	n := nonce(&o.nonce, pn)
	if phase == o.phase {
		plain, err = o.cur.Open(dst, n, ciphertext, header)
		if err != nil {
			return nil, false, ErrAuth
		}
		return plain, false, nil
	}
	if pn < o.phaseStart {
		// Reordered packet from before the last update.
		if o.prev == nil {
			return nil, false, ErrAuth
		}
		plain, err = o.prev.Open(dst, n, ciphertext, header)
		if err != nil {
			return nil, false, ErrAuth
		}
		return plain, false, nil
	}
	plain, err = o.next.Open(dst, n, ciphertext, header)
	if err != nil {
		return nil, false, ErrAuth
	}
	o.prev, o.cur = o.cur, o.next
	o.nextKey = NextKey(o.nextKey)
	o.next = newGCM(o.nextKey)
	o.phase = !o.phase
	o.phaseStart = pn
	return plain, true, nil
}

// DropPrevious forgets the key of the previous phase.
func (o *Opener) DropPrevious() { o.prev = nil }

// KeyPhase is the phase of the current receive key.
func (o *Opener) KeyPhase() bool { return o.phase }
