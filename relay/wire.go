package relay

import (
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"time"

	"github.com/parley-p2p/parley/directory/ticket"
)

// Relay packets, docs/protocol.md §6. Every packet starts with a 12-byte
// header:
//
//	0  1  0xD1: relay form (top bits 11, like Parley's 0xC1, but the 0x10
//	          bit set), version 1
//	1  1  type
//	2  2  reserved, zero
//	4  8  channel ID, big-endian (zero in ALLOCATE and PING/PONG): ChannelID
//	          of the allocation's ticket
//	12 .. body, by type
const (
	FormVersion = 0xD1

	offType     = 1
	offReserved = 2
	offChannel  = 4
	HeaderSize  = 12 // also the per-packet overhead of relaying

	// MaxPacketSize is the largest relay packet: a UDP datagram's payload,
	// and what the 2-byte TCP frame length can express.
	MaxPacketSize = 65507
	// MaxPayload is the largest opaque packet a SEND can carry.
	MaxPayload = MaxPacketSize - HeaderSize
)

// Type is a relay packet type.
type Type uint8

// Relay packet types. "→" gives the direction.
const (
	// TypeAllocate, peer → relay: body = side (1 byte: 0 = the ticket's
	// device A, 1 = device B) || ticket (189 bytes, ticket.Parse layout)
	// || zero padding, so that the packet is AllocateSize to
	// MaxAllocateSize bytes. Padding buys an unvalidated side room to
	// receive (AmplificationFactor); a client pads to PaddedAllocateSize.
	TypeAllocate Type = 1
	// TypeAllocated, relay → peer, answers ALLOCATE. Body:
	//	0  8  expiry, Unix seconds (the ticket's)
	//	8  8  remaining byte budget
	//	16 4  rate limit, bytes per second
	//	20 1  peer bound: 1 if the other side has allocated too, else 0
	//	21 8  token: what a CONFIRM from the receiving side's address
	//	          echoes to validate it; zero for a side bound over TCP
	TypeAllocated Type = 2
	// TypeSend, peer → relay: body = an opaque packet for the other side.
	TypeSend Type = 3
	// TypeDeliver, relay → peer: body = the opaque packet, as sent.
	TypeDeliver Type = 4
	// TypeError, relay → peer, answers ALLOCATE only: body = code (2 bytes)
	// || reason (UTF-8, at most maxReason bytes). The header's channel is
	// the one the ALLOCATE's ticket derives, or zero if it has no ticket.
	TypeError Type = 5
	// TypePing, peer → relay: body = nonce (8 bytes) || optional padding.
	// Needs no allocation; channel zero.
	TypePing Type = 6
	// TypePong, relay → peer: body = the PING's nonce (8 bytes), no padding,
	// so a PONG is never larger than its PING.
	TypePong Type = 7
	// TypeConfirm, peer → relay: body = side (1 byte) || the token of
	// an ALLOCATED for that side (8 bytes). It validates the side's
	// address, when it comes from there (docs/protocol.md §6.2). The
	// relay never answers it.
	TypeConfirm Type = 8
)

func (t Type) String() string {
	switch t {
	case TypeAllocate:
		return "ALLOCATE"
	case TypeAllocated:
		return "ALLOCATED"
	case TypeSend:
		return "SEND"
	case TypeDeliver:
		return "DELIVER"
	case TypeError:
		return "ERROR"
	case TypePing:
		return "PING"
	case TypePong:
		return "PONG"
	case TypeConfirm:
		return "CONFIRM"
	}
	return fmt.Sprintf("Type(%d)", uint8(t))
}

// Body sizes.
const (
	allocateBodySize  = 1 + ticket.Size           // 190, without padding
	allocatedBodySize = 8 + 8 + 4 + 1 + TokenSize // 29
	confirmBodySize   = 1 + TokenSize             // 9
	pingBodySize      = 8
	errorBodyMin      = 2
	maxReason         = 64

	AllocateSize  = HeaderSize + allocateBodySize  // 202: an unpadded ALLOCATE
	AllocatedSize = HeaderSize + allocatedBodySize // 41
	ConfirmSize   = HeaderSize + confirmBodySize   // 21
	PingSize      = HeaderSize + pingBodySize      // 20

	// MaxAllocateSize bounds a padded ALLOCATE: the transport's largest
	// packet, which any path of MTU ≥ 1,280 carries.
	MaxAllocateSize = 1232
	// PaddedAllocateSize is what a Client pads its UDP ALLOCATEs to, as a
	// QUIC client pads its Initial (RFC 9000 §14.1): a side bound by one
	// may receive AmplificationFactor × 1,200 bytes before it is
	// validated, room for a handshake initiation and early data.
	PaddedAllocateSize = 1200
)

