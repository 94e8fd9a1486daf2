package congestion

import (
	"testing"
	"time"
)

func TestRTTStatsBeforeFirstSample(t *testing.T) {
	var r RTTStats
	if r.HasMeasurement() || r.SmoothedRTT() != InitialRTT || r.RTTVar() != InitialRTT/2 || r.MinRTT() != 0 {
		t.Fatalf("initial: srtt %v rttvar %v min %v", r.SmoothedRTT(), r.RTTVar(), r.MinRTT())
	}
	// RFC 9002 §6.2.2: 333 ms + 4 × 166.5 ms + max_ack_delay.
	if got, want := r.PTO(true), 333*time.Millisecond+666*time.Millisecond+DefaultMaxAckDelay; got != want {
		t.Fatalf("initial PTO %v, want %v", got, want)
	}
}

func TestRTTStatsRFC9002(t *testing.T) {
	ms := time.Millisecond
	var r RTTStats
	r.SetMaxAckDelay(25 * ms)

	// First sample (§5.3): everything from it, ack delay ignored.
	r.UpdateRTT(100*ms, 10*ms)
	if r.LatestRTT() != 100*ms || r.SmoothedRTT() != 100*ms || r.RTTVar() != 50*ms || r.MinRTT() != 100*ms {
		t.Fatalf("first sample: latest %v srtt %v rttvar %v min %v", r.LatestRTT(), r.SmoothedRTT(), r.RTTVar(), r.MinRTT())
	}

	// Second sample: ack delay 50 ms is clamped to max_ack_delay 25 ms and
	// subtracted: adjusted = 175 ms.
	r.UpdateRTT(200*ms, 50*ms)
	wantVar := (3*50*ms + 75*ms) / 4    // 56.25 ms
	wantSRTT := (7*100*ms + 175*ms) / 8 // 109.375 ms
	if r.RTTVar() != wantVar || r.SmoothedRTT() != wantSRTT || r.MinRTT() != 100*ms || r.LatestRTT() != 200*ms {
		t.Fatalf("second sample: srtt %v (want %v) rttvar %v (want %v) min %v", r.SmoothedRTT(), wantSRTT, r.RTTVar(), wantVar, r.MinRTT())
	}

	// Third: 110 ms with 20 ms delay; subtracting would go below min_rtt
	// (110 < 100 + 20), so the sample is used unadjusted.
	prevSRTT, prevVar := r.SmoothedRTT(), r.RTTVar()
	r.UpdateRTT(110*ms, 20*ms)
	diff := prevSRTT - 110*ms
	if diff < 0 {
		diff = -diff
	}
	if got, want := r.SmoothedRTT(), (7*prevSRTT+110*ms)/8; got != want {
		t.Fatalf("third sample srtt %v, want %v", got, want)
	}
	if got, want := r.RTTVar(), (3*prevVar+diff)/4; got != want {
		t.Fatalf("third sample rttvar %v, want %v", got, want)
	}

	// min_rtt takes the raw sample, never adjusted.
	r.UpdateRTT(80*ms, 25*ms)
	if r.MinRTT() != 80*ms {
		t.Fatalf("min %v, want 80ms", r.MinRTT())
	}
	// Non-positive samples are ignored.
	r.UpdateRTT(0, 0)
	r.UpdateRTT(-ms, 0)
	if r.LatestRTT() != 80*ms {
		t.Fatalf("latest changed by a bad sample: %v", r.LatestRTT())
	}

	pto := r.PTO(true)
	if want := r.SmoothedRTT() + 4*r.RTTVar() + 25*ms; pto != want {
		t.Fatalf("PTO %v, want %v", pto, want)
	}
	if got := r.PTO(false); got != pto-25*ms {
		t.Fatalf("PTO without ack delay %v", got)
	}
}

func TestRTTStatsPTOGranularityFloor(t *testing.T) {
	var r RTTStats
	r.SetMaxAckDelay(0)
	for range 100 {
		r.UpdateRTT(10*time.Millisecond, 0)
	}
	// rttvar has decayed to ~0: the kGranularity floor applies.
	if r.RTTVar() >= time.Millisecond/4 {
		t.Fatalf("rttvar did not decay: %v", r.RTTVar())
	}
	if got, want := r.PTO(false), 10*time.Millisecond+TimerGranularity; got != want {
		t.Fatalf("PTO %v, want %v", got, want)
	}
}
