package wire

// MAX_STREAM_DATA frame, §2: raises one stream's flow control credit, the
// highest offset the peer may send on it.
//
//	type (0x11) | stream ID (v) | maximum (v)

// MaxStreamDataFrame is a MAX_STREAM_DATA frame.
type MaxStreamDataFrame struct {
	StreamID uint64
	Maximum  uint64
}

// ParseMaxStreamDataFrame decodes the MAX_STREAM_DATA frame at the start of b.
func ParseMaxStreamDataFrame(b []byte) (MaxStreamDataFrame, int, error) {
	if err := checkFrameType(b, FrameMaxStreamData); err != nil {
		return MaxStreamDataFrame{}, 0, err
	}
	id, n1, err := ParseVarint(b[1:])
	if err != nil {
		return MaxStreamDataFrame{}, 0, err
	}
	v, n2, err := ParseVarint(b[1+n1:])
	if err != nil {
		return MaxStreamDataFrame{}, 0, err
	}
	return MaxStreamDataFrame{StreamID: id, Maximum: v}, 1 + n1 + n2, nil
}

// Append appends the frame to b.
func (f *MaxStreamDataFrame) Append(b []byte) []byte {
	b = AppendVarint(append(b, byte(FrameMaxStreamData)), f.StreamID)
	return AppendVarint(b, f.Maximum)
}

// Length returns the encoded length of the frame.
func (f *MaxStreamDataFrame) Length() int {
	return 1 + VarintLen(f.StreamID) + VarintLen(f.Maximum)
}
