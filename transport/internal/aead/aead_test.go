package aead

import (
	"bytes"
	"testing"
)

func TestSealOpenRoundTrip(t *testing.T) {
	var k [32]byte
	k[0] = 1
	s, o := NewSealer(k), NewOpener(k)
	hdr := []byte("header-bytes-twenty!")
	for pn := uint64(0); pn < 5; pn++ {
		msg := []byte("hello, parley")
		ct := s.Seal(nil, hdr, msg, pn)
		pt, updated, err := o.Open(nil, hdr, ct, pn, s.KeyPhase())
		if err != nil || updated || !bytes.Equal(pt, msg) {
			t.Fatalf("pn %d: %q %v %v", pn, pt, updated, err)
		}
		// Any change to header, ciphertext or packet number fails.
		bad := append([]byte(nil), ct...)
		bad[0] ^= 1
		if _, _, err := o.Open(nil, hdr, bad, pn, false); err != ErrAuth {
			t.Fatalf("tampered ciphertext: %v", err)
		}
		if _, _, err := o.Open(nil, []byte("header-bytes-twenty?"), ct, pn, false); err != ErrAuth {
			t.Fatalf("tampered header: %v", err)
		}
		if _, _, err := o.Open(nil, hdr, ct, pn+1, false); err != ErrAuth {
			t.Fatalf("wrong packet number: %v", err)
		}
	}
}

func TestKeyUpdate(t *testing.T) {
	var k [32]byte
	k[5] = 9
	s, o := NewSealer(k), NewOpener(k)
	hdr := make([]byte, 20)
	old := s.Seal(nil, hdr, []byte("old phase"), 10)
	s.Update()
	nw := s.Seal(nil, hdr, []byte("new phase"), 11)
	pt, updated, err := o.Open(nil, hdr, nw, 11, s.KeyPhase())
	if err != nil || !updated || string(pt) != "new phase" {
		t.Fatalf("new phase: %q %v %v", pt, updated, err)
	}
	// A packet from the old phase, reordered behind the update, still opens.
	pt, updated, err = o.Open(nil, hdr, old, 10, false)
	if err != nil || updated || string(pt) != "old phase" {
		t.Fatalf("old phase: %q %v %v", pt, updated, err)
	}
	o.DropPrevious()
	if _, _, err := o.Open(nil, hdr, old, 10, false); err != ErrAuth {
		t.Fatalf("old phase after drop: %v", err)
	}
	// And a second update works the same way.
	s.Update()
	third := s.Seal(nil, hdr, []byte("third"), 12)
	if pt, updated, err := o.Open(nil, hdr, third, 12, s.KeyPhase()); err != nil || !updated || string(pt) != "third" {
		t.Fatalf("second update: %q %v %v", pt, updated, err)
	}
}

func TestSealInPlaceNoAlloc(t *testing.T) {
	var k [32]byte
	s := NewSealer(k)
	buf := make([]byte, 20+1200+Overhead)
	allocs := testing.AllocsPerRun(100, func() {
		s.Seal(buf[20:20], buf[:20], buf[20:20+1200], 7)
	})
	if allocs != 0 {
		t.Fatalf("Seal allocates %v times", allocs)
	}
}

func BenchmarkSeal1200(b *testing.B) {
	var k [32]byte
	s := NewSealer(k)
	buf := make([]byte, 20+1200+Overhead)
	b.SetBytes(1200)
	for i := 0; i < b.N; i++ {
		s.Seal(buf[20:20], buf[:20], buf[20:20+1200], uint64(i))
	}
}
