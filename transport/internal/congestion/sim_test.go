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
	duration time.Duration
	warmup   time.Duration // excluded from the steady-state figures
	mds      int
	seed     uint64
}

type simResult struct {
	utilisation       float64 // goodput / link rate, whole run
	steadyUtilisation float64 // goodput / link rate after warmup
	maxQueueDelay     time.Duration
	meanQueueDelay    time.Duration // after warmup
	lost, spurious    uint64
	queueDrops        int
	lostFrames        int
	ackedFrames       int
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
	)
	push := func(e simEvent) {
		seq++
		e.seq = seq
		heap.Push(&q, e)
	}
	sendAck := func(now time.Time) {
		ranges, delay := tr.AppendAckRanges(nil, now)
		push(simEvent{at: now.Add(oneWay), kind: evAck, ranges: ranges, delay: delay})
		ackTimerAt = time.Time{}
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
			// Bottleneck: drop-tail queue, then serialisation.
			queued := max(linkFree.Sub(now), 0)
			if float64(cfg.mds)+queued.Seconds()*cfg.rate > float64(cfg.buffer) {
				res.queueDrops++
				continue
			}
			if !now.Before(steadyFrom) {
				qdSum += queued
				qdN++
				res.maxQueueDelay = max(res.maxQueueDelay, queued)
			}
			depart := now.Add(queued).Add(time.Duration(float64(cfg.mds) / cfg.rate * float64(time.Second)))
			linkFree = depart
			if rng.Float64() < cfg.loss {
				continue
			}
			push(simEvent{at: depart.Add(oneWay), kind: evArrive, pn: pn, size: cfg.mds})
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

func TestSimulationReport(t *testing.T) {
	const rate = 100e6 / 8
	for _, kind := range []congestion.Kind{congestion.KindBBR, congestion.KindCUBIC} {
		for _, loss := range []float64{0, 0.01, 0.02} {
			r := simulate(t, simConfig{
				kind: kind, rate: rate, rtt: 50 * time.Millisecond,
				buffer: int(rate * 0.05), loss: loss,
				duration: 20 * time.Second, warmup: 3 * time.Second, seed: 1,
			})
			t.Logf("%-5v loss %.0f%%: util %.1f%% steady %.1f%% maxQ %v meanQ %v lost %d spurious %d drops %d",
				kind, loss*100, r.utilisation*100, r.steadyUtilisation*100, r.maxQueueDelay, r.meanQueueDelay, r.lost, r.spurious, r.queueDrops)
		}
	}
}
