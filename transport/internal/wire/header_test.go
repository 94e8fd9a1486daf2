package wire

import (
	"bytes"
	"errors"
	"testing"
	"time"
)

func TestIsParley(t *testing.T) {
	for _, tc := range []struct {
		b    []byte
		want bool
	}{
		{nil, false},
		{[]byte{0xc1}, true},
		{[]byte{0xc1, 4}, true},
		{[]byte{0x00, 0x01}, false}, // STUN binding request
		{[]byte{0xc2, 4}, false},    // a future version
		{[]byte{0x41}, false},
	} {
		if got := IsParley(tc.b); got != tc.want {
			t.Errorf("IsParley(%x) = %t, want %t", tc.b, got, tc.want)
		}
	}
}

func TestPacketTypeOf(t *testing.T) {
	for _, tc := range []struct {
		b       []byte
		want    PacketType
		wantErr error
	}{
		{nil, 0, ErrTruncated},
		{[]byte{0xc1}, 0, ErrTruncated},
		{[]byte{0xc2, 1}, 0, ErrNotParley},
		{[]byte{0x00, 1}, 0, ErrNotParley},
		{[]byte{0xc1, 0}, 0, ErrPacketType},
		{[]byte{0xc1, 6}, 0, ErrPacketType},
		{[]byte{0xc1, 5}, TypeEarlyData, nil},
		{[]byte{0xc1, 1}, TypeInitiation, nil},
		{[]byte{0xc1, 2}, TypeResponse, nil},
		{[]byte{0xc1, 3}, TypeCookieReply, nil},
		{[]byte{0xc1, 4, 0xff}, TypeData, nil},
	} {
		got, err := PacketTypeOf(tc.b)
		if got != tc.want || !errors.Is(err, tc.wantErr) {
			t.Errorf("PacketTypeOf(%x) = %v, %v; want %v, %v", tc.b, got, err, tc.want, tc.wantErr)
		}
	}
}

func TestStrings(t *testing.T) {
	for _, tc := range []struct{ got, want string }{
		{TypeInitiation.String(), "initiation"},
		{TypeData.String(), "data"},
		{PacketType(9).String(), "PacketType(9)"},
		{ConnID{1, 2, 3, 4, 5, 6, 7, 0xff}.String(), "01020304050607ff"},
		{FrameStreamFin.String(), "STREAM"},
		{FrameStreamDataBlocked.String(), "STREAM_DATA_BLOCKED"},
		{FrameType(0x3f).String(), "FrameType(0x3f)"},
		{FrameEncodingError.String(), "FRAME_ENCODING_ERROR"},
		{IdleTimeout.String(), "IDLE_TIMEOUT"},
		{ErrorCode(0x999).String(), "ErrorCode(0x999)"},
	} {
		if tc.got != tc.want {
			t.Errorf("got %q, want %q", tc.got, tc.want)
		}
	}
}

func testPackets() (Initiation, Response, CookieReply) {
	noise1 := make([]byte, InitiationNoiseLen)
	for i := range noise1 {
		noise1[i] = byte(i)
	}
	noise2 := make([]byte, ResponseNoiseLen)
	for i := range noise2 {
		noise2[i] = byte(0x80 + i)
	}
	cidA := ConnID{1, 2, 3, 4, 5, 6, 7, 8}
	cidB := ConnID{0xa1, 0xa2, 0xa3, 0xa4, 0xa5, 0xa6, 0xa7, 0xa8}
	init := Initiation{SenderCID: cidA, Noise: noise1, MAC1: [16]byte{1, 2}, MAC2: [16]byte{15: 3}}
	resp := Response{ReceiverCID: cidA, SenderCID: cidB, Noise: noise2, MAC1: [16]byte{4}, MAC2: [16]byte{5}}
	cookie := CookieReply{ReceiverCID: cidA, Nonce: [24]byte{6, 23: 7}, Cookie: [32]byte{8, 31: 9}}
	return init, resp, cookie
}

func TestPacketLayout(t *testing.T) {
	// The lengths and offsets are spelled out in docs/protocol.md §1; the
	// constants are derived, so check them against the spec's numbers.
	for _, tc := range []struct {
		name      string
		got, want int
	}{
		{"InitiationNoiseLen", InitiationNoiseLen, 140},
		{"InitiationMAC1Offset", InitiationMAC1Offset, 152},
		{"InitiationMAC2Offset", InitiationMAC2Offset, 168},
		{"InitiationLen", InitiationMAC2Offset + 16, InitiationLen},
		{"ResponseNoiseLen", ResponseNoiseLen, 92},
		{"ResponseMAC1Offset", ResponseMAC1Offset, 112},
		{"ResponseMAC2Offset", ResponseMAC2Offset, 128},
		{"ResponseLen", ResponseMAC2Offset + 16, ResponseLen},
		{"CookieReplyLen", CookieReplyCookieOffset + 32, CookieReplyLen},
		{"MinDataPacketLen", MinDataPacketLen, 37},
	} {
		if tc.got != tc.want {
			t.Errorf("%s = %d, want %d", tc.name, tc.got, tc.want)
		}
	}
}

