package wire

import (
	"bufio"
	"bytes"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"testing"
)

// goldenEntry is one vector of testdata/golden.txt; the format is described
// in that file's header and at the end of docs/protocol.md §2.
type goldenEntry struct {
	line    int
	mode    string // "" (canonical), "accept" or "reject"
	kind    string // varint, packet, params, frame, payload
	name    string // e.g. "stream" for kind frame
	comment string
	raw     []byte
	decoded string
}

func (e goldenEntry) String() string {
	return fmt.Sprintf("golden.txt:%d (%s)", e.line, e.comment)
}

func loadGolden(tb testing.TB) []goldenEntry {
	tb.Helper()
	f, err := os.Open("testdata/golden.txt")
	if err != nil {
		tb.Fatal(err)
	}
	defer f.Close()
	var (
		entries []goldenEntry
		comment string
		pending *goldenEntry
	)
	sc := bufio.NewScanner(f)
	sc.Buffer(nil, 1<<20)
	for ln := 1; sc.Scan(); ln++ {
		line := sc.Text()
		switch {
		case line == "":
		case strings.HasPrefix(line, "#"):
			comment = strings.TrimSpace(strings.TrimPrefix(line, "#"))
		case strings.HasPrefix(line, "decoded: "):
			if pending == nil || pending.mode == "reject" {
				tb.Fatalf("golden.txt:%d: decoded line without an entry", ln)
			}
			pending.decoded = strings.TrimPrefix(line, "decoded: ")
			entries = append(entries, *pending)
			pending = nil
		default:
			if pending != nil {
				tb.Fatalf("golden.txt:%d: entry at line %d has no decoded line", ln, pending.line)
			}
			head, hexStr, ok := strings.Cut(line, ":")
			if !ok {
				tb.Fatalf("golden.txt:%d: no ':' in %q", ln, line)
			}
			words := strings.Fields(head)
			e := goldenEntry{line: ln, comment: comment}
			if words[0] == "accept" || words[0] == "reject" {
				e.mode, words = words[0], words[1:]
			}
			e.kind = words[0]
			if len(words) > 1 {
				e.name = words[1]
			}
			raw, err := hex.DecodeString(strings.ReplaceAll(hexStr, " ", ""))
			if err != nil {
				tb.Fatalf("golden.txt:%d: %v", ln, err)
			}
			e.raw = raw
			if e.mode == "reject" {
				entries = append(entries, e)
			} else {
				pending = &e
			}
		}
	}
	if err := sc.Err(); err != nil {
		tb.Fatal(err)
	}
	if pending != nil {
		tb.Fatalf("golden.txt:%d: entry has no decoded line", pending.line)
	}
	return entries
}

var errTrailing = errors.New("trailing bytes after the encoding")

// quoteBytes renders variable-length payloads as the golden format wants:
// printable ASCII except '"' and '\' as itself, every other byte as \xNN.
func quoteBytes(b []byte) string {
	var sb strings.Builder
	sb.WriteByte('"')
	for _, c := range b {
		if c >= 0x20 && c <= 0x7e && c != '"' && c != '\\' {
			sb.WriteByte(c)
		} else {
			fmt.Fprintf(&sb, `\x%02x`, c)
		}
	}
	sb.WriteByte('"')
	return sb.String()
}

// decodeGolden decodes raw as the kind/name says and returns the decoded
// description (built field by field from the parsed struct, independently
// of the encoder) and the re-encoding.
func decodeGolden(kind, name string, raw []byte) (string, []byte, error) {
	switch kind {
	case "varint":
		v, n, err := ParseVarint(raw)
		if err != nil {
			return "", nil, err
		}
		if n != len(raw) {
			return "", nil, errTrailing
		}
		return fmt.Sprintf("value=%d", v), AppendVarint(nil, v), nil
	case "packet":
		return decodeGoldenPacket(name, raw)
	case "params":
		p, err := ParseHandshakeParams(raw)
		if err != nil {
			return "", nil, err
		}
		return fmt.Sprintf("timestamp=%d sender_cid=%s max_idle_timeout_ms=%d initial_max_data=%d initial_max_stream_data=%d max_streams=%d max_datagram_size=%d max_udp_payload_size=%d",
			p.Timestamp, p.SenderCID, p.MaxIdleTimeout.Milliseconds(), p.InitialMaxData, p.InitialMaxStreamData,
			p.MaxStreams, p.MaxDatagramSize, p.MaxUDPPayloadSize), p.Append(nil), nil
	case "frame":
		desc, enc, n, err := decodeGoldenFrame(name, raw)
		if err != nil {
			return "", nil, err
		}
		if n != len(raw) {
			return "", nil, errTrailing
		}
		return desc, enc, nil
	case "payload":
		return decodeGoldenPayload(raw)
	}
	return "", nil, fmt.Errorf("unknown kind %q", kind)
}

