package ackhandler

import (
	"cmp"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/parley-p2p/parley/transport/internal/congestion"
)

// Loss detection constants (RFC 9002 §6.1, §6.2, §7.6).
const (
	// packetThreshold is kPacketThreshold: a packet is lost once a packet
	// sent this many numbers after it has been acknowledged.
	packetThreshold = 3
	// timeThresholdEighths is kTimeThreshold (9/8) in eighths of an RTT.
	timeThresholdEighths = 9
	// persistentCongestionThreshold is kPersistentCongestionThreshold.
	persistentCongestionThreshold = 3

	// Reordering adaptation (after Linux RACK's reo_wnd and TCP's
	// tp->reordering): each spurious loss widens the time threshold by an
	// eighth of an RTT, up to two RTTs, and raises the packet threshold
	// past the reordering seen, up to maxPacketThreshold (beyond which
	// the time threshold alone decides, as in RACK). After reoDecayLosses
	// loss episodes (real losses at least an RTT apart) without a
	// spurious one, the thresholds step back towards the RFC's.
	maxTimeThresholdEighths = 16
	maxPacketThreshold      = 1 << 12
	reoDecayLosses          = 16
)

// ErrAckUnsent is returned (wrapped) by ReceivedAck when the peer
// acknowledges a packet number that was never sent: a broken or malicious
// peer, and a protocol violation.
var ErrAckUnsent = errors.New("ACK for a packet that was not sent")

// Callbacks is how the handler tells the session what happened to the frames
// it recorded. Each recorded frame gets exactly one call: acked or lost,
// whatever later ACKs say. The calls come from inside ReceivedAck,
// OnLossDetectionTimeout and QueueProbePacket; they must not call back into
// the handler.
type Callbacks interface {
	OnFrameAcked(f Frame)
	// OnFrameLost re-queues the frame's data; it is sent again in a new
	// packet with a new number.
	OnFrameLost(f Frame)
}

// Stats are the handler's counters and current estimates.
type Stats struct {
	PacketsSent           uint64
	BytesSent             uint64
	PacketsAcked          uint64
	PacketsLost           uint64
	BytesLost             uint64
	FramesLost            uint64 // frames handed back for retransmission
	SpuriousLosses        uint64 // packets declared lost, then acknowledged
	PTOs                  uint64 // probe timeouts fired
	PersistentCongestions uint64

	SmoothedRTT time.Duration
	RTTVar      time.Duration
	MinRTT      time.Duration
	LatestRTT   time.Duration

	CongestionWindow int
	BytesInFlight    int
	PacingRate       uint64 // bytes per second
	InSlowStart      bool

	// The loss detection thresholds in force, after reordering adaptation.
	PacketThreshold int
	TimeThreshold   float64 // in RTTs
}

// Option configures a SentPacketHandler.
type Option func(*SentPacketHandler)

// WithMaxDatagramSize sets the size of a full packet for the pacer and the
// controller (default congestion.DefaultMaxDatagramSize).
func WithMaxDatagramSize(n int) Option {
	return func(h *SentPacketHandler) { h.setMaxDatagramSize(n) }
}

// WithoutReorderingAdaptation keeps the RFC 9002 thresholds fixed.
func WithoutReorderingAdaptation() Option {
	return func(h *SentPacketHandler) { h.noReoAdapt = true }
}

// lostPacket is a packet declared lost, remembered for a while in case it is
// acknowledged after all (a spurious loss, caused by reordering).
type lostPacket struct {
	pn       uint64
	lostTime time.Time
	distance uint64 // largest acked − pn when declared lost
	size     int
	spurious bool // acknowledged since; to be dropped
}

