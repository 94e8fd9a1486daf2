package wire

// STREAM frame, §2: a run of bytes of one stream at an offset.
//
//	type (0x08, | 0x01 = FIN) | stream ID (v) | offset (v) | length (v) | data
//
// Unlike QUIC's STREAM frame, offset and length are always present: the
// packetizer sizes frames with StreamFrameOverhead / MaxStreamDataLen, and
// one layout keeps the parser branch-free. A zero-length frame is valid
// (it carries a FIN, or nothing).

// StreamFrame is a STREAM frame.
type StreamFrame struct {
	StreamID uint64
	Offset   uint64
	Fin      bool
	// Data is the frame's payload. After ParseStreamFrame it aliases the
	// parsed buffer (with its capacity capped at its length, so appending
	// to it cannot overwrite the next frame): copy it to keep it beyond the
	// packet buffer's life.
	Data []byte
}

// ParseStreamFrame decodes the STREAM frame at the start of b (type 0x08 or
// 0x09). It rejects a frame whose last byte would lie beyond stream offset
// MaxVarint (ErrStreamOverflow), as RFC 9000 §19.8 does.
func ParseStreamFrame(b []byte) (StreamFrame, int, error) {
	if len(b) == 0 {
		return StreamFrame{}, 0, ErrTruncated
	}
	if b[0]&^1 != byte(FrameStream) {
		return StreamFrame{}, 0, ErrFrameType
	}
	n := 1
	id, l, err := ParseVarint(b[n:])
	if err != nil {
		return StreamFrame{}, 0, err
	}
	n += l
	off, l, err := ParseVarint(b[n:])
	if err != nil {
		return StreamFrame{}, 0, err
	}
	n += l
	length, l, err := ParseVarint(b[n:])
	if err != nil {
		return StreamFrame{}, 0, err
	}
	n += l
	if length > uint64(len(b)-n) {
		return StreamFrame{}, 0, ErrTruncated
	}
	if length > MaxVarint-off {
		return StreamFrame{}, 0, ErrStreamOverflow
	}
	end := n + int(length)
	return StreamFrame{
		StreamID: id,
		Offset:   off,
		Fin:      b[0]&1 != 0,
		Data:     b[n:end:end],
	}, end, nil
}

// Append appends the frame to b.
func (f *StreamFrame) Append(b []byte) []byte {
	t := byte(FrameStream)
	if f.Fin {
		t = byte(FrameStreamFin)
	}
	b = AppendVarint(append(b, t), f.StreamID)
	b = AppendVarint(b, f.Offset)
	b = AppendVarint(b, uint64(len(f.Data)))
	return append(b, f.Data...)
}

// Length returns the encoded length of the frame.
func (f *StreamFrame) Length() int {
	return StreamFrameOverhead(f.StreamID, f.Offset, len(f.Data)) + len(f.Data)
}

// StreamFrameOverhead returns the bytes a STREAM frame for streamID at offset
// spends on everything but its dataLen bytes of data: the type and the
// stream ID, offset and length varints.
func StreamFrameOverhead(streamID, offset uint64, dataLen int) int {
	return 1 + VarintLen(streamID) + VarintLen(offset) + VarintLen(uint64(dataLen))
}

// MaxStreamDataLen returns the largest n such that a STREAM frame for
// streamID at offset carrying n bytes fits in room bytes, so the packetizer
// can fill a packet exactly. The length varint grows with n, so the answer
// is not simply room minus a constant: at room = overhead + 16385, for
// example, 16383 bytes fit (2-byte length) but 16384 do not (4-byte length).
//
// It returns 0 when no data fits; whether an empty frame (a bare FIN) fits
// is StreamFrameOverhead(streamID, offset, 0) <= room.
func MaxStreamDataLen(streamID, offset uint64, room int) int {
	avail := room - 1 - VarintLen(streamID) - VarintLen(offset)
	best := 0
	// Try each length-varint size; within size s, n is capped by both the
	// room left and the largest value an s-byte varint holds.
	for _, s := range [...]struct {
		size int
		max  uint64
	}{{1, maxVarint1}, {2, maxVarint2}, {4, maxVarint4}, {8, MaxVarint}} {
		n := avail - s.size
		if n <= best {
			break // larger length varints only leave less room
		}
		if uint64(n) > s.max {
			n = int(s.max)
		}
		best = max(best, n)
	}
	// Stream data ends at offset MaxVarint at the latest (§2).
	if offset <= MaxVarint && uint64(best) > MaxVarint-offset {
		best = int(MaxVarint - offset)
	}
	return best
}
