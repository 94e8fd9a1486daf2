package wire

import "testing"

func BenchmarkStreamFrameAppend(b *testing.B) {
	f := testStreamFrame()
	buf := make([]byte, 0, 1500)
	b.SetBytes(int64(len(f.Data)))
	b.ReportAllocs()
	for b.Loop() {
		buf = f.Append(buf[:0])
	}
}

func BenchmarkParseStreamFrame(b *testing.B) {
	f := testStreamFrame()
	enc := f.Append(nil)
	b.SetBytes(int64(len(f.Data)))
	b.ReportAllocs()
	for b.Loop() {
		if _, _, err := ParseStreamFrame(enc); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkAckFrameAppend(b *testing.B) {
	f := testAckFrame()
	buf := make([]byte, 0, 1500)
	b.ReportAllocs()
	for b.Loop() {
		buf = f.Append(buf[:0])
	}
}

func BenchmarkParseAckFrame(b *testing.B) {
	f := testAckFrame()
	enc := f.Append(nil)
	var g AckFrame
	b.ReportAllocs()
	for b.Loop() {
		if _, err := ParseAckFrame(enc, &g); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkDataHeader(b *testing.B) {
	h := DataHeader{DestCID: ConnID{1, 2, 3}, PacketNumber: 123456}
	buf := make([]byte, 0, 64)
	b.ReportAllocs()
	for b.Loop() {
		buf = h.Append(buf[:0])
		if _, err := ParseDataHeader(buf); err != nil {
			b.Fatal(err)
		}
	}
}