// SentPacketHandler tracks the packets a session sends and decides what the
// peer has received, what is lost, when to probe and how much may be sent.
// It is not safe for concurrent use: the session loop owns it.
type SentPacketHandler struct {
	cc    congestion.Controller
	rtt   *congestion.RTTStats
	cb    Callbacks
	pacer *congestion.Pacer
	rate  congestion.RateEstimator

	hist     history
	lost     []lostPacket // ascending pn and lostTime; lost[lostHead:] are live
	lostHead int
	skipped  []uint64 // taken numbers never sent, ascending
	acked    []int    // scratch: history indices acked by the ACK in hand
	// below holds, ascending, the outstanding packets numbered below the
	// largest acknowledged: the candidates for loss detection.
	below []uint64

	nextPN      uint64
	largestSent uint64
	hasSent     bool

	largestAcked    uint64
	hasAcked        bool
	lowestUnconfAck uint64 // see LowestUnconfirmedAck

	bytesInFlight      int
	ackElicitingOut    int // ack-eliciting packets in flight
	lastAckElicitingAt time.Time
	firstRTTSampleAt   time.Time

	lossTime      time.Time // earliest time-threshold loss, zero if none
	ptoCount      int
	probesPending int

	maxDatagramSize int
	noReoAdapt      bool
	pktThreshold    int
	timeEighths     int
	lossesSinceReo  int
	lastRealLoss    time.Time

	stats Stats
}

// NewSentPacketHandler returns a handler that reports to cc and cb and keeps
// rtt up to date.
func NewSentPacketHandler(cc congestion.Controller, rtt *congestion.RTTStats, cb Callbacks, opts ...Option) *SentPacketHandler {
	h := &SentPacketHandler{
		cc:              cc,
		rtt:             rtt,
		cb:              cb,
		maxDatagramSize: congestion.DefaultMaxDatagramSize,
		pktThreshold:    packetThreshold,
		timeEighths:     timeThresholdEighths,
	}
	h.pacer = congestion.NewPacer(cc.PacingRate, h.maxDatagramSize)
	for _, o := range opts {
		o(h)
	}
	return h
}

func (h *SentPacketHandler) setMaxDatagramSize(n int) {
	if n <= 0 {
		return
	}
	h.maxDatagramSize = n
	h.cc.SetMaxDatagramSize(n)
	h.pacer.SetMaxDatagramSize(n)
}

// SetMaxDatagramSize changes the size of a full packet, e.g. after path MTU
// discovery or a move to another path.
func (h *SentPacketHandler) SetMaxDatagramSize(n int) { h.setMaxDatagramSize(n) }

// NextPacketNumber takes the next packet number. Numbers start at 0 and are
// never reused; a number taken but never passed to SentPacket counts as
// skipped, and an ACK for it is an error.
func (h *SentPacketHandler) NextPacketNumber() uint64 {
	pn := h.nextPN
	h.nextPN++
	return pn
}

// SentPacket records a packet sent now. Packet numbers must increase from
// call to call; numbers passed over are recorded as skipped, one entry each,
// so gaps must stay small (as when a packet taken from NextPacketNumber could
// not be built). frames is copied. Ack-eliciting packets count towards bytes
// in flight, the congestion window and pacing; others (pure ACKs) do not.
func (h *SentPacketHandler) SentPacket(now time.Time, pn uint64, size int, ackEliciting bool, frames []Frame) {
	if h.hasSent && pn <= h.largestSent {
		panic(fmt.Sprintf("ackhandler: packet number %d sent after %d", pn, h.largestSent))
	}
	skip := uint64(0)
	if h.hasSent {
		skip = h.largestSent + 1
	}
	for ; skip < pn; skip++ {
		h.hist.push(skip).state = stateSkipped
		h.skipped = append(h.skipped, skip)
	}
	h.hasSent = true
	h.largestSent = pn
	h.nextPN = max(h.nextPN, pn+1)

	p := h.hist.push(pn)
	p.sendTime = now
	p.size = size
	p.ackEliciting = ackEliciting
	p.frames = append(p.frames, frames...)

	h.stats.PacketsSent++
	h.stats.BytesSent += uint64(size)
	if !ackEliciting {
		return
	}
	p.rate = h.rate.OnPacketSent(now, h.bytesInFlight)
	h.cc.OnPacketSent(now, h.bytesInFlight, pn, size, true)
	h.pacer.SentPacket(now, size)
	h.bytesInFlight += size
	h.ackElicitingOut++
	h.lastAckElicitingAt = now
	if h.probesPending > 0 {
		h.probesPending--
	}
}

// RecordAckFrame notes that packet pn, already passed to SentPacket, carried
// an ACK frame whose largest acknowledged number was largest. Once the peer
// acknowledges pn, LowestUnconfirmedAck moves past largest.
func (h *SentPacketHandler) RecordAckFrame(pn, largest uint64) {
	if i := h.hist.index(pn); i >= 0 {
		p := h.hist.at(i)
		p.hasAck = true
		p.ackLargest = largest
	}
}

