package replay

import (
	"math/rand/v2"
	"testing"
)

func TestFilterRejectsDuplicates(t *testing.T) {
	var f Filter
	for pn := uint64(0); pn < 10000; pn++ {
		if !f.Accept(pn) {
			t.Fatalf("fresh packet %d rejected", pn)
		}
		if f.Accept(pn) {
			t.Fatalf("duplicate %d accepted", pn)
		}
	}
}

func TestFilterReorderedWithinWindow(t *testing.T) {
	var f Filter
	rng := rand.New(rand.NewPCG(1, 2))
	const n = 50000
	order := rng.Perm(n)
	// Bound the disorder so that every packet stays within the window.
	seen := make(map[int]bool)
	for base := 0; base < n; base += 1000 {
		chunk := order[:0:0]
		for i := base; i < base+1000 && i < n; i++ {
			chunk = append(chunk, i)
		}
		rng.Shuffle(len(chunk), func(i, j int) { chunk[i], chunk[j] = chunk[j], chunk[i] })
		for _, pn := range chunk {
			if !f.Accept(uint64(pn)) {
				t.Fatalf("packet %d rejected", pn)
			}
			seen[pn] = true
		}
		for _, pn := range chunk[:10] {
			if f.Accept(uint64(pn)) {
				t.Fatalf("replay of %d accepted", pn)
			}
		}
	}
}

func TestFilterTooOld(t *testing.T) {
	var f Filter
	f.Accept(100000)
	if f.Accept(100000 - WindowSize - 1) {
		t.Fatal("packet older than the window accepted")
	}
	if !f.Accept(100000 - WindowSize + 1) {
		t.Fatal("packet inside the window rejected")
	}
	// A jump far ahead clears the ring: nothing stale may remain marked.
	f.Accept(1 << 40)
	if !f.Accept(1<<40 - 5) {
		t.Fatal("packet just behind a jump rejected")
	}
}

func BenchmarkAccept(b *testing.B) {
	var f Filter
	for i := 0; i < b.N; i++ {
		f.Accept(uint64(i))
	}
}