func decodeGoldenPacket(name string, raw []byte) (string, []byte, error) {
	switch name {
	case "initiation":
		p, err := ParseInitiation(raw)
		if err != nil {
			return "", nil, err
		}
		return fmt.Sprintf("type=%v sender_cid=%v noise=%x mac1=%x mac2=%x",
			TypeInitiation, p.SenderCID, p.Noise, p.MAC1, p.MAC2), p.Append(nil), nil
	case "response":
		p, err := ParseResponse(raw)
		if err != nil {
			return "", nil, err
		}
		return fmt.Sprintf("type=%v receiver_cid=%v sender_cid=%v noise=%x mac1=%x mac2=%x",
			TypeResponse, p.ReceiverCID, p.SenderCID, p.Noise, p.MAC1, p.MAC2), p.Append(nil), nil
	case "cookie_reply":
		p, err := ParseCookieReply(raw)
		if err != nil {
			return "", nil, err
		}
		return fmt.Sprintf("type=%v receiver_cid=%v nonce=%x cookie=%x",
			TypeCookieReply, p.ReceiverCID, p.Nonce, p.Cookie), p.Append(nil), nil
	case "data_header":
		h, err := ParseDataHeader(raw)
		if err != nil {
			return "", nil, err
		}
		if len(raw) != DataHeaderLen {
			return "", nil, errTrailing
		}
		return fmt.Sprintf("type=%v key_phase=%t dest_cid=%v pn=%d",
			TypeData, h.KeyPhase, h.DestCID, h.PacketNumber), h.Append(nil), nil
	}
	return "", nil, fmt.Errorf("unknown packet %q", name)
}

func decodeGoldenFrame(name string, raw []byte) (desc string, enc []byte, n int, err error) {
	ty := func() string {
		if len(raw) == 0 {
			return ""
		}
		return fmt.Sprintf("type=0x%02x", raw[0])
	}
	switch name {
	case "padding":
		if _, err := ParseFrameType(raw); err != nil {
			return "", nil, 0, err
		}
		n := PaddingLen(raw)
		if n == 0 {
			return "", nil, 0, ErrFrameType
		}
		return fmt.Sprintf("%s count=%d", ty(), n), AppendPadding(nil, n), n, nil
	case "ping":
		f, n, err := ParsePingFrame(raw)
		if err != nil {
			return "", nil, 0, err
		}
		return ty(), f.Append(nil), n, nil
	case "ack":
		var f AckFrame
		n, err := ParseAckFrame(raw, &f)
		if err != nil {
			return "", nil, 0, err
		}
		var rs []string
		for _, r := range f.Ranges {
			rs = append(rs, fmt.Sprintf("[%d,%d]", r.Smallest, r.Largest))
		}
		return fmt.Sprintf("%s largest=%d delay_us=%d ranges=%s", ty(), f.LargestAcked(), f.DelayMicros,
			strings.Join(rs, ",")), f.Append(nil), n, nil
	case "reset_stream":
		f, n, err := ParseResetStreamFrame(raw)
		if err != nil {
			return "", nil, 0, err
		}
		return fmt.Sprintf("%s stream=%d error=%d final_size=%d", ty(), f.StreamID, f.ErrorCode, f.FinalSize), f.Append(nil), n, nil
	case "stop_sending":
		f, n, err := ParseStopSendingFrame(raw)
		if err != nil {
			return "", nil, 0, err
		}
		return fmt.Sprintf("%s stream=%d error=%d", ty(), f.StreamID, f.ErrorCode), f.Append(nil), n, nil
	case "stream":
		f, n, err := ParseStreamFrame(raw)
		if err != nil {
			return "", nil, 0, err
		}
		return fmt.Sprintf("%s fin=%t stream=%d offset=%d length=%d data=%s", ty(), f.Fin, f.StreamID, f.Offset,
			len(f.Data), quoteBytes(f.Data)), f.Append(nil), n, nil
	case "max_data":
		f, n, err := ParseMaxDataFrame(raw)
		if err != nil {
			return "", nil, 0, err
		}
		return fmt.Sprintf("%s maximum=%d", ty(), f.Maximum), f.Append(nil), n, nil
	case "max_stream_data":
		f, n, err := ParseMaxStreamDataFrame(raw)
		if err != nil {
			return "", nil, 0, err
		}
		return fmt.Sprintf("%s stream=%d maximum=%d", ty(), f.StreamID, f.Maximum), f.Append(nil), n, nil
	case "max_streams":
		f, n, err := ParseMaxStreamsFrame(raw)
		if err != nil {
			return "", nil, 0, err
		}
		return fmt.Sprintf("%s maximum=%d", ty(), f.Maximum), f.Append(nil), n, nil
	case "data_blocked":
		f, n, err := ParseDataBlockedFrame(raw)
		if err != nil {
			return "", nil, 0, err
		}
		return fmt.Sprintf("%s limit=%d", ty(), f.Limit), f.Append(nil), n, nil
	case "stream_data_blocked":
		f, n, err := ParseStreamDataBlockedFrame(raw)
		if err != nil {
			return "", nil, 0, err
		}
		return fmt.Sprintf("%s stream=%d limit=%d", ty(), f.StreamID, f.Limit), f.Append(nil), n, nil
	case "path_challenge":
		f, n, err := ParsePathChallengeFrame(raw)
		if err != nil {
			return "", nil, 0, err
		}
		return fmt.Sprintf("%s data=%x", ty(), f.Data), f.Append(nil), n, nil
	case "path_response":
		f, n, err := ParsePathResponseFrame(raw)
		if err != nil {
			return "", nil, 0, err
		}
		return fmt.Sprintf("%s data=%x", ty(), f.Data), f.Append(nil), n, nil
	case "close":
		f, n, err := ParseCloseFrame(raw)
		if err != nil {
			return "", nil, 0, err
		}
		return fmt.Sprintf("%s error=0x%x reason=%s", ty(), uint64(f.ErrorCode), quoteBytes([]byte(f.Reason))), f.Append(nil), n, nil
	case "datagram":
		f, n, err := ParseDatagramFrame(raw)
		if err != nil {
			return "", nil, 0, err
		}
		return fmt.Sprintf("%s length=%d data=%s", ty(), len(f.Data), quoteBytes(f.Data)), f.Append(nil), n, nil
	}
	return "", nil, 0, fmt.Errorf("unknown frame %q", name)
}

