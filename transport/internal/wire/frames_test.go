package wire

import (
	"bytes"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"testing"
	"unicode/utf8"
)

// frame is what every frame type implements.
type frame interface {
	Append([]byte) []byte
	Length() int
}

// parseFrame parses the frame at the start of b with the parser its type
// selects, returning a pointer to the parsed struct.
func parseFrame(b []byte) (frame, int, error) {
	t, err := ParseFrameType(b)
	if err != nil {
		return nil, 0, err
	}
	switch t {
	case FramePing:
		f, n, err := ParsePingFrame(b)
		return &f, n, err
	case FrameAck:
		var f AckFrame
		n, err := ParseAckFrame(b, &f)
		return &f, n, err
	case FrameResetStream:
		f, n, err := ParseResetStreamFrame(b)
		return &f, n, err
	case FrameStopSending:
		f, n, err := ParseStopSendingFrame(b)
		return &f, n, err
	case FrameStream, FrameStreamFin:
		f, n, err := ParseStreamFrame(b)
		return &f, n, err
	case FrameMaxData:
		f, n, err := ParseMaxDataFrame(b)
		return &f, n, err
	case FrameMaxStreamData:
		f, n, err := ParseMaxStreamDataFrame(b)
		return &f, n, err
	case FrameMaxStreams:
		f, n, err := ParseMaxStreamsFrame(b)
		return &f, n, err
	case FrameDataBlocked:
		f, n, err := ParseDataBlockedFrame(b)
		return &f, n, err
	case FrameStreamDataBlocked:
		f, n, err := ParseStreamDataBlockedFrame(b)
		return &f, n, err
	case FramePathChallenge:
		f, n, err := ParsePathChallengeFrame(b)
		return &f, n, err
	case FramePathResponse:
		f, n, err := ParsePathResponseFrame(b)
		return &f, n, err
	case FrameClose:
		f, n, err := ParseCloseFrame(b)
		return &f, n, err
	case FrameDatagram:
		f, n, err := ParseDatagramFrame(b)
		return &f, n, err
	}
	return nil, 0, fmt.Errorf("no parser for %v", t)
}

// roundTripFrames is a table of frames covering every type, with each
// varint field at every encoding-size boundary.
func roundTripFrames() []frame {
	fs := []frame{
		&PingFrame{},
		&PathChallengeFrame{Data: [8]byte{1, 2, 3, 4, 5, 6, 7, 8}},
		&PathResponseFrame{Data: [8]byte{0xff, 0, 0xff}},
		&StreamFrame{Data: []byte{}},
		&StreamFrame{Fin: true, Data: []byte{}},
		&StreamFrame{StreamID: 4, Offset: 1000, Data: bytes.Repeat([]byte("ab"), 600)},
		&StreamFrame{StreamID: 4, Offset: MaxVarint - 3, Fin: true, Data: []byte("end")},
		&StreamFrame{Data: make([]byte, maxVarint2+1)}, // 4-byte length
		&DatagramFrame{Data: []byte{}},
		&DatagramFrame{Data: make([]byte, maxVarint1+1)},
		&CloseFrame{},
		&CloseFrame{ErrorCode: ApplicationError, Reason: "bye"},
		&CloseFrame{ErrorCode: MaxVarint, Reason: strings.Repeat("r", MaxReasonLen)},
		&AckFrame{Ranges: []AckRange{{0, 0}}},
		&AckFrame{Ranges: []AckRange{{MaxVarint, MaxVarint}, {0, 0}}, DelayMicros: MaxVarint},
		&AckFrame{Ranges: []AckRange{{95, 100}, {90, 90}, {70, 80}}, DelayMicros: 250},
		&AckFrame{Ranges: []AckRange{{10, MaxVarint}, {0, 8}}},
	}
	// An ACK with the maximum number of ranges: 2i+1 acked for i in 0..255.
	var many []AckRange
	for i := MaxAckRanges - 1; i >= 0; i-- {
		many = append(many, AckRange{uint64(2 * i), uint64(2 * i)})
	}
	fs = append(fs, &AckFrame{Ranges: many})
	for _, v := range varintBoundaries {
		// An offset that puts 2 bytes of data at the very end of the
		// stream space, when v leaves room for that.
		endOff := uint64(0)
		if v <= MaxVarint-2 {
			endOff = MaxVarint - 2 - v
		}
		fs = append(fs,
			&MaxDataFrame{Maximum: v},
			&MaxStreamsFrame{Maximum: v},
			&DataBlockedFrame{Limit: v},
			&MaxStreamDataFrame{StreamID: v, Maximum: MaxVarint - v},
			&StreamDataBlockedFrame{StreamID: MaxVarint - v, Limit: v},
			&StopSendingFrame{StreamID: v, ErrorCode: v},
			&ResetStreamFrame{StreamID: v, ErrorCode: 1, FinalSize: v},
			&StreamFrame{StreamID: v, Offset: endOff, Data: []byte("hi")},
			&StreamFrame{StreamID: 1, Offset: v, Fin: true},
			&CloseFrame{ErrorCode: ErrorCode(v), Reason: "x"},
			&AckFrame{Ranges: []AckRange{{0, v}}, DelayMicros: v},
			&AckFrame{Ranges: []AckRange{{v, v}}},
		)
		if v >= 2 {
			// A gap of v-2 between [v, v] and [0, 0].
			fs = append(fs, &AckFrame{Ranges: []AckRange{{v, v}, {0, 0}}})
		}
	}
	return fs
}

