package congestion_test

import (
	"container/heap"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/parley-p2p/parley/transport/internal/ackhandler"
	"github.com/parley-p2p/parley/transport/internal/congestion"
)

// The packet-level simulation below drives the real ackhandler and a
// controller over one emulated bottleneck: a drop-tail queue in front of a
// link of rate bytes/s, a fixed propagation delay, random loss on the data
// path. The receiver is the real ReceivedPacketTracker. Time is simulated;
// a run is deterministic for a seed.

type simConfig struct {
	kind     congestion.Kind
	rate     float64       // bottleneck, bytes per second
	rtt      time.Duration // propagation round trip
	buffer   int           // drop-tail queue, bytes
	loss     float64       // random loss probability on the data path
	ackLoss  float64       // random loss probability on the ACK path
	jitter   time.Duration // random extra one-way delay (reorders packets)
	duration time.Duration
	warmup   time.Duration // excluded from the steady-state figures
	mds      int
	seed     uint64
}

type simResult struct {
	utilisation       float64 // goodput / link rate, whole run
	steadyUtilisation float64 // goodput / link rate after warmup
	// Queue delay seen by packets sent after warmup while the controller
	// was in steady state (BBR's PROBE_BW, CUBIC's congestion avoidance).
	maxQueueDelay  time.Duration
	meanQueueDelay time.Duration
	steadySent     int      // packets sent after warmup
	steadyDrops    int      // of which dropped by the full queue
	modes          []string // BBR's states in the order entered
	lost, spurious uint64
	queueDrops     int
	lostFrames     int
	ackedFrames    int
}

type simEventKind uint8

const (
	evArrive     simEventKind = iota // data packet reaches the receiver
	evAck                            // ACK reaches the sender
	evAckTimer                       // receiver's delayed-ACK timer
	evSenderWake                     // sender's pacing or loss timer
)

type simEvent struct {
	at     time.Time
	seq    uint64 // FIFO among equal times
	kind   simEventKind
	pn     uint64
	size   int
	ranges []ackhandler.Range
	delay  time.Duration
	gen    uint64
}

type eventQueue []simEvent

func (q eventQueue) Len() int { return len(q) }
func (q eventQueue) Less(i, j int) bool {
	if !q[i].at.Equal(q[j].at) {
		return q[i].at.Before(q[j].at)
	}
	return q[i].seq < q[j].seq
}
func (q eventQueue) Swap(i, j int) { q[i], q[j] = q[j], q[i] }
func (q *eventQueue) Push(x any)   { *q = append(*q, x.(simEvent)) }
func (q *eventQueue) Pop() any {
	old := *q
	e := old[len(old)-1]
	*q = old[:len(old)-1]
	return e
}

type countingCallbacks struct{ acked, lost int }

func (c *countingCallbacks) OnFrameAcked(ackhandler.Frame) { c.acked++ }
func (c *countingCallbacks) OnFrameLost(ackhandler.Frame)  { c.lost++ }

