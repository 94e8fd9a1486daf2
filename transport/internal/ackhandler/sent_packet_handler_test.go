package ackhandler

import (
	"errors"
	"testing"
	"time"

	"github.com/parley-p2p/parley/transport/internal/congestion"
)

const ms = time.Millisecond

var t0 = time.Unix(1_000_000, 0)

// recorder counts what happens to every frame, keyed by its Offset.
type recorder struct {
	acked map[uint64]int
	lost  map[uint64]int
}

func newRecorder() *recorder { return &recorder{acked: map[uint64]int{}, lost: map[uint64]int{}} }

func (r *recorder) OnFrameAcked(f Frame) { r.acked[f.Offset]++ }
func (r *recorder) OnFrameLost(f Frame)  { r.lost[f.Offset]++ }

// ccRecorder wraps a real controller and records what it was told.
type ccRecorder struct {
	congestion.Controller
	acked, lost []uint64
	acks        int
	rtos        int
}

func (c *ccRecorder) OnPacketAcked(now time.Time, pn uint64, b, prior int) {
	c.acked = append(c.acked, pn)
	c.Controller.OnPacketAcked(now, pn, b, prior)
}

func (c *ccRecorder) OnCongestionEvent(now time.Time, pn uint64, b, prior int) {
	c.lost = append(c.lost, pn)
	c.Controller.OnCongestionEvent(now, pn, b, prior)
}

func (c *ccRecorder) OnAck(now time.Time, prior, inflight int, rs congestion.RateSample) {
	c.acks++
	c.Controller.OnAck(now, prior, inflight, rs)
}

func (c *ccRecorder) OnRetransmissionTimeout(now time.Time) {
	c.rtos++
	c.Controller.OnRetransmissionTimeout(now)
}

type fixture struct {
	h   *SentPacketHandler
	rtt *congestion.RTTStats
	cc  *ccRecorder
	cb  *recorder
}

func newFixture(t *testing.T, opts ...Option) *fixture {
	t.Helper()
	rtt := &congestion.RTTStats{}
	rtt.SetMaxAckDelay(25 * ms)
	cc := &ccRecorder{Controller: congestion.NewController(congestion.KindCUBIC, rtt, 1000)}
	cb := newRecorder()
	h := NewSentPacketHandler(cc, rtt, cb, append([]Option{WithMaxDatagramSize(1000)}, opts...)...)
	return &fixture{h: h, rtt: rtt, cc: cc, cb: cb}
}

// send sends packet pn at now with one frame whose Offset is pn.
func (f *fixture) send(now time.Time, pn uint64) {
	f.h.SentPacket(now, pn, 1000, true, []Frame{{Kind: 1, Offset: pn, Length: 1000}})
}

func (f *fixture) ack(t *testing.T, now time.Time, delay time.Duration, ranges ...Range) {
	t.Helper()
	if err := f.h.ReceivedAck(now, ranges, delay); err != nil {
		t.Fatalf("ReceivedAck(%v): %v", ranges, err)
	}
}

func TestNextPacketNumber(t *testing.T) {
	f := newFixture(t)
	for want := range uint64(5) {
		if got := f.h.NextPacketNumber(); got != want {
			t.Fatalf("NextPacketNumber = %d, want %d", got, want)
		}
	}
}