// LowestUnconfirmedAck returns the lowest packet number of the peer's that
// the peer has not yet seen us acknowledge: the receiving side may pass it to
// ReceivedPacketTracker.IgnoreBelow and stop reporting older ranges (RFC 9000
// §13.2.4).
func (h *SentPacketHandler) LowestUnconfirmedAck() uint64 { return h.lowestUnconfAck }

// OnAppLimited tells the handler the session has nothing to send although
// the window would allow it: rate samples taken until what is now in flight
// is delivered understate the path.
func (h *SentPacketHandler) OnAppLimited() { h.rate.OnAppLimited(h.bytesInFlight) }

// BytesInFlight returns the bytes of ack-eliciting packets neither
// acknowledged nor declared lost.
func (h *SentPacketHandler) BytesInFlight() int { return h.bytesInFlight }

// LargestAcked returns the largest packet number the peer has acknowledged.
func (h *SentPacketHandler) LargestAcked() (pn uint64, ok bool) { return h.largestAcked, h.hasAcked }

// SendAllowed reports whether the congestion window permits another
// full-size packet now. Probe packets owed after a PTO bypass the window.
func (h *SentPacketHandler) SendAllowed(now time.Time) bool {
	return h.probesPending > 0 || h.cc.CanSend(h.bytesInFlight)
}

// NextSendTime returns when pacing lets the next packet leave; a time at or
// before now means now. It says nothing about the window: check SendAllowed.
func (h *SentPacketHandler) NextSendTime(now time.Time) time.Time {
	if h.probesPending > 0 {
		return now
	}
	t := h.pacer.TimeUntilSend(now)
	if t.IsZero() {
		return now
	}
	return t
}

// PacingBudget returns how many bytes pacing lets leave now, to size a batch.
func (h *SentPacketHandler) PacingBudget(now time.Time) int { return h.pacer.Budget(now) }

// ReceivedAck processes an ACK frame: ranges in descending order, ackDelay as
// the peer reported it. It updates the RTT, reports acknowledged and lost
// frames, informs the congestion controller and rearms the loss detection
// timer. It returns an error wrapping ErrAckUnsent if the ranges cover a
// packet number never sent, and a plain error if they are malformed; the
// handler's state is then unchanged.
func (h *SentPacketHandler) ReceivedAck(now time.Time, ranges []Range, ackDelay time.Duration) error {
	if err := h.validate(ranges); err != nil {
		return err
	}
	priorInFlight := h.bytesInFlight
	largest := ranges[0].Largest

	// Mark what is newly acknowledged, in ascending order: first the
	// packets still outstanding below the previous largest acknowledged
	// (few: they are about to be declared lost, or were reordered), then
	// the packets above it, each of which is looked at once in its life.
	// Re-reading the ranges of old packets already acknowledged, which
	// every ACK repeats, costs nothing.
	h.acked = h.acked[:0]
	ackEliciting := false
	j := len(ranges) - 1
	k := 0
	for _, pn := range h.below {
		for j >= 0 && ranges[j].Largest < pn {
			j--
		}
		if j >= 0 && pn >= ranges[j].Smallest {
			i := h.hist.index(pn)
			p := h.hist.at(i)
			p.state = stateAcked
			h.acked = append(h.acked, i)
			ackEliciting = ackEliciting || p.ackEliciting
			continue
		}
		h.below[k] = pn
		k++
	}
	h.below = h.below[:k]

	largestNewlyAcked := false
	if !h.hasAcked || largest > h.largestAcked {
		from := 0
		if h.hasAcked {
			from = max(h.hist.index(h.largestAcked+1), 0)
		}
		h.largestAcked = largest
		h.hasAcked = true
		for i := from; i < h.hist.len(); i++ {
			p := h.hist.at(i)
			if p.pn > largest {
				break
			}
			if p.state != stateOutstanding {
				continue
			}
			for j >= 0 && ranges[j].Largest < p.pn {
				j--
			}
			if j < 0 || p.pn < ranges[j].Smallest {
				h.below = append(h.below, p.pn)
				continue
			}
			p.state = stateAcked
			h.acked = append(h.acked, i)
			ackEliciting = ackEliciting || p.ackEliciting
			largestNewlyAcked = p.pn == largest
		}
	}

	// RTT (RFC 9002 §5.1): sample only when the largest acknowledged is
	// new and something ack-eliciting was acknowledged, before the
	// controller sees the ACK so HyStart++ sees this sample.
	if largestNewlyAcked && ackEliciting {
		p := h.hist.at(h.hist.index(largest))
		h.rtt.UpdateRTT(now.Sub(p.sendTime), ackDelay)
		if h.firstRTTSampleAt.IsZero() {
			h.firstRTTSampleAt = now
		}
	}
	if len(h.acked) > 0 {
		// The PTO backoff resets when an ACK brings news (§6.2.1).
		h.ptoCount = 0
	}

	for _, i := range h.acked {
		p := h.hist.at(i)
		h.stats.PacketsAcked++
		if p.hasAck {
			h.lowestUnconfAck = max(h.lowestUnconfAck, p.ackLargest+1)
		}
		if p.ackEliciting {
			h.bytesInFlight -= p.size
			h.ackElicitingOut--
			h.rate.OnPacketAcked(now, &p.rate, p.size)
			h.cc.OnPacketAcked(now, p.pn, p.size, priorInFlight)
		}
		for _, f := range p.frames {
			h.cb.OnFrameAcked(f)
		}
		p.frames = p.frames[:0]
	}
	h.checkSpurious(now, ranges)

	lostAny := h.detectLosses(now, priorInFlight)
	if len(h.acked) > 0 || lostAny {
		h.cc.OnAck(now, priorInFlight, h.bytesInFlight, h.rate.Sample(h.rtt.MinRTT()))
	}
	h.trim(now)
	return nil
}

