package congestion

import (
	"math"
	"time"
)

const (
	// MinPacingDelay is the shortest wait the pacer asks for. Waking the
	// run loop more often costs more than the smoothness is worth; the
	// burst allowance below makes up for the coarser clock, so at high
	// rates packets leave in GSO-sized batches (about 9 packets of
	// 1,452 bytes per wake at 100 Mbit/s).
	MinPacingDelay = time.Millisecond
	// minBurstPackets is the burst allowed at low rates.
	minBurstPackets = 2
)

// Pacer is a token bucket that spreads a window's packets over the RTT
// instead of sending them back to back. Tokens (bytes) accrue at the rate
// returned by the rate function; the bucket holds at most
// max(2 packets, rate × (MinPacingDelay + TimerGranularity)) so that a sender
// woken no more often than every MinPacingDelay can still reach the rate.
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

// maxBurst is the bucket's capacity in bytes.
func (p *Pacer) maxBurst() int {
	r := p.rate()
	b := uint64(minBurstPackets * p.maxDatagramSize)
	if r > 0 {
		// rate × 2 ms, computed without overflow for any rate.
		perWake := r / uint64(time.Second/(MinPacingDelay+TimerGranularity))
		b = max(b, perWake)
	}
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
	return p.lastSent.Add(max(wait, MinPacingDelay))
}
