package node

import (
	"context"
	"log/slog"
	"net/netip"
	"sync"
	"testing"
	"testing/synctest"
	"time"
)

// pace runs a pacer with batches at the times next gives (from the last
// batch's time and size) until the round is done or until end, and
// reports the batches.
func pace(p *sweepPacer, now, end time.Time, next func(now time.Time, k int) time.Time) (times []time.Time, sizes []int) {
	for p.left > 0 && !now.After(end) {
		k := p.batch(now)
		times, sizes = append(times, now), append(sizes, k)
		now = next(now, k)
	}
	return times, sizes
}

func TestSweepPacerSteady(t *testing.T) {
	t0 := time.Unix(1000, 0)
	p := newSweepPacer(defaultSweepRate, t0.Add(15*time.Second-sweepReserve), t0)
	times, sizes := pace(p, t0, t0.Add(time.Minute), func(now time.Time, _ int) time.Time { return now.Add(sweepTick) })
	if p.left != 0 {
		t.Fatalf("%d pings left", p.left)
	}
	per := defaultSweepRate*sweepTick.Seconds() + 1
	for i, k := range sizes {
		if float64(k) > per {
			t.Fatalf("batch %d sent %d pings, want at most %.1f", i, k, per)
		}
	}
	took := times[len(times)-1].Sub(t0)
	want := time.Duration(float64(sweepPorts) / defaultSweepRate * float64(time.Second))
	if took < want-2*sweepTick || took > want+2*sweepTick {
		t.Fatalf("the range took %v, want %v at %d pings/s", took, want, defaultSweepRate)
	}
}

func TestSweepPacerSkipsLateTime(t *testing.T) {
	t0 := time.Unix(1000, 0)
	deadline := t0.Add(15*time.Second - sweepReserve)
	p := newSweepPacer(defaultSweepRate, deadline, t0)
	per := int(defaultSweepRate*sweepTick.Seconds()) + 1
	now := t0
	for now.Before(t0.Add(500 * time.Millisecond)) {
		if k := p.batch(now); k > per {
			t.Fatalf("batch at %v sent %d pings, want at most %d", now.Sub(t0), k, per)
		}
		now = now.Add(sweepTick)
	}
	// 100 ms late, well ahead of the deadline's schedule: one tick's
	// worth, no backlog; and the same for the next.
	for _, late := range []time.Duration{100 * time.Millisecond, sweepTick} {
		now = now.Add(late)
		if k := p.batch(now); k > per {
			t.Fatalf("a batch %v after the last sent %d pings, want at most %d", late, k, per)
		}
	}

	// Late from the start, the round falls behind the slowest schedule
	// that meets the deadline: a late batch sends that schedule's share
	// of its lateness, far from the backlog.
	p = newSweepPacer(defaultSweepRate, deadline, t0)
	p.batch(t0)
	late := 100 * time.Millisecond
	backlog := int(defaultSweepRate * late.Seconds())
	share := int(float64(sweepPorts)*late.Seconds()/deadline.Sub(t0).Seconds()) + 1
	if k := p.batch(t0.Add(late)); k > share || k >= backlog/4 {
		t.Fatalf("a batch %v late at the start sent %d pings, want at most %d (the backlog is %d)", late, k, share, backlog)
	}
}

// A sweep woken late every time still covers the range by the deadline,
// and never sends faster than its rate.
func TestSweepPacerCoversByDeadline(t *testing.T) {
	for _, late := range []time.Duration{0, 10 * time.Millisecond, 40 * time.Millisecond, 250 * time.Millisecond} {
		for _, timeout := range []time.Duration{5 * time.Second, 15 * time.Second} {
			t0 := time.Unix(1000, 0)
			deadline := t0.Add(timeout - sweepReserve)
			p := newSweepPacer(defaultSweepRate, deadline, t0)
			times, sizes := pace(p, t0, deadline.Add(time.Second), func(now time.Time, _ int) time.Time {
				return now.Add(sweepTick + late)
			})
			if p.left != 0 {
				t.Errorf("woken %v late, timeout %v: %d pings left at %v", late, timeout, p.left, times[len(times)-1].Sub(t0))
				continue
			}
			// By the deadline, or in the first batch after it.
			if end := times[len(times)-1]; end.After(deadline.Add(sweepTick + late)) {
				t.Errorf("woken %v late, timeout %v: the range took %v, past the deadline %v", late, timeout, end.Sub(t0), deadline.Sub(t0))
			}
			for i := 1; i < len(sizes); i++ {
				if max := defaultSweepRate*times[i].Sub(times[i-1]).Seconds() + 1; float64(sizes[i]) > max {
					t.Errorf("woken %v late: batch %d sent %d pings in %v, above the rate", late, i, sizes[i], times[i].Sub(times[i-1]))
				}
			}
		}
	}
}

