package wire

import "unicode/utf8"

// CLOSE frame, §2: the sender is closing the session immediately.
//
//	type (0x1c) | error code (v) | reason length (v) | reason (UTF-8)
//
// The reason is for humans and logs. It is at most MaxReasonLen bytes so a
// close always fits in one small packet; receivers reject longer ones.
// Receivers do not check that it is valid UTF-8 (a broken peer's bytes are
// still worth logging), so code that displays it must escape it.

// MaxReasonLen is the longest CLOSE reason, in bytes.
const MaxReasonLen = 1024

// CloseFrame is a CLOSE frame.
type CloseFrame struct {
	ErrorCode ErrorCode
	// Reason is the human-readable reason. Append truncates it to
	// MaxReasonLen bytes, at a UTF-8 character boundary.
	Reason string
}

// ParseCloseFrame decodes the CLOSE frame at the start of b. Unknown error
// codes are accepted: a newer peer may send codes this version lacks.
func ParseCloseFrame(b []byte) (CloseFrame, int, error) {
	if err := checkFrameType(b, FrameClose); err != nil {
		return CloseFrame{}, 0, err
	}
	n := 1
	code, l, err := ParseVarint(b[n:])
	if err != nil {
		return CloseFrame{}, 0, err
	}
	n += l
	length, l, err := ParseVarint(b[n:])
	if err != nil {
		return CloseFrame{}, 0, err
	}
	n += l
	if length > MaxReasonLen {
		return CloseFrame{}, 0, ErrReasonTooLong
	}
	if length > uint64(len(b)-n) {
		return CloseFrame{}, 0, ErrTruncated
	}
	end := n + int(length)
	// Copying the reason into a string allocates, which is fine: a session
	// sees at most one CLOSE.
	return CloseFrame{ErrorCode: ErrorCode(code), Reason: string(b[n:end])}, end, nil
}

// Append appends the frame to b.
func (f *CloseFrame) Append(b []byte) []byte {
	r := f.reason()
	b = AppendVarint(append(b, byte(FrameClose)), uint64(f.ErrorCode))
	b = AppendVarint(b, uint64(len(r)))
	return append(b, r...)
}

// Length returns the encoded length of the frame.
func (f *CloseFrame) Length() int {
	r := f.reason()
	return 1 + VarintLen(uint64(f.ErrorCode)) + VarintLen(uint64(len(r))) + len(r)
}

// reason returns the reason as sent: cut to MaxReasonLen bytes, backing up
// to the start of a UTF-8 character so the cut does not leave half of one.
func (f *CloseFrame) reason() string {
	r := f.Reason
	if len(r) <= MaxReasonLen {
		return r
	}
	cut := MaxReasonLen
	for i := 0; i < utf8.UTFMax && cut > 0 && !utf8.RuneStart(r[cut]); i++ {
		cut--
	}
	return r[:cut]
}
