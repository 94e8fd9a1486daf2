package wire

import (
	"errors"
	"testing"
)

var varintBoundaries = []uint64{
	0, 1, maxVarint1, maxVarint1 + 1, maxVarint2, maxVarint2 + 1,
	maxVarint4, maxVarint4 + 1, MaxVarint - 1, MaxVarint,
}

func TestVarintRoundTrip(t *testing.T) {
	for _, v := range varintBoundaries {
		b := AppendVarint([]byte{0xee}, v)
		if got := len(b) - 1; got != VarintLen(v) {
			t.Errorf("%d: encoded in %d bytes, VarintLen says %d", v, got, VarintLen(v))
		}
		got, n, err := ParseVarint(b[1:])
		if err != nil || got != v || n != VarintLen(v) {
			t.Errorf("%d: parsed %d, %d, %v", v, got, n, err)
		}
		for i := range n {
			if _, _, err := ParseVarint(b[1 : 1+i]); !errors.Is(err, ErrTruncated) {
				t.Errorf("%d: %d-byte prefix: err = %v, want ErrTruncated", v, i, err)
			}
		}
	}
}

func TestVarintLen(t *testing.T) {
	for _, tc := range []struct {
		v    uint64
		want int
	}{
		{0, 1}, {63, 1}, {64, 2}, {16383, 2}, {16384, 4}, {1<<30 - 1, 4}, {1 << 30, 8}, {MaxVarint, 8},
	} {
		if got := VarintLen(tc.v); got != tc.want {
			t.Errorf("VarintLen(%d) = %d, want %d", tc.v, got, tc.want)
		}
	}
}

// Receivers accept every form (RFC 9000 §16), so each value small enough
// for a short form must also parse from the longer ones.
func TestVarintNonShortest(t *testing.T) {
	for _, tc := range []struct {
		b []byte
		v uint64
	}{
		{[]byte{0x40, 0x25}, 37},
		{[]byte{0x80, 0, 0, 0x25}, 37},
		{[]byte{0xc0, 0, 0, 0, 0, 0, 0, 0x25}, 37},
		{[]byte{0x80, 0, 0x3f, 0xff}, 16383},
	} {
		v, n, err := ParseVarint(tc.b)
		if err != nil || v != tc.v || n != len(tc.b) {
			t.Errorf("%x: got %d, %d, %v; want %d", tc.b, v, n, err, tc.v)
		}
	}
}

func TestAppendVarintPanicsAboveMax(t *testing.T) {
	defer func() {
		if recover() == nil {
			t.Error("AppendVarint(MaxVarint+1) did not panic")
		}
	}()
	AppendVarint(nil, MaxVarint+1)
}
