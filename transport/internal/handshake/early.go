package handshake

import (
	"crypto/hkdf"
	"crypto/sha256"
	"errors"
)

// Early data (0-RTT, docs/protocol.md §3.5): frames the initiator sends
// before the response arrives are sealed under a key both sides can derive
// from the initiation alone, the same two Diffie-Hellman results Noise IK
// mixes into message 1 (es and ss), bound to the initiation's ephemeral key:
//
//	k_early = HKDF-SHA256(salt = "parley/1 early data",
//	                      ikm  = DH(e_i, s_r) || DH(s_i, s_r) || e_i.public)
//
// It has the protection of message 1's payload: only the responder can read
// it, only the initiator (or someone holding the responder's static key)
// can have written it, and it has no forward secrecy against the
// responder's static key. Replays are refused with the initiation they
// belong to: the responder accepts early data only for an initiation it
// accepted, and it accepts an initiation only with a fresh timestamp.

var earlySalt = []byte("parley/1 early data")

var errEarlyKey = errors.New("handshake: cannot derive the early data key")

func earlyKey(es, ss []byte, ephemeral []byte) ([32]byte, error) {
	ikm := make([]byte, 0, 96)
	ikm = append(append(append(ikm, es...), ss...), ephemeral...)
	k, err := hkdf.Key(sha256.New, ikm, earlySalt, "", 32)
	if err != nil {
		return [32]byte{}, errEarlyKey
	}
	return [32]byte(k), nil
}

// Ephemeral is the initiation's ephemeral public key: the name its early
// data packets carry.
func (i *Initiator) Ephemeral() [32]byte {
	return [32]byte(i.hs.LocalEphemeral().Public)
}

// EarlyKey derives the key that seals this initiation's early data.
func (i *Initiator) EarlyKey() ([32]byte, error) {
	e := i.hs.LocalEphemeral()
	es, err := x25519(e.Private, i.remoteStatic[:])
	if err != nil {
		return [32]byte{}, errEarlyKey
	}
	ss, err := x25519(i.localPrivate[:], i.remoteStatic[:])
	if err != nil {
		return [32]byte{}, errEarlyKey
	}
	return earlyKey(es, ss, e.Public)
}

// ResponderEarlyKey derives, on the responder, the key that seals the early
// data of an accepted initiation from the initiator whose static public key
// is initiator and whose ephemeral public key is ephemeral.
func ResponderEarlyKey(local KeyPair, initiator, ephemeral [32]byte) ([32]byte, error) {
	es, err := x25519(local.Private[:], ephemeral[:])
	if err != nil {
		return [32]byte{}, errEarlyKey
	}
	ss, err := x25519(local.Private[:], initiator[:])
	if err != nil {
		return [32]byte{}, errEarlyKey
	}
	return earlyKey(es, ss, ephemeral[:])
}

// x25519 is one Diffie-Hellman, through the parsed-key cache.
func x25519(priv, pub []byte) ([]byte, error) { return dh25519{}.DH(priv, pub) }
