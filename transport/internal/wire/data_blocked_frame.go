package wire

// DATA_BLOCKED frame, §2: tells the peer the sender has data to send but is
// blocked by connection-level flow control at Limit, so a peer that is slow
// to send MAX_DATA can see why the sender stalls.
//
//	type (0x14) | limit (v)

// DataBlockedFrame is a DATA_BLOCKED frame.
type DataBlockedFrame struct {
	Limit uint64
}

// ParseDataBlockedFrame decodes the DATA_BLOCKED frame at the start of b.
func ParseDataBlockedFrame(b []byte) (DataBlockedFrame, int, error) {
	if err := checkFrameType(b, FrameDataBlocked); err != nil {
		return DataBlockedFrame{}, 0, err
	}
	v, n, err := ParseVarint(b[1:])
	if err != nil {
		return DataBlockedFrame{}, 0, err
	}
	return DataBlockedFrame{Limit: v}, 1 + n, nil
}

// Append appends the frame to b.
func (f *DataBlockedFrame) Append(b []byte) []byte {
	return AppendVarint(append(b, byte(FrameDataBlocked)), f.Limit)
}

// Length returns the encoded length of the frame.
func (f *DataBlockedFrame) Length() int { return 1 + VarintLen(f.Limit) }
