package transport

import "sync"

// chunkSize is the size of the pooled chunks that hold stream data.
const chunkSize = 64 << 10

var chunkPool = sync.Pool{New: func() any { b := make([]byte, chunkSize); return &b }}

// chunkBuf holds the bytes of a stream between two offsets, in pooled
// fixed-size chunks aligned to stream offsets (chunk k holds offsets
// [k·chunkSize, (k+1)·chunkSize)). Appending never moves data already
// held, and released chunks go back to the pool, so a stream moving
// gigabytes keeps a constant footprint and copies each byte once in and
// once out. It is not safe for concurrent use.
type chunkBuf struct {
	chunks []*[]byte
	first  uint64 // index of chunks[0]
	start  uint64 // offset of the first byte held
	end    uint64 // offset after the last byte held
}

// len is the number of bytes held.
func (b *chunkBuf) len() uint64 { return b.end - b.start }

// write appends p at b.end.
func (b *chunkBuf) write(p []byte) {
	if len(b.chunks) == 0 {
		b.first = b.end / chunkSize
		b.start = b.end
	}
	for len(p) > 0 {
		idx := b.end/chunkSize - b.first
		if idx == uint64(len(b.chunks)) {
			b.chunks = append(b.chunks, chunkPool.Get().(*[]byte))
		}
		c := *b.chunks[idx]
		n := copy(c[b.end%chunkSize:], p)
		p = p[n:]
		b.end += uint64(n)
	}
}

// slice returns up to n bytes from offset off, not crossing a chunk
// boundary. off must be within [start, end).
func (b *chunkBuf) slice(off, n uint64) []byte {
	c := *b.chunks[off/chunkSize-b.first]
	lo := off % chunkSize
	hi := min(lo+n, chunkSize, lo+(b.end-off))
	return c[lo:hi]
}

// release forgets the bytes below off, returning whole chunks to the pool.
func (b *chunkBuf) release(off uint64) {
	if off <= b.start {
		return
	}
	off = min(off, b.end)
	b.start = off
	for len(b.chunks) > 0 && (b.first+1)*chunkSize <= off {
		chunkPool.Put(b.chunks[0])
		b.chunks[0] = nil
		b.chunks = b.chunks[1:]
		b.first++
	}
	if len(b.chunks) == 0 {
		b.chunks = nil
	}
}

// reset releases everything; the next write starts at b.end.
func (b *chunkBuf) reset() {
	for i, c := range b.chunks {
		chunkPool.Put(c)
		b.chunks[i] = nil
	}
	b.chunks = nil
	b.start = b.end
}