func TestAckSomePackets(t *testing.T) {
	f := newFixture(t)
	for pn := range uint64(10) {
		f.send(t0, pn)
	}
	if got := f.h.BytesInFlight(); got != 10000 {
		t.Fatalf("in flight %d, want 10000", got)
	}
	// Acknowledge 6..9 and 0..1: 2..5 are still in flight, and 2 is
	// lost by the packet threshold (9 ≥ 2+3) — so are 3..5.
	f.ack(t, t0.Add(100*ms), 0, Range{6, 9}, Range{0, 1})
	for pn := range uint64(10) {
		wantAcked := pn <= 1 || pn >= 6
		if got := f.cb.acked[pn]; got != b2i(wantAcked) {
			t.Errorf("frame %d acked %d times", pn, got)
		}
		if got := f.cb.lost[pn]; got != b2i(!wantAcked) {
			t.Errorf("frame %d lost %d times", pn, got)
		}
	}
	if got := f.h.BytesInFlight(); got != 0 {
		t.Fatalf("in flight %d, want 0", got)
	}
	if f.rtt.LatestRTT() != 100*ms {
		t.Fatalf("RTT sample %v, want 100ms", f.rtt.LatestRTT())
	}
	if len(f.cc.acked) != 6 || len(f.cc.lost) != 4 || f.cc.acks != 1 {
		t.Fatalf("controller saw acked %v lost %v, %d OnAck", f.cc.acked, f.cc.lost, f.cc.acks)
	}
	st := f.h.Stats()
	if st.PacketsSent != 10 || st.PacketsAcked != 6 || st.PacketsLost != 4 || st.FramesLost != 4 {
		t.Fatalf("stats %+v", st)
	}
}

func b2i(b bool) int {
	if b {
		return 1
	}
	return 0
}

func TestBytesInFlightAccounting(t *testing.T) {
	f := newFixture(t)
	for pn := range uint64(4) {
		f.send(t0, pn)
	}
	// A pure ACK is not in flight.
	f.h.SentPacket(t0, 4, 50, false, nil)
	f.send(t0, 5)
	if got := f.h.BytesInFlight(); got != 5000 {
		t.Fatalf("in flight %d, want 5000", got)
	}
	f.ack(t, t0.Add(10*ms), 0, Range{0, 1})
	if got := f.h.BytesInFlight(); got != 3000 {
		t.Fatalf("in flight %d, want 3000", got)
	}
	f.ack(t, t0.Add(11*ms), 0, Range{4, 5}, Range{0, 3})
	if got := f.h.BytesInFlight(); got != 0 {
		t.Fatalf("in flight %d, want 0", got)
	}
	if !f.h.LossDetectionDeadline().IsZero() {
		t.Fatal("timer armed with nothing in flight")
	}
}

func TestPacketThresholdLoss(t *testing.T) {
	f := newFixture(t)
	for pn := range uint64(5) {
		f.send(t0, pn)
	}
	f.ack(t, t0.Add(50*ms), 0, Range{3, 3})
	// 3 ≥ 0+3: packet 0 is lost; 1 and 2 are within the threshold.
	if f.cb.lost[0] != 1 || f.cb.lost[1] != 0 || f.cb.lost[2] != 0 {
		t.Fatalf("lost after ack of 3: %v", f.cb.lost)
	}
	f.ack(t, t0.Add(51*ms), 0, Range{4, 4}, Range{3, 3})
	if f.cb.lost[1] != 1 || f.cb.lost[2] != 0 {
		t.Fatalf("lost after ack of 4: %v", f.cb.lost)
	}
	if f.h.LossDetectionDeadline().IsZero() {
		t.Fatal("no time-threshold timer for packet 2")
	}
}

// establishRTT gives the handler an RTT of exactly rtt.
func (f *fixture) establishRTT(t *testing.T, now time.Time, pn uint64, rtt time.Duration) time.Time {
	t.Helper()
	f.send(now, pn)
	now = now.Add(rtt)
	f.ack(t, now, 0, Range{pn, pn})
	return now
}

