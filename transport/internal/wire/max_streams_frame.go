package wire

// MAX_STREAMS frame, §2: raises the number of streams the peer may open.
// Unlike QUIC there is one stream count, not separate bidirectional and
// unidirectional ones.
//
//	type (0x12) | maximum (v)

// MaxStreamsFrame is a MAX_STREAMS frame.
type MaxStreamsFrame struct {
	Maximum uint64
}

// ParseMaxStreamsFrame decodes the MAX_STREAMS frame at the start of b.
func ParseMaxStreamsFrame(b []byte) (MaxStreamsFrame, int, error) {
	if err := checkFrameType(b, FrameMaxStreams); err != nil {
		return MaxStreamsFrame{}, 0, err
	}
	v, n, err := ParseVarint(b[1:])
	if err != nil {
		return MaxStreamsFrame{}, 0, err
	}
	return MaxStreamsFrame{Maximum: v}, 1 + n, nil
}

// Append appends the frame to b.
func (f *MaxStreamsFrame) Append(b []byte) []byte {
	return AppendVarint(append(b, byte(FrameMaxStreams)), f.Maximum)
}

// Length returns the encoded length of the frame.
func (f *MaxStreamsFrame) Length() int { return 1 + VarintLen(f.Maximum) }
