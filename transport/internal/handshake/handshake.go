// Package handshake implements Parley's session handshake: Noise IK
// (Noise_IK_25519_AESGCM_SHA256, via github.com/flynn/noise) framed in the
// initiation and response packets of docs/protocol.md §1, with WireGuard's
// mac1/mac2/cookie defence against handshake floods.
//
// One round trip authenticates both sides with forward secrecy:
//
//	initiator                                  responder
//	  initiation: e, es, s, ss, params  ──▶   screen (mac1, load, mac2, rate) → DH
//	                                    ◀──   response: e, ee, se, params
//	  data packets (second flight)      ──▶
//
// The traffic keys are the two Noise transport keys after Split(): the first
// protects initiator→responder, the second responder→initiator. The session
// uses them with its own AEAD and explicit packet-number nonces (see the
// transport's packet protection), not through Noise's CipherState.
//
// Replay protection: the initiation's params carry a timestamp; a responder
// refuses an initiation from a static key whose timestamp is not greater than
// the last one it accepted from that key.
package handshake

import (
	"crypto/rand"
	"errors"
	"fmt"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/flynn/noise"
	"golang.org/x/crypto/curve25519"

	"github.com/parley-p2p/parley/transport/internal/wire"
)

var (
	suite    = noise.NewCipherSuite(dh25519{}, noise.CipherAESGCM, noise.HashSHA256)
	prologue = []byte("parley/1")
)

// Errors a caller may branch on. All mean "drop the packet".
var (
	ErrReplay       = errors.New("handshake: replayed or stale initiation")
	ErrDecrypt      = errors.New("handshake: cannot authenticate handshake message")
	ErrCIDMismatch  = errors.New("handshake: connection ID in header does not match the authenticated one")
	ErrWrongSession = errors.New("handshake: response is not for this handshake")
)

// KeyPair is a Curve25519 static key pair.
type KeyPair struct {
	Private [32]byte
	Public  [32]byte
}

// GenerateKeyPair returns a fresh random static key pair.
func GenerateKeyPair() (KeyPair, error) {
	k, err := suite.GenerateKeypair(rand.Reader)
	if err != nil {
		return KeyPair{}, err
	}
	var kp KeyPair
	copy(kp.Private[:], k.Private)
	copy(kp.Public[:], k.Public)
	return kp, nil
}

// PublicKey derives the public key of a Curve25519 private key.
func PublicKey(priv [32]byte) [32]byte {
	var pub [32]byte
	p, _ := curve25519.X25519(priv[:], curve25519.Basepoint)
	copy(pub[:], p)
	return pub
}

// Keys are a session's traffic keys, as seen by one side.
type Keys struct {
	Send [32]byte
	Recv [32]byte
}

// lastTimestamp makes this process's initiation timestamps strictly
// increasing even if the wall clock steps back or two dials share a tick.
var lastTimestamp atomic.Uint64

func nextTimestamp(now time.Time) uint64 {
	ts := uint64(now.UnixNano())
	for {
		last := lastTimestamp.Load()
		if ts <= last {
			ts = last + 1
		}
		if lastTimestamp.CompareAndSwap(last, ts) {
			return ts
		}
	}
}

// Initiator is the initiator's side of one handshake attempt.
type Initiator struct {
	hs           *noise.HandshakeState
	localPublic  [32]byte
	localPrivate [32]byte // for the early data key
	remoteStatic [32]byte
	localCID     wire.ConnID
	mac1         [macSize]byte // of the initiation we sent; binds cookie replies
}

// Initiate builds an initiation to the responder whose static public key is
// remote. cookie, if not nil, is a cookie from an earlier cookie reply and
// fills mac2. The returned packet is appended to dst.
func Initiate(dst []byte, local KeyPair, remote [32]byte, params wire.HandshakeParams, cookie *[macSize]byte, now time.Time) (*Initiator, []byte, error) {
	rememberStatic(local.Private)
	hs, err := noise.NewHandshakeState(noise.Config{
		CipherSuite:   suite,
		Random:        rand.Reader,
		Pattern:       noise.HandshakeIK,
		Initiator:     true,
		Prologue:      prologue,
		StaticKeypair: noise.DHKey{Private: local.Private[:], Public: local.Public[:]},
		PeerStatic:    remote[:],
	})
	if err != nil {
		return nil, dst, fmt.Errorf("handshake: %w", err)
	}
	params.Timestamp = nextTimestamp(now)
	var payload [wire.HandshakeParamsLen]byte
	params.Append(payload[:0])
	msg, _, _, err := hs.WriteMessage(make([]byte, 0, wire.InitiationNoiseLen), payload[:])
	if err != nil {
		return nil, dst, fmt.Errorf("handshake: %w", err)
	}
	pkt := wire.Initiation{SenderCID: params.SenderCID, Noise: msg}
	start := len(dst)
	dst = pkt.Append(dst)
	out := dst[start:]
	k1 := macKey(labelMAC1, remote)
	var m1 [macSize]byte
	mac(&m1, k1[:], out[:wire.InitiationMAC1Offset])
	copy(out[wire.InitiationMAC1Offset:], m1[:])
	if cookie != nil {
		var m2 [macSize]byte
		mac(&m2, cookie[:], out[:wire.InitiationMAC2Offset])
		copy(out[wire.InitiationMAC2Offset:], m2[:])
	}
	return &Initiator{hs: hs, localPublic: local.Public, localPrivate: local.Private, remoteStatic: remote, localCID: params.SenderCID, mac1: m1}, dst, nil
}