// validate checks ranges before anything is changed.
func (h *SentPacketHandler) validate(ranges []Range) error {
	if len(ranges) == 0 {
		return errors.New("ACK without ranges")
	}
	for i, r := range ranges {
		if r.Smallest > r.Largest {
			return fmt.Errorf("ACK range %d..%d inverted", r.Smallest, r.Largest)
		}
		if i > 0 && r.Largest >= ranges[i-1].Smallest {
			return fmt.Errorf("ACK ranges not descending at %d..%d", r.Smallest, r.Largest)
		}
	}
	if !h.hasSent || ranges[0].Largest > h.largestSent {
		return fmt.Errorf("%w: packet %d", ErrAckUnsent, ranges[0].Largest)
	}
	// Skipped numbers are rare: a merge of two short sorted lists.
	j := len(ranges) - 1
	for _, pn := range h.skipped {
		for j >= 0 && ranges[j].Largest < pn {
			j--
		}
		if j < 0 {
			break
		}
		if pn >= ranges[j].Smallest {
			return fmt.Errorf("%w: skipped packet %d", ErrAckUnsent, pn)
		}
	}
	return nil
}

// checkSpurious finds packets declared lost that the ranges acknowledge.
func (h *SentPacketHandler) checkSpurious(now time.Time, ranges []Range) {
	j := len(ranges) - 1
	// Skip the losses below every range: ACKs stop repeating old ranges
	// once the peer knows we saw them.
	live := h.lost[h.lostHead:]
	lowest := ranges[j].Smallest
	first, _ := slices.BinarySearchFunc(live, lowest, func(l lostPacket, pn uint64) int { return cmp.Compare(l.pn, pn) })
	for k := h.lostHead + first; k < len(h.lost); k++ {
		l := &h.lost[k]
		for j >= 0 && ranges[j].Largest < l.pn {
			j--
		}
		if j < 0 {
			return
		}
		if l.spurious || l.pn < ranges[j].Smallest {
			continue
		}
		l.spurious = true
		h.stats.SpuriousLosses++
		h.adaptReordering(l.distance)
		h.cc.OnSpuriousLoss(now, l.pn, l.size)
	}
}

// adaptReordering widens the loss thresholds after a spurious loss of a
// packet declared lost distance numbers below the largest acknowledged.
func (h *SentPacketHandler) adaptReordering(distance uint64) {
	if h.noReoAdapt {
		return
	}
	h.lossesSinceReo = 0
	h.timeEighths = min(h.timeEighths+1, maxTimeThresholdEighths)
	if distance >= uint64(h.pktThreshold) {
		h.pktThreshold = int(min(distance+1, maxPacketThreshold))
	}
}

