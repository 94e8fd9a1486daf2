package congestion

import "time"

// RTT estimation constants (RFC 9002 §6.2.2 and §A.2).
const (
	// InitialRTT is the RTT assumed before the first sample (kInitialRtt).
	InitialRTT = 333 * time.Millisecond
	// TimerGranularity is the assumed resolution of the session's timer
	// (kGranularity); it floors every loss and probe timeout.
	TimerGranularity = time.Millisecond
	// DefaultMaxAckDelay is the peer's max_ack_delay when it announces none.
	DefaultMaxAckDelay = 25 * time.Millisecond
)

// RTTStats estimates the path's round-trip time as RFC 9002 §5 describes:
// latest_rtt, min_rtt, smoothed_rtt and rttvar. It lives in this package
// rather than in ackhandler so that the controllers can read it without an
// import cycle; ackhandler feeds it and the controllers only read it.
//
// The zero value is ready to use, with max_ack_delay = DefaultMaxAckDelay.
// It is not safe for concurrent use.
type RTTStats struct {
	latest      time.Duration
	min         time.Duration
	smoothed    time.Duration
	rttvar      time.Duration
	maxAckDelay time.Duration
	ackDelaySet bool // maxAckDelay was set; otherwise DefaultMaxAckDelay
	hasSample   bool
}

// SetMaxAckDelay records the peer's max_ack_delay: the longest it promises to
// hold back an acknowledgement. Ack delays it reports are clamped to it.
func (r *RTTStats) SetMaxAckDelay(d time.Duration) {
	r.maxAckDelay = max(d, 0)
	r.ackDelaySet = true
}

// MaxAckDelay returns the peer's max_ack_delay.
func (r *RTTStats) MaxAckDelay() time.Duration {
	if !r.ackDelaySet {
		return DefaultMaxAckDelay
	}
	return r.maxAckDelay
}

// HasMeasurement reports whether at least one sample has been taken.
func (r *RTTStats) HasMeasurement() bool { return r.hasSample }

// LatestRTT is the most recent sample, unadjusted; zero before the first.
func (r *RTTStats) LatestRTT() time.Duration { return r.latest }

// MinRTT is the smallest sample seen, unadjusted for ack delay; zero before
// the first.
func (r *RTTStats) MinRTT() time.Duration { return r.min }

// SmoothedRTT is the exponentially weighted mean RTT; InitialRTT before the
// first sample.
func (r *RTTStats) SmoothedRTT() time.Duration {
	if !r.hasSample {
		return InitialRTT
	}
	return r.smoothed
}

// RTTVar is the mean deviation of the RTT; InitialRTT/2 before the first
// sample.
func (r *RTTStats) RTTVar() time.Duration {
	if !r.hasSample {
		return InitialRTT / 2
	}
	return r.rttvar
}

// UpdateRTT takes one sample (RFC 9002 §5.3): sample is the time from sending
// the largest newly acknowledged packet to receiving its ACK, ackDelay the
// delay the peer reported in that ACK. Non-positive samples are ignored.
func (r *RTTStats) UpdateRTT(sample, ackDelay time.Duration) {
	if sample <= 0 {
		return
	}
	r.latest = sample
	if !r.hasSample {
		// The first sample sets everything (§5.3): there is nothing to
		// smooth against, and ack delay is not subtracted.
		r.hasSample = true
		r.min = sample
		r.smoothed = sample
		r.rttvar = sample / 2
		return
	}
	// min_rtt ignores ack delay: it must never be underestimated (§5.2).
	r.min = min(r.min, sample)
	// The peer may not delay longer than it promised (§5.3).
	ackDelay = min(max(ackDelay, 0), r.MaxAckDelay())
	adjusted := sample
	// Subtracting the delay must not take the sample below min_rtt: a
	// peer's bad clock would otherwise shrink the estimate.
	if sample >= r.min+ackDelay {
		adjusted -= ackDelay
	}
	diff := r.smoothed - adjusted
	if diff < 0 {
		diff = -diff
	}
	r.rttvar = (3*r.rttvar + diff) / 4
	r.smoothed = (7*r.smoothed + adjusted) / 8
}

// PTO returns the probe timeout before backoff (RFC 9002 §6.2.1):
// smoothed_rtt + max(4·rttvar, kGranularity), plus max_ack_delay when the
// peer may delay its ACKs of the packets in question.
func (r *RTTStats) PTO(includeMaxAckDelay bool) time.Duration {
	pto := r.SmoothedRTT() + max(4*r.RTTVar(), TimerGranularity)
	if includeMaxAckDelay {
		pto += r.MaxAckDelay()
	}
	return pto
}

// ResetMinRTT forgets min_rtt and restarts it from the latest sample, as RFC
// 9002 §5.2 allows after persistent congestion: the path may have changed.
func (r *RTTStats) ResetMinRTT() {
	if r.hasSample {
		r.min = r.latest
	}
}