// Address validation, docs/protocol.md §6.2, after RFC 9000 §8.1.
const (
	// TokenSize is the size of an ALLOCATED's token, which a CONFIRM
	// echoes.
	TokenSize = 8
	// AmplificationFactor bounds what a relay sends to a UDP side whose
	// address it has not validated: at most this many times the bytes it
	// has received from that address since the side was bound there.
	AmplificationFactor = 3
)

// ErrorCode is the code of an ERROR packet.
type ErrorCode uint16

// Error codes, answering ALLOCATE.
const (
	CodeBadTicket ErrorCode = 1 // signature does not verify, or not yet valid
	CodeExpired   ErrorCode = 2 // the ticket has expired
	CodeNotForUs  ErrorCode = 3 // the ticket names another relay
	CodeFull      ErrorCode = 4 // the relay holds its maximum of allocations, or another ticket's channel has this one's ID
	CodeMalformed ErrorCode = 5 // the ALLOCATE (or its ticket) cannot be parsed
)

func (c ErrorCode) String() string {
	switch c {
	case CodeBadTicket:
		return "bad ticket"
	case CodeExpired:
		return "expired"
	case CodeNotForUs:
		return "not for this relay"
	case CodeFull:
		return "full"
	case CodeMalformed:
		return "malformed"
	}
	return fmt.Sprintf("error %d", uint16(c))
}

// ChannelID is the channel ID of the allocation for the ticket tk (its 189
// bytes), docs/protocol.md §6.2: the first 8 bytes of SHA-256(tk),
// big-endian, or 1 if those are zero. Both sides and the relay compute it
// from the ticket alone, so a side may send on the channel before the
// relay's ALLOCATED tells it anything.
func ChannelID(tk []byte) uint64 { return channelID(sha256.Sum256(tk)) }

// channelID is ChannelID for a ticket whose SHA-256 is sum.
func channelID(sum [sha256.Size]byte) uint64 {
	if id := binary.BigEndian.Uint64(sum[:8]); id != 0 {
		return id
	}
	return 1
}

// errMalformed is what every parse function returns for a bad packet.
var errMalformed = errors.New("relay: malformed packet")

// IsRelayPacket reports whether b looks like a relay packet by its first
// byte: how a peer's demultiplexer tells relay packets from Parley packets
// (0xC1) and STUN (0x00, 0x01) on one socket.
func IsRelayPacket(b []byte) bool { return len(b) > 0 && b[0] == FormVersion }

// header is a parsed relay header.
type header struct {
	typ     Type
	channel uint64
}

// parseHeader checks the header of b and returns it and the body. It checks
// the form byte, the reserved bytes and that the type is known; the body's
// length is checked by the type's parser.
func parseHeader(b []byte) (header, []byte, error) {
	if len(b) < HeaderSize || b[0] != FormVersion || b[offReserved] != 0 || b[offReserved+1] != 0 {
		return header{}, nil, errMalformed
	}
	h := header{typ: Type(b[offType]), channel: binary.BigEndian.Uint64(b[offChannel:])}
	if h.typ < TypeAllocate || h.typ > TypeConfirm {
		return header{}, nil, errMalformed
	}
	return h, b[HeaderSize:], nil
}

// appendHeader appends a relay header to b.
func appendHeader(b []byte, t Type, channel uint64) []byte {
	b = append(b, FormVersion, byte(t), 0, 0)
	return binary.BigEndian.AppendUint64(b, channel)
}

// putHeader writes a relay header into b[:HeaderSize].
func putHeader(b []byte, t Type, channel uint64) {
	_ = b[HeaderSize-1]
	b[0], b[1], b[2], b[3] = FormVersion, byte(t), 0, 0
	binary.BigEndian.PutUint64(b[offChannel:], channel)
}

// allocateBody is the body of an ALLOCATE.
type allocateBody struct {
	side   byte
	ticket []byte // aliases the packet
	size   int    // of the whole packet, padding included
}

