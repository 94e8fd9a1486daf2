package transport

import (
	"encoding/base64"
	"fmt"

	"github.com/parley-p2p/parley/transport/internal/handshake"
)

// A PublicKey identifies a device: a Curve25519 public key. Its text form is
// standard base64 (RFC 4648 §4) with padding, as in the directory's API.
type PublicKey [32]byte

// A PrivateKey is a device's Curve25519 private key. Never log it.
type PrivateKey [32]byte

// GeneratePrivateKey returns a fresh random private key.
func GeneratePrivateKey() (PrivateKey, error) {
	kp, err := handshake.GenerateKeyPair()
	if err != nil {
		return PrivateKey{}, err
	}
	return PrivateKey(kp.Private), nil
}

// Public returns the public key of k.
func (k PrivateKey) Public() PublicKey { return PublicKey(handshake.PublicKey(k)) }

// String returns a redacted form, so that a private key never reaches a log
// by accident.
func (k PrivateKey) String() string { return "PrivateKey(redacted)" }

func (k PublicKey) String() string { return base64.StdEncoding.EncodeToString(k[:]) }

// MarshalText implements encoding.TextMarshaler.
func (k PublicKey) MarshalText() ([]byte, error) { return []byte(k.String()), nil }

// UnmarshalText implements encoding.TextUnmarshaler.
func (k *PublicKey) UnmarshalText(b []byte) error {
	p, err := ParsePublicKey(string(b))
	if err != nil {
		return err
	}
	*k = p
	return nil
}

// ParsePublicKey parses the base64 text form of a public key.
func ParsePublicKey(s string) (PublicKey, error) {
	var k PublicKey
	b, err := base64.StdEncoding.DecodeString(s)
	if err != nil || len(b) != len(k) {
		return k, fmt.Errorf("transport: invalid public key %q: want 32 bytes in base64", s)
	}
	copy(k[:], b)
	return k, nil
}

// Short is a short, human-friendly prefix of the key for logs and status.
func (k PublicKey) Short() string { return k.String()[:8] }

func (k PrivateKey) keyPair() handshake.KeyPair {
	return handshake.KeyPair{Private: k, Public: handshake.PublicKey(k)}
}
