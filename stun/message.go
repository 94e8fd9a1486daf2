// Package stun implements the STUN Binding method (RFC 8489): a server that
// tells clients their reflexive transport address, with RFC 5780's
// OTHER-ADDRESS, RESPONSE-ORIGIN and CHANGE-REQUEST so that a client can
// test how its NAT maps, and a client that works over any net.PacketConn.
//
// A Parley peer uses one UDP socket for everything, so the client side is
// also available as functions over raw packets: IsMessage tells a STUN
// packet from a Parley packet (the top two bits of a STUN message are 00,
// of a Parley packet 11), and ParseResponse matches a response to its
// transaction ID.
//
// Message layout (RFC 8489 §5):
//
//	 0                   1                   2                   3
//	 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
//	+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//	|0 0|     STUN Message Type     |         Message Length        |
//	+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//	|                         Magic Cookie                          |
//	+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//	|                     Transaction ID (96 bits)                  |
//	+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//
// followed by attributes, each a 16-bit type, a 16-bit length and a value
// padded to a multiple of 4 bytes (§14).
package stun

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"net/netip"
)

// Protocol constants (RFC 8489 unless noted).
const (
	headerSize  = 20
	magicCookie = 0x2112A442 // §5
	txIDSize    = 12

	typeBindingRequest = 0x0001 // §18.2
	typeBindingSuccess = 0x0101
	typeBindingError   = 0x0111

	attrMappedAddress    = 0x0001 // §14.1
	attrChangeRequest    = 0x0003 // RFC 5780 §7.2
	attrErrorCode        = 0x0009 // §14.8
	attrUnknownAttrs     = 0x000A // §14.9
	attrXORMappedAddress = 0x0020 // §14.2
	attrSoftware         = 0x8022 // §14.14
	attrFingerprint      = 0x8028 // §14.7
	attrResponseOrigin   = 0x802b // RFC 5780 §7.3
	attrOtherAddress     = 0x802c // RFC 5780 §7.4

	fingerprintXOR = 0x5354554e // §14.7: "STUN"

	familyIPv4 = 0x01
	familyIPv6 = 0x02

	flagChangeIP   = 0x04 // RFC 5780 §7.2 flags
	flagChangePort = 0x02
)

// cookieBytes is the magic cookie in network order, the XOR key of IPv4
// addresses.
var cookieBytes = [4]byte{0x21, 0x12, 0xA4, 0x42}

// TxID is a transaction ID.
type TxID [txIDSize]byte

// Errors.
var (
	ErrNotSTUN      = errors.New("stun: not a STUN message")
	ErrMalformed    = errors.New("stun: malformed message")
	ErrFingerprint  = errors.New("stun: bad FINGERPRINT")
	ErrNoAddress    = errors.New("stun: response has no mapped address")
	ErrMismatch     = errors.New("stun: transaction ID mismatch")
	ErrErrorReply   = errors.New("stun: error response")
	errUnexpectType = errors.New("stun: unexpected message type")
)

// IsMessage reports whether b looks like a STUN message with the RFC 8489
// magic cookie: the cheap test a demultiplexer needs (RFC 8489 §7 and RFC
// 7983: first two bits zero).
func IsMessage(b []byte) bool {
	return len(b) >= headerSize && b[0]&0xC0 == 0 && binary.BigEndian.Uint32(b[4:]) == magicCookie &&
		int(binary.BigEndian.Uint16(b[2:]))+headerSize == len(b)
}

// attr is one attribute; value aliases the message.
type attr struct {
	typ   uint16
	value []byte
}

// message is a parsed STUN message.
type message struct {
	typ     uint16
	classic bool     // RFC 3489: no magic cookie, 16-byte transaction ID
	txID    [16]byte // the 12 bytes of RFC 8489 IDs are txID[4:]
	attrs   []attr
}

