package wire

// PING frame, §2: the type byte alone. It elicits an ACK, which is how a
// sender probes a path or keeps a session alive.
//
//	type (0x01)

// PingFrame is a PING frame.
type PingFrame struct{}

// ParsePingFrame decodes the PING frame at the start of b.
func ParsePingFrame(b []byte) (PingFrame, int, error) {
	if err := checkFrameType(b, FramePing); err != nil {
		return PingFrame{}, 0, err
	}
	return PingFrame{}, 1, nil
}

// Append appends the frame to b.
func (f *PingFrame) Append(b []byte) []byte { return append(b, byte(FramePing)) }

// Length returns the encoded length of the frame.
func (f *PingFrame) Length() int { return 1 }
