package wire

import "strconv"

// ErrorCode is a session error code, carried by CLOSE frames (§2).
type ErrorCode uint64

// Error codes, §2. The values follow RFC 9000 §20.1 where the meaning is the
// same, so that QUIC-literate readers and tools recognise them.
const (
	// NoError: the session closed gracefully.
	NoError ErrorCode = 0x0
	// InternalError: the sender hit a bug or resource failure.
	InternalError ErrorCode = 0x1
	// FlowControlError: the peer sent more than the credit it was given.
	FlowControlError ErrorCode = 0x3
	// StreamLimitError: the peer opened more streams than allowed.
	StreamLimitError ErrorCode = 0x4
	// StreamStateError: a frame arrived for a stream in a state that
	// cannot receive it.
	StreamStateError ErrorCode = 0x5
	// FinalSizeError: a stream's data or RESET_STREAM contradicts its known
	// final size.
	FinalSizeError ErrorCode = 0x6
	// FrameEncodingError: a payload could not be parsed (any error from
	// this package's frame parsers).
	FrameEncodingError ErrorCode = 0x7
	// ProtocolViolation: any other breach of this specification.
	ProtocolViolation ErrorCode = 0xa
	// IdleTimeout is local only: reported to the application when the idle
	// timer closes the session silently. It is never sent in a CLOSE frame.
	IdleTimeout ErrorCode = 0x100
	// ApplicationError: the application closed the session; the reason says
	// why.
	ApplicationError ErrorCode = 0x200
)

func (c ErrorCode) String() string {
	switch c {
	case NoError:
		return "NO_ERROR"
	case InternalError:
		return "INTERNAL_ERROR"
	case FlowControlError:
		return "FLOW_CONTROL_ERROR"
	case StreamLimitError:
		return "STREAM_LIMIT_ERROR"
	case StreamStateError:
		return "STREAM_STATE_ERROR"
	case FinalSizeError:
		return "FINAL_SIZE_ERROR"
	case FrameEncodingError:
		return "FRAME_ENCODING_ERROR"
	case ProtocolViolation:
		return "PROTOCOL_VIOLATION"
	case IdleTimeout:
		return "IDLE_TIMEOUT"
	case ApplicationError:
		return "APPLICATION_ERROR"
	}
	return "ErrorCode(0x" + strconv.FormatUint(uint64(c), 16) + ")"
}
