package congestion

import "time"

// RateSample is one delivery-rate sample, produced per ACK
// (draft-cheng-iccrg-delivery-rate-estimation §3.3). BBR builds its model of
// the path from these; CUBIC ignores them.
type RateSample struct {
	// DeliveryRate is Delivered/Interval in bytes per second; zero when
	// the sample is invalid (nothing acknowledged, or an interval shorter
	// than min_rtt, which would overestimate the rate).
	DeliveryRate uint64
	// Delivered is the number of bytes delivered over Interval.
	Delivered uint64
	// Interval is the longer of the send and ACK intervals of the sample.
	Interval time.Duration
	// PriorDelivered is the connection's delivered count when the most
	// recently sent acknowledged packet was sent; TotalDelivered is the
	// count now. BBR counts round trips with them.
	PriorDelivered uint64
	TotalDelivered uint64
	// RTT is the RTT of the most recently sent acknowledged packet, not
	// adjusted for ack delay; zero when nothing was acknowledged.
	RTT time.Duration
	// IsAppLimited is set when the sender ran out of data while the
	// sample's packets were in flight: the rate is then a lower bound.
	IsAppLimited bool
	// AckedBytes and LostBytes are what this ACK newly acknowledged and
	// declared lost.
	AckedBytes int
	LostBytes  int
	// TxInFlight is the bytes in flight when the most recently sent
	// acknowledged packet was sent.
	TxInFlight int
}

// PacketRateState is what the estimator stores with each sent packet.
type PacketRateState struct {
	Delivered     uint64
	DeliveredTime time.Time
	FirstSentTime time.Time
	SentTime      time.Time
	TxInFlight    int
	IsAppLimited  bool
}

// RateEstimator holds the connection side of delivery-rate estimation. The
// zero value is ready. The sent-packet handler calls OnPacketSent for each
// packet, OnPacketAcked for each newly acknowledged one, then Sample once per
// ACK; the session calls OnAppLimited when it has nothing to send.
type RateEstimator struct {
	delivered     uint64
	deliveredTime time.Time
	firstSentTime time.Time
	// appLimited is the delivered count at which the current app-limited
	// phase ends; zero when not app-limited.
	appLimited uint64

	// The sample being built for the current ACK.
	has          bool
	priorDeliv   uint64
	priorTime    time.Time
	sendElapsed  time.Duration
	ackElapsed   time.Duration
	rtt          time.Duration
	sampleAppLim bool
	txInFlight   int
	acked, lost  int
}

// Delivered returns the total bytes delivered so far.
func (e *RateEstimator) Delivered() uint64 { return e.delivered }

// OnPacketSent returns the state to store with a packet sent now while
// bytesInFlight bytes (before it) were in flight.
func (e *RateEstimator) OnPacketSent(now time.Time, bytesInFlight int) PacketRateState {
	if bytesInFlight == 0 {
		// Restart both intervals after idle: time spent with nothing in
		// flight says nothing about the path.
		e.firstSentTime = now
		e.deliveredTime = now
	}
	return PacketRateState{
		Delivered:     e.delivered,
		DeliveredTime: e.deliveredTime,
		FirstSentTime: e.firstSentTime,
		SentTime:      now,
		TxInFlight:    bytesInFlight,
		IsAppLimited:  e.appLimited != 0,
	}
}

// OnAppLimited marks the connection application-limited: the samples of the
// packets now in flight underestimate the path.
func (e *RateEstimator) OnAppLimited(bytesInFlight int) {
	e.appLimited = max(e.delivered+uint64(bytesInFlight), 1)
}

// OnPacketAcked accounts for one newly acknowledged packet of size bytes.
func (e *RateEstimator) OnPacketAcked(now time.Time, p *PacketRateState, size int) {
	e.delivered += uint64(size)
	e.deliveredTime = now
	e.acked += size
	// The sample follows the most recently sent packet acknowledged.
	if !e.has || p.Delivered > e.priorDeliv || (p.Delivered == e.priorDeliv && p.SentTime.After(e.priorTime)) {
		e.has = true
		e.priorDeliv = p.Delivered
		e.priorTime = p.DeliveredTime
		e.sampleAppLim = p.IsAppLimited
		e.sendElapsed = p.SentTime.Sub(p.FirstSentTime)
		e.ackElapsed = now.Sub(p.DeliveredTime)
		e.rtt = now.Sub(p.SentTime)
		e.txInFlight = p.TxInFlight
		e.firstSentTime = p.SentTime
	}
}

// OnPacketLost accounts for one packet declared lost.
func (e *RateEstimator) OnPacketLost(size int) { e.lost += size }

// Sample ends the current ACK and returns its rate sample. minRTT (zero if
// unknown) rejects intervals too short to be meaningful.
func (e *RateEstimator) Sample(minRTT time.Duration) RateSample {
	if e.appLimited != 0 && e.delivered > e.appLimited {
		e.appLimited = 0
	}
	rs := RateSample{
		TotalDelivered: e.delivered,
		AckedBytes:     e.acked,
		LostBytes:      e.lost,
	}
	e.acked, e.lost = 0, 0
	if !e.has {
		return rs
	}
	e.has = false
	rs.PriorDelivered = e.priorDeliv
	rs.IsAppLimited = e.sampleAppLim
	rs.RTT = e.rtt
	rs.TxInFlight = e.txInFlight
	rs.Delivered = e.delivered - e.priorDeliv
	// The longer of the two intervals: the send interval guards against
	// ACK compression, the ACK interval against send bursts (§3.3).
	rs.Interval = max(e.sendElapsed, e.ackElapsed)
	if rs.Interval <= 0 || rs.Interval < minRTT {
		return rs
	}
	rs.DeliveryRate = bytesPerSecond(float64(rs.Delivered), rs.Interval)
	return rs
}
