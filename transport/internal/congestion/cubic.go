package congestion

import (
	"math"
	"time"
)

// CUBIC constants (RFC 9438 §4.1, §4.2, §4.3).
const (
	cubicC     = 0.4 // scaling constant, segments/s³
	cubicBeta  = 0.7 // multiplicative decrease factor
	cubicAlpha = 3 * (1 - cubicBeta) / (1 + cubicBeta)

	// Pacing gains (as Linux): fill the window in half an RTT while
	// searching, and stay a little ahead of the window after.
	slowStartPacingGain = 2.0
	cubicPacingGain     = 1.25
)

// cubic is RFC 9438 CUBIC with HyStart++ slow start, fast convergence and
// the Reno-friendly region. Windows are in bytes, kept as float64 so that the
// per-ACK increments of a fraction of a byte are not lost.
type cubic struct {
	rtt *RTTStats
	mds int

	cwnd     float64
	ssthresh float64

	// The current congestion-avoidance epoch (RFC 9438 §4.2). A zero
	// epochStart means the next ACK in congestion avoidance starts one.
	epochStart time.Time
	wMax       float64 // bytes, the window before the last reduction
	k          float64 // seconds until the cubic curve reaches wMax
	wEst       float64 // Reno-friendly estimate, bytes

	// Recovery: one reduction per round trip. Losses of packets sent before
	// the last reduction are part of the same congestion event.
	largestSent          uint64
	largestSentAtCutback uint64
	inRecovery           bool

	hs hystart
}

func newCubic(rtt *RTTStats, mds int) *cubic {
	return &cubic{
		rtt:      rtt,
		mds:      mds,
		cwnd:     float64(initialWindowPackets * mds),
		ssthresh: math.Inf(1),
	}
}

func (c *cubic) minWindow() float64 { return float64(minWindowPackets * c.mds) }

func (c *cubic) OnPacketSent(now time.Time, bytesInFlight int, pn uint64, bytes int, isRetransmittable bool) {
	if pn > c.largestSent || c.largestSent == 0 {
		c.largestSent = pn
	}
	if bytesInFlight == 0 && isRetransmittable && !c.epochStart.IsZero() {
		// Idle (RFC 9438 §5.8): do not let the curve run on while
		// nothing was sent; restart the epoch at the current window.
		c.epochStart = time.Time{}
	}
}

// cwndLimited reports whether the window, not the application, limited the
// sender, as RFC 7661 would have it: a window that is not used must not grow.
func (c *cubic) cwndLimited(priorInFlight int) bool {
	if c.InSlowStart() {
		return float64(priorInFlight) > c.cwnd/2
	}
	return float64(priorInFlight+3*c.mds) >= c.cwnd
}

func (c *cubic) OnPacketAcked(now time.Time, pn uint64, ackedBytes int, priorInFlight int) {
	if c.inRecovery {
		if pn <= c.largestSentAtCutback {
			return // no growth in recovery (RFC 9002 §7.3.2)
		}
		c.inRecovery = false
	}
	if c.InSlowStart() {
		// HyStart++ watches every ACK in slow start, limited or not.
		switch c.hs.onAck(pn, c.largestSent, c.rtt.LatestRTT()) {
		case hystartExit:
			c.ssthresh = c.cwnd
			return
		}
		if !c.cwndLimited(priorInFlight) {
			return
		}
		inc := float64(ackedBytes)
		if c.hs.inCSS {
			inc /= cssGrowthDivisor
		}
		c.cwnd = min(c.cwnd+inc, maxWindowBytes)
		return
	}
	if !c.cwndLimited(priorInFlight) {
		return
	}
	c.congestionAvoidance(now, ackedBytes)
}