func simulate(t testing.TB, cfg simConfig) simResult {
	t.Helper()
	if cfg.mds == 0 {
		cfg.mds = 1452
	}
	rng := rand.New(rand.NewPCG(cfg.seed, 0x5eed))
	start := time.Unix(1_000_000, 0)
	end := start.Add(cfg.duration)
	steadyFrom := start.Add(cfg.warmup)

	rtt := &congestion.RTTStats{}
	rtt.SetMaxAckDelay(25 * time.Millisecond)
	cc := congestion.NewController(cfg.kind, rtt, cfg.mds)
	cb := &countingCallbacks{}
	h := ackhandler.NewSentPacketHandler(cc, rtt, cb, ackhandler.WithMaxDatagramSize(cfg.mds))
	tr := ackhandler.NewReceivedPacketTracker(25*time.Millisecond, 2)

	var (
		q          eventQueue
		seq        uint64
		wakeGen    uint64
		ackTimerAt time.Time
		linkFree   = start
		oneWay     = cfg.rtt / 2
		res        simResult
		received   int
		steadyRecv int
		qdSum      time.Duration
		qdN        int
		offset     uint64
		lastDbg    time.Time
	)
	push := func(e simEvent) {
		seq++
		e.seq = seq
		heap.Push(&q, e)
	}
	sendAck := func(now time.Time) {
		ranges, delay := tr.AppendAckRanges(nil, now)
		ackTimerAt = time.Time{}
		if rng.Float64() < cfg.ackLoss {
			return
		}
		push(simEvent{at: now.Add(oneWay), kind: evAck, ranges: ranges, delay: delay})
	}
	frames := make([]ackhandler.Frame, 1)
	// trySend sends what the window and the pacer allow, then arms the
	// sender's single timer at its earliest deadline.
	trySend := func(now time.Time) {
		if probes := h.OnLossDetectionTimeout(now); probes > 0 {
			h.QueueProbePacket()
		}
		for h.SendAllowed(now) && !h.NextSendTime(now).After(now) {
			pn := h.NextPacketNumber()
			frames[0] = ackhandler.Frame{Offset: offset, Length: uint64(cfg.mds)}
			offset += uint64(cfg.mds)
			h.SentPacket(now, pn, cfg.mds, true, frames)
			steady := !now.Before(steadyFrom)
			if steady {
				res.steadySent++
			}
			// Bottleneck: drop-tail queue, then serialisation.
			queued := max(linkFree.Sub(now), 0)
			if float64(cfg.mds)+queued.Seconds()*cfg.rate > float64(cfg.buffer) {
				res.queueDrops++
				if steady {
					res.steadyDrops++
				}
				continue
			}
			if steady && (congestion.BBRMode(cc) == "PROBE_BW" || (cfg.kind == congestion.KindCUBIC && !cc.InSlowStart())) {
				qdSum += queued
				qdN++
				res.maxQueueDelay = max(res.maxQueueDelay, queued)
			}
			depart := now.Add(queued).Add(time.Duration(float64(cfg.mds) / cfg.rate * float64(time.Second)))
			linkFree = depart
			if rng.Float64() < cfg.loss {
				continue
			}
			arrive := depart.Add(oneWay)
			if cfg.jitter > 0 {
				arrive = arrive.Add(time.Duration(rng.Int64N(int64(cfg.jitter))))
			}
			push(simEvent{at: arrive, kind: evArrive, pn: pn, size: cfg.mds})
		}
		next := h.LossDetectionDeadline()
		if h.SendAllowed(now) {
			if st := h.NextSendTime(now); next.IsZero() || st.Before(next) {
				next = st
			}
		}
		if !next.IsZero() {
			wakeGen++
			if next.Before(now) {
				next = now
			}
			push(simEvent{at: next, kind: evSenderWake, gen: wakeGen})
		}
	}

	trySend(start)
	for q.Len() > 0 {
		e := heap.Pop(&q).(simEvent)
		if e.at.After(end) {
			break
		}
		now := e.at
		switch e.kind {
		case evArrive:
			if tr.ReceivedPacket(e.pn, now, true) {
				continue
			}
			received += e.size
			if !now.Before(steadyFrom) {
				steadyRecv += e.size
			}
			if tr.ShouldSendAck(now) {
				sendAck(now)
			} else if d := tr.AckDeadline(); !d.IsZero() && !d.Equal(ackTimerAt) {
				ackTimerAt = d
				push(simEvent{at: d, kind: evAckTimer})
			}
		case evAckTimer:
			if tr.ShouldSendAck(now) {
				sendAck(now)
			}
		case evAck:
			if err := h.ReceivedAck(now, e.ranges, e.delay); err != nil {
				t.Fatalf("ReceivedAck: %v", err)
			}
			tr.IgnoreBelow(h.LowestUnconfirmedAck())
			if debugSim && now.Sub(lastDbg) > 200*time.Millisecond {
				lastDbg = now
				t.Logf("%v inflight=%d %s", now.Sub(start), h.BytesInFlight(), congestion.BBRDebug(cc))
			}
			if m := congestion.BBRMode(cc); m != "" && (len(res.modes) == 0 || res.modes[len(res.modes)-1] != m) {
				res.modes = append(res.modes, m)
			}
			trySend(now)
		case evSenderWake:
			if e.gen == wakeGen {
				trySend(now)
			}
		}
	}
	res.utilisation = float64(received) / (cfg.rate * cfg.duration.Seconds())
	res.steadyUtilisation = float64(steadyRecv) / (cfg.rate * (cfg.duration - cfg.warmup).Seconds())
	if qdN > 0 {
		res.meanQueueDelay = qdSum / time.Duration(qdN)
	}
	st := h.Stats()
	res.lost, res.spurious = st.PacketsLost, st.SpuriousLosses
	res.ackedFrames, res.lostFrames = cb.acked, cb.lost
	return res
}