// LocalCID is the connection ID this initiation asked the responder to use.
func (i *Initiator) LocalCID() wire.ConnID { return i.localCID }

// ConsumeResponse authenticates a response packet and derives the traffic
// keys. It returns the responder's connection ID and parameters.
func (i *Initiator) ConsumeResponse(packet []byte) (wire.HandshakeParams, Keys, error) {
	resp, err := wire.ParseResponse(packet)
	if err != nil {
		return wire.HandshakeParams{}, Keys{}, err
	}
	if resp.ReceiverCID != i.localCID {
		return wire.HandshakeParams{}, Keys{}, ErrWrongSession
	}
	k1 := macKey(labelMAC1, i.localPublic)
	if !checkMAC(k1[:], packet[:wire.ResponseMAC1Offset], resp.MAC1[:]) {
		return wire.HandshakeParams{}, Keys{}, errBadMAC1
	}
	var buf [wire.HandshakeParamsLen]byte
	payload, cs1, cs2, err := i.hs.ReadMessage(buf[:0], resp.Noise)
	if err != nil || cs1 == nil || cs2 == nil {
		return wire.HandshakeParams{}, Keys{}, ErrDecrypt
	}
	params, err := wire.ParseHandshakeParams(payload)
	if err != nil {
		return wire.HandshakeParams{}, Keys{}, ErrDecrypt
	}
	if params.SenderCID != resp.SenderCID {
		return wire.HandshakeParams{}, Keys{}, ErrCIDMismatch
	}
	return params, Keys{Send: cs1.UnsafeKey(), Recv: cs2.UnsafeKey()}, nil
}

// ConsumeCookieReply decrypts a cookie reply to this initiation. The caller
// passes the cookie to the next Initiate.
func (i *Initiator) ConsumeCookieReply(packet []byte) ([macSize]byte, error) {
	cr, err := wire.ParseCookieReply(packet)
	if err != nil {
		return [macSize]byte{}, err
	}
	if cr.ReceiverCID != i.localCID {
		return [macSize]byte{}, ErrWrongSession
	}
	return openCookie(macKey(labelCookie, i.remoteStatic), cr.Nonce[:], cr.Cookie[:], i.mac1[:])
}

// Verdict is what a responder's screening says to do with an initiation.
type Verdict int

const (
	Drop       Verdict = iota // invalid mac1, or rate-limited: drop silently
	SendCookie                // under load without a valid mac2: answer with a cookie reply
	Process                   // go on to Consume (Diffie-Hellman)
)

func (v Verdict) String() string {
	switch v {
	case Drop:
		return "drop"
	case SendCookie:
		return "send-cookie"
	case Process:
		return "process"
	}
	return fmt.Sprintf("Verdict(%d)", int(v))
}

// Responder answers initiations for one static key. It is safe for
// concurrent use.
type Responder struct {
	local   KeyPair
	mac1Key [32]byte
	jar     *cookieJar
	limiter sourceLimiter
	load    loadMeter

	mu         sync.Mutex // protects timestamps
	timestamps map[[32]byte]uint64
}

// NewResponder returns a responder for the local static key pair.
func NewResponder(local KeyPair) *Responder {
	rememberStatic(local.Private)
	return &Responder{
		local:      local,
		mac1Key:    macKey(labelMAC1, local.Public),
		jar:        newCookieJar(local.Public),
		timestamps: make(map[[32]byte]uint64),
	}
}

// SetBusy tells the responder whether its workers are all busy: a backlog
// means it is under load, whatever the rate.
func (r *Responder) SetBusy(busy bool) { r.load.busy.Store(busy) }

// ForceLoad makes the responder behave as if under load (for tests and for
// operators who want cookies always).
func (r *Responder) ForceLoad(on bool) { r.load.force(on) }

