package ackhandler

import (
	"time"

	"github.com/parley-p2p/parley/transport/internal/congestion"
)

// Range is an inclusive range of packet numbers.
type Range struct{ Smallest, Largest uint64 }

// Frame is what the session records about a frame it put in a packet, so it
// can react when that packet is acknowledged or declared lost. Kind is
// defined by the caller; the handler never looks inside.
type Frame struct {
	Kind     uint8
	StreamID uint64
	Offset   uint64
	Length   uint64
	Fin      bool
}

type packetState uint8

const (
	stateOutstanding packetState = iota // sent, fate unknown
	stateAcked
	stateLost
	stateSkipped // number taken but never sent
)

type sentPacket struct {
	pn           uint64
	sendTime     time.Time
	size         int
	state        packetState
	ackEliciting bool // also: counted in bytes in flight
	hasAck       bool // carried an ACK frame whose largest is ackLargest
	ackLargest   uint64
	frames       []Frame // storage reused when the slot is
	rate         congestion.PacketRateState
}

// history holds the sent packets from the oldest one still outstanding to
// the newest, in a ring indexed by packet number: packet numbers are
// consecutive, so lookup is a subtraction. Slots (and their frame slices) are
// reused, so steady-state sending does not allocate.
type history struct {
	buf     []sentPacket
	head    int    // index of the oldest packet
	n       int    // number of packets held
	firstPN uint64 // packet number at head; valid when n > 0
}

func (h *history) len() int { return h.n }

// at returns the i-th oldest packet.
func (h *history) at(i int) *sentPacket {
	return &h.buf[(h.head+i)%len(h.buf)]
}

// index returns the position of pn, or -1 when pn is not held.
func (h *history) index(pn uint64) int {
	if h.n == 0 || pn < h.firstPN || pn-h.firstPN >= uint64(h.n) {
		return -1
	}
	return int(pn - h.firstPN)
}

// push appends a slot for pn, which must be the number after the last one
// held, and returns it with its frames emptied.
func (h *history) push(pn uint64) *sentPacket {
	if h.n == len(h.buf) {
		h.grow()
	}
	if h.n == 0 {
		h.firstPN = pn
	}
	p := &h.buf[(h.head+h.n)%len(h.buf)]
	h.n++
	frames := p.frames[:0]
	*p = sentPacket{pn: pn, frames: frames}
	return p
}

func (h *history) grow() {
	n := max(2*len(h.buf), 64)
	buf := make([]sentPacket, n)
	for i := range h.n {
		buf[i] = *h.at(i)
	}
	h.buf = buf
	h.head = 0
}

// popFront drops the oldest packet.
func (h *history) popFront() {
	h.head = (h.head + 1) % len(h.buf)
	h.n--
	h.firstPN++
}
