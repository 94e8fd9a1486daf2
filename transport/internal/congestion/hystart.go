package congestion

import (
	"math"
	"time"
)

// HyStart++ constants (RFC 9406 §4.3).
const (
	hystartMinRTTThresh  = 4 * time.Millisecond
	hystartMaxRTTThresh  = 16 * time.Millisecond
	hystartMinRTTDivisor = 8
	hystartNRTTSample    = 8
	cssGrowthDivisor     = 4
	cssRounds            = 5
)

type hystartResult uint8

const (
	hystartContinue hystartResult = iota
	hystartExit
)

// hystart is HyStart++ (RFC 9406): slow start leaves early when the RTT
// rises by more than an eighth of the previous round's minimum, first into
// Conservative Slow Start (growth divided by 4) for up to 5 rounds, in case
// the rise was noise.
//
//	SS ──rtt rise──▶ CSS ──5 rounds──▶ exit (congestion avoidance)
//	 ▲               │
//	 └──rtt fell back┘        loss in SS or CSS ──▶ exit
type hystart struct {
	done       bool // left slow start for good
	roundEnd   uint64
	roundValid bool

	lastRoundMinRTT    time.Duration
	currentRoundMinRTT time.Duration
	sampleCount        int

	inCSS         bool
	cssBaseline   time.Duration
	cssRoundCount int
}

func (h *hystart) exit() {
	h.done = true
	h.inCSS = false
}

// onAck processes the ACK of pn in slow start; largestSent is the largest
// packet number sent so far, latestRTT the latest RTT sample.
func (h *hystart) onAck(pn, largestSent uint64, latestRTT time.Duration) hystartResult {
	if h.done {
		return hystartContinue
	}
	if !h.roundValid || pn >= h.roundEnd {
		// A round ends when the packets sent at its start are
		// acknowledged (§4.2: windowEnd = SND.NXT).
		if h.roundValid && h.inCSS {
			h.cssRoundCount++
			if h.cssRoundCount >= cssRounds {
				h.exit()
				return hystartExit
			}
		}
		h.roundValid = true
		h.roundEnd = largestSent + 1
		h.lastRoundMinRTT = h.currentRoundMinRTT
		h.currentRoundMinRTT = math.MaxInt64
		h.sampleCount = 0
	}
	if latestRTT <= 0 {
		return hystartContinue
	}
	h.currentRoundMinRTT = min(h.currentRoundMinRTT, latestRTT)
	h.sampleCount++
	if h.sampleCount < hystartNRTTSample || h.lastRoundMinRTT == 0 || h.lastRoundMinRTT == math.MaxInt64 {
		return hystartContinue
	}
	if h.inCSS {
		if h.currentRoundMinRTT < h.cssBaseline {
			// The RTT rise was spurious: back to slow start.
			h.inCSS = false
			h.cssRoundCount = 0
		}
		return hystartContinue
	}
	thresh := min(max(h.lastRoundMinRTT/hystartMinRTTDivisor, hystartMinRTTThresh), hystartMaxRTTThresh)
	if h.currentRoundMinRTT >= h.lastRoundMinRTT+thresh {
		h.inCSS = true
		h.cssBaseline = h.currentRoundMinRTT
		h.cssRoundCount = 0
	}
	return hystartContinue
}
