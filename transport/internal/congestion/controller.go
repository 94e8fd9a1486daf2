package congestion

import (
	"fmt"
	"strings"
	"time"
)

const (
	// DefaultMaxDatagramSize is the packet size assumed until the session
	// knows its path's MTU: Parley's default UDP payload (docs/protocol.md §1).
	DefaultMaxDatagramSize = 1280
	// initialWindowPackets is the initial window (RFC 9002 §7.2 allows
	// 10 packets).
	initialWindowPackets = 10
	// minWindowPackets is the smallest congestion window (kMinimumWindow
	// is 2 packets; a few more keep BBR's probing and delayed ACKs working).
	minWindowPackets = 2
	// maxWindowBytes bounds every window so that arithmetic stays sane on
	// absurd rate samples.
	maxWindowBytes = 1 << 30
)

// Controller decides how much may be in flight and how fast to pace it.
//
// The caller (ackhandler.SentPacketHandler) reports events in this order for
// each ACK frame it processes: OnPacketAcked for every newly acknowledged
// packet in ascending packet number order, OnSpuriousLoss for every packet
// declared lost earlier that the ACK acknowledges, OnCongestionEvent for every
// packet the ACK showed lost, then a single OnAck with the ACK's
// delivery-rate sample. Losses found by the loss timer arrive as OnCongestionEvent calls
// followed by an OnAck with an empty sample. Per-packet calls suit CUBIC's
// window arithmetic; the per-ACK call suits BBR's model update.
//
// A Controller is not safe for concurrent use: the session's run loop owns it.
type Controller interface {
	// OnPacketSent is called after a packet is sent. bytesInFlight is the
	// number of bytes in flight before this packet.
	OnPacketSent(now time.Time, bytesInFlight int, pn uint64, bytes int, isRetransmittable bool)
	// OnPacketAcked is called for every newly acknowledged in-flight packet.
	// priorInFlight is the bytes in flight before the ACK was processed.
	OnPacketAcked(now time.Time, pn uint64, ackedBytes int, priorInFlight int)
	// OnCongestionEvent is called for every in-flight packet declared lost.
	OnCongestionEvent(now time.Time, lostPN uint64, lostBytes int, priorInFlight int)
	// OnSpuriousLoss is called when a packet already reported to
	// OnCongestionEvent is acknowledged after all: it was reordered, not
	// lost.
	OnSpuriousLoss(now time.Time, pn uint64, bytes int)
	// OnAck ends the processing of one ACK frame (or one loss timeout).
	// bytesInFlight is what remains in flight afterwards.
	OnAck(now time.Time, priorInFlight, bytesInFlight int, rs RateSample)
	// OnRetransmissionTimeout is called on persistent congestion (RFC 9002
	// §7.6): the window collapses to its minimum.
	OnRetransmissionTimeout(now time.Time)
	// CanSend reports whether one more full-size packet fits the window.
	CanSend(bytesInFlight int) bool
	// CongestionWindow returns the window in bytes.
	CongestionWindow() int
	// PacingRate returns the rate the pacer targets, in bytes per second.
	PacingRate() uint64
	// InSlowStart reports whether the controller is still searching for
	// the path's capacity (slow start, or BBR's STARTUP).
	InSlowStart() bool
	// SetMaxDatagramSize sets the size of a full packet.
	SetMaxDatagramSize(n int)
}

// Kind names a congestion control algorithm.
type Kind uint8

const (
	// KindBBR is the model-based controller; it is the default because it
	// keeps a lossy path full (see the package comment for figures).
	KindBBR Kind = iota
	// KindCUBIC is RFC 9438 CUBIC with HyStart++.
	KindCUBIC
)

func (k Kind) String() string {
	switch k {
	case KindBBR:
		return "bbr"
	case KindCUBIC:
		return "cubic"
	}
	return fmt.Sprintf("Kind(%d)", uint8(k))
}

// ParseKind parses "bbr" or "cubic" (case-insensitive); "" means the default.
func ParseKind(s string) (Kind, error) {
	switch strings.ToLower(strings.TrimSpace(s)) {
	case "", "bbr":
		return KindBBR, nil
	case "cubic":
		return KindCUBIC, nil
	}
	return 0, fmt.Errorf("unknown congestion control %q (want bbr or cubic)", s)
}

// NewController returns a controller of the given kind. rtt is read, never
// written, by the controller; the caller keeps it up to date. A
// maxDatagramSize of zero means DefaultMaxDatagramSize.
func NewController(kind Kind, rtt *RTTStats, maxDatagramSize int) Controller {
	if maxDatagramSize <= 0 {
		maxDatagramSize = DefaultMaxDatagramSize
	}
	if kind == KindCUBIC {
		return newCubic(rtt, maxDatagramSize)
	}
	return newBBR(rtt, maxDatagramSize)
}

// bytesPerSecond returns bytes/d as a rate, saturating instead of dividing by
// zero.
func bytesPerSecond(bytes float64, d time.Duration) uint64 {
	if d <= 0 {
		d = time.Millisecond
	}
	r := bytes * float64(time.Second) / float64(d)
	if r >= 1<<62 {
		return 1 << 62
	}
	return uint64(r)
}
