package relay

import "time"

// What a relay holds for a side that has not bound yet, or whose address
// may not receive more before it is validated, docs/protocol.md §6.3. The
// side that binds first may send at once (its transport's handshake
// initiation and early data) instead of waiting a round trip through the
// relay for the other side to bind; the relay keeps those packets and
// delivers them, in order, right after the ALLOCATED that binds the other
// side, as far as that side's credit allows (validate.go), and the rest
// when its CONFIRM validates it.
const (
	// MaxHeldPackets and MaxHeldBytes bound what one channel holds, in
	// packets and in opaque bytes (without the relay header); a SEND that
	// would exceed either is dropped.
	MaxHeldPackets = 8
	MaxHeldBytes   = 16 << 10
	// MaxHoldTime is how long a packet may be held: one held this long is
	// discarded instead of delivered.
	MaxHoldTime = 5 * time.Second
)

// DefaultHoldMemory bounds the bytes held on all of a Server's channels
// together, when Config.HoldMemory is 0: without it, a relay full of
// channels whose second side never binds would hold MaxSessions ×
// MaxHeldBytes (160 MiB by default). 16 MiB is a thousand full holds, and
// tens of thousands of channels starting a handshake at once.
const DefaultHoldMemory = 16 << 20

// hold is what one side of a channel sent while the other side, to, was
// not bound or could not receive it unvalidated: at most MaxHeldPackets
// packets of MaxHeldBytes opaque bytes in all, in the order they arrived,
// each with the time it was held. An allocation has one only while it
// holds something, so the usual channel, whose sides bind before either
// sends, never costs one.
type hold struct {
	to   int                   // the side the packets are for
	n    int                   // packets held
	at   [MaxHeldPackets]int64 // when each was held, Unix nanoseconds
	end  [MaxHeldPackets]int32 // where each ends in data
	data []byte                // the opaque packets, back to back
}

// fits reports whether a packet of n opaque bytes may join h. h may be
// nil: an empty hold.
func (h *hold) fits(n int) bool {
	if h == nil {
		return n <= MaxHeldBytes
	}
	return h.n < MaxHeldPackets && len(h.data)+n <= MaxHeldBytes
}

// add appends a copy of the opaque packet p, held at now. The caller has
// checked h.fits(len(p)).
func (h *hold) add(p []byte, now int64) {
	h.data = append(h.data, p...)
	h.at[h.n] = now
	h.end[h.n] = int32(len(h.data))
	h.n++
}

// packet returns the i-th packet held; it aliases h.data.
func (h *hold) packet(i int) []byte {
	start := int32(0)
	if i > 0 {
		start = h.end[i-1]
	}
	return h.data[start:h.end[i]]
}

// stale reports whether the i-th packet has been held MaxHoldTime at now.
func (h *hold) stale(i int, now int64) bool {
	return now-h.at[i] >= int64(MaxHoldTime)
}

// remove discards the first k packets, keeping the others in order, and
// returns how many bytes it discarded.
func (h *hold) remove(k int) (bytes int) {
	if k == 0 {
		return 0
	}
	cut := h.end[k-1]
	copy(h.data, h.data[cut:])
	for i := k; i < h.n; i++ {
		h.at[i-k], h.end[i-k] = h.at[i], h.end[i]-cut
	}
	h.n -= k
	h.data = h.data[:len(h.data)-int(cut)]
	return int(cut)
}

// expire discards the packets held MaxHoldTime at now, keeping the others
// in order, and returns how many packets and bytes it discarded.
func (h *hold) expire(now int64) (packets, bytes int) {
	kept, w, start := 0, 0, int32(0)
	for i := range h.n {
		p := h.data[start:h.end[i]]
		start = h.end[i] // read before h.end[kept] is rewritten below
		if h.stale(i, now) {
			packets++
			bytes += len(p)
			continue
		}
		copy(h.data[w:], p) // towards the front: copy handles the overlap
		w += len(p)
		h.at[kept], h.end[kept] = h.at[i], int32(w)
		kept++
	}
	h.n, h.data = kept, h.data[:w]
	return packets, bytes
}