func TestTimeThresholdLoss(t *testing.T) {
	f := newFixture(t)
	now := f.establishRTT(t, t0, 0, 100*ms)
	now = f.establishRTT(t, now, 1, 100*ms)
	if f.rtt.SmoothedRTT() != 100*ms {
		t.Fatalf("srtt %v", f.rtt.SmoothedRTT())
	}
	sent2 := now
	f.send(now, 2)
	f.send(now.Add(1*ms), 3)
	now = now.Add(101 * ms)
	f.ack(t, now, 0, Range{3, 3})
	// Packet 2 is one below the largest acknowledged: only time can
	// condemn it, at 9/8 × 100 ms after it was sent.
	want := sent2.Add(9 * 100 * ms / 8)
	if got := f.h.LossDetectionDeadline(); !got.Equal(want) {
		t.Fatalf("deadline %v, want %v (sent + 112.5ms)", got.Sub(sent2), want.Sub(sent2))
	}
	if p := f.h.OnLossDetectionTimeout(want.Add(-time.Nanosecond)); p != 0 || f.cb.lost[2] != 0 {
		t.Fatalf("early timeout: probes %d lost %v", p, f.cb.lost)
	}
	if p := f.h.OnLossDetectionTimeout(want); p != 0 || f.cb.lost[2] != 1 {
		t.Fatalf("timeout: probes %d lost %v", p, f.cb.lost)
	}
	if f.h.BytesInFlight() != 0 || !f.h.LossDetectionDeadline().IsZero() {
		t.Fatalf("after loss: in flight %d deadline %v", f.h.BytesInFlight(), f.h.LossDetectionDeadline())
	}
	if len(f.cc.lost) != 1 || f.cc.lost[0] != 2 {
		t.Fatalf("controller told of losses %v", f.cc.lost)
	}
}

func TestPTOBackoff(t *testing.T) {
	f := newFixture(t)
	now := f.establishRTT(t, t0, 0, 100*ms)
	pto := f.rtt.PTO(true) // 100 + 4×50 + 25 ms
	if pto != 325*ms {
		t.Fatalf("PTO %v, want 325ms", pto)
	}
	f.send(now, 1)
	if got := f.h.LossDetectionDeadline(); !got.Equal(now.Add(pto)) {
		t.Fatalf("deadline %v after send, want %v", got.Sub(now), pto)
	}
	if p := f.h.OnLossDetectionTimeout(now.Add(pto - 1)); p != 0 {
		t.Fatalf("early PTO sent %d probes", p)
	}
	// First PTO: one probe; the next timeout is twice as long.
	now = now.Add(pto)
	if p := f.h.OnLossDetectionTimeout(now); p != 1 {
		t.Fatalf("first PTO: %d probes, want 1", p)
	}
	if !f.h.SendAllowed(now) || !f.h.NextSendTime(now).Equal(now) {
		t.Fatal("probe not allowed at once")
	}
	f.send(now, 2)
	if got := f.h.LossDetectionDeadline(); !got.Equal(now.Add(2 * pto)) {
		t.Fatalf("deadline %v after first PTO, want %v", got.Sub(now), 2*pto)
	}
	now = now.Add(2 * pto)
	if p := f.h.OnLossDetectionTimeout(now); p != 2 {
		t.Fatalf("second PTO: %d probes, want 2", p)
	}
	f.send(now, 3)
	f.send(now, 4)
	if got := f.h.LossDetectionDeadline(); !got.Equal(now.Add(4 * pto)) {
		t.Fatalf("deadline %v after second PTO, want %v", got.Sub(now), 4*pto)
	}
	if st := f.h.Stats(); st.PTOs != 2 {
		t.Fatalf("PTOs = %d", st.PTOs)
	}
	// An ACK resets the backoff.
	now = now.Add(10 * ms)
	f.ack(t, now, 0, Range{4, 4})
	f.send(now, 5)
	d := f.h.LossDetectionDeadline()
	if d.Sub(now) > f.rtt.PTO(true)+200*ms || d.Sub(now) < 0 {
		t.Fatalf("deadline after ACK %v, backoff not reset (PTO %v)", d.Sub(now), f.rtt.PTO(true))
	}
}