func TestHandshakePacketsRoundTrip(t *testing.T) {
	init, resp, cookie := testPackets()

	b := init.Append([]byte{0xee})[1:]
	if len(b) != InitiationLen {
		t.Fatalf("initiation is %d bytes", len(b))
	}
	if !bytes.Equal(b[InitiationMAC1Offset:InitiationMAC2Offset], init.MAC1[:]) {
		t.Error("mac1 not at InitiationMAC1Offset")
	}
	gotInit, err := ParseInitiation(b)
	if err != nil || gotInit.SenderCID != init.SenderCID || !bytes.Equal(gotInit.Noise, init.Noise) ||
		gotInit.MAC1 != init.MAC1 || gotInit.MAC2 != init.MAC2 {
		t.Errorf("initiation: got %+v, %v", gotInit, err)
	}
	if _, err := ParseDestCID(b); !errors.Is(err, ErrNoDestCID) {
		t.Errorf("ParseDestCID(initiation) err = %v, want ErrNoDestCID", err)
	}

	b = resp.Append(nil)
	if len(b) != ResponseLen {
		t.Fatalf("response is %d bytes", len(b))
	}
	gotResp, err := ParseResponse(b)
	if err != nil || gotResp.ReceiverCID != resp.ReceiverCID || gotResp.SenderCID != resp.SenderCID ||
		!bytes.Equal(gotResp.Noise, resp.Noise) || gotResp.MAC1 != resp.MAC1 || gotResp.MAC2 != resp.MAC2 {
		t.Errorf("response: got %+v, %v", gotResp, err)
	}
	if cid, err := ParseDestCID(b); err != nil || cid != resp.ReceiverCID {
		t.Errorf("ParseDestCID(response) = %v, %v", cid, err)
	}

	b = cookie.Append(nil)
	gotCookie, err := ParseCookieReply(b)
	if err != nil || gotCookie != cookie {
		t.Errorf("cookie reply: got %+v, %v", gotCookie, err)
	}
	if cid, err := ParseDestCID(b); err != nil || cid != cookie.ReceiverCID {
		t.Errorf("ParseDestCID(cookie reply) = %v, %v", cid, err)
	}
}

// Each fixed-size parser rejects wrong lengths, other types and set
// reserved bytes, and never reads a type it was not asked for.
func TestHandshakePacketsReject(t *testing.T) {
	init, resp, cookie := testPackets()
	parsers := []struct {
		name  string
		enc   []byte
		parse func([]byte) error
	}{
		{"initiation", init.Append(nil), func(b []byte) error { _, err := ParseInitiation(b); return err }},
		{"response", resp.Append(nil), func(b []byte) error { _, err := ParseResponse(b); return err }},
		{"cookie_reply", cookie.Append(nil), func(b []byte) error { _, err := ParseCookieReply(b); return err }},
	}
	for _, p := range parsers {
		mutate := func(f func(b []byte) []byte) []byte { return f(bytes.Clone(p.enc)) }
		for _, tc := range []struct {
			desc string
			b    []byte
			want error
		}{
			{"one byte long", append(bytes.Clone(p.enc), 0), ErrPacketLength},
			{"one byte short", p.enc[:len(p.enc)-1], ErrTruncated},
			{"version 2", mutate(func(b []byte) []byte { b[0] = 0xc2; return b }), ErrNotParley},
			{"data type", mutate(func(b []byte) []byte { b[1] = byte(TypeData); return b }), ErrPacketType},
			{"reserved byte 2", mutate(func(b []byte) []byte { b[2] = 1; return b }), ErrReserved},
			{"reserved byte 3", mutate(func(b []byte) []byte { b[3] = 0x80; return b }), ErrReserved},
		} {
			if err := p.parse(tc.b); !errors.Is(err, tc.want) {
				t.Errorf("%s, %s: err = %v, want %v", p.name, tc.desc, err, tc.want)
			}
		}
		for i := range p.enc {
			if err := p.parse(p.enc[:i]); err == nil {
				t.Errorf("%s: %d-byte prefix parsed", p.name, i)
			}
		}
	}
}

func TestAppendWrongNoiseLengthPanics(t *testing.T) {
	init, resp, _ := testPackets()
	init.Noise = init.Noise[1:]
	resp.Noise = append(resp.Noise, 0)
	for name, f := range map[string]func(){
		"initiation": func() { init.Append(nil) },
		"response":   func() { resp.Append(nil) },
	} {
		func() {
			defer func() {
				if recover() == nil {
					t.Errorf("%s: Append with a wrong-length Noise message did not panic", name)
				}
			}()
			f()
		}()
	}
}

