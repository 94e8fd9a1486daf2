package congestion

import (
	"testing"
	"time"
)

func fixedRate(r uint64) func() uint64 { return func() uint64 { return r } }

func TestPacerArithmetic(t *testing.T) {
	// 1 MB/s, 1000-byte packets: the burst is max(2 packets, 2 ms × rate)
	// = 2000 bytes.
	p := NewPacer(fixedRate(1_000_000), 1000)
	if got := p.Budget(t0); got != 2000 {
		t.Fatalf("initial budget %d, want 2000", got)
	}
	if !p.TimeUntilSend(t0).IsZero() {
		t.Fatal("must wait with a full bucket")
	}
	p.SentPacket(t0, 1000)
	p.SentPacket(t0, 1000)
	if got := p.Budget(t0); got != 0 {
		t.Fatalf("budget %d after the burst, want 0", got)
	}
	// 1000 bytes at 1 MB/s take 1 ms.
	if got := p.TimeUntilSend(t0); !got.Equal(t0.Add(time.Millisecond)) {
		t.Fatalf("next send %v, want +1ms", got.Sub(t0))
	}
	if got := p.Budget(t0.Add(500 * time.Microsecond)); got != 500 {
		t.Fatalf("budget after 0.5 ms %d, want 500", got)
	}
	// The bucket never holds more than the burst.
	if got := p.Budget(t0.Add(time.Hour)); got != 2000 {
		t.Fatalf("budget after an hour %d, want 2000", got)
	}
	// An oversized send empties the bucket without going negative.
	p.SentPacket(t0.Add(time.Hour), 5000)
	if got := p.Budget(t0.Add(time.Hour)); got != 0 {
		t.Fatalf("budget %d after an oversized send", got)
	}
}

func TestPacerLowRate(t *testing.T) {
	// 10 kB/s: a packet every 100 ms after a 2-packet burst.
	p := NewPacer(fixedRate(10_000), 1000)
	p.SentPacket(t0, 1000)
	p.SentPacket(t0, 1000)
	if got := p.TimeUntilSend(t0); !got.Equal(t0.Add(100 * time.Millisecond)) {
		t.Fatalf("next send %v, want +100ms", got.Sub(t0))
	}
}

// TestPacerBatches runs a sender that wakes only when the pacer says and
// then sends all it may: at 100 Mbit/s it must reach the rate, in batches of
// several packets, without ever exceeding the burst.
func TestPacerBatches(t *testing.T) {
	for _, c := range []struct {
		rate              uint64
		minBatch, maxWake int // packets per wake, wakes per second
	}{
		{100e3 / 8, 1, 10},     // 100 kbit/s: packet by packet
		{2e6 / 8, 1, 180},      // 2 Mbit/s: packet by packet
		{100e6 / 8, 8, 1000},   // 100 Mbit/s: a wake per millisecond
		{1e9 / 8, 10, 8700},    // 1 Gbit/s: 10-packet batches
		{10e9 / 8, 80, 10_000}, // 10 Gbit/s: a wake per 100 µs
	} {
		const size = 1452
		p := NewPacer(fixedRate(c.rate), size)
		burst := p.maxBurst()
		now := t0
		sent, wakes, maxBatch := 0, 0, 0
		minBatch := 1 << 30
		end := t0.Add(2 * time.Second)
		for now.Before(end) {
			batch := 0
			for p.Budget(now) >= size {
				p.SentPacket(now, size)
				sent += size
				batch += size
			}
			if batch > burst {
				t.Fatalf("rate %d: batch of %d bytes exceeds the burst %d", c.rate, batch, burst)
			}
			wakes++
			maxBatch = max(maxBatch, batch/size)
			if wakes > 1 {
				minBatch = min(minBatch, batch/size)
			}
			next := p.TimeUntilSend(now)
			if !next.After(now) {
				t.Fatalf("rate %d: TimeUntilSend %v not in the future with an empty bucket", c.rate, next)
			}
			now = next
		}
		got := float64(sent) / 2
		if got < 0.97*float64(c.rate) || got > 1.03*float64(c.rate)+float64(burst) {
			t.Errorf("rate %d: sent %.0f B/s", c.rate, got)
		}
		if minBatch < c.minBatch {
			t.Errorf("rate %d: batches as small as %d packets, want ≥ %d", c.rate, minBatch, c.minBatch)
		}
		if perSec := wakes / 2; perSec > c.maxWake {
			t.Errorf("rate %d: %d wakes per second", c.rate, perSec)
		}
		t.Logf("%6.1f Mbit/s: %d wakes/s, batches %d–%d packets", float64(c.rate)*8/1e6, wakes/2, minBatch, maxBatch)
	}
}

func TestMaxFilter(t *testing.T) {
	f := maxFilter{window: 10}
	f.Update(100, 0)
	f.Update(50, 1)
	if f.Get() != 100 {
		t.Fatalf("max %d", f.Get())
	}
	f.Update(80, 5)
	// The 100 sample ages out after 10 rounds; the next best takes over.
	f.Update(60, 11)
	if got := f.Get(); got != 80 {
		t.Fatalf("after the best aged out: %d, want 80", got)
	}
	f.Update(10, 30)
	if got := f.Get(); got != 10 {
		t.Fatalf("after everything aged out: %d, want 10", got)
	}
	f.Update(500, 31)
	if got := f.Get(); got != 500 {
		t.Fatalf("new max: %d", got)
	}
}

func TestRateEstimator(t *testing.T) {
	var e RateEstimator
	const size = 1000
	// Ten packets sent 1 ms apart; each acknowledged 50 ms after it was
	// sent: the delivery rate is 1000 bytes per ms.
	var states [20]PacketRateState
	for i := range 10 {
		states[i] = e.OnPacketSent(t0.Add(time.Duration(i)*time.Millisecond), i*size)
	}
	var rs RateSample
	for i := range 10 {
		at := t0.Add(time.Duration(i)*time.Millisecond + 50*time.Millisecond)
		// Keep the pipe full.
		states[10+i] = e.OnPacketSent(at, 10*size-size)
		e.OnPacketAcked(at, &states[i], size)
		rs = e.Sample(50 * time.Millisecond)
	}
	if rs.RTT != 50*time.Millisecond || rs.AckedBytes != size {
		t.Fatalf("sample %+v", rs)
	}
	// The second round's samples span a full RTT of deliveries.
	for i := 10; i < 20; i++ {
		at := t0.Add(time.Duration(i)*time.Millisecond + 50*time.Millisecond)
		e.OnPacketAcked(at, &states[i], size)
		rs = e.Sample(50 * time.Millisecond)
	}
	if rs.DeliveryRate < 180_000 || rs.DeliveryRate > 220_000 {
		t.Fatalf("delivery rate %d B/s, want ≈ 200000 (10 packets per 50 ms)", rs.DeliveryRate)
	}
	if rs.IsAppLimited {
		t.Fatal("app-limited without OnAppLimited")
	}
	e.OnAppLimited(0)
	st := e.OnPacketSent(t0.Add(time.Second), 0)
	if !st.IsAppLimited {
		t.Fatal("packet after OnAppLimited not marked")
	}
	e.OnPacketAcked(t0.Add(time.Second+50*time.Millisecond), &st, size)
	if rs := e.Sample(50 * time.Millisecond); !rs.IsAppLimited {
		t.Fatal("sample of an app-limited packet not marked")
	}
}