func TestQueueProbePacket(t *testing.T) {
	f := newFixture(t)
	f.send(t0, 0)
	f.send(t0, 1)
	if !f.h.QueueProbePacket() || f.cb.lost[0] != 1 {
		t.Fatalf("probe did not re-queue packet 0: %v", f.cb.lost)
	}
	if !f.h.QueueProbePacket() || f.cb.lost[1] != 1 {
		t.Fatalf("second probe did not re-queue packet 1: %v", f.cb.lost)
	}
	if f.h.QueueProbePacket() {
		t.Fatal("third probe found frames")
	}
	// Still in flight; when acknowledged, no frame is reported twice.
	if f.h.BytesInFlight() != 2000 {
		t.Fatalf("in flight %d", f.h.BytesInFlight())
	}
	f.ack(t, t0.Add(10*ms), 0, Range{0, 1})
	if len(f.cb.acked) != 0 || f.h.BytesInFlight() != 0 {
		t.Fatalf("acked %v in flight %d", f.cb.acked, f.h.BytesInFlight())
	}
}

func TestAckErrors(t *testing.T) {
	f := newFixture(t)
	if err := f.h.ReceivedAck(t0, []Range{{0, 0}}, 0); !errors.Is(err, ErrAckUnsent) {
		t.Fatalf("ACK before any send: %v", err)
	}
	f.send(t0, 1) // 0 is skipped
	f.send(t0, 3) // 2 is skipped
	cases := []struct {
		name   string
		ranges []Range
		unsent bool
	}{
		{"beyond largest sent", []Range{{4, 4}}, true},
		{"skipped number", []Range{{2, 3}}, true},
		{"skipped number in a lower range", []Range{{3, 3}, {1, 2}}, true},
		{"skipped first number", []Range{{0, 1}}, true},
		{"empty", nil, false},
		{"inverted", []Range{{3, 1}}, false},
		{"not descending", []Range{{0, 0}, {3, 3}}, false},
		{"overlapping", []Range{{1, 3}, {0, 1}}, false},
	}
	for _, c := range cases {
		err := f.h.ReceivedAck(t0.Add(ms), c.ranges, 0)
		if err == nil || errors.Is(err, ErrAckUnsent) != c.unsent {
			t.Errorf("%s: err %v", c.name, err)
		}
	}
	// Nothing changed.
	if f.h.BytesInFlight() != 2000 || len(f.cb.acked)+len(f.cb.lost) != 0 || f.rtt.HasMeasurement() {
		t.Fatalf("state changed by bad ACKs: in flight %d acked %v lost %v", f.h.BytesInFlight(), f.cb.acked, f.cb.lost)
	}
	f.ack(t, t0.Add(ms), 0, Range{3, 3}, Range{1, 1})
	if f.h.BytesInFlight() != 0 {
		t.Fatalf("in flight %d", f.h.BytesInFlight())
	}
}

func TestFramesReportedExactlyOnce(t *testing.T) {
	f := newFixture(t)
	now := t0
	for pn := range uint64(20) {
		f.send(now, pn)
	}
	now = now.Add(50 * ms)
	ranges := []Range{{10, 19}, {0, 4}}
	f.ack(t, now, 0, ranges...)
	f.ack(t, now.Add(ms), 0, ranges...) // the same ACK again
	// 5..9 were lost by the packet threshold. Now 7 turns up after all.
	f.ack(t, now.Add(2*ms), 0, Range{10, 19}, Range{7, 7}, Range{0, 4})
	for pn := range uint64(20) {
		a, l := f.cb.acked[pn], f.cb.lost[pn]
		if a+l != 1 {
			t.Errorf("frame %d: acked %d lost %d", pn, a, l)
		}
		if (pn >= 5 && pn <= 9) != (l == 1) {
			t.Errorf("frame %d: lost %d", pn, l)
		}
	}
	st := f.h.Stats()
	if st.SpuriousLosses != 1 {
		t.Fatalf("spurious losses %d, want 1", st.SpuriousLosses)
	}
	// The reordering seen (19−7 = 12 packets) raised the thresholds.
	if st.PacketThreshold != 13 || st.TimeThreshold != 10.0/8 {
		t.Fatalf("thresholds after spurious loss: %d packets, %v RTT", st.PacketThreshold, st.TimeThreshold)
	}
}

