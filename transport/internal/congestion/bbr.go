package congestion

import (
	"fmt"
	"time"
)

// BBR constants (draft-cardwell-iccrg-bbr-congestion-control-00, BBRv1, with
// ideas from BBRv2: a shallower PROBE_RTT, and an inflight_hi bound set only
// by loss that is clearly congestion).
const (
	bbrHighGain  = 2.885 // 2/ln 2: doubles the delivery rate each round
	bbrDrainGain = 1 / bbrHighGain
	bbrCwndGain  = 2.0

	bbrBtlBwFilterRounds = 10
	bbrMinRTTWindow      = 10 * time.Second
	bbrProbeRTTDuration  = 200 * time.Millisecond

	// STARTUP ends when the bandwidth estimate grew less than 25 % in
	// three consecutive rounds.
	bbrFullBWThresh = 1.25
	bbrFullBWRounds = 3

	// The loss guard: a round in which more than bbrLossThresh of the
	// bytes sent were lost, counting at least bbrLossMinPackets packets,
	// is taken as a full queue rather than random loss. Random loss of
	// a few percent never trips it; a drop-tail queue overflowing does.
	bbrLossThresh     = 0.15
	bbrLossMinPackets = 8
	// bbrLossBeta scales the in-flight volume of a heavy-loss round into
	// the inflight_hi bound.
	bbrLossBeta = 0.7

	bbrMinCwndPackets = 4

	// The queue-loss response: loss in a round whose smallest RTT sample
	// stood above min RTT by max(min RTT/8, 4 ms) (at most 16 ms, as
	// HyStart++ judges a rise) means a drop-tail queue shared with other
	// flows overflowed. BBR then bounds inflight_hi to bbrQueueLossBeta
	// of the round's peak, at most every bbrQueueLossRounds rounds. Alone
	// on a path BBR drains its own queue every gain cycle, so random loss
	// never meets a standing queue and costs nothing.
	bbrQueueLossRounds = 2
	bbrQueueLossBeta   = 0.85
)

// bbrPacingGainCycle is PROBE_BW's gain cycle: probe up for a min RTT, drain
// the queue that made for a min RTT, cruise for six.
var bbrPacingGainCycle = [...]float64{1.25, 0.75, 1, 1, 1, 1, 1, 1}

// bbrMode is BBR's state:
//
//	STARTUP ──pipe full or heavy loss──▶ DRAIN ──inflight ≤ BDP──▶ PROBE_BW
//	   │                                                          │   ▲
//	   └──────────min RTT stale (10 s)──▶ PROBE_RTT ◀──────────────┘   │
//	                                        └──200 ms and a round──────┘
//	                                           (to STARTUP if the pipe
//	                                            was never filled)
type bbrMode uint8

const (
	bbrStartup bbrMode = iota
	bbrDrain
	bbrProbeBW
	bbrProbeRTT
)

func (m bbrMode) String() string {
	switch m {
	case bbrStartup:
		return "STARTUP"
	case bbrDrain:
		return "DRAIN"
	case bbrProbeBW:
		return "PROBE_BW"
	case bbrProbeRTT:
		return "PROBE_RTT"
	}
	return fmt.Sprintf("bbrMode(%d)", uint8(m))
}

// bbr is a model-based controller: it estimates the bottleneck bandwidth
// (the windowed maximum of delivery-rate samples) and the round-trip
// propagation time (the windowed minimum RTT), paces at gain × bandwidth and
// caps what is in flight at twice their product. Loss does not move the
// model, so random loss costs only the lost packets. Two kinds of loss do
// bound the window (inflight_hi), so that a full drop-tail queue is still
// answered: heavy loss (bbrLossThresh), and any loss while a queue stands
// (bbrQueueLossBeta). The bound is raised again, faster each round, once the
// loss stops.
//
// Measured in sim_test.go (100 Mbit/s, 50 ms, one-BDP drop-tail queue): two
// BBR flows share about 53/47; against CUBIC, BBR takes about 82 % and
// CUBIC 18 % (without the queue-loss response, 93/6). With a queue of a
// quarter BDP, CUBIC still gets under 10 %: BBRv1's known weakness in
// shallow buffers, where the queue never stands long enough to tell.
type bbr struct {
	rtt *RTTStats
	mds int

	mode       bbrMode
	cwnd       int
	priorCwnd  int
	pacingRate uint64
	pacingGain float64
	cwndGain   float64

	// Round counting by delivered bytes (draft §4.1.1.3).
	roundCount         uint64
	nextRoundDelivered uint64
	roundStart         bool

	btlBw  maxFilter
	minRTT time.Duration
	// minRTTStamp is when minRTT was last set or confirmed.
	minRTTStamp time.Time

	probeRTTDone      time.Time
	probeRTTRoundDone bool

	fullBW      uint64
	fullBWCount int
	filledPipe  bool

	cycleIndex int
	cycleStamp time.Time
	rng        uint64

	// Loss guard. A round's losses are judged one round after it ends,
	// once losses that were only reordering have been reported spurious
	// and taken back: pending* hold the round awaiting judgment.
	roundLost        int
	roundAcked       int
	roundMaxInflight int
	pendingLost      int
	pendingAcked     int
	pendingPeak      int
	roundMinRTT      time.Duration
	pendingMinRTT    time.Duration
	lastCongested    uint64 // round of the last queue-loss reaction
	inflightHi       int    // 0: unbounded
	hiProbeStep      int
}

