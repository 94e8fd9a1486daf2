package relay

import (
	"bytes"
	"crypto/ed25519"
	"encoding/hex"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/parley-p2p/parley/directory/ticket"
)

// parsePacket parses a whole relay packet by its type, as the server and
// client do; it is what the round-trip, truncation and fuzz tests exercise.
func parsePacket(b []byte) (header, any, error) {
	h, body, err := parseHeader(b)
	if err != nil {
		return h, nil, err
	}
	switch h.typ {
	case TypeAllocate:
		v, err := parseAllocate(body)
		return h, v, err
	case TypeAllocated:
		v, err := parseAllocated(body)
		return h, v, err
	case TypeSend, TypeDeliver:
		return h, body, nil
	case TypeError:
		code, reason, err := parseError(body)
		return h, [2]any{code, reason}, err
	case TypePing:
		v, err := parsePing(body)
		return h, v, err
	case TypePong:
		v, err := parsePong(body)
		return h, v, err
	case TypeConfirm:
		v, err := parseConfirm(body)
		return h, v, err
	}
	return h, nil, errMalformed
}

func testTicket() []byte {
	_, priv, _ := ed25519.GenerateKey(bytes.NewReader(make([]byte, 64)))
	return ticket.Sign(priv, ticket.Ticket{IssuedAt: time.Unix(1000, 0), ExpiresAt: time.Unix(2000, 0), Budget: 5, Rate: 6})
}

// fixedSize are packets whose every proper prefix must fail to parse.
func fixedSize() map[string][]byte {
	return map[string][]byte{
		"allocate":  appendAllocate(nil, 1, testTicket(), 0),
		"allocated": appendAllocated(nil, 0x1122334455667788, allocatedBody{expires: 2000, remaining: 1 << 40, rate: 1 << 20, peerBound: true, token: [TokenSize]byte{1, 2, 3, 4, 5, 6, 7, 8}}),
		"confirm":   appendConfirm(nil, 0x1122334455667788, confirmBody{side: 1, token: [TokenSize]byte{8, 7, 6, 5, 4, 3, 2, 1}}),
		"error":     appendError(nil, 0x0102030405060708, CodeFull, "full", 100),
		"ping":      appendPing(nil, TypePing, 42),
		"pong":      appendPing(nil, TypePong, 42),
	}
}

func TestRoundTrip(t *testing.T) {
	tk := testTicket()
	b := appendAllocate(nil, 1, tk, 0)
	if len(b) != AllocateSize {
		t.Fatalf("ALLOCATE is %d bytes, want %d", len(b), AllocateSize)
	}
	h, v, err := parsePacket(b)
	if err != nil || h.typ != TypeAllocate || h.channel != 0 {
		t.Fatal(h, err)
	}
	if a := v.(allocateBody); a.side != 1 || !bytes.Equal(a.ticket, tk) || a.size != AllocateSize {
		t.Errorf("ALLOCATE = %+v", a)
	}
	for _, size := range []int{AllocateSize + 1, PaddedAllocateSize, MaxAllocateSize} {
		b = appendAllocate(nil, 0, tk, size)
		h, v, err := parsePacket(b)
		if len(b) != size || err != nil || h.typ != TypeAllocate {
			t.Fatalf("ALLOCATE padded to %d: %d bytes, %v", size, len(b), err)
		}
		if a := v.(allocateBody); a.side != 0 || !bytes.Equal(a.ticket, tk) || a.size != size {
			t.Errorf("ALLOCATE padded to %d = %+v", size, a)
		}
	}

	want := allocatedBody{expires: 2000, remaining: 1 << 40, rate: 1 << 20, peerBound: true, token: [TokenSize]byte{9, 8, 7}}
	b = appendAllocated(nil, 0x1122334455667788, want)
	if len(b) != AllocatedSize {
		t.Fatalf("ALLOCATED is %d bytes, want %d", len(b), AllocatedSize)
	}
	h, v, err = parsePacket(b)
	if err != nil || h.typ != TypeAllocated || h.channel != 0x1122334455667788 || v.(allocatedBody) != want {
		t.Errorf("ALLOCATED: %v %+v %v", h, v, err)
	}

	b = append(appendHeader(nil, TypeSend, 7), "sealed"...)
	h, v, err = parsePacket(b)
	if err != nil || h.typ != TypeSend || h.channel != 7 || string(v.([]byte)) != "sealed" {
		t.Errorf("SEND: %v %q %v", h, v, err)
	}

	b = appendError(nil, 9, CodeBadTicket, "bad ticket signature", 1000)
	h, v, err = parsePacket(b)
	if err != nil || h.channel != 9 || v.([2]any)[0] != CodeBadTicket || v.([2]any)[1] != "bad ticket signature" {
		t.Errorf("ERROR: %v %v %v", h, v, err)
	}

	wantC := confirmBody{side: 1, token: [TokenSize]byte{1, 2, 3, 4, 5, 6, 7, 8}}
	b = appendConfirm(nil, 0x0a0b, wantC)
	if len(b) != ConfirmSize {
		t.Fatalf("CONFIRM is %d bytes, want %d", len(b), ConfirmSize)
	}
	h, v, err = parsePacket(b)
	if err != nil || h.typ != TypeConfirm || h.channel != 0x0a0b || v.(confirmBody) != wantC {
		t.Errorf("CONFIRM: %v %+v %v", h, v, err)
	}

	b = appendPing(nil, TypePing, 0xdeadbeef)
	if _, v, err := parsePacket(b); err != nil || v.(uint64) != 0xdeadbeef || len(b) != PingSize {
		t.Errorf("PING: %v %v", v, err)
	}
}