func TestReorderingAdaptationOff(t *testing.T) {
	f := newFixture(t, WithoutReorderingAdaptation())
	for pn := range uint64(10) {
		f.send(t0, pn)
	}
	f.ack(t, t0.Add(10*ms), 0, Range{9, 9})
	f.ack(t, t0.Add(11*ms), 0, Range{9, 9}, Range{0, 0})
	st := f.h.Stats()
	if st.SpuriousLosses != 1 || st.PacketThreshold != 3 || st.TimeThreshold != 9.0/8 {
		t.Fatalf("stats %+v", st)
	}
}

func TestPersistentCongestion(t *testing.T) {
	f := newFixture(t)
	now := f.establishRTT(t, t0, 0, 100*ms)
	// Grow the window a little so the collapse is visible.
	for pn := uint64(1); pn <= 20; pn++ {
		f.send(now, pn)
	}
	now = now.Add(100 * ms)
	f.ack(t, now, 0, Range{1, 20})
	before := f.cc.CongestionWindow()
	// Packets 21..30 are sent over 2 s, longer than 3 × (srtt + 4·rttvar +
	// max_ack_delay); none is acknowledged, then 31 is.
	pc := 3 * f.rtt.PTO(true)
	for pn := uint64(21); pn <= 30; pn++ {
		f.send(now, pn)
		now = now.Add(pc / 8)
	}
	f.send(now, 31)
	now = now.Add(100 * ms)
	f.ack(t, now, 0, Range{31, 31})
	if f.cc.rtos != 1 || f.h.Stats().PersistentCongestions != 1 {
		t.Fatalf("no persistent congestion: rtos %d", f.cc.rtos)
	}
	if got := f.cc.CongestionWindow(); got != 2*1000 || got >= before {
		t.Fatalf("window %d after persistent congestion (was %d), want the minimum 2000", got, before)
	}
}

func TestNoPersistentCongestionWhenSpanShort(t *testing.T) {
	f := newFixture(t)
	now := f.establishRTT(t, t0, 0, 100*ms)
	for pn := uint64(1); pn <= 10; pn++ {
		f.send(now, pn)
		now = now.Add(ms)
	}
	f.ack(t, now.Add(100*ms), 0, Range{10, 10})
	if f.cc.rtos != 0 {
		t.Fatal("persistent congestion from losses 9 ms apart")
	}
}

func TestAckOfAck(t *testing.T) {
	f := newFixture(t)
	f.send(t0, 0)
	f.RecordAckFrameAndSend(t0, 1, 41)
	f.RecordAckFrameAndSend(t0, 2, 57)
	if f.h.LowestUnconfirmedAck() != 0 {
		t.Fatal("confirmed before any ACK")
	}
	f.ack(t, t0.Add(10*ms), 0, Range{1, 1})
	if got := f.h.LowestUnconfirmedAck(); got != 42 {
		t.Fatalf("LowestUnconfirmedAck %d, want 42", got)
	}
	f.ack(t, t0.Add(11*ms), 0, Range{0, 2})
	if got := f.h.LowestUnconfirmedAck(); got != 58 {
		t.Fatalf("LowestUnconfirmedAck %d, want 58", got)
	}
}

func (f *fixture) RecordAckFrameAndSend(now time.Time, pn, largest uint64) {
	f.send(now, pn)
	f.h.RecordAckFrame(pn, largest)
}

func TestSendAllowedFollowsWindow(t *testing.T) {
	f := newFixture(t)
	pn := uint64(0)
	for f.h.SendAllowed(t0) {
		f.send(t0, pn)
		pn++
		if pn > 100 {
			t.Fatal("window never closed")
		}
	}
	// The initial window is 10 packets.
	if pn != 10 {
		t.Fatalf("sent %d packets in the initial window, want 10", pn)
	}
	f.ack(t, t0.Add(50*ms), 0, Range{0, 0})
	if !f.h.SendAllowed(t0.Add(50 * ms)) {
		t.Fatal("window did not open after an ACK")
	}
}