// frameNames maps frame types to their golden-file names.
var frameNames = map[FrameType]string{
	FramePadding: "padding", FramePing: "ping", FrameAck: "ack",
	FrameResetStream: "reset_stream", FrameStopSending: "stop_sending",
	FrameStream: "stream", FrameStreamFin: "stream",
	FrameMaxData: "max_data", FrameMaxStreamData: "max_stream_data",
	FrameMaxStreams: "max_streams", FrameDataBlocked: "data_blocked",
	FrameStreamDataBlocked: "stream_data_blocked",
	FramePathChallenge:     "path_challenge", FramePathResponse: "path_response",
	FrameClose: "close", FrameDatagram: "datagram",
}

// decodeGoldenPayload walks a decrypted payload the way the transport does
// (the loop documented on ParseFrameType) and summarises it.
func decodeGoldenPayload(p []byte) (string, []byte, error) {
	var (
		names        []string
		enc          []byte
		ackEliciting bool
	)
	for len(p) > 0 {
		t, err := ParseFrameType(p)
		if err != nil {
			return "", nil, err
		}
		if t == FramePadding {
			n := PaddingLen(p)
			names = append(names, "PADDING*"+strconv.Itoa(n))
			enc = AppendPadding(enc, n)
			p = p[n:]
			continue
		}
		_, fenc, n, err := decodeGoldenFrame(frameNames[t], p)
		if err != nil {
			return "", nil, err
		}
		names = append(names, t.String())
		enc = append(enc, fenc...)
		ackEliciting = ackEliciting || t.IsAckEliciting()
		p = p[n:]
	}
	return fmt.Sprintf("frames=%s ack_eliciting=%t", strings.Join(names, ","), ackEliciting), enc, nil
}

func TestGolden(t *testing.T) {
	entries := loadGolden(t)
	kinds := map[string]int{}
	for _, e := range entries {
		kinds[e.kind+" "+e.name]++
		desc, enc, err := decodeGolden(e.kind, e.name, e.raw)
		switch e.mode {
		case "reject":
			if err == nil {
				t.Errorf("%v: decoded %q, want an error", e, desc)
			}
			continue
		case "accept":
			if err != nil {
				t.Errorf("%v: %v", e, err)
				continue
			}
			if desc != e.decoded {
				t.Errorf("%v:\n got: %s\nwant: %s", e, desc, e.decoded)
			}
			// The canonical re-encoding is shorter and decodes the same.
			if len(enc) >= len(e.raw) {
				t.Errorf("%v: re-encoding %x is not shorter than the non-canonical input", e, enc)
			}
			if desc2, _, err := decodeGolden(e.kind, e.name, enc); err != nil || desc2 != desc {
				t.Errorf("%v: re-encoding %x decodes to %q, %v", e, enc, desc2, err)
			}
			continue
		}
		if err != nil {
			t.Errorf("%v: %v", e, err)
			continue
		}
		if desc != e.decoded {
			t.Errorf("%v:\n got: %s\nwant: %s", e, desc, e.decoded)
		}
		if !bytes.Equal(enc, e.raw) {
			t.Errorf("%v: re-encoded to\n%x, want\n%x", e, enc, e.raw)
		}
		// Every truncation of a vector must fail to parse. Padding and
		// payloads are exempt: a shorter run of padding, or a payload cut
		// between frames, is valid.
		if e.kind == "payload" || e.name == "padding" {
			continue
		}
		for i := range e.raw {
			if d, _, err := decodeGolden(e.kind, e.name, e.raw[:i]); err == nil {
				t.Errorf("%v: prefix of %d bytes decoded to %q", e, i, d)
			}
		}
	}
	// Every packet and frame type has a vector.
	for _, k := range []string{"varint ", "packet initiation", "packet response", "packet cookie_reply",
		"packet data_header", "params handshake", "payload "} {
		if kinds[k] == 0 {
			t.Errorf("no golden vector for %q", k)
		}
	}
	for _, name := range frameNames {
		if kinds["frame "+name] == 0 {
			t.Errorf("no golden vector for frame %q", name)
		}
	}
}
