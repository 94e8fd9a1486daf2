package handshake

import (
	"crypto/rand"
	"crypto/subtle"
	"encoding/binary"
	"errors"
	"net/netip"
	"sync"
	"time"

	"golang.org/x/crypto/blake2s"
	"golang.org/x/crypto/chacha20poly1305"
)

// The mac1/mac2/cookie scheme follows WireGuard (whitepaper §5.4.4–5.4.7):
//
//	mac1 = BLAKE2s-128(key = BLAKE2s-256("mac1----" || receiver static), packet[:mac1 offset])
//	mac2 = BLAKE2s-128(key = cookie, packet[:mac2 offset])   or zeros without a cookie
//	cookie = BLAKE2s-128(key = secret (rotates every 2 minutes), source IP (16 bytes) || port (2 bytes))
//
// mac1 proves the sender knows the receiver's public key and costs one
// BLAKE2s, so a flood of random bytes never reaches Diffie-Hellman. mac2
// proves the sender can receive at its source address; it is demanded only
// when the responder is under load.
const (
	labelMAC1   = "mac1----"
	labelCookie = "cookie--"

	// cookieSecretLifetime is how long one cookie secret is used. Cookies made
	// with the previous secret are also accepted, so a cookie stays valid for
	// at least this long.
	cookieSecretLifetime = 2 * time.Minute

	macSize = 16
)

var (
	errBadMAC1   = errors.New("handshake: bad mac1")
	errBadCookie = errors.New("handshake: cannot decrypt cookie reply")
)

// macKey derives the mac1 or cookie key for a receiver's static public key.
func macKey(label string, static [32]byte) [32]byte {
	h, _ := blake2s.New256(nil)
	h.Write([]byte(label))
	h.Write(static[:])
	var k [32]byte
	h.Sum(k[:0])
	return k
}

// mac computes BLAKE2s-128 keyed with key over msg into out.
func mac(out *[macSize]byte, key []byte, msg []byte) {
	h, _ := blake2s.New128(key)
	h.Write(msg)
	h.Sum(out[:0])
}

// checkMAC reports whether want equals BLAKE2s-128(key, msg), in constant time.
func checkMAC(key []byte, msg []byte, want []byte) bool {
	var got [macSize]byte
	mac(&got, key, msg)
	return subtle.ConstantTimeCompare(got[:], want) == 1
}

// cookieJar makes and checks the stateless cookies a responder hands out
// under load. It is safe for concurrent use.
type cookieJar struct {
	cookieKey [32]byte // encrypts cookie replies, from our static key

	mu       sync.Mutex // protects the fields below
	secret   [32]byte
	previous [32]byte
	rotated  time.Time
}

func newCookieJar(static [32]byte) *cookieJar {
	return &cookieJar{cookieKey: macKey(labelCookie, static)}
}

func (j *cookieJar) secretsLocked(now time.Time) (cur, prev [32]byte) {
	if j.rotated.IsZero() || now.Sub(j.rotated) >= cookieSecretLifetime {
		j.previous = j.secret
		if j.rotated.IsZero() || now.Sub(j.rotated) >= 2*cookieSecretLifetime {
			// Both secrets are stale: the previous one must not live on.
			rand.Read(j.previous[:])
		}
		rand.Read(j.secret[:])
		j.rotated = now
	}
	return j.secret, j.previous
}

// cookieFor computes the cookie for src under secret.
func cookieFor(secret [32]byte, src netip.AddrPort) [macSize]byte {
	var msg [18]byte
	a16 := src.Addr().As16()
	copy(msg[:16], a16[:])
	binary.BigEndian.PutUint16(msg[16:], src.Port())
	var c [macSize]byte
	mac(&c, secret[:], msg[:])
	return c
}

// validMAC2 reports whether packet[:mac2Off] carries a valid mac2 for src.
func (j *cookieJar) validMAC2(packet []byte, mac2Off int, src netip.AddrPort, now time.Time) bool {
	j.mu.Lock()
	cur, prev := j.secretsLocked(now)
	j.mu.Unlock()
	got := packet[mac2Off : mac2Off+macSize]
	for _, s := range [...][32]byte{cur, prev} {
		c := cookieFor(s, src)
		if checkMAC(c[:], packet[:mac2Off], got) {
			return true
		}
	}
	return false
}

// sealCookie encrypts the cookie for src, bound to the initiation's mac1.
func (j *cookieJar) sealCookie(nonce *[24]byte, dst []byte, src netip.AddrPort, mac1 []byte, now time.Time) []byte {
	j.mu.Lock()
	cur, _ := j.secretsLocked(now)
	j.mu.Unlock()
	c := cookieFor(cur, src)
	rand.Read(nonce[:])
	aead, _ := chacha20poly1305.NewX(j.cookieKey[:])
	return aead.Seal(dst, nonce[:], c[:], mac1)
}

// openCookie decrypts a cookie reply sent by the peer whose static key gave
// cookieKey, bound to the mac1 we sent.
func openCookie(cookieKey [32]byte, nonce []byte, sealed []byte, mac1 []byte) ([macSize]byte, error) {
	var c [macSize]byte
	aead, _ := chacha20poly1305.NewX(cookieKey[:])
	out, err := aead.Open(c[:0], nonce, sealed, mac1)
	if err != nil || len(out) != macSize {
		return c, errBadCookie
	}
	return c, nil
}
