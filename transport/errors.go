package transport

import (
	"errors"
	"fmt"
	"os"

	"github.com/parley-p2p/parley/transport/internal/wire"
)

// ErrClosed is returned by operations on a closed endpoint, listener,
// session or stream.
var ErrClosed = errors.New("transport: closed")

// ErrHandshakeTimeout means no authenticated response arrived in time.
var ErrHandshakeTimeout = errors.New("transport: handshake timed out")

// ErrPeerLimits means the peer's handshake granted less than the early data
// allowance (EarlyMaxStreams, EarlyMaxData) every peer must grant.
var ErrPeerLimits = errors.New("transport: peer grants less than the early data allowance")

// ErrDatagramTooLarge is returned by SendDatagram for a payload that cannot
// fit one packet on the current path.
var ErrDatagramTooLarge = errors.New("transport: datagram too large")

// ErrorCode is a session close or stream reset code. Codes below 0x200 are
// the transport's own (see docs/protocol.md §2); applications use
// ApplicationErrorBase and above.
type ErrorCode = wire.ErrorCode

// ApplicationErrorBase is the first error code for applications' own
// session close and stream reset codes.
const ApplicationErrorBase = wire.ApplicationError

// SessionError says why a session ended.
type SessionError struct {
	Code   ErrorCode
	Reason string
	Remote bool // the peer closed the session
}

func (e *SessionError) Error() string {
	who := "local"
	if e.Remote {
		who = "peer"
	}
	if e.Reason == "" {
		return fmt.Sprintf("transport: session closed by %s: %v", who, e.Code)
	}
	return fmt.Sprintf("transport: session closed by %s: %v: %s", who, e.Code, e.Reason)
}

// Is makes errors.Is(err, ErrClosed) true for a session closed normally.
func (e *SessionError) Is(target error) bool { return target == ErrClosed }

// IdleTimeoutError means the session ended because nothing was heard from
// the peer for the idle timeout.
type IdleTimeoutError struct{}

func (IdleTimeoutError) Error() string   { return "transport: session idle timeout" }
func (IdleTimeoutError) Timeout() bool   { return true }
func (IdleTimeoutError) Temporary() bool { return false }

// StreamError is returned by reads or writes on a stream that was reset.
type StreamError struct {
	StreamID uint64
	Code     ErrorCode
	Remote   bool // the peer reset the stream
}

func (e *StreamError) Error() string {
	who := "locally"
	if e.Remote {
		who = "by peer"
	}
	return fmt.Sprintf("transport: stream %d reset %s with code %d", e.StreamID, who, uint64(e.Code))
}

// errDeadline is what a read or write past its deadline returns. It is
// os.ErrDeadlineExceeded, which implements net.Error with Timeout() true.
var errDeadline = os.ErrDeadlineExceeded
