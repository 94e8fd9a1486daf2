package wire

// PATH_CHALLENGE frame, §2: 8 unpredictable bytes that the peer must echo in
// a PATH_RESPONSE on the same path, proving it receives at that address
// before the session moves onto it.
//
//	type (0x1a) | data (8 bytes)

// PathChallengeFrame is a PATH_CHALLENGE frame.
type PathChallengeFrame struct {
	Data [8]byte
}

// ParsePathChallengeFrame decodes the PATH_CHALLENGE frame at the start of b.
func ParsePathChallengeFrame(b []byte) (PathChallengeFrame, int, error) {
	if err := checkFrameType(b, FramePathChallenge); err != nil {
		return PathChallengeFrame{}, 0, err
	}
	if len(b) < 1+8 {
		return PathChallengeFrame{}, 0, ErrTruncated
	}
	return PathChallengeFrame{Data: [8]byte(b[1:])}, 1 + 8, nil
}

// Append appends the frame to b.
func (f *PathChallengeFrame) Append(b []byte) []byte {
	return append(append(b, byte(FramePathChallenge)), f.Data[:]...)
}

// Length returns the encoded length of the frame.
func (f *PathChallengeFrame) Length() int { return 1 + 8 }