// TestGolden pins the byte layouts of docs/protocol.md §6.
func TestGolden(t *testing.T) {
	tests := []struct {
		name string
		b    []byte
		hex  string
	}{
		{"allocate padded", appendAllocate(nil, 1, bytes.Repeat([]byte{0xee}, ticket.Size), 203),
			"d1 01 0000 0000000000000000 01 " + strings.Repeat("ee", ticket.Size) + " 00"},
		{"allocated", appendAllocated(nil, 0x0102030405060708, allocatedBody{expires: 1700000600, remaining: 1 << 30, rate: 1 << 20, peerBound: true, token: [TokenSize]byte{0x11, 0x12, 0x13, 0x14, 0x15, 0x16, 0x17, 0x18}}),
			"d1 02 0000 0102030405060708 000000006553f358 0000000040000000 00100000 01 1112131415161718"},
		{"confirm", appendConfirm(nil, 0x0102030405060708, confirmBody{side: 1, token: [TokenSize]byte{0x11, 0x12, 0x13, 0x14, 0x15, 0x16, 0x17, 0x18}}),
			"d1 08 0000 0102030405060708 01 1112131415161718"},
		{"send", append(appendHeader(nil, TypeSend, 0x0102030405060708), 0xc1, 0x04),
			"d1 03 0000 0102030405060708 c104"},
		{"error", appendError(nil, 0x0102030405060708, CodeFull, "full", 100),
			"d1 05 0000 0102030405060708 0004 66756c6c"},
		{"ping", appendPing(nil, TypePing, 0x0a0b0c0d0e0f1011),
			"d1 06 0000 0000000000000000 0a0b0c0d0e0f1011"},
	}
	for _, tt := range tests {
		want, err := hex.DecodeString(strings.ReplaceAll(tt.hex, " ", ""))
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(tt.b, want) {
			t.Errorf("%s = %x, want %x", tt.name, tt.b, want)
		}
	}
}

func TestTruncations(t *testing.T) {
	for name, b := range fixedSize() {
		if _, _, err := parsePacket(b); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		for n := 0; n < len(b); n++ {
			if name == "error" && n >= HeaderSize+errorBodyMin {
				continue // a shorter reason is still an ERROR
			}
			if _, _, err := parsePacket(b[:n]); err == nil {
				t.Errorf("%s: %d-byte prefix parsed", name, n)
			}
		}
	}
}

func TestRejects(t *testing.T) {
	good := appendPing(nil, TypePing, 1)
	mut := func(f func(b []byte)) []byte {
		b := append([]byte(nil), good...)
		f(b)
		return b
	}
	for name, b := range map[string][]byte{
		"form":        mut(func(b []byte) { b[0] = 0xC1 }),
		"version":     mut(func(b []byte) { b[0] = 0xD2 }),
		"reserved":    mut(func(b []byte) { b[3] = 1 }),
		"type 0":      mut(func(b []byte) { b[1] = 0 }),
		"type 9":      mut(func(b []byte) { b[1] = 9 }),
		"pong padded": append(appendPing(nil, TypePong, 1), 0),
		"side 2":      appendAllocate(nil, 2, testTicket(), 0),
		"padding":     append(appendAllocate(nil, 0, testTicket(), 300), 1),
		"too long":    appendAllocate(nil, 0, testTicket(), MaxAllocateSize+1),
		"peer 2":      func() []byte { b := fixedSize()["allocated"]; b[HeaderSize+20] = 2; return b }(),
		"confirm 2":   func() []byte { b := fixedSize()["confirm"]; b[HeaderSize] = 2; return b }(),
		"confirm+1":   append(fixedSize()["confirm"], 0),
		"long reason": appendError(nil, 0, CodeFull, strings.Repeat("x", maxReason+1), 1000)[:0],
	} {
		if len(b) == 0 {
			continue
		}
		if _, _, err := parsePacket(b); err == nil {
			t.Errorf("%s: parsed", name)
		}
	}
	// A reason is cut to what fits, and never beyond maxReason.
	b := appendError(nil, 0, CodeFull, strings.Repeat("x", 200), 1000)
	if len(b) != HeaderSize+errorBodyMin+maxReason {
		t.Errorf("ERROR with a long reason is %d bytes", len(b))
	}
	if b := appendError(nil, 0, CodeFull, "full", HeaderSize+1); len(b) != 0 {
		t.Errorf("ERROR answering a 13-byte packet: %x, want nothing", b)
	}
}

