package wire

import (
	"encoding/hex"
	"strconv"
)

// Every Parley packet starts with the same two bytes (§1):
//
//	0  1  form/version: 0xC0 | version (0xC1 for version 1)
//	1  1  packet type
//
// The top two bits 11 of byte 0 tell Parley packets from STUN messages,
// whose first two bits are 00 (RFC 8489 §5), on a shared socket.
const (
	// Version is the protocol version this package speaks.
	Version = 1
	// FormVersion is byte 0 of every version 1 packet.
	FormVersion byte = 0xC0 | Version

	// ConnIDLen is the size of a connection ID.
	ConnIDLen = 8

	// destCIDOffset is where data, response and cookie reply packets carry
	// the receiver's CID, so one routing function serves all three.
	destCIDOffset = 4
)

// PacketType is byte 1 of a packet.
type PacketType uint8

// Packet types, §1.
const (
	TypeInitiation  PacketType = 1 // Noise IK message 1, §1.1
	TypeResponse    PacketType = 2 // Noise IK message 2, §1.2
	TypeCookieReply PacketType = 3 // load-shedding cookie, §1.3
	TypeData        PacketType = 4 // encrypted frames, §1.4
	TypeEarlyData   PacketType = 5 // frames sent before the response (0-RTT), §1.6
)

func (t PacketType) String() string {
	switch t {
	case TypeInitiation:
		return "initiation"
	case TypeResponse:
		return "response"
	case TypeCookieReply:
		return "cookie_reply"
	case TypeData:
		return "data"
	case TypeEarlyData:
		return "early_data"
	}
	return "PacketType(" + strconv.Itoa(int(t)) + ")"
}

// ConnID is a connection ID: 8 random bytes chosen by the receiver of the
// packets that carry it.
type ConnID [ConnIDLen]byte

// String returns the CID in lowercase hex.
func (c ConnID) String() string { return hex.EncodeToString(c[:]) }

// IsParley reports whether the datagram b is a Parley version 1 packet (its
// first byte is 0xC1), as opposed to STUN or anything else sharing the
// socket. It looks at one byte only; the packet's parser checks the rest.
func IsParley(b []byte) bool {
	return len(b) > 0 && b[0] == FormVersion
}

// PacketTypeOf checks the two-byte common header of the datagram b and
// returns its packet type. It does not check the length; the type's parser
// does.
func PacketTypeOf(b []byte) (PacketType, error) {
	if len(b) < 2 {
		return 0, ErrTruncated
	}
	if b[0] != FormVersion {
		return 0, ErrNotParley
	}
	t := PacketType(b[1])
	if t < TypeInitiation || t > TypeEarlyData {
		return 0, ErrPacketType
	}
	return t, nil
}

// ParseDestCID returns the receiver's CID from a response, cookie reply or
// data packet (all carry it at offset 4), so the receive loop can route a
// datagram to its session before parsing it further. It checks the common
// header and the length for the type (exact for the handshake packets, at
// least MinDataPacketLen for data), which drops malformed datagrams before
// any lookup. An initiation has no destination CID (ErrNoDestCID): it is
// routed to the listener.
func ParseDestCID(b []byte) (ConnID, error) {
	t, err := PacketTypeOf(b)
	if err != nil {
		return ConnID{}, err
	}
	switch t {
	case TypeData:
		if len(b) < MinDataPacketLen {
			return ConnID{}, ErrPacketLength
		}
	case TypeResponse:
		if len(b) != ResponseLen {
			return ConnID{}, ErrPacketLength
		}
	case TypeCookieReply:
		if len(b) != CookieReplyLen {
			return ConnID{}, ErrPacketLength
		}
	default: // initiation and early data: routed by the handshake
		return ConnID{}, ErrNoDestCID
	}
	return ConnID(b[destCIDOffset : destCIDOffset+ConnIDLen]), nil
}

// checkFixed checks the header of a fixed-size handshake packet: exact
// length, form byte, type, and the two reserved bytes at offsets 2–3.
func checkFixed(b []byte, t PacketType, size int) error {
	if len(b) != size {
		if len(b) < size {
			return ErrTruncated
		}
		return ErrPacketLength
	}
	if b[0] != FormVersion {
		return ErrNotParley
	}
	if PacketType(b[1]) != t {
		return ErrPacketType
	}
	if b[2] != 0 || b[3] != 0 {
		return ErrReserved
	}
	return nil
}
