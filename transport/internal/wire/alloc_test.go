package wire

import (
	"bytes"
	"testing"
)

// The send and receive paths run these for every packet, so they must not
// allocate when the caller supplies a buffer with room and reuses frames.

func testStreamFrame() StreamFrame {
	return StreamFrame{StreamID: 4, Offset: 1 << 20, Data: bytes.Repeat([]byte{0xab}, 1200)}
}

func testAckFrame() AckFrame {
	// 10 ranges of 3 packets with gaps of 2, below largest 1000.
	f := AckFrame{DelayMicros: 1000}
	for i := range uint64(10) {
		top := 1000 - 5*i
		f.Ranges = append(f.Ranges, AckRange{Smallest: top - 2, Largest: top})
	}
	return f
}

func TestAllocs(t *testing.T) {
	if testing.CoverMode() != "" || raceEnabled {
		t.Skip("instrumentation allocates")
	}
	buf := make([]byte, 0, 2048)
	stream := testStreamFrame()
	ack := testAckFrame()
	hdr := DataHeader{KeyPhase: true, DestCID: ConnID{1}, PacketNumber: 1 << 33}
	streamEnc := stream.Append(nil)
	ackEnc := ack.Append(nil)
	var reusedAck AckFrame
	if _, err := ParseAckFrame(ackEnc, &reusedAck); err != nil { // sizes Ranges once
		t.Fatal(err)
	}

	for _, tc := range []struct {
		name string
		f    func()
	}{
		{"StreamFrame.Append", func() { buf = stream.Append(buf[:0]) }},
		{"AckFrame.Append", func() { buf = ack.Append(buf[:0]) }},
		{"DataHeader.Append", func() { buf = hdr.Append(buf[:0]) }},
		{"ParseStreamFrame", func() {
			if _, _, err := ParseStreamFrame(streamEnc); err != nil {
				t.Fatal(err)
			}
		}},
		{"ParseAckFrame", func() {
			if _, err := ParseAckFrame(ackEnc, &reusedAck); err != nil {
				t.Fatal(err)
			}
		}},
		{"ParseDataHeader", func() {
			if _, err := ParseDataHeader(streamEnc[:0:0]); err == nil {
				t.Fatal("parsed an empty header")
			}
		}},
		{"ParseFrameType+errors", func() {
			if _, err := ParseFrameType([]byte{0x03}); err == nil {
				t.Fatal("no error")
			}
		}},
	} {
		if n := testing.AllocsPerRun(100, tc.f); n != 0 {
			t.Errorf("%s: %v allocs/op, want 0", tc.name, n)
		}
	}
}
