package ackhandler

import "time"

// MaxAckRanges bounds the ranges the tracker keeps and reports. Older
// ranges fall off: their packets were acknowledged many times already.
const MaxAckRanges = 32

// ReceivedPacketTracker records the packet numbers received and decides what
// to acknowledge and when (RFC 9000 §13.2). Ranges are kept newest first in a
// bounded slice, so recording a packet does not allocate.
//
// An ACK is due at once when ackEvery ack-eliciting packets arrived since the
// last one, or when a packet arrived out of order (RFC 9000 §13.2.1: it
// helps the sender's loss detection); otherwise within maxAckDelay of the
// first unacknowledged ack-eliciting packet. Non-ack-eliciting packets are
// recorded but never cause an ACK by themselves.
//
// It is not safe for concurrent use: the session loop owns it.
type ReceivedPacketTracker struct {
	maxAckDelay time.Duration
	ackEvery    int

	ranges      []Range // descending, disjoint, non-adjacent; at most MaxAckRanges
	ignoreBelow uint64

	largest     uint64 // largest received; valid when len(ranges) > 0 or hasLargest
	hasLargest  bool
	largestTime time.Time // when largest arrived

	// largestAckEliciting is the largest ack-eliciting number received.
	largestAckEliciting    uint64
	hasLargestAckEliciting bool

	newSinceAck       bool // anything received since the last ACK
	elicitingSinceAck int
	ackQueued         bool      // an ACK is due now
	ackDeadline       time.Time // zero: none pending
}

// NewReceivedPacketTracker returns a tracker that delays ACKs by at most
// maxAckDelay and acknowledges every ackEvery-th ack-eliciting packet at once
// (ackEvery ≤ 0 means 2, RFC 9000's recommendation; larger values send
// fewer ACKs, which saves the sender's and receiver's CPU at high rates).
func NewReceivedPacketTracker(maxAckDelay time.Duration, ackEvery int) *ReceivedPacketTracker {
	if ackEvery <= 0 {
		ackEvery = 2
	}
	return &ReceivedPacketTracker{
		maxAckDelay: maxAckDelay,
		ackEvery:    ackEvery,
		ranges:      make([]Range, 0, MaxAckRanges+1),
	}
}

// ReceivedPacket records packet pn, received at now. It reports whether pn
// is a duplicate (already received, or below IgnoreBelow); duplicates change
// nothing and must be dropped.
func (t *ReceivedPacketTracker) ReceivedPacket(pn uint64, now time.Time, ackEliciting bool) (duplicate bool) {
	if pn < t.ignoreBelow || !t.insert(pn) {
		return true
	}
	if !t.hasLargest || pn > t.largest {
		t.largest = pn
		t.largestTime = now
		t.hasLargest = true
	}
	t.newSinceAck = true
	if !ackEliciting {
		return false
	}

	// Out of order (RFC 9000 §13.2.1): below an ack-eliciting packet
	// already received, or above the largest with a gap before it.
	if t.hasLargestAckEliciting {
		if pn < t.largestAckEliciting {
			t.ackQueued = true
		} else if pn-t.largestAckEliciting > 1 && !t.contains(pn-1) {
			t.ackQueued = true
		}
	}
	if !t.hasLargestAckEliciting || pn > t.largestAckEliciting {
		t.largestAckEliciting = pn
		t.hasLargestAckEliciting = true
	}

	t.elicitingSinceAck++
	if t.elicitingSinceAck >= t.ackEvery {
		t.ackQueued = true
	}
	if t.ackDeadline.IsZero() {
		t.ackDeadline = now.Add(t.maxAckDelay)
	}
	if t.ackQueued {
		t.ackDeadline = now
	}
	return false
}

// contains reports whether pn has been recorded (and is still tracked).
func (t *ReceivedPacketTracker) contains(pn uint64) bool {
	for _, r := range t.ranges {
		if pn > r.Largest {
			return false
		}
		if pn >= r.Smallest {
			return true
		}
	}
	return false
}