// lossDelay is the time threshold (RFC 9002 §6.1.2).
func (h *SentPacketHandler) lossDelay() time.Duration {
	rtt := max(h.rtt.SmoothedRTT(), h.rtt.LatestRTT())
	return max(rtt*time.Duration(h.timeEighths)/8, congestion.TimerGranularity)
}

// detectLosses declares lost every outstanding packet below the largest
// acknowledged that either threshold condemns (RFC 9002 §6.1), and arms the
// time-threshold timer for the first one that neither does yet. Both
// conditions grow weaker with the packet number, so the walk stops there.
func (h *SentPacketHandler) detectLosses(now time.Time, priorInFlight int) bool {
	h.lossTime = time.Time{}
	if !h.hasAcked {
		return false
	}
	delay := h.lossDelay()
	lostSendTime := now.Add(-delay)
	pcDuration := (h.rtt.SmoothedRTT() + max(4*h.rtt.RTTVar(), congestion.TimerGranularity) + h.rtt.MaxAckDelay()) * persistentCongestionThreshold

	lostAny := false
	var runStart time.Time // first ack-eliciting loss since the last ACKed packet
	var prevLost uint64
	persistent := false
	n := 0
	for ; n < len(h.below); n++ {
		pn := h.below[n]
		p := h.hist.at(h.hist.index(pn))
		if p.sendTime.After(lostSendTime) && h.largestAcked < p.pn+uint64(h.pktThreshold) {
			h.lossTime = p.sendTime.Add(delay)
			break
		}
		h.declareLost(now, p, priorInFlight)
		lostAny = true
		if !p.ackEliciting {
			continue
		}
		// Persistent congestion (§7.6.2): ack-eliciting losses spanning
		// the duration with nothing acknowledged between them, all sent
		// after the first RTT sample.
		if h.firstRTTSampleAt.IsZero() || !p.sendTime.After(h.firstRTTSampleAt) {
			continue
		}
		if !runStart.IsZero() && h.ackedBetween(prevLost, pn) {
			runStart = time.Time{}
		}
		prevLost = pn
		if runStart.IsZero() {
			runStart = p.sendTime
		} else if p.sendTime.Sub(runStart) > pcDuration {
			persistent = true
		}
	}
	h.below = h.below[:copy(h.below, h.below[n:])]
	if persistent {
		h.stats.PersistentCongestions++
		h.cc.OnRetransmissionTimeout(now)
	}
	return lostAny
}

// ackedBetween reports whether a packet numbered strictly between a and b
// has been acknowledged.
func (h *SentPacketHandler) ackedBetween(a, b uint64) bool {
	for pn := a + 1; pn < b; pn++ {
		if i := h.hist.index(pn); i >= 0 && h.hist.at(i).state == stateAcked {
			return true
		}
	}
	return false
}

func (h *SentPacketHandler) declareLost(now time.Time, p *sentPacket, priorInFlight int) {
	p.state = stateLost
	if p.ackEliciting {
		h.stats.PacketsLost++
		h.stats.BytesLost += uint64(p.size)
		h.bytesInFlight -= p.size
		h.ackElicitingOut--
		h.rate.OnPacketLost(p.size)
		h.cc.OnCongestionEvent(now, p.pn, p.size, priorInFlight)
		h.lost = append(h.lost, lostPacket{pn: p.pn, lostTime: now, distance: h.largestAcked - p.pn, size: p.size})
	}
	for _, f := range p.frames {
		h.stats.FramesLost++
		h.cb.OnFrameLost(f)
	}
	p.frames = p.frames[:0]
}

// trim drops packets whose fate is known from the front of the history and
// forgets lost packets too old to be acknowledged any more.
func (h *SentPacketHandler) trim(now time.Time) {
	for h.hist.len() > 0 && h.hist.at(0).state != stateOutstanding {
		h.hist.popFront()
	}
	for len(h.skipped) > 0 && (h.hist.len() == 0 || h.skipped[0] < h.hist.firstPN) {
		h.skipped = h.skipped[1:]
	}
	if len(h.skipped) == 0 {
		h.skipped = h.skipped[:0:0]
	}

	// A reordered packet arrives within a fraction of an RTT; after a
	// PTO a lost packet is not coming back. Entries are in lostTime
	// order, so the expired ones are a prefix; spurious ones are skipped
	// over when they reach the front.
	expiry := now.Add(-h.rtt.PTO(true))
	for h.lostHead < len(h.lost) {
		l := &h.lost[h.lostHead]
		if !l.spurious {
			if l.lostTime.After(expiry) {
				break
			}
			h.onRealLoss(l.lostTime)
		}
		h.lostHead++
	}
	switch {
	case h.lostHead == len(h.lost):
		h.lost, h.lostHead = h.lost[:0], 0
	case h.lostHead > 32 && h.lostHead > len(h.lost)/2:
		n := copy(h.lost, h.lost[h.lostHead:])
		h.lost, h.lostHead = h.lost[:n], 0
	}
}