// normalize makes a parsed frame comparable to the one it was encoded from:
// a nil Data parses as an empty slice.
func normalize(f frame) frame {
	switch f := f.(type) {
	case *StreamFrame:
		g := *f
		if g.Data == nil {
			g.Data = []byte{}
		}
		return &g
	case *DatagramFrame:
		g := *f
		if g.Data == nil {
			g.Data = []byte{}
		}
		return &g
	}
	return f
}

func TestFrameRoundTrip(t *testing.T) {
	for _, f := range roundTripFrames() {
		name := fmt.Sprintf("%T", f)
		prefix := []byte{0xde, 0xad}
		b := f.Append(bytes.Clone(prefix))
		if !bytes.Equal(b[:2], prefix) {
			t.Fatalf("%s: Append overwrote the buffer's prefix", name)
		}
		enc := b[2:]
		if len(enc) != f.Length() {
			t.Errorf("%s %+v: Length() = %d, encoded %d bytes", name, f, f.Length(), len(enc))
		}
		// Trailing bytes belong to the next frame: the count must stop
		// before them.
		got, n, err := parseFrame(append(bytes.Clone(enc), 0x01, 0x01))
		if err != nil {
			t.Errorf("%s %+v: %v", name, f, err)
			continue
		}
		if n != len(enc) {
			t.Errorf("%s: consumed %d bytes, encoding is %d", name, n, len(enc))
		}
		if !reflect.DeepEqual(got, normalize(f)) {
			t.Errorf("%s: round trip\n got %+v\nwant %+v", name, got, f)
		}
		for i := range enc {
			if g, _, err := parseFrame(enc[:i]); err == nil {
				t.Errorf("%s: %d-byte prefix of %d parsed as %+v", name, i, len(enc), g)
			}
		}
	}
}

// Each parser refuses a frame of another type rather than misreading it.
func TestFrameParserWrongType(t *testing.T) {
	b := []byte{byte(FrameDatagram), 0}
	var ack AckFrame
	for name, parse := range map[string]func([]byte) error{
		"ping":         func(b []byte) error { _, _, err := ParsePingFrame(b); return err },
		"ack":          func(b []byte) error { _, err := ParseAckFrame(b, &ack); return err },
		"reset":        func(b []byte) error { _, _, err := ParseResetStreamFrame(b); return err },
		"stop":         func(b []byte) error { _, _, err := ParseStopSendingFrame(b); return err },
		"stream":       func(b []byte) error { _, _, err := ParseStreamFrame(b); return err },
		"max_data":     func(b []byte) error { _, _, err := ParseMaxDataFrame(b); return err },
		"max_sd":       func(b []byte) error { _, _, err := ParseMaxStreamDataFrame(b); return err },
		"max_streams":  func(b []byte) error { _, _, err := ParseMaxStreamsFrame(b); return err },
		"blocked":      func(b []byte) error { _, _, err := ParseDataBlockedFrame(b); return err },
		"sd_blocked":   func(b []byte) error { _, _, err := ParseStreamDataBlockedFrame(b); return err },
		"challenge":    func(b []byte) error { _, _, err := ParsePathChallengeFrame(b); return err },
		"response":     func(b []byte) error { _, _, err := ParsePathResponseFrame(b); return err },
		"close":        func(b []byte) error { _, _, err := ParseCloseFrame(b); return err },
		"datagram(00)": func([]byte) error { _, _, err := ParseDatagramFrame([]byte{0x00, 0}); return err },
	} {
		if err := parse(b); !errors.Is(err, ErrFrameType) {
			t.Errorf("%s: err = %v, want ErrFrameType", name, err)
		}
		if err := parse(nil); !errors.Is(err, ErrTruncated) && name != "datagram(00)" {
			t.Errorf("%s(nil): err = %v, want ErrTruncated", name, err)
		}
	}
}

