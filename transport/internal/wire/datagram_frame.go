package wire

// DATAGRAM frame, §2: an unreliable message (RFC 9221), never retransmitted.
//
//	type (0x30) | length (v) | data
//
// Parley always sends the length, unlike RFC 9221's 0x30 variant that runs
// to the end of the packet; one layout keeps the parser simple and lets a
// datagram share a packet with any other frame.

// DatagramFrame is a DATAGRAM frame.
type DatagramFrame struct {
	// Data is the datagram's payload. After ParseDatagramFrame it aliases
	// the parsed buffer (capacity capped at its length): copy it to keep it
	// beyond the packet buffer's life.
	Data []byte
}

// ParseDatagramFrame decodes the DATAGRAM frame at the start of b.
func ParseDatagramFrame(b []byte) (DatagramFrame, int, error) {
	if err := checkFrameType(b, FrameDatagram); err != nil {
		return DatagramFrame{}, 0, err
	}
	length, l, err := ParseVarint(b[1:])
	if err != nil {
		return DatagramFrame{}, 0, err
	}
	n := 1 + l
	if length > uint64(len(b)-n) {
		return DatagramFrame{}, 0, ErrTruncated
	}
	end := n + int(length)
	return DatagramFrame{Data: b[n:end:end]}, end, nil
}

// Append appends the frame to b.
func (f *DatagramFrame) Append(b []byte) []byte {
	b = AppendVarint(append(b, byte(FrameDatagram)), uint64(len(f.Data)))
	return append(b, f.Data...)
}

// Length returns the encoded length of the frame.
func (f *DatagramFrame) Length() int {
	return 1 + VarintLen(uint64(len(f.Data))) + len(f.Data)
}
