package wire

import "encoding/binary"

// Variable-length integers, RFC 9000 §16. The two most significant bits of
// the first byte give the encoded length (00 = 1, 01 = 2, 10 = 4, 11 = 8
// bytes); the remaining bits hold the value, big-endian.
//
//	1 byte:  0b00xxxxxx                      values 0 ..= 63
//	2 bytes: 0b01xxxxxx xxxxxxxx             values 0 ..= 16383
//	4 bytes: 0b10xxxxxx + 3 bytes            values 0 ..= 2^30-1
//	8 bytes: 0b11xxxxxx + 7 bytes            values 0 ..= 2^62-1
//
// Senders use the shortest form; receivers accept any form (§ Conventions).

// MaxVarint is the largest value a varint can hold, 2^62-1.
const MaxVarint = 1<<62 - 1

const (
	maxVarint1 = 1<<6 - 1
	maxVarint2 = 1<<14 - 1
	maxVarint4 = 1<<30 - 1
)

// VarintLen returns the length of the shortest encoding of v. It returns 8
// for values above MaxVarint, which AppendVarint refuses to encode.
func VarintLen(v uint64) int {
	switch {
	case v <= maxVarint1:
		return 1
	case v <= maxVarint2:
		return 2
	case v <= maxVarint4:
		return 4
	default:
		return 8
	}
}

// AppendVarint appends the shortest encoding of v to b.
//
// It panics if v > MaxVarint: every value this package encodes is bounded by
// the protocol well below that, so a larger one is a bug in the caller, not
// something to put on the wire.
func AppendVarint(b []byte, v uint64) []byte {
	switch {
	case v <= maxVarint1:
		return append(b, byte(v))
	case v <= maxVarint2:
		return append(b, byte(v>>8)|0x40, byte(v))
	case v <= maxVarint4:
		return binary.BigEndian.AppendUint32(b, uint32(v)|0x80<<24)
	case v <= MaxVarint:
		return binary.BigEndian.AppendUint64(b, v|0xc0<<56)
	default:
		panic("wire: varint value exceeds 2^62-1")
	}
}

// ParseVarint decodes the varint at the start of b and returns its value and
// encoded length. It accepts non-shortest encodings. It returns ErrTruncated
// if b ends inside the varint.
func ParseVarint(b []byte) (v uint64, n int, err error) {
	if len(b) == 0 {
		return 0, 0, ErrTruncated
	}
	switch b[0] >> 6 {
	case 0:
		return uint64(b[0]), 1, nil
	case 1:
		if len(b) < 2 {
			return 0, 0, ErrTruncated
		}
		return uint64(b[0]&0x3f)<<8 | uint64(b[1]), 2, nil
	case 2:
		if len(b) < 4 {
			return 0, 0, ErrTruncated
		}
		return uint64(binary.BigEndian.Uint32(b) & maxVarint4), 4, nil
	default:
		if len(b) < 8 {
			return 0, 0, ErrTruncated
		}
		return binary.BigEndian.Uint64(b) & MaxVarint, 8, nil
	}
}