var debugSim = false

const (
	simRate = 100e6 / 8 // 100 Mbit/s
	simRTT  = 50 * time.Millisecond
	simBDP  = simRate * 0.05
)

func simDuration() time.Duration {
	if testing.Short() {
		return 8 * time.Second
	}
	return 20 * time.Second
}

// TestSimRandomLoss is the measurement that picks the default controller: on
// a 100 Mbit/s, 50 ms path with a one-BDP drop-tail queue, BBR keeps the link
// full under random loss while CUBIC, reading every loss as congestion,
// collapses to what the Mathis formula predicts (about 3 % at 1 % loss).
func TestSimRandomLoss(t *testing.T) {
	for _, loss := range []float64{0, 0.01, 0.02} {
		cfg := simConfig{
			rate: simRate, rtt: simRTT, buffer: int(simBDP), loss: loss,
			duration: simDuration(), warmup: 3 * time.Second, seed: 1,
		}
		cfg.kind = congestion.KindBBR
		bbr := simulate(t, cfg)
		cfg.kind = congestion.KindCUBIC
		cubic := simulate(t, cfg)
		t.Logf("loss %.0f%%: BBR %.1f%% (steady %.1f%%), CUBIC %.1f%% (steady %.1f%%) of the link",
			loss*100, bbr.utilisation*100, bbr.steadyUtilisation*100, cubic.utilisation*100, cubic.steadyUtilisation*100)
		if loss == 0 {
			if bbr.steadyUtilisation < 0.95 || cubic.steadyUtilisation < 0.95 {
				t.Errorf("no loss: BBR %.3f, CUBIC %.3f of the link in steady state, want ≥ 0.95", bbr.steadyUtilisation, cubic.steadyUtilisation)
			}
			continue
		}
		if bbr.utilisation < 0.90 {
			t.Errorf("loss %v: BBR used %.3f of the link, want ≥ 0.90", loss, bbr.utilisation)
		}
		if cubic.utilisation*3 > bbr.utilisation {
			t.Errorf("loss %v: CUBIC used %.3f of the link, BBR %.3f: want BBR ≥ 3× CUBIC", loss, cubic.utilisation, bbr.utilisation)
		}
		if got := bbr.ackedFrames + bbr.lostFrames; got < int(bbr.lost) {
			t.Errorf("frames acked %d + lost %d below packets lost %d", bbr.ackedFrames, bbr.lostFrames, bbr.lost)
		}
	}
}

// TestSimBBRStates checks BBR's path through its states on a clean link.
func TestSimBBRStates(t *testing.T) {
	r := simulate(t, simConfig{
		kind: congestion.KindBBR, rate: simRate, rtt: simRTT, buffer: int(simBDP),
		duration: 3 * time.Second, seed: 2,
	})
	want := []string{"STARTUP", "DRAIN", "PROBE_BW"}
	if len(r.modes) < 3 || r.modes[0] != want[0] || r.modes[1] != want[1] || r.modes[2] != want[2] {
		t.Fatalf("states %v, want to begin %v", r.modes, want)
	}
}

// TestSimBBRProbeRTT runs long enough on a deep buffer with a competing
// standing queue that the min RTT goes stale: BBR must pass through
// PROBE_RTT and come back to PROBE_BW.
func TestSimBBRProbeRTT(t *testing.T) {
	if testing.Short() {
		t.Skip("long simulation")
	}
	// Jitter keeps RTT samples above the minimum, so it is only
	// refreshed by PROBE_RTT.
	r := simulate(t, simConfig{
		kind: congestion.KindBBR, rate: simRate, rtt: simRTT, buffer: int(4 * simBDP),
		jitter: 5 * time.Millisecond, duration: 25 * time.Second, seed: 3,
	})
	probeRTT := -1
	for i, m := range r.modes {
		if m == "PROBE_RTT" {
			probeRTT = i
			break
		}
	}
	if probeRTT < 0 || probeRTT == len(r.modes)-1 || r.modes[probeRTT+1] != "PROBE_BW" {
		t.Fatalf("states %v: no PROBE_RTT and back", r.modes)
	}
	if r.utilisation < 0.9 {
		t.Fatalf("utilisation %.3f with PROBE_RTT", r.utilisation)
	}
}