func TestParseFrameType(t *testing.T) {
	known := 0
	for i := range 256 {
		ft, err := ParseFrameType([]byte{byte(i)})
		if _, ok := frameNames[FrameType(i)]; ok {
			known++
			if err != nil || ft != FrameType(i) {
				t.Errorf("type %#x: %v, %v", i, ft, err)
			}
			continue
		}
		if !errors.Is(err, ErrUnknownFrame) {
			t.Errorf("type %#x: err = %v, want ErrUnknownFrame", i, err)
		}
	}
	if known != len(frameNames) {
		t.Errorf("%d known types, want %d", known, len(frameNames))
	}
	// Types must use their one-byte form.
	if _, err := ParseFrameType([]byte{0x40, 0x01}); !errors.Is(err, ErrUnknownFrame) {
		t.Errorf("2-byte PING type: err = %v, want ErrUnknownFrame", err)
	}
	if _, err := ParseFrameType(nil); !errors.Is(err, ErrTruncated) {
		t.Errorf("empty: err = %v, want ErrTruncated", err)
	}
}

func TestIsAckEliciting(t *testing.T) {
	for ft := range frameNames {
		want := ft != FramePadding && ft != FrameAck && ft != FrameClose
		if got := ft.IsAckEliciting(); got != want {
			t.Errorf("%v (%#x).IsAckEliciting() = %t, want %t", ft, uint8(ft), got, want)
		}
	}
	if FrameType(0x03).IsAckEliciting() {
		t.Error("unknown type is ack-eliciting")
	}
}

func TestPadding(t *testing.T) {
	b := AppendPadding([]byte{1}, 5)
	if !bytes.Equal(b, []byte{1, 0, 0, 0, 0, 0}) {
		t.Fatalf("AppendPadding = %x", b)
	}
	for _, tc := range []struct {
		b    []byte
		want int
	}{{nil, 0}, {[]byte{1}, 0}, {[]byte{0, 0, 1, 0}, 2}, {make([]byte, 1200), 1200}} {
		if got := PaddingLen(tc.b); got != tc.want {
			t.Errorf("PaddingLen(%x) = %d, want %d", tc.b, got, tc.want)
		}
	}
}

func TestStreamFrameErrors(t *testing.T) {
	for _, tc := range []struct {
		desc string
		b    []byte
		want error
	}{
		{"data ends past 2^62-1", append([]byte{0x08, 0x00}, append(AppendVarint(nil, MaxVarint), 1, 'x')...), ErrStreamOverflow},
		{"data ends exactly at 2^62-1", append([]byte{0x08, 0x00}, append(AppendVarint(nil, MaxVarint-1), 1, 'x')...), nil},
		{"length beyond buffer", []byte{0x08, 0, 0, 6, 'h', 'e', 'l', 'l', 'o'}, ErrTruncated},
		{"huge length", []byte{0x08, 0, 0, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff}, ErrTruncated},
	} {
		_, _, err := ParseStreamFrame(tc.b)
		if !errors.Is(err, tc.want) {
			t.Errorf("%s: err = %v, want %v", tc.desc, err, tc.want)
		}
	}
}

