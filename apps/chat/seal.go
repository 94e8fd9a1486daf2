package chat

import (
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/flynn/noise"

	"github.com/parley-p2p/parley/transport"
)

// Sealed messages go through the directory's offline mailbox, which must
// not read them (docs/protocol.md §7.2.2). A sealed message is one Noise X
// handshake message (Noise spec §7.4: the sender's ephemeral key, its static
// key encrypted, and the payload encrypted, all bound to the recipient's
// static key) from the sender's device key to the recipient's:
//
//	version (1) = 1 | e (32) | encrypted s (32 + 16) | encrypted payload (n + 16)
//
// with the cipher suite Noise_X_25519_AESGCM_SHA256 and the prologue
// "parley-mailbox-v1". The payload is a MSG frame's JSON body. Only the
// recipient can open it, and it proves the sender's static key; it does not
// give forward secrecy against a later theft of the recipient's key (one
// message cannot), and a replayed blob is a duplicate that the message ID
// deduplicates.
const (
	sealVersion  = 1
	sealOverhead = 1 + 32 + 48 + 16
	// MaxSealed is the largest sealed message: within the directory's
	// 64 KiB blob limit.
	MaxSealed = 1 + 65535
)

var (
	sealSuite    = noise.NewCipherSuite(noise.DH25519, noise.CipherAESGCM, noise.HashSHA256)
	sealPrologue = []byte("parley-mailbox-v1")
)

// ErrSealed is returned by Unseal for a blob that is not a sealed message
// for this key: corrupted, tampered with, or sealed to another device.
var ErrSealed = errors.New("chat: cannot open sealed message")

// Seal encrypts m (its ID, Time and Body) to the recipient's device key,
// authenticated by the sender's.
func Seal(recipient transport.PublicKey, sender transport.PrivateKey, m Message) ([]byte, error) {
	body := msgBody{ID: m.ID, TS: m.Time.UnixMilli(), Body: m.Body}
	if err := body.check(); err != nil {
		return nil, err
	}
	payload, err := json.Marshal(body)
	if err != nil {
		return nil, err
	}
	pub := sender.Public()
	hs, err := noise.NewHandshakeState(noise.Config{
		CipherSuite:   sealSuite,
		Random:        rand.Reader,
		Pattern:       noise.HandshakeX,
		Initiator:     true,
		Prologue:      sealPrologue,
		StaticKeypair: noise.DHKey{Private: sender[:], Public: pub[:]},
		PeerStatic:    recipient[:],
	})
	if err != nil {
		return nil, fmt.Errorf("chat: seal: %w", err)
	}
	out, _, _, err := hs.WriteMessage([]byte{sealVersion}, payload)
	if err != nil {
		return nil, fmt.Errorf("chat: seal: %w", err)
	}
	return out, nil
}

// Unseal opens a sealed message with the recipient's private key and
// returns the sender's device key and the message (ID, Time, Body; the
// caller sets Peer). The caller must check that sender is the device it
// expects (the one the directory names as the blob's sender).
func Unseal(recipient transport.PrivateKey, blob []byte) (sender transport.PublicKey, m Message, err error) {
	if len(blob) < sealOverhead || len(blob) > MaxSealed || blob[0] != sealVersion {
		return sender, m, ErrSealed
	}
	pub := recipient.Public()
	hs, err := noise.NewHandshakeState(noise.Config{
		CipherSuite:   sealSuite,
		Random:        rand.Reader,
		Pattern:       noise.HandshakeX,
		Initiator:     false,
		Prologue:      sealPrologue,
		StaticKeypair: noise.DHKey{Private: recipient[:], Public: pub[:]},
	})
	if err != nil {
		return sender, m, fmt.Errorf("chat: unseal: %w", err)
	}
	payload, _, _, err := hs.ReadMessage(nil, blob[1:])
	if err != nil {
		return sender, m, ErrSealed
	}
	copy(sender[:], hs.PeerStatic())
	var body msgBody
	if err := json.Unmarshal(payload, &body); err != nil {
		return sender, m, ErrSealed
	}
	if err := body.check(); err != nil {
		return sender, m, err
	}
	return sender, Message{ID: body.ID, Time: timeMilli(body.TS), Body: body.Body}, nil
}