// TestSimBBRQueueDelay: with a deep buffer (4 BDP) BBR must not fill it: in
// PROBE_BW the queue it builds while probing stays well under an RTT, where
// CUBIC fills the buffer.
func TestSimBBRQueueDelay(t *testing.T) {
	cfg := simConfig{
		rate: simRate, rtt: simRTT, buffer: int(4 * simBDP),
		duration: simDuration(), warmup: 3 * time.Second, seed: 4,
	}
	cfg.kind = congestion.KindBBR
	bbr := simulate(t, cfg)
	cfg.kind = congestion.KindCUBIC
	cubic := simulate(t, cfg)
	t.Logf("queue delay in steady state: BBR max %v mean %v; CUBIC max %v mean %v",
		bbr.maxQueueDelay, bbr.meanQueueDelay, cubic.maxQueueDelay, cubic.meanQueueDelay)
	if bbr.maxQueueDelay >= simRTT {
		t.Errorf("BBR queue delay reached %v, want < 1 RTT (%v)", bbr.maxQueueDelay, simRTT)
	}
	if bbr.meanQueueDelay >= simRTT/4 {
		t.Errorf("BBR mean queue delay %v, want < RTT/4", bbr.meanQueueDelay)
	}
	if cubic.meanQueueDelay < 2*simRTT {
		t.Errorf("CUBIC mean queue delay %v: the simulated buffer is not filling", cubic.meanQueueDelay)
	}
	if bbr.steadyUtilisation < 0.95 {
		t.Errorf("BBR steady utilisation %.3f", bbr.steadyUtilisation)
	}
}

// TestSimBBRShallowBuffer: with a queue of a tenth of a BDP, BBR's probing
// overflows it; the drops it causes must stay a small fraction.
func TestSimBBRShallowBuffer(t *testing.T) {
	r := simulate(t, simConfig{
		kind: congestion.KindBBR, rate: simRate, rtt: simRTT, buffer: int(simBDP / 10),
		duration: simDuration(), warmup: 3 * time.Second, seed: 5,
	})
	drop := float64(r.steadyDrops) / float64(r.steadySent)
	t.Logf("shallow buffer: utilisation %.1f%%, steady-state queue drops %.2f%%", r.steadyUtilisation*100, drop*100)
	if drop > 0.05 || r.steadyUtilisation < 0.9 {
		t.Errorf("shallow buffer: drops %.3f utilisation %.3f", drop, r.steadyUtilisation)
	}
}

// TestSimReordering: jitter of a fifth of the RTT reorders packets; the
// reordering adaptation must keep needless retransmissions rare.
func TestSimReordering(t *testing.T) {
	cfg := simConfig{
		kind: congestion.KindBBR, rate: simRate, rtt: simRTT, buffer: int(simBDP),
		jitter: 10 * time.Millisecond, duration: simDuration(), seed: 6,
	}
	r := simulate(t, cfg)
	t.Logf("jitter 10ms: utilisation %.1f%%, %d losses of which %d spurious", r.utilisation*100, r.lost, r.spurious)
	if r.utilisation < 0.9 {
		t.Errorf("utilisation %.3f under reordering", r.utilisation)
	}
	if r.lost > 0 && float64(r.spurious)/float64(r.steadySent+1) > 0.002 {
		t.Errorf("%d spurious losses of %d packets", r.spurious, r.steadySent)
	}
}

func TestSimAckLoss(t *testing.T) {
	r := simulate(t, simConfig{
		kind: congestion.KindBBR, rate: simRate, rtt: simRTT, buffer: int(simBDP),
		loss: 0.01, ackLoss: 0.01, duration: simDuration(), seed: 7,
	})
	t.Logf("1%% loss both ways: utilisation %.1f%%", r.utilisation*100)
	if r.utilisation < 0.9 {
		t.Errorf("utilisation %.3f with ACK loss", r.utilisation)
	}
}

func TestSimDeterministic(t *testing.T) {
	cfg := simConfig{
		kind: congestion.KindBBR, rate: simRate, rtt: simRTT, buffer: int(simBDP),
		loss: 0.01, jitter: time.Millisecond, duration: 2 * time.Second, seed: 8,
	}
	a, b := simulate(t, cfg), simulate(t, cfg)
	if a.utilisation != b.utilisation || a.lost != b.lost || a.maxQueueDelay != b.maxQueueDelay {
		t.Fatalf("two runs differ: %+v vs %+v", a, b)
	}
}