// Parsed Data must alias the input (no copy) yet not let an append spill
// into the next frame.
func TestStreamDataAliasesInput(t *testing.T) {
	b := (&StreamFrame{StreamID: 1, Data: []byte("abc")}).Append(nil)
	b = append(b, byte(FramePing))
	f, n, err := ParseStreamFrame(b)
	if err != nil {
		t.Fatal(err)
	}
	if &f.Data[0] != &b[n-3] {
		t.Error("Data does not alias the input buffer")
	}
	_ = append(f.Data, 'X')
	if b[n] != byte(FramePing) {
		t.Error("appending to Data overwrote the next frame")
	}
}

func TestMaxStreamDataLen(t *testing.T) {
	// Brute force: the answer is the largest n that fits, for every room
	// around each length-varint boundary.
	check := func(id, off uint64, room int) {
		t.Helper()
		got := MaxStreamDataLen(id, off, room)
		fits := func(n int) bool { return StreamFrameOverhead(id, off, n)+n <= room }
		if got < 0 || (got > 0 && !fits(got)) {
			t.Fatalf("id %d off %d room %d: %d does not fit", id, off, room, got)
		}
		for n := got + 1; n <= got+9; n++ {
			if fits(n) {
				t.Fatalf("id %d off %d room %d: returned %d, but %d fits", id, off, room, got, n)
			}
		}
	}
	for _, id := range []uint64{0, 64, MaxVarint} {
		for _, off := range []uint64{0, 16384} {
			for room := -2; room < 20000; room++ {
				check(id, off, room)
			}
			for room := 1<<30 - 20; room < 1<<30+20; room++ {
				check(id, off, room)
			}
		}
	}
	// The example from the doc comment: 16383 fits (2-byte length), 16384
	// would need a 4-byte one.
	if got := MaxStreamDataLen(0, 0, 3+16385); got != 16383 {
		t.Errorf("got %d, want 16383", got)
	}
	// Data never extends past offset 2^62-1.
	if got := MaxStreamDataLen(0, MaxVarint-10, 1500); got != 10 {
		t.Errorf("near the maximum offset: got %d, want 10", got)
	}
}

func TestAckFrameErrors(t *testing.T) {
	for _, tc := range []struct {
		desc string
		b    []byte
		want error
	}{
		{"first range below 0", []byte{0x02, 5, 0, 0, 6}, ErrAckRange},
		{"gap below 0", []byte{0x02, 5, 0, 1, 2, 2, 0}, ErrAckRange},
		{"gap to exactly 0", []byte{0x02, 5, 0, 1, 2, 1, 0}, nil},
		{"range below 0", []byte{0x02, 5, 0, 1, 0, 0, 4}, ErrAckRange},
		{"range to exactly 0", []byte{0x02, 5, 0, 1, 0, 0, 3}, nil},
		{"256 more ranges", []byte{0x02, 5, 0, 0x41, 0x00, 0}, ErrTooManyAckRanges},
		{"huge count", []byte{0x02, 5, 0, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0}, ErrTooManyAckRanges},
		{"count larger than data", []byte{0x02, 5, 0, 0x40, 0xff, 0, 0, 0}, ErrTruncated},
	} {
		f := AckFrame{Ranges: make([]AckRange, 3, 8)}
		_, err := ParseAckFrame(tc.b, &f)
		if !errors.Is(err, tc.want) {
			t.Errorf("%s: err = %v, want %v", tc.desc, err, tc.want)
		}
		if err != nil && len(f.Ranges) != 0 {
			t.Errorf("%s: ranges left after an error: %v", tc.desc, f.Ranges)
		}
	}
}

func TestAckFrameAppendCapsRanges(t *testing.T) {
	var rs []AckRange
	for i := 399; i >= 0; i-- {
		rs = append(rs, AckRange{uint64(3 * i), uint64(3*i + 1)})
	}
	f := AckFrame{Ranges: rs}
	b := f.Append(nil)
	if len(b) != f.Length() {
		t.Errorf("Length() = %d, encoded %d", f.Length(), len(b))
	}
	var g AckFrame
	if _, err := ParseAckFrame(b, &g); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(g.Ranges, rs[:MaxAckRanges]) {
		t.Errorf("sent %d ranges, want the %d highest", len(g.Ranges), MaxAckRanges)
	}
}