func TestIsRelayPacket(t *testing.T) {
	for b, want := range map[string]bool{"": false, "\xd1": true, "\xc1\x04": false, "\x00\x01": false, "\x01\x01": false} {
		if IsRelayPacket([]byte(b)) != want {
			t.Errorf("IsRelayPacket(%x) = %v", b, !want)
		}
	}
}

func FuzzParse(f *testing.F) {
	for _, b := range fixedSize() {
		f.Add(b)
	}
	f.Add(append(appendHeader(nil, TypeSend, 9), 1, 2, 3))
	f.Fuzz(func(t *testing.T, b []byte) {
		h, v, err := parsePacket(b)
		if err != nil {
			return
		}
		if !IsRelayPacket(b) {
			t.Fatal("parsed a packet IsRelayPacket rejects")
		}
		// What parses re-encodes to the same bytes.
		var re []byte
		switch h.typ {
		case TypeAllocate:
			a := v.(allocateBody)
			re = appendAllocate(nil, a.side, a.ticket, a.size)
			copy(re[offChannel:], b[offChannel:HeaderSize]) // ignored by the relay
		case TypeAllocated:
			re = appendAllocated(nil, h.channel, v.(allocatedBody))
		case TypeConfirm:
			re = appendConfirm(nil, h.channel, v.(confirmBody))
		case TypeSend, TypeDeliver:
			re = append(appendHeader(nil, h.typ, h.channel), v.([]byte)...)
		case TypeError:
			e := v.([2]any)
			re = appendError(nil, h.channel, e[0].(ErrorCode), e[1].(string), len(b))
			copy(re[offChannel:], b[offChannel:HeaderSize])
		case TypePing, TypePong:
			re = appendPing(nil, h.typ, v.(uint64))
			copy(re[offChannel:], b[offChannel:HeaderSize])
			if h.typ == TypePing {
				re = append(re, b[PingSize:]...)
			}
		}
		if !bytes.Equal(re, b) {
			t.Fatalf("re-encoded %x, want %x", re, b)
		}
	})
}

// FuzzServerHandlePacket feeds the server arbitrary packets from arbitrary
// sources: it must not panic, must never answer with more bytes than it
// received, and must create an allocation only for a validly signed ticket.
func FuzzServerHandlePacket(f *testing.F) {
	r := newRig(f, nil)
	valid := appendAllocate(nil, 0, r.ticket(nil), 0)
	f.Add(valid, uint16(4000))
	for _, b := range fixedSize() {
		f.Add(b, uint16(1))
	}
	f.Add(sendPkt(1, []byte("x")), uint16(4000))
	f.Add(appendPing(nil, TypePing, 3), uint16(9))
	f.Fuzz(func(t *testing.T, b []byte, port uint16) {
		r.conn.take()
		before := r.srv.Stats().AllocationsTotal
		from := netip.AddrPortFrom(addrA.Addr(), port)
		r.srv.HandlePacket(b, from)
		for _, p := range r.conn.take() {
			if len(p.b) > len(b) {
				t.Fatalf("answered %d bytes to %d", len(p.b), len(b))
			}
		}
		if r.srv.Stats().AllocationsTotal != before {
			h, body, err := parseHeader(b)
			if err != nil || h.typ != TypeAllocate {
				t.Fatalf("allocation from %x", b)
			}
			a, err := parseAllocate(body)
			if err != nil {
				t.Fatalf("allocation from a malformed ALLOCATE %x", b)
			}
			if _, err := ticket.Verify(r.srv.cfg.DirectoryKey, a.ticket, r.clock.Now()); err != nil {
				t.Fatalf("allocation from an invalid ticket (%v): %x", err, b)
			}
		}
	})
}