// insert adds pn to the ranges; false if it was already there.
func (t *ReceivedPacketTracker) insert(pn uint64) bool {
	// Newest first: in-order arrival touches ranges[0] only. (Written
	// without r.Largest+1, which would overflow at the top of the space.)
	for i := range t.ranges {
		r := &t.ranges[i]
		switch {
		case pn > r.Largest && pn-r.Largest > 1:
			t.insertAt(i, Range{pn, pn})
			return true
		case pn > r.Largest:
			r.Largest = pn // i == 0: nothing above to merge with
			return true
		case pn >= r.Smallest:
			return false
		case pn == r.Smallest-1:
			r.Smallest = pn
			// Merge with the next (older) range if they now touch.
			if i+1 < len(t.ranges) && t.ranges[i+1].Largest+1 == pn {
				r.Smallest = t.ranges[i+1].Smallest
				t.ranges = append(t.ranges[:i+1], t.ranges[i+2:]...)
			}
			return true
		}
	}
	if len(t.ranges) == MaxAckRanges {
		// Older than everything kept, and no room: it falls off at
		// once, taking what is below it along.
		t.ignoreBelow = pn + 1
		return true
	}
	t.ranges = append(t.ranges, Range{pn, pn})
	return true
}

func (t *ReceivedPacketTracker) insertAt(i int, r Range) {
	t.ranges = append(t.ranges, Range{})
	copy(t.ranges[i+1:], t.ranges[i:])
	t.ranges[i] = r
	if len(t.ranges) > MaxAckRanges {
		// The oldest range falls off. Packets at or below it are
		// treated as duplicates from now on: the ranges could no longer
		// tell them apart, and the sender has long declared the
		// missing ones lost.
		t.ignoreBelow = max(t.ignoreBelow, t.ranges[MaxAckRanges].Largest+1)
		t.ranges = t.ranges[:MaxAckRanges]
	}
}

// IgnoreBelow forgets everything below pn and treats such packets as
// duplicates from now on: the peer has seen them acknowledged (RFC 9000
// §13.2.4).
func (t *ReceivedPacketTracker) IgnoreBelow(pn uint64) {
	if pn <= t.ignoreBelow {
		return
	}
	t.ignoreBelow = pn
	for i := range t.ranges {
		r := &t.ranges[i]
		if r.Largest < pn {
			t.ranges = t.ranges[:i]
			return
		}
		if r.Smallest < pn {
			r.Smallest = pn
			t.ranges = t.ranges[:i+1]
			return
		}
	}
}

// AckDeadline returns when an ACK must be sent; zero when none is pending.
func (t *ReceivedPacketTracker) AckDeadline() time.Time { return t.ackDeadline }

// ShouldSendAck reports whether an ACK is due at now.
func (t *ReceivedPacketTracker) ShouldSendAck(now time.Time) bool {
	return t.ackQueued || (!t.ackDeadline.IsZero() && !now.Before(t.ackDeadline))
}

// HasNewAck reports whether anything arrived since the last ACK, so that an
// outgoing packet may carry one even if none is due yet.
func (t *ReceivedPacketTracker) HasNewAck() bool { return t.newSinceAck && len(t.ranges) > 0 }

// AppendAckRanges appends the ranges to acknowledge to dst, largest first,
// and returns them with the ACK delay to report: how long ago the largest
// arrived. It marks the ACK as sent. With nothing received it returns dst
// unchanged.
func (t *ReceivedPacketTracker) AppendAckRanges(dst []Range, now time.Time) (ranges []Range, ackDelay time.Duration) {
	if len(t.ranges) == 0 {
		return dst, 0
	}
	dst = append(dst, t.ranges...)
	if t.largest == t.ranges[0].Largest {
		ackDelay = max(now.Sub(t.largestTime), 0)
	}
	t.newSinceAck = false
	t.elicitingSinceAck = 0
	t.ackQueued = false
	t.ackDeadline = time.Time{}
	return dst, ackDelay
}
