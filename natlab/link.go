package natlab

import (
	"math"
	"time"
)

const (
	// DefaultMTU is the MTU of a Link whose MTU is zero: Ethernet's, which
	// leaves 1,472 bytes of UDP payload.
	DefaultMTU = 1500

	// defaultReorderDelay is how long a reordered packet is held back when
	// Link.ReorderDelay is zero.
	defaultReorderDelay = time.Millisecond

	// minQueueBytes is the smallest default queue (Link.QueueBytes zero).
	minQueueBytes = 64 << 10

	// minQueueTime is the shortest round trip the default queue is sized
	// for, so links with little delay still absorb a burst.
	minQueueTime = 20 * time.Millisecond
)

// A Link describes one direction of an attachment between a node (a host or
// a NAT) and a network: what happens to a datagram on its way. The zero Link
// is ideal: no delay, unlimited rate, no loss, MTU 1500.
//
// A datagram entering a link goes through, in order:
//
//  1. the MTU check: payload + 28 header bytes > MTU is dropped (DropMTU);
//  2. duplication: with probability Duplicate a copy follows it through
//     the steps below as a separate datagram;
//  3. the queue (only with Rate > 0): the link sends one datagram at a time
//     at Rate bits/s; if the bytes waiting or being sent plus this datagram
//     would exceed QueueBytes, it is dropped (DropQueueFull, drop-tail);
//  4. random loss with probability Loss (DropLoss); a lost datagram has
//     still used the link's capacity, as a corrupted frame does;
//  5. propagation: it arrives Delay ± Jitter after its last bit was sent.
//     Jitter never reorders: a datagram never arrives before one sent ahead
//     of it on the same link, as on a real serial link;
//  6. reordering: with probability Reorder it is instead held back by an
//     extra ReorderDelay and exempt from the ordering rule, so datagrams
//     sent after it may overtake it.
type Link struct {
	// Delay is the one-way propagation delay.
	Delay time.Duration
	// Jitter varies each datagram's delay uniformly within
	// [Delay-Jitter, Delay+Jitter], floored at zero.
	Jitter time.Duration
	// Rate is the link's capacity in bits per second; zero is unlimited.
	Rate int64
	// QueueBytes bounds the bytes waiting for or in transmission (with
	// Rate > 0). Zero means about a bandwidth-delay product:
	// Rate × max(2×Delay, 20ms), at least 64 KiB.
	QueueBytes int
	// Loss, Duplicate and Reorder are probabilities in [0, 1].
	Loss      float64
	Duplicate float64
	Reorder   float64
	// ReorderDelay is the extra delay of a reordered datagram; zero means
	// 1 ms.
	ReorderDelay time.Duration
	// MTU is the largest IPv4 datagram (UDP payload + 28) the link carries;
	// zero means DefaultMTU.
	MTU int
}

// idealLink is a NAT's attachment to its inside network: it never drops.
var idealLink = Link{MTU: 65535}

// sanitized returns l with out-of-range fields brought into range, so that
// no Link value can make the lab misbehave or panic.
func (l Link) sanitized() Link {
	l.Delay = max(l.Delay, 0)
	l.Jitter = max(l.Jitter, 0)
	l.Rate = max(l.Rate, 0)
	l.QueueBytes = max(l.QueueBytes, 0)
	l.Loss = prob(l.Loss)
	l.Duplicate = prob(l.Duplicate)
	l.Reorder = prob(l.Reorder)
	if l.ReorderDelay <= 0 {
		l.ReorderDelay = defaultReorderDelay
	}
	if l.MTU <= 0 {
		l.MTU = DefaultMTU
	}
	return l
}

func prob(p float64) float64 {
	if math.IsNaN(p) || p < 0 {
		return 0
	}
	return min(p, 1)
}

// A pipe is one direction of an iface: a Link plus the state that its queue
// and ordering rule need. All fields are protected by World.mu.
type pipe struct {
	link Link // sanitized
	// queueTime is QueueBytes expressed as transmission time at Rate: the
	// queue is full when the transmitter is busy for longer than this.
	queueTime time.Duration
	// busyUntil is when the transmitter finishes the last accepted
	// datagram. The backlog in bytes is (busyUntil-now)×Rate/8, so a queue
	// of any size costs no memory beyond the in-flight packets themselves.
	busyUntil time.Duration
	// lastArrival is the arrival time of the latest in-order datagram;
	// later datagrams never arrive before it (jitter does not reorder).
	lastArrival time.Duration

	ifc *iface
	up  bool // node → network; otherwise network → node
	c   Counters
}

func (pp *pipe) setLink(l Link) {
	l = l.sanitized()
	pp.link = l
	pp.queueTime = 0
	if l.Rate > 0 {
		q := float64(l.QueueBytes)
		if q == 0 {
			rtt := max(2*l.Delay, minQueueTime)
			q = max(float64(l.Rate)/8*rtt.Seconds(), minQueueBytes)
		}
		// Clamp so that absurd configurations cannot overflow Duration.
		pp.queueTime = time.Duration(min(q*8/float64(l.Rate)*1e9, float64(math.MaxInt64/4)))
	}
}

// txTime is how long the link takes to send n bytes.
func (pp *pipe) txTime(n int) time.Duration {
	return time.Duration(int64(n) * 8 * int64(time.Second) / pp.link.Rate)
}

// sendLocked puts p into the pipe at time now. The pipe owns p from here.
func (pp *pipe) sendLocked(w *World, p *packet, now time.Duration) {
	l := &pp.link
	if p.wireSize() > l.MTU {
		pp.c.Dropped[DropMTU]++
		p.release()
		return
	}
	var dup *packet
	if l.Duplicate > 0 && w.rand.Float64() < l.Duplicate {
		dup = p.clone() // before p is sent: an ideal pipe passes it on at once
	}
	pp.transmitLocked(w, p, now)
	if dup != nil {
		pp.transmitLocked(w, dup, now)
	}
}

func (pp *pipe) transmitLocked(w *World, p *packet, now time.Duration) {
	l := &pp.link
	at := now
	if l.Rate > 0 {
		start := max(now, pp.busyUntil)
		tx := pp.txTime(p.wireSize())
		if start-now+tx > pp.queueTime {
			pp.c.Dropped[DropQueueFull]++
			p.release()
			return
		}
		pp.busyUntil = start + tx
		at = pp.busyUntil
	}
	if l.Loss > 0 && w.rand.Float64() < l.Loss {
		pp.c.Dropped[DropLoss]++
		p.release()
		return
	}
	sent := at
	at += l.Delay
	if l.Jitter > 0 {
		j := int64(l.Jitter)
		at = max(at+time.Duration(w.rand.Int64N(2*j+1)-j), sent)
	}
	if l.Reorder > 0 && w.rand.Float64() < l.Reorder {
		at += l.ReorderDelay
	} else {
		at = max(at, pp.lastArrival)
		pp.lastArrival = at
	}
	w.scheduleLocked(at, now, p, pp)
}

// exitLocked hands p, arriving at the far end of the pipe at time at, to the
// network (up) or the node (down).
func (pp *pipe) exitLocked(w *World, p *packet, at time.Duration) {
	pp.c.pass(p)
	if pp.up {
		pp.ifc.net.routeLocked(w, p, pp.ifc, at)
	} else {
		pp.ifc.node.receiveLocked(w, p, at)
	}
}