func TestSweepPacerLowRate(t *testing.T) {
	t0 := time.Unix(1000, 0)
	p := newSweepPacer(100, time.Time{}, t0)
	if p.interval != 10*time.Millisecond {
		t.Fatalf("interval %v at 100 pings/s, want 10ms", p.interval)
	}
	_, sizes := pace(p, t0, t0.Add(time.Second-time.Millisecond), func(now time.Time, _ int) time.Time { return now.Add(p.interval) })
	sum := 0
	for _, k := range sizes {
		sum += k
	}
	if sum < 99 || sum > 101 {
		t.Fatalf("%d pings in a second at 100 pings/s", sum)
	}
}

func TestSweepRoundCoversRange(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ctx, cancel := context.WithTimeout(t.Context(), 15*time.Second)
		defer cancel()
		seen := make([]bool, 65536)
		start := time.Now()
		sent, _, err := sweepRound(ctx, defaultSweepRate, time.Now().Add(15*time.Second-sweepReserve), func(port uint16) {
			if port < sweepFirstPort || seen[port] {
				t.Fatalf("port %d sent twice or out of range", port)
			}
			seen[port] = true
		})
		if err != nil || sent != sweepPorts {
			t.Fatalf("sent %d, err %v; want %d", sent, err, sweepPorts)
		}
		if took := time.Since(start); took > 2100*time.Millisecond {
			t.Fatalf("the round took %v at %d pings/s", took, defaultSweepRate)
		}
	})
}

// Two sweeps at once take turns, round by round, and each still covers
// the range before its punch ends.
func TestSweepOneAtATime(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		n := &Node{log: slog.New(slog.DiscardHandler), sweeping: make(chan struct{}, 1)}
		var mu sync.Mutex
		running, most := 0, 0
		var wg sync.WaitGroup
		for i := range 2 {
			wg.Go(func() {
				ctx, cancel := context.WithTimeout(t.Context(), 15*time.Second)
				defer cancel()
				start := time.Now()
				sent := 0
				target := netip.AddrFrom4([4]byte{192, 0, 2, byte(i)})
				n.sweepPorts(ctx, target, func(uint16) {
					mu.Lock()
					if sent%sweepPorts == 0 {
						// A round starts: no other may run. (Rounds
						// send from one goroutine, so count per round.)
						running++
						most = max(most, running)
					}
					sent++
					if sent%sweepPorts == 0 {
						running--
					}
					mu.Unlock()
				})
				if sent != sweepRounds*sweepPorts {
					t.Errorf("sweep %d sent %d pings, want %d", i, sent, sweepRounds*sweepPorts)
				}
				if took := time.Since(start); took > 15*time.Second-sweepReserve {
					t.Errorf("sweep %d took %v", i, took)
				}
			})
		}
		wg.Wait()
		if most != 1 {
			t.Fatalf("%d sweep rounds ran at once", most)
		}
	})
}

// A sweep waiting for its turn gives up when its punch ends.
func TestSweepWaitEndsWithPunch(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		n := &Node{log: slog.New(slog.DiscardHandler), sweeping: make(chan struct{}, 1)}
		n.sweeping <- struct{}{} // another sweep runs
		ctx, cancel := context.WithTimeout(t.Context(), time.Second)
		defer cancel()
		sent := 0
		n.sweepPorts(ctx, netip.AddrFrom4([4]byte{192, 0, 2, 1}), func(uint16) { sent++ })
		if sent != 0 {
			t.Fatalf("a sweep that never had its turn sent %d pings", sent)
		}
	})
}
