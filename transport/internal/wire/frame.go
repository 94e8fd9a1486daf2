package wire

import "strconv"

// FrameType is the type that starts every frame, §2.
//
// The type is a varint on the wire, but every type defined in version 1 is
// below 64 and must be sent in its one-byte form; a first byte of 0x40 or
// above (a longer varint) is an unknown type. That keeps the dispatch a
// single byte compare.
type FrameType uint8

// Frame types, §2.
const (
	FramePadding           FrameType = 0x00
	FramePing              FrameType = 0x01
	FrameAck               FrameType = 0x02
	FrameResetStream       FrameType = 0x04
	FrameStopSending       FrameType = 0x05
	FrameStream            FrameType = 0x08 // STREAM without FIN
	FrameStreamFin         FrameType = 0x09 // STREAM with FIN (bit 0x01)
	FrameMaxData           FrameType = 0x10
	FrameMaxStreamData     FrameType = 0x11
	FrameMaxStreams        FrameType = 0x12
	FrameDataBlocked       FrameType = 0x14
	FrameStreamDataBlocked FrameType = 0x15
	FramePathChallenge     FrameType = 0x1a
	FramePathResponse      FrameType = 0x1b
	FrameClose             FrameType = 0x1c
	FrameDatagram          FrameType = 0x30
)

// frameInfo is indexed by a frame's first byte; only one-byte types exist.
var frameInfo = [256]struct {
	name         string
	known        bool
	ackEliciting bool
}{
	FramePadding:           {"PADDING", true, false},
	FramePing:              {"PING", true, true},
	FrameAck:               {"ACK", true, false},
	FrameResetStream:       {"RESET_STREAM", true, true},
	FrameStopSending:       {"STOP_SENDING", true, true},
	FrameStream:            {"STREAM", true, true},
	FrameStreamFin:         {"STREAM", true, true},
	FrameMaxData:           {"MAX_DATA", true, true},
	FrameMaxStreamData:     {"MAX_STREAM_DATA", true, true},
	FrameMaxStreams:        {"MAX_STREAMS", true, true},
	FrameDataBlocked:       {"DATA_BLOCKED", true, true},
	FrameStreamDataBlocked: {"STREAM_DATA_BLOCKED", true, true},
	FramePathChallenge:     {"PATH_CHALLENGE", true, true},
	FramePathResponse:      {"PATH_RESPONSE", true, true},
	FrameClose:             {"CLOSE", true, false},
	FrameDatagram:          {"DATAGRAM", true, true},
}

func (t FrameType) String() string {
	if fi := frameInfo[t]; fi.known {
		return fi.name
	}
	return "FrameType(0x" + strconv.FormatUint(uint64(t), 16) + ")"
}

// IsAckEliciting reports whether a packet containing a frame of type t must
// be acknowledged. PADDING, ACK and CLOSE are not (§2), so ACKs are never
// acknowledged and a closing peer is not kept alive by its own close.
func (t FrameType) IsAckEliciting() bool { return frameInfo[t].ackEliciting }

// ParseFrameType returns the type of the frame at the start of b. It returns
// ErrTruncated for an empty b and ErrUnknownFrame for a type not in §2.
//
// A decrypted payload is parsed by dispatching on the type and advancing by
// each parser's byte count; any error drops the packet and closes the
// session with FrameEncodingError:
//
//	for len(p) > 0 {
//		t, err := wire.ParseFrameType(p)
//		if err != nil {
//			return err
//		}
//		var n int
//		switch t {
//		case wire.FramePadding:
//			n = wire.PaddingLen(p)
//		case wire.FrameAck:
//			n, err = wire.ParseAckFrame(p, &ack) // reuses ack.Ranges
//			...
//		case wire.FrameStream, wire.FrameStreamFin:
//			var f wire.StreamFrame
//			f, n, err = wire.ParseStreamFrame(p)
//			...
//		}
//		if err != nil {
//			return err
//		}
//		ackEliciting = ackEliciting || t.IsAckEliciting()
//		p = p[n:]
//	}
//
// ExampleParseFrameType shows the loop in full.
func ParseFrameType(b []byte) (FrameType, error) {
	if len(b) == 0 {
		return 0, ErrTruncated
	}
	t := FrameType(b[0])
	if !frameInfo[t].known {
		return 0, ErrUnknownFrame
	}
	return t, nil
}

// PaddingLen returns the length of the run of PADDING bytes (0x00) at the
// start of b. Each PADDING frame is one byte; parsing the run at once keeps
// a padded packet from costing one dispatch per byte.
func PaddingLen(b []byte) int {
	for i, c := range b {
		if c != 0 {
			return i
		}
	}
	return len(b)
}

// AppendPadding appends n PADDING frames (n zero bytes) to b.
func AppendPadding(b []byte, n int) []byte {
	for range n {
		b = append(b, 0)
	}
	return b
}

// checkFrameType checks that b starts with a frame of type t, so a parser
// handed the wrong frame fails instead of misreading it.
func checkFrameType(b []byte, t FrameType) error {
	if len(b) == 0 {
		return ErrTruncated
	}
	if b[0] != byte(t) {
		return ErrFrameType
	}
	return nil
}
