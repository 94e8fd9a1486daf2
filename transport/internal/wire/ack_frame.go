package wire

import (
	"math"
	"time"
)

// ACK frame, §2, with RFC 9000 §19.3.1 ranges:
//
//	type (0x02) | largest (v) | ack delay µs (v) | range count (v) |
//	first range (v) | range count × [gap (v) | length (v)]
//
// The first range covers [largest − first range, largest]. Each following
// range's largest packet is gap + 2 below the previous range's smallest
// (gap + 1 packets are missing between them, at least one), and the range
// covers length + 1 packets. Ranges are therefore strictly descending and
// never overlap or touch by construction; the only possible error is going
// below packet 0.

// MaxAckRanges is the most ranges an ACK frame may carry (range count at
// most MaxAckRanges − 1). It bounds the work one frame can demand of the
// receiver; Append sends only the MaxAckRanges highest ranges, which is
// always a correct (if less complete) acknowledgement.
const MaxAckRanges = 256

// AckRange is an inclusive range of acknowledged packet numbers.
type AckRange struct {
	Smallest, Largest uint64
}

// Len returns the number of packets in the range.
func (r AckRange) Len() uint64 { return r.Largest - r.Smallest + 1 }

// AckFrame is an ACK frame.
type AckFrame struct {
	// Ranges are the acknowledged packet numbers in descending order:
	// Ranges[0].Largest is the largest acknowledged packet, and
	// Ranges[i+1].Largest + 1 < Ranges[i].Smallest. A frame to Append must
	// have at least one range.
	Ranges []AckRange
	// DelayMicros is how long, in microseconds, the sender held the ACK
	// after receiving the largest acknowledged packet, so the peer can
	// subtract it from its RTT sample.
	DelayMicros uint64
}

// ParseAckFrame decodes the ACK frame at the start of b into f and returns
// its length. It reuses the capacity of f.Ranges, so a receive loop that
// keeps one AckFrame parses ACKs without allocating. On error f.Ranges is
// empty.
func ParseAckFrame(b []byte, f *AckFrame) (int, error) {
	f.Ranges = f.Ranges[:0]
	n, err := parseAckFrame(b, f)
	if err != nil {
		f.Ranges = f.Ranges[:0]
		f.DelayMicros = 0
		return 0, err
	}
	return n, nil
}

func parseAckFrame(b []byte, f *AckFrame) (int, error) {
	if err := checkFrameType(b, FrameAck); err != nil {
		return 0, err
	}
	n := 1
	largest, l, err := ParseVarint(b[n:])
	if err != nil {
		return 0, err
	}
	n += l
	f.DelayMicros, l, err = ParseVarint(b[n:])
	if err != nil {
		return 0, err
	}
	n += l
	count, l, err := ParseVarint(b[n:])
	if err != nil {
		return 0, err
	}
	n += l
	// Checked before the loop so that a huge count costs nothing. Every
	// range needs at least two bytes, which bounds count by the data too.
	if count > MaxAckRanges-1 {
		return 0, ErrTooManyAckRanges
	}
	if count > uint64(len(b)-n)/2 {
		return 0, ErrTruncated
	}
	first, l, err := ParseVarint(b[n:])
	if err != nil {
		return 0, err
	}
	n += l
	if first > largest {
		return 0, ErrAckRange
	}
	if cap(f.Ranges) < int(count)+1 {
		f.Ranges = make([]AckRange, 0, count+1)
	}
	smallest := largest - first
	f.Ranges = append(f.Ranges, AckRange{Smallest: smallest, Largest: largest})
	for range count {
		gap, l, err := ParseVarint(b[n:])
		if err != nil {
			return 0, err
		}
		n += l
		length, l, err := ParseVarint(b[n:])
		if err != nil {
			return 0, err
		}
		n += l
		// gap ≤ 2^62-1, so gap+2 cannot overflow.
		if gap+2 > smallest {
			return 0, ErrAckRange
		}
		largest = smallest - gap - 2
		if length > largest {
			return 0, ErrAckRange
		}
		smallest = largest - length
		f.Ranges = append(f.Ranges, AckRange{Smallest: smallest, Largest: largest})
	}
	return n, nil
}

// ranges returns the ranges that Append sends.
func (f *AckFrame) ranges() []AckRange {
	if len(f.Ranges) > MaxAckRanges {
		return f.Ranges[:MaxAckRanges]
	}
	return f.Ranges
}

// Append appends the frame to b. The ranges must be valid as documented on
// Ranges; Append panics if there are none, since an ACK frame cannot say
// that.
func (f *AckFrame) Append(b []byte) []byte {
	rs := f.ranges()
	if len(rs) == 0 {
		panic("wire: ACK frame without ranges")
	}
	b = AppendVarint(append(b, byte(FrameAck)), rs[0].Largest)
	b = AppendVarint(b, f.DelayMicros)
	b = AppendVarint(b, uint64(len(rs)-1))
	b = AppendVarint(b, rs[0].Largest-rs[0].Smallest)
	for i := 1; i < len(rs); i++ {
		b = AppendVarint(b, rs[i-1].Smallest-rs[i].Largest-2)
		b = AppendVarint(b, rs[i].Largest-rs[i].Smallest)
	}
	return b
}

// Length returns the encoded length of the frame.
func (f *AckFrame) Length() int {
	rs := f.ranges()
	if len(rs) == 0 {
		return 0
	}
	n := 1 + VarintLen(rs[0].Largest) + VarintLen(f.DelayMicros) +
		VarintLen(uint64(len(rs)-1)) + VarintLen(rs[0].Largest-rs[0].Smallest)
	for i := 1; i < len(rs); i++ {
		n += VarintLen(rs[i-1].Smallest-rs[i].Largest-2) + VarintLen(rs[i].Largest-rs[i].Smallest)
	}
	return n
}

// LargestAcked returns the largest acknowledged packet number, or 0 if the
// frame has no ranges.
func (f *AckFrame) LargestAcked() uint64 {
	if len(f.Ranges) == 0 {
		return 0
	}
	return f.Ranges[0].Largest
}

// Acks reports whether the frame acknowledges packet pn. It binary-searches
// the descending ranges.
func (f *AckFrame) Acks(pn uint64) bool {
	// Find the first range whose smallest is <= pn; smallest values
	// descend, so the predicate is monotone.
	lo, hi := 0, len(f.Ranges)
	for lo < hi {
		m := int(uint(lo+hi) >> 1)
		if f.Ranges[m].Smallest > pn {
			lo = m + 1
		} else {
			hi = m
		}
	}
	return lo < len(f.Ranges) && pn <= f.Ranges[lo].Largest
}

// AckDelay returns DelayMicros as a duration, saturating rather than
// overflowing for absurd values from a broken peer.
func (f *AckFrame) AckDelay() time.Duration {
	if f.DelayMicros > math.MaxInt64/uint64(time.Microsecond) {
		return math.MaxInt64
	}
	return time.Duration(f.DelayMicros) * time.Microsecond
}