func TestPacingSpreadsSends(t *testing.T) {
	f := newFixture(t)
	now := f.establishRTT(t, t0, 0, 100*ms)
	// Drain the pacer's burst, then the next send must wait.
	pn := uint64(1)
	for !f.h.NextSendTime(now).After(now) && f.h.SendAllowed(now) {
		f.send(now, pn)
		pn++
	}
	if next := f.h.NextSendTime(now); !next.After(now) {
		t.Fatalf("pacer allows sending at %v", next)
	}
	if f.h.PacingBudget(now) >= 1000 {
		t.Fatalf("budget %d after draining", f.h.PacingBudget(now))
	}
}

func TestNoAllocsInSteadyState(t *testing.T) {
	f := newFixture(t)
	frames := []Frame{{Kind: 1}, {Kind: 2}}
	ranges := make([]Range, 1)
	now := t0
	pn := uint64(0)
	step := func() {
		for range 2 {
			frames[0].Offset = pn
			f.h.SentPacket(now, pn, 1000, true, frames)
			pn++
		}
		now = now.Add(ms)
		ranges[0] = Range{pn - 2, pn - 1}
		if err := f.h.ReceivedAck(now, ranges, 0); err != nil {
			t.Fatal(err)
		}
	}
	for range 1000 {
		step()
	}
	if n := testing.AllocsPerRun(1000, step); n != 0 {
		t.Fatalf("%v allocations per send+ack", n)
	}
}

type nopCallbacks struct{}

func (nopCallbacks) OnFrameAcked(Frame) {}
func (nopCallbacks) OnFrameLost(Frame)  {}

func BenchmarkSentPacketReceivedAck(b *testing.B) {
	rtt := &congestion.RTTStats{}
	for _, kind := range []congestion.Kind{congestion.KindBBR, congestion.KindCUBIC} {
		b.Run(kind.String(), func(b *testing.B) {
			cc := congestion.NewController(kind, rtt, 1452)
			h := NewSentPacketHandler(cc, rtt, nopCallbacks{}, WithMaxDatagramSize(1452))
			frames := []Frame{{Kind: 1, Length: 1400}}
			ranges := make([]Range, 1)
			now := t0
			inFlight := 64 // a window of outstanding packets
			b.ReportAllocs()
			for i := 0; b.Loop(); i++ {
				pn := uint64(i)
				now = now.Add(10 * time.Microsecond)
				h.SentPacket(now, pn, 1452, true, frames)
				// An ACK every second packet, for the packets sent a
				// window ago.
				if i%2 == 1 && pn >= uint64(inFlight) {
					ranges[0] = Range{0, pn - uint64(inFlight)}
					if err := h.ReceivedAck(now, ranges, 0); err != nil {
						b.Fatal(err)
					}
				}
			}
		})
	}
}

func TestReorderedAndStaleAcks(t *testing.T) {
	f := newFixture(t)
	for pn := range uint64(6) {
		f.send(t0, pn)
	}
	// 2 is missing but within the packet threshold of the largest (4).
	f.ack(t, t0.Add(10*ms), 0, Range{3, 4}, Range{0, 1})
	if f.cb.lost[2] != 0 || f.cb.acked[2] != 0 {
		t.Fatal("packet 2 decided too early")
	}
	// An older ACK arriving late changes nothing.
	f.ack(t, t0.Add(11*ms), 0, Range{0, 1})
	// Then 2 turns up.
	f.ack(t, t0.Add(12*ms), 0, Range{0, 4})
	for pn := range uint64(5) {
		if f.cb.acked[pn] != 1 || f.cb.lost[pn] != 0 {
			t.Errorf("packet %d: acked %d lost %d", pn, f.cb.acked[pn], f.cb.lost[pn])
		}
	}
	if f.h.BytesInFlight() != 1000 {
		t.Fatalf("in flight %d, want 1000 (packet 5)", f.h.BytesInFlight())
	}
	if st := f.h.Stats(); st.PacketsLost != 0 || st.SpuriousLosses != 0 {
		t.Fatalf("stats %+v", st)
	}
}