// parse parses b. It never panics; it checks lengths, padding and, if
// present, FINGERPRINT. classic (RFC 3489) messages are accepted only if
// allowClassic.
func parse(b []byte, allowClassic bool) (message, error) {
	var m message
	if len(b) < headerSize || b[0]&0xC0 != 0 {
		return m, ErrNotSTUN
	}
	m.typ = binary.BigEndian.Uint16(b[0:])
	n := int(binary.BigEndian.Uint16(b[2:]))
	if n%4 != 0 || headerSize+n != len(b) {
		return m, fmt.Errorf("%w: length %d for %d bytes", ErrMalformed, n, len(b))
	}
	copy(m.txID[:], b[4:20])
	if binary.BigEndian.Uint32(b[4:]) != magicCookie {
		if !allowClassic {
			return m, ErrNotSTUN
		}
		m.classic = true
	}
	for off := headerSize; off < len(b); {
		if len(b)-off < 4 {
			return m, fmt.Errorf("%w: truncated attribute header", ErrMalformed)
		}
		at := binary.BigEndian.Uint16(b[off:])
		al := int(binary.BigEndian.Uint16(b[off+2:]))
		padded := (al + 3) &^ 3
		if len(b)-off-4 < padded {
			return m, fmt.Errorf("%w: attribute 0x%04x overruns the message", ErrMalformed, at)
		}
		if at == attrFingerprint {
			// §14.7: FINGERPRINT is last, and covers everything before it
			// with the header's length including it.
			if al != 4 || off+8 != len(b) {
				return m, fmt.Errorf("%w: misplaced FINGERPRINT", ErrMalformed)
			}
			if binary.BigEndian.Uint32(b[off+4:]) != fingerprint(b[:off]) {
				return m, ErrFingerprint
			}
		}
		m.attrs = append(m.attrs, attr{at, b[off+4 : off+4+al]})
		off += 4 + padded
	}
	return m, nil
}

// fingerprint is CRC-32 of the message so far XOR 0x5354554e. The header's
// length field must already count the FINGERPRINT attribute.
func fingerprint(b []byte) uint32 {
	return crc32.ChecksumIEEE(b) ^ fingerprintXOR
}

func (m *message) get(typ uint16) ([]byte, bool) {
	for _, a := range m.attrs {
		if a.typ == typ {
			return a.value, true
		}
	}
	return nil, false
}

// builder appends a message to a buffer without allocating beyond it.
type builder struct {
	b []byte
}

func newBuilder(buf []byte, typ uint16, txID [16]byte, classic bool) builder {
	b := buf[:0]
	b = binary.BigEndian.AppendUint16(b, typ)
	b = append(b, 0, 0) // length, set by finish
	if classic {
		b = append(b, txID[:]...)
	} else {
		b = binary.BigEndian.AppendUint32(b, magicCookie)
		b = append(b, txID[4:]...)
	}
	return builder{b}
}

func (w *builder) attr(typ uint16, v []byte) {
	w.b = binary.BigEndian.AppendUint16(w.b, typ)
	w.b = binary.BigEndian.AppendUint16(w.b, uint16(len(v)))
	w.b = append(w.b, v...)
	for len(w.b)%4 != 0 {
		w.b = append(w.b, 0)
	}
}

// addr appends an address attribute; xor selects the XOR-MAPPED encoding
// (§14.2), which hides the address from middleboxes that rewrite it.
func (w *builder) addr(typ uint16, ap netip.AddrPort, xor bool, txID [16]byte) {
	a := ap.Addr().Unmap()
	var v [20]byte
	n := 8
	v[0] = 0
	port := ap.Port()
	if xor {
		port ^= uint16(magicCookie >> 16)
	}
	binary.BigEndian.PutUint16(v[2:], port)
	if a.Is4() {
		v[1] = familyIPv4
		ip := a.As4()
		copy(v[4:], ip[:])
		if xor {
			for i := range 4 {
				v[4+i] ^= cookieBytes[i]
			}
		}
	} else {
		v[1] = familyIPv6
		ip := a.As16()
		copy(v[4:], ip[:])
		n = 20
		if xor {
			var key [16]byte
			binary.BigEndian.PutUint32(key[:], magicCookie)
			copy(key[4:], txID[4:])
			for i := range 16 {
				v[4+i] ^= key[i]
			}
		}
	}
	w.attr(typ, v[:n])
}

func (w *builder) setLength(extra int) {
	binary.BigEndian.PutUint16(w.b[2:], uint16(len(w.b)-headerSize+extra))
}

// finish sets the length and, if fp, appends FINGERPRINT.
func (w *builder) finish(fp bool) []byte {
	if fp {
		w.setLength(8)
		crc := fingerprint(w.b)
		var v [4]byte
		binary.BigEndian.PutUint32(v[:], crc)
		w.attr(attrFingerprint, v[:])
	}
	w.setLength(0)
	return w.b
}