func newBBR(rtt *RTTStats, mds int) *bbr {
	b := &bbr{
		rtt:        rtt,
		mds:        mds,
		cwnd:       initialWindowPackets * mds,
		btlBw:      maxFilter{window: bbrBtlBwFilterRounds},
		pacingGain: bbrHighGain,
		cwndGain:   bbrHighGain,
	}
	b.setPacingRate()
	return b
}

func (b *bbr) minCwnd() int { return bbrMinCwndPackets * b.mds }

func (b *bbr) OnPacketSent(now time.Time, bytesInFlight int, pn uint64, bytes int, isRetransmittable bool) {
	if b.rng == 0 {
		// Seed the gain-cycle phase from the clock: deterministic
		// under a test's clock, different between real flows so they
		// do not probe in lockstep.
		b.rng = uint64(now.UnixNano()) | 1
	}
}

func (b *bbr) OnPacketAcked(now time.Time, pn uint64, ackedBytes int, priorInFlight int) {}

func (b *bbr) OnCongestionEvent(now time.Time, lostPN uint64, lostBytes int, priorInFlight int) {}

func (b *bbr) OnSpuriousLoss(now time.Time, pn uint64, bytes int) {
	// Take it back from the round it was most likely counted in.
	if d := min(bytes, b.pendingLost); d > 0 {
		b.pendingLost -= d
		bytes -= d
	}
	b.roundLost -= min(bytes, b.roundLost)
}

func (b *bbr) OnAck(now time.Time, priorInFlight, bytesInFlight int, rs RateSample) {
	b.roundLost += rs.LostBytes
	b.roundAcked += rs.AckedBytes
	b.roundMaxInflight = max(b.roundMaxInflight, priorInFlight)
	if rs.RTT > 0 && (b.roundMinRTT == 0 || rs.RTT < b.roundMinRTT) {
		b.roundMinRTT = rs.RTT
	}

	b.updateRound(rs)
	if b.roundStart {
		b.checkLossGuard(now)
	}
	b.updateBtlBw(rs)
	b.checkCyclePhase(now, priorInFlight, rs)
	b.checkFullPipe(rs)
	b.checkDrain(now, bytesInFlight)
	b.updateMinRTT(now, rs)
	b.checkProbeRTT(now, bytesInFlight, rs)
	b.setPacingRate()
	b.setCwnd(rs)
}

func (b *bbr) updateRound(rs RateSample) {
	b.roundStart = false
	if rs.AckedBytes > 0 && rs.PriorDelivered >= b.nextRoundDelivered && rs.TotalDelivered > 0 {
		b.nextRoundDelivered = rs.TotalDelivered
		b.roundCount++
		b.roundStart = true
	}
}

// checkLossGuard runs when a round ends. It is the only place loss changes
// BBR's behaviour. It judges the round before the one that just ended, so
// that reordering mistaken for loss has been taken back by OnSpuriousLoss.
func (b *bbr) checkLossGuard(now time.Time) {
	lost, acked, peak, minRTT := b.pendingLost, b.pendingAcked, b.pendingPeak, b.pendingMinRTT
	b.pendingLost, b.pendingAcked, b.pendingPeak, b.pendingMinRTT = b.roundLost, b.roundAcked, b.roundMaxInflight, b.roundMinRTT
	b.roundLost, b.roundAcked, b.roundMaxInflight, b.roundMinRTT = 0, 0, 0, 0
	heavy := lost >= bbrLossMinPackets*b.mds && float64(lost) > bbrLossThresh*float64(lost+acked)
	// Loss while a queue stood all round long: the loss is the queue's
	// overflow, not noise on the wire. Random loss comes at any delay;
	// BBR alone drains its queue every cycle.
	queueLoss := b.mode == bbrProbeBW && lost > 0 && b.minRTT > 0 && minRTT > b.minRTT+min(max(b.minRTT/8, 4*time.Millisecond), 16*time.Millisecond)
	if queueLoss && !heavy && b.roundCount >= b.lastCongested+bbrQueueLossRounds {
		b.lastCongested = b.roundCount
		b.inflightHi = max(int(bbrQueueLossBeta*float64(peak)), b.minCwnd())
		b.hiProbeStep = b.mds
		return
	}
	if !heavy {
		// Raise a bound that holds the window back, faster each round
		// (like BBRv2's PROBE_UP), and drop it once it no longer binds.
		if b.inflightHi > 0 && b.pendingPeak+b.mds >= b.inflightHi {
			b.inflightHi += b.hiProbeStep
			b.hiProbeStep = min(2*b.hiProbeStep, maxWindowBytes/4)
			if b.inflightHi >= b.inflight(bbrCwndGain) {
				b.inflightHi = 0
			}
		}
		return
	}
	// A full queue: do not put more than a fraction of what overflowed it
	// back in flight, and stop searching or probing.
	b.inflightHi = max(b.bdp(1), int(bbrLossBeta*float64(peak)), b.minCwnd())
	b.hiProbeStep = b.mds
	switch {
	case b.mode == bbrStartup:
		b.filledPipe = true
		b.enterDrain()
	case b.mode == bbrProbeBW && b.pacingGain > 1:
		b.advanceCyclePhase(now)
	}
}

