package wire

// RESET_STREAM frame, §2: the sender abandons a stream. FinalSize is how many
// bytes it had sent, so both sides settle connection-level flow control.
//
//	type (0x04) | stream ID (v) | error code (v) | final size (v)

// ResetStreamFrame is a RESET_STREAM frame.
type ResetStreamFrame struct {
	StreamID uint64
	// ErrorCode is the application's stream error code; it is not one of
	// the session ErrorCode values.
	ErrorCode uint64
	FinalSize uint64
}

// ParseResetStreamFrame decodes the RESET_STREAM frame at the start of b.
func ParseResetStreamFrame(b []byte) (ResetStreamFrame, int, error) {
	if err := checkFrameType(b, FrameResetStream); err != nil {
		return ResetStreamFrame{}, 0, err
	}
	n := 1
	id, l, err := ParseVarint(b[n:])
	if err != nil {
		return ResetStreamFrame{}, 0, err
	}
	n += l
	code, l, err := ParseVarint(b[n:])
	if err != nil {
		return ResetStreamFrame{}, 0, err
	}
	n += l
	size, l, err := ParseVarint(b[n:])
	if err != nil {
		return ResetStreamFrame{}, 0, err
	}
	n += l
	return ResetStreamFrame{StreamID: id, ErrorCode: code, FinalSize: size}, n, nil
}

// Append appends the frame to b.
func (f *ResetStreamFrame) Append(b []byte) []byte {
	b = AppendVarint(append(b, byte(FrameResetStream)), f.StreamID)
	b = AppendVarint(b, f.ErrorCode)
	return AppendVarint(b, f.FinalSize)
}

// Length returns the encoded length of the frame.
func (f *ResetStreamFrame) Length() int {
	return 1 + VarintLen(f.StreamID) + VarintLen(f.ErrorCode) + VarintLen(f.FinalSize)
}
