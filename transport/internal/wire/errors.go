package wire

import "errors"

// Parse errors. They are sentinels rather than formatted errors because the
// receive path drops malformed datagrams at line rate and must not allocate
// to say why; callers that log add context once (see STYLE.md habit 8).
//
// Any error from a frame parser means the peer's authenticated payload is
// malformed; the session closes with FrameEncodingError (§2).
var (
	// ErrTruncated means the buffer ended inside a field.
	ErrTruncated = errors.New("wire: truncated")

	// ErrNotParley means the first byte is not 0xC1 (Parley, version 1).
	ErrNotParley = errors.New("wire: not a Parley version 1 packet")
	// ErrPacketType means the packet type byte is unknown, or is not the
	// type the called parser decodes.
	ErrPacketType = errors.New("wire: unknown or unexpected packet type")
	// ErrPacketLength means a fixed-size packet has the wrong length.
	ErrPacketLength = errors.New("wire: wrong packet length")
	// ErrReserved means a reserved field or flag bit is not zero.
	ErrReserved = errors.New("wire: reserved bits set")
	// ErrNoDestCID means the packet type carries no receiver CID (an
	// initiation), so it cannot be routed by CID.
	ErrNoDestCID = errors.New("wire: packet type carries no destination CID")
	// ErrHandshakeParams means the handshake parameters are malformed.
	ErrHandshakeParams = errors.New("wire: invalid handshake parameters")

	// ErrUnknownFrame means the frame type is not one of §2's table.
	ErrUnknownFrame = errors.New("wire: unknown frame type")
	// ErrFrameType means a frame parser was handed a frame of another type.
	ErrFrameType = errors.New("wire: frame type does not match parser")
	// ErrAckRange means an ACK frame's ranges underflow below packet 0.
	ErrAckRange = errors.New("wire: invalid ACK range")
	// ErrTooManyAckRanges means an ACK frame has more than MaxAckRanges
	// ranges.
	ErrTooManyAckRanges = errors.New("wire: too many ACK ranges")
	// ErrStreamOverflow means a STREAM frame's offset + length exceeds
	// MaxVarint, the largest possible stream offset.
	ErrStreamOverflow = errors.New("wire: stream data beyond maximum offset")
	// ErrReasonTooLong means a CLOSE frame's reason exceeds MaxReasonLen.
	ErrReasonTooLong = errors.New("wire: close reason too long")
)