func (b *bbr) updateBtlBw(rs RateSample) {
	if rs.DeliveryRate == 0 {
		return
	}
	// App-limited samples underestimate the path; they count only when
	// they beat the estimate anyway.
	if rs.DeliveryRate >= b.btlBw.Get() || !rs.IsAppLimited {
		b.btlBw.Update(rs.DeliveryRate, b.roundCount)
	}
}

func (b *bbr) checkFullPipe(rs RateSample) {
	if b.filledPipe || !b.roundStart || rs.IsAppLimited {
		return
	}
	bw := b.btlBw.Get()
	if float64(bw) >= float64(b.fullBW)*bbrFullBWThresh {
		b.fullBW = bw
		b.fullBWCount = 0
		return
	}
	b.fullBWCount++
	if b.fullBWCount >= bbrFullBWRounds {
		b.filledPipe = true
		if b.mode == bbrStartup {
			b.enterDrain()
		}
	}
}

func (b *bbr) enterDrain() {
	b.mode = bbrDrain
	b.pacingGain = bbrDrainGain
	b.cwndGain = bbrHighGain
}

func (b *bbr) checkDrain(now time.Time, bytesInFlight int) {
	if b.mode == bbrDrain && bytesInFlight <= b.inflight(1) {
		b.enterProbeBW(now)
	}
}

func (b *bbr) enterProbeBW(now time.Time) {
	b.mode = bbrProbeBW
	b.cwndGain = bbrCwndGain
	// Start anywhere but the drain phase (draft §4.3.4.4).
	b.cycleIndex = len(bbrPacingGainCycle) - 1 - int(b.random()%uint64(len(bbrPacingGainCycle)-1))
	b.advanceCyclePhase(now)
}

func (b *bbr) random() uint64 {
	// xorshift64: cheap, deterministic for a given seed.
	if b.rng == 0 {
		b.rng = 0x9E3779B97F4A7C15
	}
	b.rng ^= b.rng << 13
	b.rng ^= b.rng >> 7
	b.rng ^= b.rng << 17
	return b.rng
}

func (b *bbr) advanceCyclePhase(now time.Time) {
	b.cycleStamp = now
	b.cycleIndex = (b.cycleIndex + 1) % len(bbrPacingGainCycle)
	b.pacingGain = bbrPacingGainCycle[b.cycleIndex]
}

func (b *bbr) checkCyclePhase(now time.Time, priorInFlight int, rs RateSample) {
	if b.mode != bbrProbeBW {
		return
	}
	full := now.Sub(b.cycleStamp) > b.minRTT
	var next bool
	switch {
	case b.pacingGain == 1:
		next = full
	case b.pacingGain > 1:
		// Probe until the extra data is really in flight, or loss says
		// the queue is already full.
		next = full && (rs.LostBytes > 0 || priorInFlight >= b.inflight(b.pacingGain))
	default:
		// Drain until the queue the probe built is gone.
		next = full || priorInFlight <= b.inflight(1)
	}
	if next {
		b.advanceCyclePhase(now)
	}
}

func (b *bbr) updateMinRTT(now time.Time, rs RateSample) {
	expired := !b.minRTTStamp.IsZero() && now.Sub(b.minRTTStamp) > bbrMinRTTWindow
	if rs.RTT > 0 && (b.minRTT == 0 || rs.RTT <= b.minRTT || expired) {
		b.minRTT = rs.RTT
		b.minRTTStamp = now
	}
	if expired && b.mode != bbrProbeRTT {
		b.mode = bbrProbeRTT
		b.pacingGain = 1
		b.cwndGain = 1
		b.priorCwnd = max(b.priorCwnd, b.cwnd)
		b.probeRTTDone = time.Time{}
	}
}

