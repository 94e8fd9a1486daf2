package ackhandler

import (
	"math/rand/v2"
	"slices"
	"testing"
	"time"
)

// rangesOf builds the descending ranges of a set of packet numbers.
func rangesOf(set map[uint64]bool) []Range {
	pns := make([]uint64, 0, len(set))
	for pn := range set {
		pns = append(pns, pn)
	}
	slices.Sort(pns)
	var out []Range
	for _, pn := range slices.Backward(pns) {
		if n := len(out); n > 0 && out[n-1].Smallest == pn+1 {
			out[n-1].Smallest = pn
			continue
		}
		out = append(out, Range{pn, pn})
	}
	return out
}

// refTracker is the obvious implementation of the tracker's bound: a set of
// packet numbers; when it spans more than MaxAckRanges ranges, everything
// up to the top of the oldest is forgotten and from then on a duplicate.
type refTracker struct {
	seen        map[uint64]bool
	ignoreBelow uint64
}

func (r *refTracker) receive(pn uint64) (duplicate bool) {
	if pn < r.ignoreBelow || r.seen[pn] {
		return true
	}
	r.seen[pn] = true
	if rs := rangesOf(r.seen); len(rs) > MaxAckRanges {
		r.ignoreBelow = rs[MaxAckRanges].Largest + 1
		for p := range r.seen {
			if p < r.ignoreBelow {
				delete(r.seen, p)
			}
		}
	}
	return false
}

func TestTrackerRangesRandomOrder(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 7))
	for trial := range 200 {
		tr := NewReceivedPacketTracker(25*ms, 2)
		// Up to 300 packets, a fifth missing, arriving in a random
		// order within a sliding window (like a reordering network),
		// some twice.
		n := 20 + rng.IntN(280)
		var arrivals []uint64
		for pn := range uint64(n) {
			if rng.IntN(5) != 0 {
				arrivals = append(arrivals, pn)
			}
		}
		window := 1 + rng.IntN(20)
		for i := range arrivals {
			j := min(i+rng.IntN(window), len(arrivals)-1)
			arrivals[i], arrivals[j] = arrivals[j], arrivals[i]
		}
		ref := refTracker{seen: map[uint64]bool{}}
		now := t0
		for i, pn := range arrivals {
			now = now.Add(time.Microsecond)
			if got, want := tr.ReceivedPacket(pn, now, true), ref.receive(pn); got != want {
				t.Fatalf("trial %d: packet %d duplicate=%v, want %v", trial, pn, got, want)
			}
			if i%7 == 3 {
				// A repeat of a packet already received.
				old := arrivals[rng.IntN(i+1)]
				if !tr.ReceivedPacket(old, now, true) || !ref.receive(old) {
					t.Fatalf("trial %d: repeat of %d not reported duplicate", trial, old)
				}
			}
		}
		want := rangesOf(ref.seen)
		got, _ := tr.AppendAckRanges(nil, now)
		if !slices.Equal(got, want) {
			t.Fatalf("trial %d: ranges\n got %v\nwant %v", trial, got, want)
		}
	}
}

func TestTrackerAckDelay(t *testing.T) {
	tr := NewReceivedPacketTracker(25*ms, 2)
	if !tr.AckDeadline().IsZero() || tr.HasNewAck() || tr.ShouldSendAck(t0) {
		t.Fatal("ACK pending before any packet")
	}
	tr.ReceivedPacket(0, t0, true)
	if got := tr.AckDeadline(); !got.Equal(t0.Add(25 * ms)) {
		t.Fatalf("deadline %v, want +25ms", got.Sub(t0))
	}
	if tr.ShouldSendAck(t0.Add(25*ms - 1)) {
		t.Fatal("ACK due before max_ack_delay")
	}
	if !tr.ShouldSendAck(t0.Add(25 * ms)) {
		t.Fatal("ACK not due at max_ack_delay")
	}
	ranges, delay := tr.AppendAckRanges(nil, t0.Add(25*ms))
	if delay != 25*ms || !slices.Equal(ranges, []Range{{0, 0}}) {
		t.Fatalf("ranges %v delay %v", ranges, delay)
	}
	if !tr.AckDeadline().IsZero() || tr.HasNewAck() {
		t.Fatal("still pending after the ACK was sent")
	}
}

func TestTrackerAckEvery(t *testing.T) {
	for _, every := range []int{1, 2, 10} {
		tr := NewReceivedPacketTracker(25*ms, every)
		for pn := range uint64(every) {
			if tr.ShouldSendAck(t0) {
				t.Fatalf("ackEvery %d: due after %d packets", every, pn)
			}
			tr.ReceivedPacket(pn, t0, true)
		}
		if !tr.ShouldSendAck(t0) || !tr.AckDeadline().Equal(t0) {
			t.Fatalf("ackEvery %d: not due after %d packets", every, every)
		}
	}
}

