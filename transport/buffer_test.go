package transport

import (
	"bytes"
	"math/rand/v2"
	"testing"
)

func TestChunkBufRoundTrip(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 1))
	var b chunkBuf
	var want []byte
	var readOff uint64
	for i := 0; i < 2000; i++ {
		p := make([]byte, rng.IntN(20000))
		for j := range p {
			p[j] = byte(rng.Uint32())
		}
		b.write(p)
		want = append(want, p...)
		// Read a random amount through slice, crossing chunk boundaries.
		n := uint64(rng.IntN(25000))
		for n > 0 && b.len() > 0 {
			s := b.slice(readOff, n)
			if len(s) == 0 {
				t.Fatal("empty slice with data held")
			}
			if !bytes.Equal(s, want[readOff:readOff+uint64(len(s))]) {
				t.Fatalf("data at %d differs", readOff)
			}
			readOff += uint64(len(s))
			n -= uint64(len(s))
			b.release(readOff)
		}
		if len(b.chunks) > int(b.len()/chunkSize)+2 {
			t.Fatalf("holding %d chunks for %d bytes", len(b.chunks), b.len())
		}
	}
}
