package wire

// MAX_DATA frame, §2: raises the connection-level flow control credit, the
// total stream bytes the peer may send across all streams.
//
//	type (0x10) | maximum (v)

// MaxDataFrame is a MAX_DATA frame.
type MaxDataFrame struct {
	Maximum uint64
}

// ParseMaxDataFrame decodes the MAX_DATA frame at the start of b.
func ParseMaxDataFrame(b []byte) (MaxDataFrame, int, error) {
	if err := checkFrameType(b, FrameMaxData); err != nil {
		return MaxDataFrame{}, 0, err
	}
	v, n, err := ParseVarint(b[1:])
	if err != nil {
		return MaxDataFrame{}, 0, err
	}
	return MaxDataFrame{Maximum: v}, 1 + n, nil
}

// Append appends the frame to b.
func (f *MaxDataFrame) Append(b []byte) []byte {
	return AppendVarint(append(b, byte(FrameMaxData)), f.Maximum)
}

// Length returns the encoded length of the frame.
func (f *MaxDataFrame) Length() int { return 1 + VarintLen(f.Maximum) }
