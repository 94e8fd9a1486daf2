package wire

import (
	"bytes"
	"errors"
	"testing"
)

func TestEarlyHeaderRoundTrip(t *testing.T) {
	h := EarlyHeader{PacketNumber: 0x0102030405060708}
	for i := range h.Ephemeral {
		h.Ephemeral[i] = byte(i)
	}
	b := h.Append(nil)
	if len(b) != EarlyHeaderLen {
		t.Fatalf("header is %d bytes, want %d", len(b), EarlyHeaderLen)
	}
	if !bytes.Equal(b[:4], []byte{0xc1, 5, 0, 0}) || b[4] != 0 || b[35] != 31 || b[36] != 1 || b[43] != 8 {
		t.Fatalf("layout: % x", b)
	}
	if _, err := ParseEarlyHeader(b); !errors.Is(err, ErrTruncated) {
		t.Errorf("header without ciphertext: err = %v, want ErrTruncated", err)
	}
	pkt := append(b, make([]byte, 17)...)
	got, err := ParseEarlyHeader(pkt)
	if err != nil || got != h {
		t.Fatalf("ParseEarlyHeader = %+v, %v; want %+v", got, err, h)
	}
	if _, err := ParseDestCID(pkt); !errors.Is(err, ErrNoDestCID) {
		t.Errorf("ParseDestCID(early) err = %v, want ErrNoDestCID", err)
	}
	for _, tc := range []struct {
		i    int
		v    byte
		want error
	}{{0, 0xc2, ErrNotParley}, {1, 4, ErrPacketType}, {2, 1, ErrReserved}, {3, 1, ErrReserved}} {
		bad := bytes.Clone(pkt)
		bad[tc.i] = tc.v
		if _, err := ParseEarlyHeader(bad); !errors.Is(err, tc.want) {
			t.Errorf("byte %d = %#x: err = %v, want %v", tc.i, tc.v, err, tc.want)
		}
	}
}