func TestTrackerNonAckEliciting(t *testing.T) {
	tr := NewReceivedPacketTracker(25*ms, 2)
	for pn := range uint64(5) {
		tr.ReceivedPacket(pn, t0, false)
	}
	if tr.ShouldSendAck(t0.Add(time.Hour)) || !tr.AckDeadline().IsZero() {
		t.Fatal("non-ack-eliciting packets caused an ACK")
	}
	if !tr.HasNewAck() {
		t.Fatal("received packets not offered for piggybacking")
	}
	ranges, _ := tr.AppendAckRanges(nil, t0)
	if !slices.Equal(ranges, []Range{{0, 4}}) {
		t.Fatalf("ranges %v", ranges)
	}
}

func TestTrackerImmediateAckOnReordering(t *testing.T) {
	tr := NewReceivedPacketTracker(25*ms, 10)
	tr.ReceivedPacket(0, t0, true)
	tr.AppendAckRanges(nil, t0)
	// A gap before the new packet: ACK at once.
	tr.ReceivedPacket(2, t0.Add(ms), true)
	if !tr.ShouldSendAck(t0.Add(ms)) {
		t.Fatal("no immediate ACK for a gap")
	}
	tr.AppendAckRanges(nil, t0.Add(ms))
	// The missing packet arrives late: ACK at once again.
	tr.ReceivedPacket(1, t0.Add(2*ms), true)
	if !tr.ShouldSendAck(t0.Add(2 * ms)) {
		t.Fatal("no immediate ACK for a late packet")
	}
	ranges, delay := tr.AppendAckRanges(nil, t0.Add(2*ms))
	if !slices.Equal(ranges, []Range{{0, 2}}) || delay != ms {
		t.Fatalf("ranges %v delay %v", ranges, delay)
	}
	// In order again: no immediate ACK.
	tr.ReceivedPacket(3, t0.Add(3*ms), true)
	if tr.ShouldSendAck(t0.Add(3 * ms)) {
		t.Fatal("immediate ACK for an in-order packet")
	}
}

func TestTrackerBoundedRanges(t *testing.T) {
	tr := NewReceivedPacketTracker(25*ms, 2)
	// Every other packet: 100 ranges' worth.
	for pn := uint64(0); pn < 200; pn += 2 {
		tr.ReceivedPacket(pn, t0, true)
	}
	ranges, _ := tr.AppendAckRanges(nil, t0)
	if len(ranges) != MaxAckRanges {
		t.Fatalf("%d ranges, want %d", len(ranges), MaxAckRanges)
	}
	if ranges[0] != (Range{198, 198}) || ranges[MaxAckRanges-1] != (Range{136, 136}) {
		t.Fatalf("kept %v … %v, want the newest", ranges[0], ranges[MaxAckRanges-1])
	}
	// What fell off is treated as seen.
	if !tr.ReceivedPacket(3, t0, true) {
		t.Fatal("packet below the kept ranges not reported duplicate")
	}
	// Filling a gap inside the kept ranges still works.
	if tr.ReceivedPacket(197, t0, true) {
		t.Fatal("packet 197 reported duplicate")
	}
	ranges, _ = tr.AppendAckRanges(ranges[:0], t0)
	if ranges[0] != (Range{196, 198}) {
		t.Fatalf("first range %v", ranges[0])
	}
}

func TestTrackerIgnoreBelow(t *testing.T) {
	tr := NewReceivedPacketTracker(25*ms, 2)
	for _, pn := range []uint64{0, 1, 2, 5, 6, 9} {
		tr.ReceivedPacket(pn, t0, true)
	}
	tr.IgnoreBelow(6)
	ranges, _ := tr.AppendAckRanges(nil, t0)
	if !slices.Equal(ranges, []Range{{9, 9}, {6, 6}}) {
		t.Fatalf("ranges %v", ranges)
	}
	if !tr.ReceivedPacket(3, t0, true) {
		t.Fatal("packet below IgnoreBelow not a duplicate")
	}
	tr.IgnoreBelow(100)
	if ranges, _ := tr.AppendAckRanges(nil, t0); len(ranges) != 0 || tr.HasNewAck() {
		t.Fatalf("ranges %v after ignoring everything", ranges)
	}
}

func TestTrackerNoAllocs(t *testing.T) {
	tr := NewReceivedPacketTracker(25*ms, 2)
	dst := make([]Range, 0, MaxAckRanges)
	pn := uint64(0)
	now := t0
	step := func() {
		// In order with a loss every 10 packets.
		for range 2 {
			if pn%10 != 9 {
				tr.ReceivedPacket(pn, now, true)
			}
			pn++
		}
		now = now.Add(ms)
		dst, _ = tr.AppendAckRanges(dst[:0], now)
	}
	for range 100 {
		step()
	}
	if n := testing.AllocsPerRun(1000, step); n != 0 {
		t.Fatalf("%v allocations per step", n)
	}
}

func BenchmarkReceivedPacket(b *testing.B) {
	tr := NewReceivedPacketTracker(25*ms, 2)
	dst := make([]Range, 0, MaxAckRanges)
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		pn := uint64(i)
		if pn%100 == 50 {
			continue // 1 % loss
		}
		tr.ReceivedPacket(pn, t0, true)
		if tr.ShouldSendAck(t0) {
			dst, _ = tr.AppendAckRanges(dst[:0], t0)
		}
	}
}
