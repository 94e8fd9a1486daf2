package wire

import "encoding/binary"

// Data packet header, §1.4:
//
//	 0  1  0xC1
//	 1  1  type = 4
//	 2  1  flags: bit 0 (0x01) = key phase; other bits zero
//	 3  1  reserved, zero
//	 4  8  destination CID
//	12  8  packet number (full 64 bits, never truncated)
//	20  n  AEAD ciphertext of the frames, including a 16-byte tag
//
// The whole 20-byte header is the AEAD's associated data.
const (
	// DataHeaderLen is the size of a data packet's header.
	DataHeaderLen = 20
	// MinDataPacketLen is the smallest valid data packet: a header, one
	// byte of frames and the AEAD tag. Shorter ones cannot decrypt and are
	// dropped before trying.
	MinDataPacketLen = DataHeaderLen + 1 + 16

	dataFlagsOffset = 2
	dataPNOffset    = 12
	flagKeyPhase    = 0x01
)

// DataHeader is the clear header of a data packet.
type DataHeader struct {
	KeyPhase     bool
	DestCID      ConnID
	PacketNumber uint64
}

// ParseDataHeader decodes the header at the start of the data packet b. It
// needs only the DataHeaderLen header bytes; the packet's ciphertext is
// b[DataHeaderLen:], and the caller checks len(b) >= MinDataPacketLen before
// spending an AEAD open on it.
func ParseDataHeader(b []byte) (DataHeader, error) {
	if len(b) < DataHeaderLen {
		return DataHeader{}, ErrTruncated
	}
	if b[0] != FormVersion {
		return DataHeader{}, ErrNotParley
	}
	if PacketType(b[1]) != TypeData {
		return DataHeader{}, ErrPacketType
	}
	if b[dataFlagsOffset]&^flagKeyPhase != 0 || b[3] != 0 {
		return DataHeader{}, ErrReserved
	}
	return DataHeader{
		KeyPhase:     b[dataFlagsOffset]&flagKeyPhase != 0,
		DestCID:      ConnID(b[destCIDOffset : destCIDOffset+ConnIDLen]),
		PacketNumber: binary.BigEndian.Uint64(b[dataPNOffset:]),
	}, nil
}

// Append appends the DataHeaderLen-byte header to b.
func (h *DataHeader) Append(b []byte) []byte {
	var flags byte
	if h.KeyPhase {
		flags = flagKeyPhase
	}
	b = append(b, FormVersion, byte(TypeData), flags, 0)
	b = append(b, h.DestCID[:]...)
	return binary.BigEndian.AppendUint64(b, h.PacketNumber)
}
