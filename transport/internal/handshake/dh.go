package handshake

import (
	"crypto/ecdh"
	"io"
	"sync"

	"github.com/flynn/noise"
)

// dh25519 is Noise's 25519 DH function on crypto/ecdh, keeping the parsed
// private keys it has seen. flynn/noise's own DH25519 parses the private key
// on every DH, and parsing computes the public key: a second full scalar
// multiplication per DH. Reusing the parsed key halves a handshake's cost.
//
// Static keys (registered with rememberStatic) are kept for the life of the
// process. An ephemeral key is kept from its generation until its second
// use — Noise IK uses each side's ephemeral in exactly two DHs — and a
// bounded number of abandoned ones are evicted oldest first, so ephemeral
// private keys do not linger.
type dh25519 struct{}

var curve = ecdh.X25519()

const maxCachedEphemerals = 4096

var keyCache = struct {
	mu     sync.Mutex // protects the fields below
	static map[[32]byte]*ecdh.PrivateKey
	eph    map[[32]byte]*ephEntry
	order  [][32]byte // ephemerals in insertion order, for eviction
}{static: map[[32]byte]*ecdh.PrivateKey{}, eph: map[[32]byte]*ephEntry{}}

type ephEntry struct {
	key  *ecdh.PrivateKey
	uses int
}

// rememberStatic caches the parsed form of a static private key.
func rememberStatic(priv [32]byte) {
	k, err := curve.NewPrivateKey(priv[:])
	if err != nil {
		return
	}
	keyCache.mu.Lock()
	keyCache.static[priv] = k
	keyCache.mu.Unlock()
}

func (dh25519) GenerateKeypair(rng io.Reader) (noise.DHKey, error) {
	k, err := curve.GenerateKey(rng)
	if err != nil {
		return noise.DHKey{}, err
	}
	var id [32]byte
	copy(id[:], k.Bytes())
	keyCache.mu.Lock()
	keyCache.eph[id] = &ephEntry{key: k}
	keyCache.order = append(keyCache.order, id)
	for len(keyCache.order) > maxCachedEphemerals {
		delete(keyCache.eph, keyCache.order[0])
		keyCache.order = keyCache.order[1:]
	}
	if len(keyCache.order) == 0 {
		keyCache.order = nil
	}
	keyCache.mu.Unlock()
	return noise.DHKey{Private: k.Bytes(), Public: k.PublicKey().Bytes()}, nil
}

func (dh25519) DH(privkey, pubkey []byte) ([]byte, error) {
	var id [32]byte
	copy(id[:], privkey)
	keyCache.mu.Lock()
	k := keyCache.static[id]
	if k == nil {
		if e := keyCache.eph[id]; e != nil {
			k = e.key
			if e.uses++; e.uses >= 2 {
				delete(keyCache.eph, id) // left in order; skipped when evicted
			}
		}
	}
	keyCache.mu.Unlock()
	if k == nil {
		var err error
		if k, err = curve.NewPrivateKey(privkey); err != nil {
			return nil, err
		}
	}
	pub, err := curve.NewPublicKey(pubkey)
	if err != nil {
		return nil, err
	}
	return k.ECDH(pub)
}

func (dh25519) DHLen() int     { return 32 }
func (dh25519) DHName() string { return "25519" }