// parseAddr decodes a (XOR-)MAPPED-ADDRESS value.
func parseAddr(v []byte, xor bool, txID [16]byte) (netip.AddrPort, error) {
	if len(v) < 4 {
		return netip.AddrPort{}, fmt.Errorf("%w: short address", ErrMalformed)
	}
	port := binary.BigEndian.Uint16(v[2:])
	if xor {
		port ^= uint16(magicCookie >> 16)
	}
	switch v[1] {
	case familyIPv4:
		if len(v) != 8 {
			return netip.AddrPort{}, fmt.Errorf("%w: IPv4 address of %d bytes", ErrMalformed, len(v))
		}
		var ip [4]byte
		copy(ip[:], v[4:8])
		if xor {
			for i := range 4 {
				ip[i] ^= cookieBytes[i]
			}
		}
		return netip.AddrPortFrom(netip.AddrFrom4(ip), port), nil
	case familyIPv6:
		if len(v) != 20 {
			return netip.AddrPort{}, fmt.Errorf("%w: IPv6 address of %d bytes", ErrMalformed, len(v))
		}
		var ip [16]byte
		copy(ip[:], v[4:20])
		if xor {
			var key [16]byte
			binary.BigEndian.PutUint32(key[:], magicCookie)
			copy(key[4:], txID[4:])
			for i := range 16 {
				ip[i] ^= key[i]
			}
		}
		return netip.AddrPortFrom(netip.AddrFrom16(ip), port), nil
	}
	return netip.AddrPort{}, fmt.Errorf("%w: address family %d", ErrMalformed, v[1])
}

// AppendBindingRequest appends a Binding request with transaction ID id
// and a FINGERPRINT to b.
func AppendBindingRequest(b []byte, id TxID) []byte {
	var full [16]byte
	binary.BigEndian.PutUint32(full[:], magicCookie)
	copy(full[4:], id[:])
	w := newBuilder(b, typeBindingRequest, full, false)
	return w.finish(true)
}

// ParseResponse parses a Binding success response to the request with
// transaction ID id and returns the reflexive address it reports
// (XOR-MAPPED-ADDRESS, or MAPPED-ADDRESS from servers that only send that).
func ParseResponse(b []byte, id TxID) (netip.AddrPort, error) {
	r, err := parseResponse(b, id)
	return r.mapped, err
}

// Response is a parsed Binding success response.
type Response struct {
	// Mapped is the reflexive address the server saw.
	mapped netip.AddrPort
	// Origin is where the response was sent from (RESPONSE-ORIGIN), and
	// Other the server's alternate address (OTHER-ADDRESS); either may be
	// invalid if the server does not support RFC 5780.
	Origin, Other netip.AddrPort
	Software      string
}

// Mapped returns the reflexive address.
func (r Response) Mapped() netip.AddrPort { return r.mapped }

// ParseFullResponse is ParseResponse returning the RFC 5780 attributes too.
func ParseFullResponse(b []byte, id TxID) (Response, error) { return parseResponse(b, id) }

func parseResponse(b []byte, id TxID) (Response, error) {
	var r Response
	m, err := parse(b, false)
	if err != nil {
		return r, err
	}
	if [12]byte(m.txID[4:]) != id {
		return r, ErrMismatch
	}
	switch m.typ {
	case typeBindingSuccess:
	case typeBindingError:
		if v, ok := m.get(attrErrorCode); ok && len(v) >= 4 {
			return r, fmt.Errorf("%w: %d %s", ErrErrorReply, int(v[2]&7)*100+int(v[3]), v[4:])
		}
		return r, ErrErrorReply
	default:
		return r, errUnexpectType
	}
	if v, ok := m.get(attrXORMappedAddress); ok {
		r.mapped, err = parseAddr(v, true, m.txID)
	} else if v, ok := m.get(attrMappedAddress); ok {
		r.mapped, err = parseAddr(v, false, m.txID)
	} else {
		return r, ErrNoAddress
	}
	if err != nil {
		return r, err
	}
	if v, ok := m.get(attrResponseOrigin); ok {
		r.Origin, _ = parseAddr(v, false, m.txID)
	}
	if v, ok := m.get(attrOtherAddress); ok {
		r.Other, _ = parseAddr(v, false, m.txID)
	}
	if v, ok := m.get(attrSoftware); ok {
		r.Software = string(v)
	}
	return r, nil
}
