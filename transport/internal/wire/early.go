package wire

import "encoding/binary"

// Early data packet header, §1.6: frames the initiator sends before the
// response arrives (0-RTT), under a key both sides derive from the
// initiation alone.
//
//	 0  1  0xC1
//	 1  1  type = 5
//	 2  2  reserved, zero
//	 4 32  the initiator's ephemeral public key: bytes 12–43 of the
//	       initiation this data belongs to
//	36  8  packet number (the initiator's one packet number space)
//	44  n  AEAD ciphertext of the frames, including a 16-byte tag
//
// The whole 44-byte header is the AEAD's associated data. The responder has
// chosen no CID yet, so the packet names its handshake by the ephemeral key.
const (
	// EarlyHeaderLen is the size of an early data packet's header.
	EarlyHeaderLen = 44
	// MinEarlyPacketLen is the smallest valid early data packet: a header,
	// one byte of frames and the AEAD tag.
	MinEarlyPacketLen = EarlyHeaderLen + 1 + 16

	earlyEphemeralOffset = 4
	earlyPNOffset        = 36
)

// EarlyHeader is the clear header of an early data packet.
type EarlyHeader struct {
	Ephemeral    [32]byte
	PacketNumber uint64
}

// ParseEarlyHeader decodes the header of the early data packet b, which
// must be at least MinEarlyPacketLen bytes long.
func ParseEarlyHeader(b []byte) (EarlyHeader, error) {
	if len(b) < MinEarlyPacketLen {
		return EarlyHeader{}, ErrTruncated
	}
	if b[0] != FormVersion {
		return EarlyHeader{}, ErrNotParley
	}
	if PacketType(b[1]) != TypeEarlyData {
		return EarlyHeader{}, ErrPacketType
	}
	if b[2] != 0 || b[3] != 0 {
		return EarlyHeader{}, ErrReserved
	}
	return EarlyHeader{
		Ephemeral:    [32]byte(b[earlyEphemeralOffset:]),
		PacketNumber: binary.BigEndian.Uint64(b[earlyPNOffset:]),
	}, nil
}

// Append appends the EarlyHeaderLen-byte header to b.
func (h *EarlyHeader) Append(b []byte) []byte {
	b = append(b, FormVersion, byte(TypeEarlyData), 0, 0)
	b = append(b, h.Ephemeral[:]...)
	return binary.BigEndian.AppendUint64(b, h.PacketNumber)
}
