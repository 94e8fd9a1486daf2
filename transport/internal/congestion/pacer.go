package congestion

import (
	"math"
	"time"
)

const (
	// MinPacingDelay is the longest the pacer makes a sender wait to
	// gather a batch: at 100 Mbit/s it wakes about every millisecond and
	// sends 8 or 9 packets of 1,452 bytes.
	MinPacingDelay = time.Millisecond
	// minPacingWake is the shortest wait the pacer asks for: waking the
	// run loop more often costs more than the smoothness is worth.
	minPacingWake = 100 * time.Microsecond
	// pacingBatchPackets is the batch (GSO-style) the pacer aims for at
	// high rates, so that a multi-Gbit/s sender is not woken per packet.
	pacingBatchPackets = 10
	// minBurstPackets is the burst allowed at low rates.
	minBurstPackets = 2
)

// Pacer is a token bucket that spreads a window's packets over the RTT
// instead of sending them back to back. Tokens (bytes) accrue at the rate
// returned by the rate function.
//
// The sender is woken once per batch: when a packet's worth of tokens has
// accrued at low rates, when pacingBatchPackets have at high rates, bounded
// to [minPacingWake, MinPacingDelay]. The bucket holds twice what accrues
// between wakes (at least two packets), so a late wake-up does not cost
// throughput and nothing bursts beyond that.
//
// It is not safe for concurrent use.
type Pacer struct {
	rate            func() uint64 // bytes per second
	maxDatagramSize int
	budgetAtLast    int
	lastSent        time.Time
}

// NewPacer returns a pacer whose bucket fills at rate() bytes per second. It
// starts full.
func NewPacer(rate func() uint64, maxDatagramSize int) *Pacer {
	if maxDatagramSize <= 0 {
		maxDatagramSize = DefaultMaxDatagramSize
	}
	p := &Pacer{rate: rate, maxDatagramSize: maxDatagramSize}
	p.budgetAtLast = p.maxBurst()
	return p
}

// SetMaxDatagramSize sets the size of a full packet.
func (p *Pacer) SetMaxDatagramSize(n int) {
	if n > 0 {
		p.maxDatagramSize = n
	}
}

// wakeInterval is how long the pacer lets tokens accrue for one batch.
func (p *Pacer) wakeInterval(rate uint64) time.Duration {
	if rate == 0 {
		return MinPacingDelay
	}
	batch := float64(pacingBatchPackets*p.maxDatagramSize) / float64(rate) * float64(time.Second)
	return time.Duration(min(max(batch, float64(minPacingWake)), float64(MinPacingDelay)))
}

// maxBurst is the bucket's capacity in bytes.
func (p *Pacer) maxBurst() int {
	r := p.rate()
	b := float64(minBurstPackets * p.maxDatagramSize)
	b = max(b, float64(r)*2*p.wakeInterval(r).Seconds())
	return int(min(b, maxWindowBytes))
}

// Budget returns how many bytes may be sent now.
func (p *Pacer) Budget(now time.Time) int {
	burst := p.maxBurst()
	if p.lastSent.IsZero() {
		return burst
	}
	elapsed := now.Sub(p.lastSent)
	if elapsed <= 0 {
		return min(p.budgetAtLast, burst)
	}
	r := p.rate()
	// Cap the accrual before multiplying so a long idle cannot overflow.
	var accrued uint64
	if elapsed >= time.Second || r > math.MaxUint64/uint64(elapsed) {
		accrued = uint64(burst)
	} else {
		accrued = r * uint64(elapsed) / uint64(time.Second)
	}
	return int(min(uint64(p.budgetAtLast)+accrued, uint64(burst)))
}

// SentPacket takes size bytes from the bucket.
func (p *Pacer) SentPacket(now time.Time, size int) {
	b := p.Budget(now)
	p.budgetAtLast = max(b-size, 0)
	p.lastSent = now
}

// TimeUntilSend returns when the next full-size packet may leave; the zero
// time means now.
func (p *Pacer) TimeUntilSend(now time.Time) time.Time {
	if p.Budget(now) >= p.maxDatagramSize {
		return time.Time{}
	}
	r := p.rate()
	if r == 0 {
		r = 1
	}
	need := p.maxDatagramSize - p.budgetAtLast
	wait := time.Duration(math.Ceil(float64(need) * float64(time.Second) / float64(r)))
	return p.lastSent.Add(max(wait, p.wakeInterval(r)))
}
