package wire

// PATH_RESPONSE frame, §2: echoes the data of a PATH_CHALLENGE.
//
//	type (0x1b) | data (8 bytes)

// PathResponseFrame is a PATH_RESPONSE frame.
type PathResponseFrame struct {
	Data [8]byte
}

// ParsePathResponseFrame decodes the PATH_RESPONSE frame at the start of b.
func ParsePathResponseFrame(b []byte) (PathResponseFrame, int, error) {
	if err := checkFrameType(b, FramePathResponse); err != nil {
		return PathResponseFrame{}, 0, err
	}
	if len(b) < 1+8 {
		return PathResponseFrame{}, 0, ErrTruncated
	}
	return PathResponseFrame{Data: [8]byte(b[1:])}, 1 + 8, nil
}

// Append appends the frame to b.
func (f *PathResponseFrame) Append(b []byte) []byte {
	return append(append(b, byte(FramePathResponse)), f.Data[:]...)
}

// Length returns the encoded length of the frame.
func (f *PathResponseFrame) Length() int { return 1 + 8 }
