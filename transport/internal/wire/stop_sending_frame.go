package wire

// STOP_SENDING frame, §2: the receiver of a stream asks its sender to stop;
// the sender answers with RESET_STREAM.
//
//	type (0x05) | stream ID (v) | error code (v)

// StopSendingFrame is a STOP_SENDING frame.
type StopSendingFrame struct {
	StreamID uint64
	// ErrorCode is the application's stream error code; it is not one of
	// the session ErrorCode values.
	ErrorCode uint64
}

// ParseStopSendingFrame decodes the STOP_SENDING frame at the start of b.
func ParseStopSendingFrame(b []byte) (StopSendingFrame, int, error) {
	if err := checkFrameType(b, FrameStopSending); err != nil {
		return StopSendingFrame{}, 0, err
	}
	id, n1, err := ParseVarint(b[1:])
	if err != nil {
		return StopSendingFrame{}, 0, err
	}
	code, n2, err := ParseVarint(b[1+n1:])
	if err != nil {
		return StopSendingFrame{}, 0, err
	}
	return StopSendingFrame{StreamID: id, ErrorCode: code}, 1 + n1 + n2, nil
}

// Append appends the frame to b.
func (f *StopSendingFrame) Append(b []byte) []byte {
	b = AppendVarint(append(b, byte(FrameStopSending)), f.StreamID)
	return AppendVarint(b, f.ErrorCode)
}

// Length returns the encoded length of the frame.
func (f *StopSendingFrame) Length() int {
	return 1 + VarintLen(f.StreamID) + VarintLen(f.ErrorCode)
}