// Screen does the cheap checks on an initiation from src, before any
// Diffie-Hellman: mac1, then, under load, mac2 and the per-source rate limit.
// packet must already have parsed as an initiation.
func (r *Responder) Screen(packet []byte, src netip.AddrPort, now time.Time) Verdict {
	if len(packet) != wire.InitiationLen {
		return Drop
	}
	if !checkMAC(r.mac1Key[:], packet[:wire.InitiationMAC1Offset], packet[wire.InitiationMAC1Offset:wire.InitiationMAC2Offset]) {
		return Drop
	}
	if !r.load.observe(now) {
		return Process
	}
	if !r.jar.validMAC2(packet, wire.InitiationMAC2Offset, src, now) {
		return SendCookie
	}
	if !r.limiter.allow(src.Addr(), now) {
		return Drop
	}
	return Process
}

// CookieReply appends to dst a cookie reply to the initiation packet from src.
func (r *Responder) CookieReply(dst []byte, packet []byte, src netip.AddrPort, now time.Time) ([]byte, error) {
	in, err := wire.ParseInitiation(packet)
	if err != nil {
		return dst, err
	}
	cr := wire.CookieReply{ReceiverCID: in.SenderCID}
	sealed := r.jar.sealCookie(&cr.Nonce, cr.Cookie[:0], src, in.MAC1[:], now)
	copy(cr.Cookie[:], sealed)
	return cr.Append(dst), nil
}

// Pending is an authenticated initiation waiting for its response.
type Pending struct {
	hs           *noise.HandshakeState
	RemoteStatic [32]byte
	Params       wire.HandshakeParams // the initiator's; SenderCID is its CID
}

// Consume authenticates an initiation (Diffie-Hellman) and checks its
// timestamp against replay. Call it only after Screen said Process.
func (r *Responder) Consume(packet []byte) (*Pending, error) {
	in, err := wire.ParseInitiation(packet)
	if err != nil {
		return nil, err
	}
	hs, err := noise.NewHandshakeState(noise.Config{
		CipherSuite:   suite,
		Random:        rand.Reader,
		Pattern:       noise.HandshakeIK,
		Initiator:     false,
		Prologue:      prologue,
		StaticKeypair: noise.DHKey{Private: r.local.Private[:], Public: r.local.Public[:]},
	})
	if err != nil {
		return nil, fmt.Errorf("handshake: %w", err)
	}
	var buf [wire.HandshakeParamsLen]byte
	payload, _, _, err := hs.ReadMessage(buf[:0], in.Noise)
	if err != nil {
		return nil, ErrDecrypt
	}
	params, err := wire.ParseHandshakeParams(payload)
	if err != nil {
		return nil, ErrDecrypt
	}
	if params.SenderCID != in.SenderCID {
		return nil, ErrCIDMismatch
	}
	var remote [32]byte
	copy(remote[:], hs.PeerStatic())

	r.mu.Lock()
	defer r.mu.Unlock()
	if params.Timestamp <= r.timestamps[remote] {
		return nil, ErrReplay
	}
	r.timestamps[remote] = params.Timestamp
	return &Pending{hs: hs, RemoteStatic: remote, Params: params}, nil
}

// Respond appends the response to dst and returns the traffic keys. params
// carries the responder's parameters; its SenderCID is the responder's CID.
func (p *Pending) Respond(dst []byte, params wire.HandshakeParams) ([]byte, Keys, error) {
	params.Timestamp = 0
	var payload [wire.HandshakeParamsLen]byte
	params.Append(payload[:0])
	msg, cs1, cs2, err := p.hs.WriteMessage(make([]byte, 0, wire.ResponseNoiseLen), payload[:])
	if err != nil || cs1 == nil || cs2 == nil {
		return dst, Keys{}, fmt.Errorf("handshake: write response: %v", err)
	}
	pkt := wire.Response{ReceiverCID: p.Params.SenderCID, SenderCID: params.SenderCID, Noise: msg}
	start := len(dst)
	dst = pkt.Append(dst)
	out := dst[start:]
	k1 := macKey(labelMAC1, p.RemoteStatic)
	var m1 [macSize]byte
	mac(&m1, k1[:], out[:wire.ResponseMAC1Offset])
	copy(out[wire.ResponseMAC1Offset:], m1[:])
	// The initiator never answers a response with a cookie, so mac2 stays zero.
	return dst, Keys{Send: cs2.UnsafeKey(), Recv: cs1.UnsafeKey()}, nil
}

// MAC1Key returns the key for mac1 on packets sent to the holder of static.
// Exposed for tests that forge packets.
func MAC1Key(static [32]byte) [32]byte { return macKey(labelMAC1, static) }

// MAC1 computes mac1 over msg with key.
func MAC1(key [32]byte, msg []byte) []byte {
	var out [macSize]byte
	mac(&out, key[:], msg)
	return out[:]
}
