package wire

// STREAM_DATA_BLOCKED frame, §2: the sender has data for a stream but is
// blocked by that stream's flow control at Limit.
//
//	type (0x15) | stream ID (v) | limit (v)

// StreamDataBlockedFrame is a STREAM_DATA_BLOCKED frame.
type StreamDataBlockedFrame struct {
	StreamID uint64
	Limit    uint64
}

// ParseStreamDataBlockedFrame decodes the STREAM_DATA_BLOCKED frame at the
// start of b.
func ParseStreamDataBlockedFrame(b []byte) (StreamDataBlockedFrame, int, error) {
	if err := checkFrameType(b, FrameStreamDataBlocked); err != nil {
		return StreamDataBlockedFrame{}, 0, err
	}
	id, n1, err := ParseVarint(b[1:])
	if err != nil {
		return StreamDataBlockedFrame{}, 0, err
	}
	v, n2, err := ParseVarint(b[1+n1:])
	if err != nil {
		return StreamDataBlockedFrame{}, 0, err
	}
	return StreamDataBlockedFrame{StreamID: id, Limit: v}, 1 + n1 + n2, nil
}

// Append appends the frame to b.
func (f *StreamDataBlockedFrame) Append(b []byte) []byte {
	b = AppendVarint(append(b, byte(FrameStreamDataBlocked)), f.StreamID)
	return AppendVarint(b, f.Limit)
}

// Length returns the encoded length of the frame.
func (f *StreamDataBlockedFrame) Length() int {
	return 1 + VarintLen(f.StreamID) + VarintLen(f.Limit)
}