// probeRTTCwnd is the window PROBE_RTT drains to: half a BDP (BBRv2) keeps
// most of the throughput while still emptying the queue PROBE_BW builds.
func (b *bbr) probeRTTCwnd() int { return max(b.bdp(0.5), b.minCwnd()) }

func (b *bbr) checkProbeRTT(now time.Time, bytesInFlight int, rs RateSample) {
	if b.mode != bbrProbeRTT {
		return
	}
	if b.probeRTTDone.IsZero() {
		if bytesInFlight <= b.probeRTTCwnd() {
			b.probeRTTDone = now.Add(bbrProbeRTTDuration)
			b.probeRTTRoundDone = false
			b.nextRoundDelivered = rs.TotalDelivered
		}
		return
	}
	if b.roundStart {
		b.probeRTTRoundDone = true
	}
	if b.probeRTTRoundDone && !now.Before(b.probeRTTDone) {
		b.minRTTStamp = now
		b.cwnd = max(b.cwnd, b.priorCwnd)
		b.priorCwnd = 0
		if b.filledPipe {
			b.enterProbeBW(now)
		} else {
			b.mode = bbrStartup
			b.pacingGain = bbrHighGain
			b.cwndGain = bbrHighGain
		}
	}
}

// bdp returns gain × bandwidth × min RTT in bytes, or the initial window
// while either is unknown.
func (b *bbr) bdp(gain float64) int {
	bw := b.btlBw.Get()
	if bw == 0 || b.minRTT == 0 {
		return int(gain * float64(initialWindowPackets*b.mds))
	}
	return int(min(gain*float64(bw)*b.minRTT.Seconds(), maxWindowBytes))
}

// sendQuantum is the burst the pacer lets out at once (as Linux's
// tso_segs_goal): the window needs room for a few of them. Below 1.2 Mbit/s
// it is one packet and below 24 Mbit/s two, so that slow links do not carry
// a standing queue of quanta.
func (b *bbr) sendQuantum() int {
	switch {
	case b.pacingRate < 1_200_000/8:
		return b.mds
	case b.pacingRate < 24_000_000/8:
		return 2 * b.mds
	}
	return min(max(int(b.pacingRate/1000), 2*b.mds), 64<<10)
}

// inflight is the window for a gain: gain × BDP plus room for three send
// quanta, so that delayed and stretched ACKs do not starve the pipe.
func (b *bbr) inflight(gain float64) int {
	return b.bdp(gain) + 3*b.sendQuantum()
}

func (b *bbr) setPacingRate() {
	bw := b.btlBw.Get()
	var rate uint64
	if bw == 0 {
		srtt := time.Millisecond
		if b.rtt.HasMeasurement() {
			srtt = b.rtt.SmoothedRTT()
		}
		rate = bytesPerSecond(b.pacingGain*float64(initialWindowPackets*b.mds), srtt)
	} else {
		rate = uint64(b.pacingGain * float64(bw))
	}
	// Until the pipe is full a lower sample must not slow the search.
	if b.filledPipe || rate > b.pacingRate || b.pacingRate == 0 {
		b.pacingRate = rate
	}
}

func (b *bbr) setCwnd(rs RateSample) {
	target := b.inflight(b.cwndGain)
	if b.inflightHi > 0 {
		target = min(target, b.inflightHi)
	}
	switch {
	case b.filledPipe:
		b.cwnd = min(b.cwnd+rs.AckedBytes, target)
	case b.cwnd < target || rs.TotalDelivered < uint64(initialWindowPackets*b.mds):
		b.cwnd += rs.AckedBytes
	}
	b.cwnd = min(max(b.cwnd, b.minCwnd()), maxWindowBytes)
	if b.mode == bbrProbeRTT {
		b.cwnd = min(b.cwnd, b.probeRTTCwnd())
	}
}

func (b *bbr) OnRetransmissionTimeout(now time.Time) {
	// Persistent congestion: everything in flight is presumed gone. Keep
	// the model; restart the window from its minimum and let ACKs grow
	// it back towards the target.
	b.cwnd = b.minCwnd()
}

func (b *bbr) CanSend(bytesInFlight int) bool { return bytesInFlight+b.mds <= b.cwnd }

func (b *bbr) CongestionWindow() int { return b.cwnd }

func (b *bbr) PacingRate() uint64 { return b.pacingRate }

func (b *bbr) InSlowStart() bool { return b.mode == bbrStartup }

func (b *bbr) SetMaxDatagramSize(n int) {
	if n <= 0 {
		return
	}
	b.mds = n
	b.cwnd = max(b.cwnd, b.minCwnd())
}
