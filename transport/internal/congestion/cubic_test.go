package congestion

import (
	"math"
	"testing"
	"time"
)

var t0 = time.Unix(1_000_000, 0)

const mss = 1000

// cubicDriver runs a CUBIC controller ACK-clocked over a path with a fixed
// RTT and no queue: every packet is acknowledged (or found lost) one RTT
// after it was sent, and each ACK lets the window send again.
type cubicDriver struct {
	c        *cubic
	rtt      *RTTStats
	now      time.Time
	pn       uint64
	d        time.Duration
	inflight int
	fifo     []sentAt
	lose     map[uint64]bool
}

type sentAt struct {
	pn uint64
	at time.Time
}

func newCubicDriver(rtt time.Duration) *cubicDriver {
	r := &RTTStats{}
	r.UpdateRTT(rtt, 0)
	d := &cubicDriver{c: newCubic(r, mss), rtt: r, now: t0, d: rtt, lose: map[uint64]bool{}}
	d.fill(t0)
	return d
}

func (d *cubicDriver) fill(now time.Time) {
	for d.c.CanSend(d.inflight) {
		d.c.OnPacketSent(now, d.inflight, d.pn, mss, true)
		d.fifo = append(d.fifo, sentAt{d.pn, now})
		d.pn++
		d.inflight += mss
	}
}

// loseNext makes the next packet sent get lost.
func (d *cubicDriver) loseNext() { d.lose[d.pn] = true }

// round runs one RTT; every ACK carries the RTT sample given.
func (d *cubicDriver) round(sample time.Duration) {
	end := d.now.Add(d.d)
	for len(d.fifo) > 0 && !d.fifo[0].at.Add(d.d).After(end) {
		p := d.fifo[0]
		d.fifo = d.fifo[1:]
		at := p.at.Add(d.d)
		prior := d.inflight
		d.inflight -= mss
		if d.lose[p.pn] {
			d.c.OnCongestionEvent(at, p.pn, mss, prior)
		} else {
			d.rtt.UpdateRTT(sample, 0)
			d.c.OnPacketAcked(at, p.pn, mss, prior)
		}
		d.fill(at)
	}
	d.now = end
}

func TestCubicReductionAndOneCutPerRound(t *testing.T) {
	d := newCubicDriver(100 * time.Millisecond)
	for d.c.CongestionWindow() < 100*mss {
		d.round(100 * time.Millisecond)
	}
	w := float64(d.c.CongestionWindow())
	// Several losses from the same window: one reduction.
	largest := d.pn - 1
	d.c.OnCongestionEvent(d.now, largest-10, mss, int(w))
	d.c.OnCongestionEvent(d.now, largest-5, mss, int(w))
	d.c.OnCongestionEvent(d.now, largest, mss, int(w))
	if got, want := float64(d.c.CongestionWindow()), math.Floor(w*cubicBeta); got != want {
		t.Fatalf("window %v after losses in one round, want %v (β = 0.7 of %v)", got, want, w)
	}
	if d.c.InSlowStart() {
		t.Fatal("still in slow start after loss")
	}
	if d.c.wMax != w {
		t.Fatalf("W_max %v, want %v", d.c.wMax, w)
	}
	// A loss of a packet sent after the reduction is a new event, and
	// fast convergence lowers W_max below the window it cut from.
	w2 := d.c.cwnd
	d.c.OnPacketSent(d.now, 0, d.pn, mss, true)
	d.c.OnCongestionEvent(d.now, d.pn, mss, mss)
	d.pn++
	if got := d.c.cwnd; math.Abs(got-w2*cubicBeta) > 1e-6 {
		t.Fatalf("second reduction to %v, want %v", got, w2*cubicBeta)
	}
	if want := w2 * (1 + cubicBeta) / 2; math.Abs(d.c.wMax-want) > 1e-6 {
		t.Fatalf("fast convergence W_max %v, want %v", d.c.wMax, want)
	}
}

func TestCubicGrowthFollowsRFC9438(t *testing.T) {
	const rtt = 100 * time.Millisecond
	d := newCubicDriver(rtt)
	for d.c.CongestionWindow() < 200*mss {
		d.round(rtt)
	}
	// One loss: the window is cut when it is detected, one RTT later.
	d.loseNext()
	for d.c.epochStart.IsZero() {
		d.round(rtt)
	}
	epoch := d.c.epochStart
	wMax := d.c.wMax / mss
	k := math.Cbrt(wMax * (1 - cubicBeta) / cubicC)
	if math.Abs(d.c.cwnd/mss-wMax*cubicBeta) > 1 {
		t.Fatalf("window %v after loss, want %v", d.c.cwnd/mss, wMax*cubicBeta)
	}
	worst := 0.0
	for d.now.Sub(epoch) < time.Duration(2*k*float64(time.Second)) {
		d.round(rtt)
		// The window at the end of this round against W_cubic(t)
		// (RFC 9438 eq. 1), in segments.
		tt := d.now.Sub(epoch).Seconds()
		want := cubicC*math.Pow(tt-k, 3) + wMax
		got := d.c.cwnd / mss
		worst = max(worst, math.Abs(got-want)/want)
		if math.Abs(got-want) > max(0.03*want, 3) {
			t.Fatalf("t = %.2fs (K = %.2fs): window %.1f, RFC 9438 W_cubic %.1f", tt, k, got, want)
		}
	}
	t.Logf("W_max %.0f segments, K %.2fs: window within %.2f%% of W_cubic(t) over 2K", wMax, k, worst*100)
	if d.c.cwnd/mss <= wMax*1.2 {
		t.Fatalf("window %v did not probe past W_max %v in the convex region", d.c.cwnd/mss, wMax)
	}
}

