package wire

import (
	"bytes"
	"reflect"
	"testing"
)

// Every parser has a fuzz target. Each checks that the parser never panics
// and never claims more bytes than it was given, and that whatever it
// accepts re-encodes (Append) to bytes that parse back to the same value and
// whose length Length() predicts. The seed corpus is the golden vectors of
// the parser's kind, including the rejected ones.

func addGoldenSeeds(f *testing.F, kind, name string) {
	for _, e := range loadGolden(f) {
		if e.kind == kind && (name == "" || e.name == name) {
			f.Add(e.raw)
		}
	}
}

// appender is a pointer to a parsed value that can re-encode itself.
type appender[T any] interface {
	*T
	Append([]byte) []byte
}

func fuzzPacket[T any, P appender[T]](f *testing.F, kind, name string, parse func([]byte) (T, error)) {
	addGoldenSeeds(f, kind, name)
	f.Fuzz(func(t *testing.T, b []byte) {
		v, err := parse(b)
		if err != nil {
			return
		}
		enc := P(&v).Append(nil)
		v2, err := parse(enc)
		if err != nil {
			t.Fatalf("re-encoding %x does not parse: %v", enc, err)
		}
		if !reflect.DeepEqual(v, v2) {
			t.Fatalf("round trip changed the value:\n%+v\n%+v", v, v2)
		}
	})
}

func FuzzParseInitiation(f *testing.F) {
	fuzzPacket(f, "packet", "initiation", ParseInitiation)
}

func FuzzParseResponse(f *testing.F) {
	fuzzPacket(f, "packet", "response", ParseResponse)
}

func FuzzParseCookieReply(f *testing.F) {
	fuzzPacket(f, "packet", "cookie_reply", ParseCookieReply)
}

func FuzzParseDataHeader(f *testing.F) {
	fuzzPacket(f, "packet", "data_header", ParseDataHeader)
}

func FuzzParseHandshakeParams(f *testing.F) {
	fuzzPacket(f, "params", "handshake", ParseHandshakeParams)
}

func FuzzParseDestCID(f *testing.F) {
	addGoldenSeeds(f, "packet", "")
	f.Fuzz(func(t *testing.T, b []byte) {
		cid, err := ParseDestCID(b)
		if err != nil {
			return
		}
		// Routing agrees with the full parsers.
		var want ConnID
		switch PacketType(b[1]) {
		case TypeData:
			h, err := ParseDataHeader(b)
			if err != nil {
				return // reserved bits: routed, then dropped by the header parser
			}
			want = h.DestCID
		case TypeResponse:
			p, err := ParseResponse(b)
			if err != nil {
				return
			}
			want = p.ReceiverCID
		case TypeCookieReply:
			p, err := ParseCookieReply(b)
			if err != nil {
				return
			}
			want = p.ReceiverCID
		default:
			t.Fatalf("routed a %v packet", PacketType(b[1]))
		}
		if cid != want {
			t.Fatalf("ParseDestCID = %v, parser says %v", cid, want)
		}
	})
}

func FuzzParseVarint(f *testing.F) {
	addGoldenSeeds(f, "varint", "")
	f.Fuzz(func(t *testing.T, b []byte) {
		v, n, err := ParseVarint(b)
		if err != nil {
			return
		}
		if n > len(b) || v > MaxVarint {
			t.Fatalf("ParseVarint(%x) = %d, %d", b, v, n)
		}
		enc := AppendVarint(nil, v)
		if len(enc) > n || len(enc) != VarintLen(v) {
			t.Fatalf("%d: canonical encoding %x longer than input %x", v, enc, b[:n])
		}
		if v2, n2, err := ParseVarint(enc); err != nil || v2 != v || n2 != len(enc) {
			t.Fatalf("%d: re-parse got %d, %d, %v", v, v2, n2, err)
		}
	})
}

// frameValue is a pointer to a parsed frame.
type frameValue[T any] interface {
	*T
	frame
}

// fuzzFrame fuzzes a frame parser. The first byte is forced to the parser's
// type (keeping the STREAM FIN bit) so the fuzzer spends its time in the
// fields rather than in the type check.
func fuzzFrame[T any, P frameValue[T]](f *testing.F, name string, typ FrameType, parse func([]byte) (T, int, error)) {
	addGoldenSeeds(f, "frame", name)
	f.Fuzz(func(t *testing.T, b []byte) {
		if len(b) > 0 {
			fin := b[0] & 1
			b[0] = byte(typ)
			if typ == FrameStream {
				b[0] |= fin
			}
		}
		v, n, err := parse(b)
		if err != nil {
			return
		}
		if n <= 0 || n > len(b) {
			t.Fatalf("consumed %d of %d bytes", n, len(b))
		}
		enc := P(&v).Append(nil)
		if len(enc) != P(&v).Length() {
			t.Fatalf("Length() = %d, encoded %d", P(&v).Length(), len(enc))
		}
		if len(enc) > n {
			t.Fatalf("canonical encoding (%d bytes) longer than the input (%d)", len(enc), n)
		}
		v2, n2, err := parse(enc)
		if err != nil || n2 != len(enc) {
			t.Fatalf("re-encoding %x: %d, %v", enc, n2, err)
		}
		if !reflect.DeepEqual(v, v2) {
			t.Fatalf("round trip changed the value:\n%+v\n%+v", v, v2)
		}
	})
}