// parseAllocate parses an ALLOCATE's body: a side, a ticket's worth of
// bytes (whether they are a ticket is ticket.Parse's business) and padding,
// which must be zero, so that its bytes stay free for a later version.
func parseAllocate(body []byte) (allocateBody, error) {
	if len(body) < allocateBodySize || len(body) > MaxAllocateSize-HeaderSize || body[0] > 1 {
		return allocateBody{}, errMalformed
	}
	for _, c := range body[allocateBodySize:] {
		if c != 0 {
			return allocateBody{}, errMalformed
		}
	}
	return allocateBody{side: body[0], ticket: body[1:allocateBodySize], size: HeaderSize + len(body)}, nil
}

// appendAllocate appends an ALLOCATE of side of the ticket tk, padded with
// zeros to size bytes if it is shorter (so 0 means no padding).
func appendAllocate(b []byte, side byte, tk []byte, size int) []byte {
	start := len(b)
	b = appendHeader(b, TypeAllocate, 0)
	b = append(b, side)
	b = append(b, tk...)
	if pad := size - (len(b) - start); pad > 0 {
		b = append(b, make([]byte, pad)...)
	}
	return b
}

// allocatedBody is the body of an ALLOCATED.
type allocatedBody struct {
	expires   int64 // Unix seconds
	remaining uint64
	rate      uint32
	peerBound bool
	token     [TokenSize]byte
}

func parseAllocated(body []byte) (allocatedBody, error) {
	if len(body) != allocatedBodySize || body[20] > 1 {
		return allocatedBody{}, errMalformed
	}
	exp := binary.BigEndian.Uint64(body)
	if exp > 1<<62 {
		return allocatedBody{}, errMalformed
	}
	return allocatedBody{
		expires:   int64(exp),
		remaining: binary.BigEndian.Uint64(body[8:]),
		rate:      binary.BigEndian.Uint32(body[16:]),
		peerBound: body[20] == 1,
		token:     [TokenSize]byte(body[21:]),
	}, nil
}

func appendAllocated(b []byte, channel uint64, a allocatedBody) []byte {
	b = appendHeader(b, TypeAllocated, channel)
	b = binary.BigEndian.AppendUint64(b, uint64(a.expires))
	b = binary.BigEndian.AppendUint64(b, a.remaining)
	b = binary.BigEndian.AppendUint32(b, a.rate)
	peer := byte(0)
	if a.peerBound {
		peer = 1
	}
	b = append(b, peer)
	return append(b, a.token[:]...)
}

// confirmBody is the body of a CONFIRM.
type confirmBody struct {
	side  byte
	token [TokenSize]byte
}

func parseConfirm(body []byte) (confirmBody, error) {
	if len(body) != confirmBodySize || body[0] > 1 {
		return confirmBody{}, errMalformed
	}
	return confirmBody{side: body[0], token: [TokenSize]byte(body[1:])}, nil
}

func appendConfirm(b []byte, channel uint64, c confirmBody) []byte {
	b = appendHeader(b, TypeConfirm, channel)
	b = append(b, c.side)
	return append(b, c.token[:]...)
}

func (a allocatedBody) expiry() time.Time { return time.Unix(a.expires, 0) }

func parseError(body []byte) (ErrorCode, string, error) {
	if len(body) < errorBodyMin || len(body) > errorBodyMin+maxReason {
		return 0, "", errMalformed
	}
	return ErrorCode(binary.BigEndian.Uint16(body)), string(body[2:]), nil
}

// appendError appends an ERROR packet, cutting reason so that the whole
// packet fits in limit bytes (the size of the ALLOCATE it answers: a relay
// never answers with more than it received). It returns b unchanged if not
// even an empty reason fits.
func appendError(b []byte, channel uint64, code ErrorCode, reason string, limit int) []byte {
	room := min(limit-HeaderSize-errorBodyMin, maxReason)
	if room < 0 {
		return b
	}
	if len(reason) > room {
		reason = reason[:room]
	}
	b = appendHeader(b, TypeError, channel)
	b = binary.BigEndian.AppendUint16(b, uint16(code))
	return append(b, reason...)
}

func parsePing(body []byte) (uint64, error) {
	if len(body) < pingBodySize {
		return 0, errMalformed
	}
	return binary.BigEndian.Uint64(body), nil
}

func parsePong(body []byte) (uint64, error) {
	if len(body) != pingBodySize {
		return 0, errMalformed
	}
	return binary.BigEndian.Uint64(body), nil
}

func appendPing(b []byte, t Type, nonce uint64) []byte {
	b = appendHeader(b, t, 0)
	return binary.BigEndian.AppendUint64(b, nonce)
}
