// Package replay implements the sliding-window anti-replay filter of
// RFC 6479, as WireGuard uses it: a bitmap of recently seen packet numbers
// kept in a ring of 64-bit blocks, so that a check costs a few instructions
// and no allocation, for windows of thousands of packets.
package replay

const (
	blockBits  = 64
	ringBlocks = 1 << 7                       // 128 blocks
	WindowSize = (ringBlocks - 1) * blockBits // packets accepted behind the newest
	blockMask  = ringBlocks - 1
	bitMask    = blockBits - 1
)

// Filter rejects packet numbers seen before or too old to tell. The zero
// value is ready to use. It is not safe for concurrent use.
type Filter struct {
	last uint64
	seen bool
	ring [ringBlocks]uint64
}

// Reset forgets every packet number.
func (f *Filter) Reset() { *f = Filter{} }

// Accept reports whether pn is new (neither seen nor older than the window)
// and records it. Call it only for packets that authenticated.
func (f *Filter) Accept(pn uint64) bool {
	if f.seen && pn+WindowSize < f.last {
		return false // too old to tell: treat as a replay
	}
	idx := pn / blockBits
	if !f.seen || pn > f.last {
		cur := f.last / blockBits
		if !f.seen {
			cur = idx
			f.ring[idx&blockMask] = 0
		}
		diff := idx - cur
		if diff > ringBlocks {
			diff = ringBlocks
		}
		for i := uint64(1); i <= diff; i++ {
			f.ring[(cur+i)&blockMask] = 0
		}
		f.last = pn
		f.seen = true
	}
	b := &f.ring[idx&blockMask]
	bit := uint64(1) << (pn & bitMask)
	if *b&bit != 0 {
		return false
	}
	*b |= bit
	return true
}