func FuzzParsePingFrame(f *testing.F) { fuzzFrame(f, "ping", FramePing, ParsePingFrame) }

func FuzzParseResetStreamFrame(f *testing.F) {
	fuzzFrame(f, "reset_stream", FrameResetStream, ParseResetStreamFrame)
}

func FuzzParseStopSendingFrame(f *testing.F) {
	fuzzFrame(f, "stop_sending", FrameStopSending, ParseStopSendingFrame)
}

func FuzzParseStreamFrame(f *testing.F) {
	fuzzFrame(f, "stream", FrameStream, ParseStreamFrame)
}

func FuzzParseMaxDataFrame(f *testing.F) {
	fuzzFrame(f, "max_data", FrameMaxData, ParseMaxDataFrame)
}

func FuzzParseMaxStreamDataFrame(f *testing.F) {
	fuzzFrame(f, "max_stream_data", FrameMaxStreamData, ParseMaxStreamDataFrame)
}

func FuzzParseMaxStreamsFrame(f *testing.F) {
	fuzzFrame(f, "max_streams", FrameMaxStreams, ParseMaxStreamsFrame)
}

func FuzzParseDataBlockedFrame(f *testing.F) {
	fuzzFrame(f, "data_blocked", FrameDataBlocked, ParseDataBlockedFrame)
}

func FuzzParseStreamDataBlockedFrame(f *testing.F) {
	fuzzFrame(f, "stream_data_blocked", FrameStreamDataBlocked, ParseStreamDataBlockedFrame)
}

func FuzzParsePathChallengeFrame(f *testing.F) {
	fuzzFrame(f, "path_challenge", FramePathChallenge, ParsePathChallengeFrame)
}

func FuzzParsePathResponseFrame(f *testing.F) {
	fuzzFrame(f, "path_response", FramePathResponse, ParsePathResponseFrame)
}

func FuzzParseCloseFrame(f *testing.F) {
	fuzzFrame(f, "close", FrameClose, ParseCloseFrame)
}

func FuzzParseDatagramFrame(f *testing.F) {
	fuzzFrame(f, "datagram", FrameDatagram, ParseDatagramFrame)
}

func FuzzParseAckFrame(f *testing.F) {
	addGoldenSeeds(f, "frame", "ack")
	var reused AckFrame // shared across inputs, as the receive loop does
	f.Fuzz(func(t *testing.T, b []byte) {
		if len(b) > 0 {
			b[0] = byte(FrameAck)
		}
		n, err := ParseAckFrame(b, &reused)
		if err != nil {
			if len(reused.Ranges) != 0 {
				t.Fatal("ranges left after an error")
			}
			return
		}
		if n > len(b) {
			t.Fatalf("consumed %d of %d bytes", n, len(b))
		}
		rs := reused.Ranges
		if len(rs) == 0 || len(rs) > MaxAckRanges {
			t.Fatalf("%d ranges", len(rs))
		}
		for i, r := range rs {
			if r.Smallest > r.Largest || (i > 0 && rs[i-1].Smallest <= r.Largest+1) {
				t.Fatalf("ranges not descending and disjoint: %v", rs)
			}
			if !reused.Acks(r.Smallest) || !reused.Acks(r.Largest) ||
				(r.Smallest > 0 && reused.Acks(r.Smallest-1)) {
				t.Fatalf("Acks disagrees with range %v", r)
			}
		}
		enc := reused.Append(nil)
		if len(enc) != reused.Length() || len(enc) > n {
			t.Fatalf("Length() = %d, encoded %d, input %d", reused.Length(), len(enc), n)
		}
		var g AckFrame
		if n2, err := ParseAckFrame(enc, &g); err != nil || n2 != len(enc) {
			t.Fatalf("re-encoding %x: %d, %v", enc, n2, err)
		}
		if g.DelayMicros != reused.DelayMicros || !reflect.DeepEqual(g.Ranges, rs) {
			t.Fatalf("round trip changed the value:\n%+v\n%+v", reused, g)
		}
	})
}

// FuzzParseFrames walks whole payloads as the transport does, through every
// parser, checking that each frame re-encodes to a parseable equivalent.
func FuzzParseFrames(f *testing.F) {
	addGoldenSeeds(f, "payload", "")
	addGoldenSeeds(f, "frame", "")
	f.Fuzz(func(t *testing.T, b []byte) {
		for len(b) > 0 {
			if n := PaddingLen(b); n > 0 {
				b = b[n:]
				continue
			}
			v, n, err := parseFrame(b)
			if err != nil {
				return
			}
			if n <= 0 || n > len(b) {
				t.Fatalf("consumed %d of %d bytes", n, len(b))
			}
			enc := v.Append(nil)
			v2, n2, err := parseFrame(enc)
			if err != nil || n2 != len(enc) || len(enc) != v.Length() {
				t.Fatalf("%T: re-encoding %x: %d, %v", v, enc, n2, err)
			}
			if !bytes.Equal(v2.Append(nil), enc) {
				t.Fatalf("%T: second re-encoding differs", v)
			}
			b = b[n:]
		}
	})
}