func TestDataHeader(t *testing.T) {
	for _, h := range []DataHeader{
		{},
		{KeyPhase: true, DestCID: ConnID{1, 2, 3, 4, 5, 6, 7, 8}, PacketNumber: 1<<64 - 1},
		{DestCID: ConnID{9}, PacketNumber: 1 << 40},
	} {
		b := h.Append(make([]byte, 0, 64))
		if len(b) != DataHeaderLen {
			t.Fatalf("header is %d bytes", len(b))
		}
		// The parser reads only the header, whatever ciphertext follows.
		pkt := append(b, make([]byte, 17)...)
		got, err := ParseDataHeader(pkt)
		if err != nil || got != h {
			t.Errorf("got %+v, %v; want %+v", got, err, h)
		}
		if cid, err := ParseDestCID(pkt); err != nil || cid != h.DestCID {
			t.Errorf("ParseDestCID = %v, %v; want %v", cid, err, h.DestCID)
		}
		for i := range DataHeaderLen {
			if _, err := ParseDataHeader(b[:i]); !errors.Is(err, ErrTruncated) {
				t.Errorf("%d-byte prefix: err = %v", i, err)
			}
		}
		// Routing drops data packets too short to hold a frame and a tag.
		for i := range MinDataPacketLen {
			if _, err := ParseDestCID(pkt[:i]); err == nil {
				t.Errorf("ParseDestCID of %d-byte packet succeeded", i)
			}
		}
	}
	good := (&DataHeader{}).Append(nil)
	for _, tc := range []struct {
		at   int
		val  byte
		want error
	}{
		{0, 0xc0, ErrNotParley},
		{1, byte(TypeInitiation), ErrPacketType},
		{2, 0x02, ErrReserved},
		{2, 0x81, ErrReserved},
		{3, 0x01, ErrReserved},
	} {
		b := bytes.Clone(good)
		b[tc.at] = tc.val
		if _, err := ParseDataHeader(b); !errors.Is(err, tc.want) {
			t.Errorf("byte %d = %#x: err = %v, want %v", tc.at, tc.val, err, tc.want)
		}
	}
}

func TestHandshakeParams(t *testing.T) {
	p := HandshakeParams{
		Timestamp:            1700000000123456789,
		SenderCID:            ConnID{1, 2, 3, 4, 5, 6, 7, 8},
		MaxIdleTimeout:       30 * time.Second,
		InitialMaxData:       MaxVarint,
		InitialMaxStreamData: 1 << 20,
		MaxStreams:           1<<32 - 1,
		MaxDatagramSize:      1200,
		MaxUDPPayloadSize:    65535,
	}
	b := p.Append(nil)
	if len(b) != HandshakeParamsLen {
		t.Fatalf("params are %d bytes", len(b))
	}
	got, err := ParseHandshakeParams(b)
	if err != nil || got != p {
		t.Errorf("got %+v, %v; want %+v", got, err, p)
	}
	for i := range b {
		if _, err := ParseHandshakeParams(b[:i]); !errors.Is(err, ErrTruncated) {
			t.Errorf("%d-byte prefix: err = %v", i, err)
		}
	}
	if _, err := ParseHandshakeParams(append(b, 0)); !errors.Is(err, ErrHandshakeParams) {
		t.Errorf("45 bytes: err = %v", err)
	}
	for _, q := range []HandshakeParams{{InitialMaxData: MaxVarint + 1}, {InitialMaxStreamData: 1<<64 - 1}} {
		if _, err := ParseHandshakeParams(q.Append(nil)); !errors.Is(err, ErrHandshakeParams) {
			t.Errorf("%+v: err = %v, want ErrHandshakeParams", q, err)
		}
	}
}

func TestHandshakeParamsIdleTimeout(t *testing.T) {
	for _, tc := range []struct {
		d    time.Duration
		want time.Duration
	}{
		{0, 0},
		{-time.Second, 0},
		{time.Nanosecond, time.Millisecond}, // rounds up: must not become "no preference"
		{1500 * time.Microsecond, 2 * time.Millisecond},
		{30 * time.Second, 30 * time.Second},
		{1<<63 - 1, (1<<32 - 1) * time.Millisecond}, // clamps
	} {
		p := HandshakeParams{MaxIdleTimeout: tc.d}
		got, err := ParseHandshakeParams(p.Append(nil))
		if err != nil || got.MaxIdleTimeout != tc.want {
			t.Errorf("%v: got %v, %v; want %v", tc.d, got.MaxIdleTimeout, err, tc.want)
		}
	}
}

func TestParseDestCIDErrors(t *testing.T) {
	_, resp, cookie := testPackets()
	for _, tc := range []struct {
		desc string
		b    []byte
		want error
	}{
		{"empty", nil, ErrTruncated},
		{"STUN", []byte{0x00, 0x01, 0x00, 0x00}, ErrNotParley},
		{"unknown type", []byte{0xc1, 9, 0, 0}, ErrPacketType},
		{"long response", append(resp.Append(nil), 0), ErrPacketLength},
		{"short cookie reply", cookie.Append(nil)[:CookieReplyLen-1], ErrPacketLength},
		{"36-byte data packet", append((&DataHeader{}).Append(nil), make([]byte, 16)...), ErrPacketLength},
	} {
		if _, err := ParseDestCID(tc.b); !errors.Is(err, tc.want) {
			t.Errorf("%s: err = %v, want %v", tc.desc, err, tc.want)
		}
	}
}