func TestAckFrameAcks(t *testing.T) {
	f := AckFrame{Ranges: []AckRange{{95, 100}, {90, 90}, {70, 80}, {0, 1}}}
	want := map[uint64]bool{}
	for _, r := range f.Ranges {
		for pn := r.Smallest; pn <= r.Largest; pn++ {
			want[pn] = true
		}
	}
	for pn := range uint64(120) {
		if got := f.Acks(pn); got != want[pn] {
			t.Errorf("Acks(%d) = %t, want %t", pn, got, want[pn])
		}
	}
	if f.Acks(1<<64 - 1) {
		t.Error("Acks(2^64-1) = true")
	}
	if f.LargestAcked() != 100 {
		t.Errorf("LargestAcked() = %d", f.LargestAcked())
	}
	var empty AckFrame
	if empty.Acks(0) || empty.LargestAcked() != 0 || empty.Length() != 0 {
		t.Error("empty frame acks something")
	}
	if (&AckFrame{DelayMicros: 250}).AckDelay().Microseconds() != 250 {
		t.Error("AckDelay")
	}
	if (&AckFrame{DelayMicros: MaxVarint}).AckDelay() <= 0 {
		t.Error("AckDelay overflowed")
	}
}

func TestCloseFrame(t *testing.T) {
	long := strings.Repeat("é", MaxReasonLen) // 2 bytes per rune
	f := CloseFrame{ErrorCode: ProtocolViolation, Reason: long}
	b := f.Append(nil)
	if len(b) != f.Length() {
		t.Errorf("Length() = %d, encoded %d", f.Length(), len(b))
	}
	g, _, err := ParseCloseFrame(b)
	if err != nil {
		t.Fatal(err)
	}
	if len(g.Reason) != MaxReasonLen || !utf8.ValidString(g.Reason) || !strings.HasPrefix(long, g.Reason) {
		t.Errorf("truncated reason: %d bytes, valid UTF-8 %t", len(g.Reason), utf8.ValidString(g.Reason))
	}
	// An odd cut would split "é": the reason backs up to a rune start.
	f.Reason = "x" + long
	g, _, err = ParseCloseFrame(f.Append(nil))
	if err != nil || len(g.Reason) != MaxReasonLen-1 || !utf8.ValidString(g.Reason) {
		t.Errorf("odd cut: %d bytes, %v", len(g.Reason), err)
	}
	tooLong := append([]byte{byte(FrameClose), 0}, AppendVarint(nil, MaxReasonLen+1)...)
	tooLong = append(tooLong, make([]byte, MaxReasonLen+1)...)
	if _, _, err := ParseCloseFrame(tooLong); !errors.Is(err, ErrReasonTooLong) {
		t.Errorf("1025-byte reason: err = %v", err)
	}
	// Not valid UTF-8, still accepted: the reason is only for logs.
	g, _, err = ParseCloseFrame([]byte{byte(FrameClose), 0, 2, 0xff, 0xfe})
	if err != nil || g.Reason != "\xff\xfe" {
		t.Errorf("invalid UTF-8: %q, %v", g.Reason, err)
	}
}

func TestAckRangeLenAndEmptyAppend(t *testing.T) {
	if n := (AckRange{Smallest: 70, Largest: 80}).Len(); n != 11 {
		t.Errorf("Len() = %d, want 11", n)
	}
	defer func() {
		if recover() == nil {
			t.Error("Append of an ACK without ranges did not panic")
		}
	}()
	(&AckFrame{}).Append(nil)
}

func TestErrorCodeStrings(t *testing.T) {
	// The names are the §2.1 table's.
	want := map[ErrorCode]string{
		0x0: "NO_ERROR", 0x1: "INTERNAL_ERROR", 0x3: "FLOW_CONTROL_ERROR",
		0x4: "STREAM_LIMIT_ERROR", 0x5: "STREAM_STATE_ERROR", 0x6: "FINAL_SIZE_ERROR",
		0x7: "FRAME_ENCODING_ERROR", 0xa: "PROTOCOL_VIOLATION", 0x100: "IDLE_TIMEOUT",
		0x200: "APPLICATION_ERROR", 0x2: "ErrorCode(0x2)",
	}
	for c, name := range want {
		if got := c.String(); got != name {
			t.Errorf("ErrorCode(%#x).String() = %q, want %q", uint64(c), got, name)
		}
	}
}
