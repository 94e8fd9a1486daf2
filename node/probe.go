package node

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"net/netip"

	"golang.org/x/crypto/curve25519"

	"github.com/parley-p2p/parley/transport"
)

// Punch probes. Both sides of a connection send them to every candidate of
// the other at the same moment: any datagram opens the sender's NAT mapping
// towards the destination, and an answered probe proves a path works both
// ways before the Noise handshake is sent down it. They share the daemon's
// one socket with Parley packets (first byte 0xC1), relay packets (0xD1),
// STUN (top bits 00) and the directory's dial-back probe ("PRLYDB01"); the
// first byte 'P' (0x50) and the magic tell them apart.
//
// A probe is authenticated with a key only the two devices can compute
// (from their static Curve25519 keys), so a probe is answered from whatever
// address it arrives — the clash of Linux NATs makes probes arrive from
// ports nobody announced — without letting anyone else elicit answers or
// fake a working path. Ping and pong have the same size, so answering
// cannot amplify traffic.
//
//	offset size field
//	     0    8 magic "PRLYPB01"
//	     8    1 type: 1 ping, 2 pong
//	     9    8 pair ID: names the pair of devices (see pairKeys)
//	    17    8 transaction ID, random; a pong echoes its ping's
//	    25    1 address length: 0, 4 or 16
//	    26   16 address (pong: where the ping came from), zero-padded
//	    42    2 port, big-endian
//	    44   16 MAC: HMAC-SHA256(pair key, sender's public key ‖ bytes 0–43), first 16 bytes
//	    60      end
const (
	probeMagic = "PRLYPB01"

	probeOffType   = 8
	probeOffPair   = 9
	probeOffTx     = 17
	probeOffAddrN  = 25
	probeOffAddr   = 26
	probeOffPort   = 42
	probeOffMAC    = 44
	probeSize      = 60
	probeMACSize   = 16
	probeTypePing  = 1
	probeTypePong  = 2
	dialbackMagic  = "PRLYDB01" // directory.DialbackMagic, docs/api.md
	dialbackSize   = 24
	pairKeyContext = "parley punch probe v1"
)

var errProbe = errors.New("node: malformed probe")

// probe is a parsed punch probe, not yet authenticated.
type probe struct {
	Type byte
	Pair [8]byte
	Tx   [8]byte
	Addr netip.AddrPort // pong: the ping's source as the responder saw it
}

// isProbe reports whether b starts like a punch probe.
func isProbe(b []byte) bool {
	return len(b) >= len(probeMagic) && string(b[:len(probeMagic)]) == probeMagic
}

// parseProbe parses b without checking its MAC. It never panics.
func parseProbe(b []byte) (probe, error) {
	var p probe
	if len(b) != probeSize || !isProbe(b) {
		return p, errProbe
	}
	p.Type = b[probeOffType]
	if p.Type != probeTypePing && p.Type != probeTypePong {
		return p, errProbe
	}
	copy(p.Pair[:], b[probeOffPair:])
	copy(p.Tx[:], b[probeOffTx:])
	port := binary.BigEndian.Uint16(b[probeOffPort:])
	// Unused address bytes must be zero, so that every probe has one
	// encoding.
	switch n := int(b[probeOffAddrN]); {
	case n == 0 && (port != 0 || !allZero(b[probeOffAddr:probeOffPort])),
		n == 4 && !allZero(b[probeOffAddr+4:probeOffPort]):
		return p, errProbe
	}
	switch b[probeOffAddrN] {
	case 0:
	case 4:
		p.Addr = netip.AddrPortFrom(netip.AddrFrom4([4]byte(b[probeOffAddr:probeOffAddr+4])), port)
	case 16:
		p.Addr = netip.AddrPortFrom(netip.AddrFrom16([16]byte(b[probeOffAddr:probeOffAddr+16])), port)
	default:
		return p, errProbe
	}
	return p, nil
}

// appendProbe appends p, authenticated as sent by sender with mac key k.
func appendProbe(b []byte, p probe, k *[32]byte, sender transport.PublicKey) []byte {
	start := len(b)
	b = append(b, probeMagic...)
	b = append(b, p.Type)
	b = append(b, p.Pair[:]...)
	b = append(b, p.Tx[:]...)
	var addr [16]byte
	n := 0
	if a := p.Addr.Addr(); a.Is4() {
		n = 4
		a4 := a.As4()
		copy(addr[:], a4[:])
	} else if a.IsValid() {
		n = 16
		addr = a.As16()
	}
	b = append(b, byte(n))
	b = append(b, addr[:]...)
	b = binary.BigEndian.AppendUint16(b, p.Addr.Port())
	mac := probeMAC(k, sender, b[start:])
	return append(b, mac[:probeMACSize]...)
}

// verifyProbe checks b's MAC as sent by sender.
func verifyProbe(b []byte, k *[32]byte, sender transport.PublicKey) bool {
	if len(b) != probeSize {
		return false
	}
	mac := probeMAC(k, sender, b[:probeOffMAC])
	return hmac.Equal(mac[:probeMACSize], b[probeOffMAC:])
}

func probeMAC(k *[32]byte, sender transport.PublicKey, msg []byte) []byte {
	h := hmac.New(sha256.New, k[:])
	h.Write(sender[:])
	h.Write(msg)
	return h.Sum(nil)
}

// pairKeys derives the pair's probe MAC key and pair ID from the static
// Diffie-Hellman of the two devices' keys: only the two devices can compute
// them, and both compute the same. ok is false for a low-order peer key.
func pairKeys(priv transport.PrivateKey, peer transport.PublicKey) (key [32]byte, id [8]byte, ok bool) {
	shared, err := curve25519.X25519(priv[:], peer[:])
	if err != nil {
		return key, id, false
	}
	a, b := priv.Public(), peer
	if string(a[:]) > string(b[:]) {
		a, b = b, a
	}
	h := hmac.New(sha256.New, shared)
	h.Write([]byte(pairKeyContext))
	h.Write(a[:])
	h.Write(b[:])
	copy(key[:], h.Sum(nil))
	h = hmac.New(sha256.New, key[:])
	h.Write([]byte("pair id"))
	copy(id[:], h.Sum(nil))
	return key, id, true
}

func allZero(b []byte) bool {
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}