func TestCubicRenoFriendlyRegion(t *testing.T) {
	// A small window on a short RTT: Reno's line beats the cubic curve,
	// and the window grows by about α_cubic = 0.53 segments per RTT.
	const rtt = 2 * time.Millisecond
	d := newCubicDriver(rtt)
	for d.c.CongestionWindow() < 20*mss {
		d.round(rtt)
	}
	d.loseNext()
	for d.c.epochStart.IsZero() {
		d.round(rtt)
	}
	wMax := d.c.wMax / mss
	// Below W_max: α_cubic per RTT.
	start := d.c.cwnd / mss
	const rounds = 8
	for range rounds {
		d.round(rtt)
	}
	if growth := (d.c.cwnd/mss - start) / rounds; math.Abs(growth-cubicAlpha) > 0.1 {
		t.Fatalf("Reno-friendly growth %.2f segments per RTT below W_max, want %.2f", growth, cubicAlpha)
	}
	// Past W_max: one segment per RTT, like Reno.
	for d.c.wEst/mss < wMax {
		d.round(rtt)
	}
	start = d.c.cwnd / mss
	for range rounds {
		d.round(rtt)
	}
	if growth := (d.c.cwnd/mss - start) / rounds; math.Abs(growth-1) > 0.15 {
		t.Fatalf("Reno-friendly growth %.2f segments per RTT above W_max, want 1", growth)
	}
}

func TestCubicNoGrowthWhenAppLimited(t *testing.T) {
	d := newCubicDriver(100 * time.Millisecond)
	before := d.c.CongestionWindow()
	// One packet in flight at a time: the window is not being used.
	for range 100 {
		d.c.OnPacketSent(d.now, 0, d.pn, mss, true)
		d.c.OnPacketAcked(d.now.Add(100*time.Millisecond), d.pn, mss, mss)
		d.pn++
		d.now = d.now.Add(100 * time.Millisecond)
	}
	if got := d.c.CongestionWindow(); got != before {
		t.Fatalf("window grew from %d to %d while app-limited", before, got)
	}
}

func TestHyStartExit(t *testing.T) {
	const base = 50 * time.Millisecond
	d := newCubicDriver(base)
	for range 4 {
		d.round(base)
	}
	if !d.c.InSlowStart() || d.c.hs.inCSS {
		t.Fatal("left slow start with a steady RTT")
	}
	// The RTT rises by more than max(4 ms, base/8 = 6.25 ms): CSS, where
	// the window grows by a quarter of what is acknowledged.
	d.round(base + 10*time.Millisecond)
	if !d.c.hs.inCSS {
		t.Fatal("no Conservative Slow Start after the RTT rose")
	}
	w := d.c.CongestionWindow()
	d.round(base + 10*time.Millisecond)
	if got, want := d.c.CongestionWindow(), w+w/cssGrowthDivisor; got < want-mss || got > want+mss {
		t.Fatalf("CSS round grew %d → %d, want ≈ %d", w, got, want)
	}
	// CSS lasts 5 rounds, then slow start ends without any loss.
	for i := 0; d.c.InSlowStart(); i++ {
		if i > cssRounds {
			t.Fatal("CSS did not end")
		}
		d.round(base + 10*time.Millisecond)
	}
	if d.c.ssthresh > d.c.cwnd || d.c.inRecovery {
		t.Fatalf("ssthresh %v window %v: not a loss-free exit", d.c.ssthresh, d.c.cwnd)
	}
}

func TestHyStartSpuriousRise(t *testing.T) {
	const base = 50 * time.Millisecond
	d := newCubicDriver(base)
	for range 3 {
		d.round(base)
	}
	d.round(base + 10*time.Millisecond)
	if !d.c.hs.inCSS {
		t.Fatal("no CSS after the RTT rose")
	}
	// The RTT falls back below the baseline: back to slow start.
	d.round(base)
	if d.c.hs.inCSS || !d.c.InSlowStart() {
		t.Fatal("still in CSS after the RTT fell back")
	}
}

func TestCubicPacing(t *testing.T) {
	d := newCubicDriver(100 * time.Millisecond)
	// Slow start: twice the window per RTT.
	if got, want := d.c.PacingRate(), uint64(2*10*mss*10); got != want {
		t.Fatalf("slow start pacing %d, want %d", got, want)
	}
	d.c.OnCongestionEvent(t0, 0, mss, 0)
	w := float64(d.c.CongestionWindow())
	if got, want := d.c.PacingRate(), uint64(1.25*w*10); got != want {
		t.Fatalf("congestion avoidance pacing %d, want %d", got, want)
	}
}

func TestCubicPersistentCongestion(t *testing.T) {
	d := newCubicDriver(100 * time.Millisecond)
	for range 5 {
		d.round(100 * time.Millisecond)
	}
	d.c.OnRetransmissionTimeout(d.now)
	if got := d.c.CongestionWindow(); got != minWindowPackets*mss {
		t.Fatalf("window %d, want %d", got, minWindowPackets*mss)
	}
	if d.c.CanSend(minWindowPackets*mss - mss + 1) {
		t.Fatal("CanSend past the window")
	}
	if !d.c.CanSend(minWindowPackets*mss - mss) {
		t.Fatal("CanSend refuses a packet that fits")
	}
}
