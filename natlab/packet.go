package natlab

import (
	"net/netip"
	"sync"
	"time"
)

const (
	// headerBytes is what IPv4 (20 bytes, no options) and UDP (8 bytes) add
	// to a datagram's payload on the wire. MTU checks, serialization delay
	// and queue occupancy all use payload+headerBytes, as a real link would.
	headerBytes = 28

	// maxPayload is the largest UDP payload that fits an IPv4 datagram
	// (65,535 - 28). Larger writes fail with EMSGSIZE, as with the kernel.
	maxPayload = 65535 - headerBytes
)

// A packet is one UDP datagram in flight. Packets come from pktPool and go
// back to it when a reader has copied them out or when they are dropped.
// Exactly one owner holds a packet at a time: the sending Conn, then the
// World (in its event heap or while it routes the packet), then a Conn's
// receive queue.
type packet struct {
	src, dst netip.AddrPort
	b        []byte
}

// pktPool recycles packets and their buffers, so that in steady state
// sending a datagram allocates nothing.
var pktPool = sync.Pool{New: func() any { return new(packet) }}

func newPacket(src, dst netip.AddrPort, payload []byte) *packet {
	p := pktPool.Get().(*packet)
	p.src, p.dst = src, dst
	p.b = append(p.b[:0], payload...)
	return p
}

func (p *packet) clone() *packet { return newPacket(p.src, p.dst, p.b) }

// wireSize is the packet's size as an IPv4 datagram.
func (p *packet) wireSize() int { return len(p.b) + headerBytes }

func (p *packet) release() {
	p.src, p.dst = netip.AddrPort{}, netip.AddrPort{}
	pktPool.Put(p)
}

// An event is a packet that reaches the far end of a pipe at a given time.
type event struct {
	at   time.Duration // since World.epoch
	seq  uint64        // breaks ties so that equal times keep send order
	p    *packet
	pipe *pipe
}

func (e *event) before(o *event) bool {
	return e.at < o.at || (e.at == o.at && e.seq < o.seq)
}

// eventHeap is a binary min-heap of events ordered by (at, seq). It is
// written out rather than built on container/heap, whose interface{}
// Push/Pop would allocate for every packet.
type eventHeap []event

func (h *eventHeap) push(e event) {
	s := append(*h, e)
	i := len(s) - 1
	for i > 0 {
		parent := (i - 1) / 2
		if !s[i].before(&s[parent]) {
			break
		}
		s[i], s[parent] = s[parent], s[i]
		i = parent
	}
	*h = s
}

func (h *eventHeap) pop() event {
	s := *h
	e := s[0]
	n := len(s) - 1
	s[0] = s[n]
	s[n] = event{} // let the packet and pipe be collected
	s = s[:n]
	i := 0
	for {
		l := 2*i + 1
		if l >= n {
			break
		}
		m := l
		if r := l + 1; r < n && s[r].before(&s[l]) {
			m = r
		}
		if !s[m].before(&s[i]) {
			break
		}
		s[i], s[m] = s[m], s[i]
		i = m
	}
	*h = s
	return e
}

// pktRing is a growable FIFO of packets: a Conn's receive queue.
type pktRing struct {
	buf  []*packet
	head int
	n    int
}

func (r *pktRing) len() int { return r.n }

func (r *pktRing) push(p *packet) {
	if r.n == len(r.buf) {
		nb := make([]*packet, max(16, 2*len(r.buf)))
		for i := range r.n {
			nb[i] = r.buf[(r.head+i)%len(r.buf)]
		}
		r.buf, r.head = nb, 0
	}
	r.buf[(r.head+r.n)%len(r.buf)] = p
	r.n++
}

func (r *pktRing) pop() *packet {
	if r.n == 0 {
		return nil
	}
	p := r.buf[r.head]
	r.buf[r.head] = nil
	r.head = (r.head + 1) % len(r.buf)
	r.n--
	return p
}