// congestionAvoidance grows the window along the cubic curve (RFC 9438 §4.2
// to §4.4).
func (c *cubic) congestionAvoidance(now time.Time, ackedBytes int) {
	mss := float64(c.mds)
	if c.epochStart.IsZero() {
		c.epochStart = now
		c.wEst = c.cwnd
		if c.wMax <= c.cwnd {
			// Slow start ended without loss, or the window grew past
			// the old maximum: the curve's plateau is here.
			c.wMax = c.cwnd
			c.k = 0
		} else {
			c.k = math.Cbrt((c.wMax - c.cwnd) / mss / cubicC)
		}
	}
	t := now.Sub(c.epochStart).Seconds()
	srtt := c.rtt.SmoothedRTT().Seconds()

	// Reno-friendly region (§4.3): W_est grows like Reno with α_cubic
	// until it reaches W_max, then with α = 1.
	alpha := cubicAlpha
	if c.wEst >= c.wMax {
		alpha = 1
	}
	c.wEst += alpha * float64(ackedBytes) * mss / c.cwnd

	if c.wCubic(t) < c.wEst {
		c.cwnd = c.wEst
	} else {
		// Concave and convex regions (§4.4, §4.5): aim for where the
		// curve will be one RTT from now, at most 1.5 × cwnd.
		target := min(max(c.wCubic(t+srtt), c.cwnd), 1.5*c.cwnd)
		c.cwnd += (target - c.cwnd) * float64(ackedBytes) / c.cwnd
	}
	c.cwnd = min(c.cwnd, maxWindowBytes)
}

// wCubic is the cubic window at t seconds into the epoch (RFC 9438 eq. 1),
// in bytes.
func (c *cubic) wCubic(t float64) float64 {
	d := t - c.k
	return cubicC*d*d*d*float64(c.mds) + c.wMax
}

func (c *cubic) OnCongestionEvent(now time.Time, lostPN uint64, lostBytes int, priorInFlight int) {
	if c.inRecovery && lostPN <= c.largestSentAtCutback {
		return // same congestion event: one reduction per round trip
	}
	c.inRecovery = true
	c.largestSentAtCutback = c.largestSent
	c.hs.exit()
	// Fast convergence (§4.7): a flow whose maximum keeps shrinking
	// releases bandwidth to newer flows.
	if c.cwnd < c.wMax {
		c.wMax = c.cwnd * (1 + cubicBeta) / 2
	} else {
		c.wMax = c.cwnd
	}
	c.cwnd = max(c.cwnd*cubicBeta, c.minWindow())
	c.ssthresh = c.cwnd
	c.epochStart = time.Time{}
}

// OnSpuriousLoss does not undo the reduction (RFC 9438 §4.9 allows it): the
// sent-packet handler widens its reordering thresholds instead, so the next
// reordering is not mistaken for loss.
func (c *cubic) OnSpuriousLoss(now time.Time, pn uint64, bytes int) {}

func (c *cubic) OnAck(now time.Time, priorInFlight, bytesInFlight int, rs RateSample) {}

func (c *cubic) OnRetransmissionTimeout(now time.Time) {
	// Persistent congestion (RFC 9002 §7.6.2, RFC 9438 §4.8).
	c.wMax = c.cwnd
	c.ssthresh = max(c.cwnd*cubicBeta, c.minWindow())
	c.cwnd = c.minWindow()
	c.epochStart = time.Time{}
	c.inRecovery = false
	c.hs.exit()
}

func (c *cubic) CanSend(bytesInFlight int) bool {
	return float64(bytesInFlight+c.mds) <= c.cwnd
}

func (c *cubic) CongestionWindow() int { return int(c.cwnd) }

func (c *cubic) InSlowStart() bool { return c.cwnd < c.ssthresh }

func (c *cubic) PacingRate() uint64 {
	gain := cubicPacingGain
	if c.InSlowStart() {
		gain = slowStartPacingGain
	}
	if !c.rtt.HasMeasurement() {
		// No RTT yet: the initial window goes out unpaced.
		return bytesPerSecond(gain*c.cwnd, time.Millisecond)
	}
	return bytesPerSecond(gain*c.cwnd, c.rtt.SmoothedRTT())
}

func (c *cubic) SetMaxDatagramSize(n int) {
	if n <= 0 {
		return
	}
	c.mds = n
	c.cwnd = max(c.cwnd, c.minWindow())
}