// onRealLoss counts a loss, declared at lostTime, that was not spurious, and
// steps the reordering thresholds back after enough loss episodes.
func (h *SentPacketHandler) onRealLoss(lostTime time.Time) {
	if lostTime.Sub(h.lastRealLoss) < h.rtt.SmoothedRTT() {
		return // the same episode
	}
	h.lastRealLoss = lostTime
	h.lossesSinceReo++
	if h.lossesSinceReo < reoDecayLosses {
		return
	}
	h.lossesSinceReo = 0
	h.timeEighths = max(h.timeEighths-1, timeThresholdEighths)
	h.pktThreshold = max(h.pktThreshold/2, packetThreshold)
}

// LossDetectionDeadline returns when OnLossDetectionTimeout must be called:
// the earliest time-threshold loss if one is pending, else the probe timeout
// (RFC 9002 §6.2.1) with exponential backoff. Zero when nothing is armed.
func (h *SentPacketHandler) LossDetectionDeadline() time.Time {
	if !h.lossTime.IsZero() {
		return h.lossTime
	}
	if h.ackElicitingOut == 0 {
		return time.Time{}
	}
	return h.lastAckElicitingAt.Add(h.rtt.PTO(true) << min(h.ptoCount, 16))
}

// OnLossDetectionTimeout handles the loss detection timer. Either it declares
// time-threshold losses and returns 0, or the PTO expired and it returns how
// many ack-eliciting probe packets (1 or 2) the session must send now,
// regardless of the congestion window; with no new data to send, the
// session calls QueueProbePacket to get old data back.
func (h *SentPacketHandler) OnLossDetectionTimeout(now time.Time) (probes int) {
	deadline := h.LossDetectionDeadline()
	if deadline.IsZero() || now.Before(deadline) {
		return 0
	}
	if !h.lossTime.IsZero() {
		prior := h.bytesInFlight
		if h.detectLosses(now, prior) {
			h.cc.OnAck(now, prior, h.bytesInFlight, h.rate.Sample(h.rtt.MinRTT()))
		}
		h.trim(now)
		return 0
	}
	h.ptoCount++
	h.stats.PTOs++
	// Two probes after the first timeout, so that one more lost datagram
	// does not cost another doubled timeout (RFC 9002 §6.2.4).
	probes = 1
	if h.ptoCount > 1 {
		probes = 2
	}
	h.probesPending = probes
	return probes
}

// QueueProbePacket hands the frames of the oldest outstanding ack-eliciting
// packet back through OnFrameLost, so that a probe can carry them; the packet
// itself stays in flight. It reports whether there was such a packet with
// frames.
func (h *SentPacketHandler) QueueProbePacket() bool {
	for i := 0; i < h.hist.len(); i++ {
		p := h.hist.at(i)
		if p.state != stateOutstanding || !p.ackEliciting || len(p.frames) == 0 {
			continue
		}
		for _, f := range p.frames {
			h.stats.FramesLost++
			h.cb.OnFrameLost(f)
		}
		p.frames = p.frames[:0]
		return true
	}
	return false
}

// Stats returns the counters and current estimates.
func (h *SentPacketHandler) Stats() Stats {
	s := h.stats
	s.SmoothedRTT = h.rtt.SmoothedRTT()
	s.RTTVar = h.rtt.RTTVar()
	s.MinRTT = h.rtt.MinRTT()
	s.LatestRTT = h.rtt.LatestRTT()
	s.CongestionWindow = h.cc.CongestionWindow()
	s.BytesInFlight = h.bytesInFlight
	s.PacingRate = h.cc.PacingRate()
	s.InSlowStart = h.cc.InSlowStart()
	s.PacketThreshold = h.pktThreshold
	s.TimeThreshold = float64(h.timeEighths) / 8
	return s
}
