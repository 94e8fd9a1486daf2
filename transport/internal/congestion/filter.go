package congestion

// maxFilter tracks the maximum of a value over a sliding window of rounds
// using Kathleen Nichols' algorithm (as in Linux's lib/win_minmax.c): it
// keeps the best, second best and third best samples with their round, so
// that when the best one ages out a good replacement is at hand. O(1) space
// and time.
type maxFilter struct {
	window uint64 // in rounds
	s      [3]filterSample
}

type filterSample struct {
	value uint64
	round uint64
}

// Get returns the windowed maximum.
func (f *maxFilter) Get() uint64 { return f.s[0].value }

// Reset forgets everything and starts from one sample.
func (f *maxFilter) Reset(v, round uint64) {
	f.s[0] = filterSample{v, round}
	f.s[1] = f.s[0]
	f.s[2] = f.s[0]
}

// Update adds a sample taken in round.
func (f *maxFilter) Update(v, round uint64) {
	n := filterSample{v, round}
	if f.s[0].value == 0 || v >= f.s[0].value || round-f.s[2].round > f.window {
		// A new maximum, or nothing in the window is recent enough.
		f.Reset(v, round)
		return
	}
	if v >= f.s[1].value {
		f.s[1] = n
		f.s[2] = n
	} else if v >= f.s[2].value {
		f.s[2] = n
	}
	// Age the samples out as the window slides.
	dt := round - f.s[0].round
	switch {
	case dt > f.window:
		f.s[0] = f.s[1]
		f.s[1] = f.s[2]
		f.s[2] = n
		if round-f.s[0].round > f.window {
			f.s[0] = f.s[1]
			f.s[1] = f.s[2]
			f.s[2] = n
		}
	case f.s[1].round == f.s[0].round && dt > f.window/4:
		// A quarter of the window has passed without a second best: take
		// this one, so the fallback is not as old as the best.
		f.s[1] = n
		f.s[2] = n
	case f.s[2].round == f.s[1].round && dt > f.window/2:
		f.s[2] = n
	}
}
