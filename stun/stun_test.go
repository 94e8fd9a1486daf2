package stun

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"net"
	"net/netip"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// startServer runs a Server on two loopback ports until the test ends.
func startServer(t *testing.T, network, addr string) *Server {
	t.Helper()
	p, err := net.ListenPacket(network, addr)
	if err != nil {
		t.Skipf("no %s loopback: %v", network, err)
	}
	a, err := net.ListenPacket(network, addr)
	if err != nil {
		t.Fatal(err)
	}
	s := &Server{Primary: p, Alt: a, Software: "parley test"}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Serve(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
		p.Close()
		a.Close()
	})
	return s
}

func listen(t *testing.T, network, addr string) net.PacketConn {
	t.Helper()
	pc, err := net.ListenPacket(network, addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pc.Close() })
	return pc
}

func ctxTimeout(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func TestBind(t *testing.T) {
	for _, tc := range []struct{ network, addr string }{{"udp4", "127.0.0.1:0"}, {"udp6", "[::1]:0"}} {
		t.Run(tc.network, func(t *testing.T) {
			s := startServer(t, tc.network, tc.addr)
			pc := listen(t, tc.network, tc.addr)
			got, err := Bind(ctxTimeout(t), pc, s.Primary.LocalAddr())
			if err != nil {
				t.Fatal(err)
			}
			want := pc.LocalAddr().(*net.UDPAddr).AddrPort()
			if got != want {
				t.Fatalf("reflexive address %v, want %v", got, want)
			}
			if s.Requests() != 1 {
				t.Fatalf("server counted %d requests", s.Requests())
			}
		})
	}
}

func TestChangePort(t *testing.T) {
	s := startServer(t, "udp4", "127.0.0.1:0")
	pc := listen(t, "udp4", "127.0.0.1:0")
	var c Client
	primary := s.Primary.LocalAddr().(*net.UDPAddr).AddrPort()
	alt := s.Alt.LocalAddr().(*net.UDPAddr).AddrPort()
	r, err := c.Request(ctxTimeout(t), pc, s.Primary.LocalAddr(), false)
	if err != nil {
		t.Fatal(err)
	}
	if r.Origin != primary || r.Other != alt || r.Software != "parley test" {
		t.Fatalf("RFC 5780 attributes: origin %v other %v software %q", r.Origin, r.Other, r.Software)
	}
	r, err = c.Request(ctxTimeout(t), pc, s.Primary.LocalAddr(), true)
	if err != nil {
		t.Fatal(err)
	}
	if r.Origin != alt || r.Other != primary {
		t.Fatalf("change port: origin %v other %v; want the answer from %v", r.Origin, r.Other, alt)
	}
	// Asked on the alternate port: the same mapping (loopback has no NAT).
	r2, err := c.Request(ctxTimeout(t), pc, s.Alt.LocalAddr(), false)
	if err != nil || r2.Mapped() != r.Mapped() || r2.Origin != alt {
		t.Fatalf("on alt: %+v, %v", r2, err)
	}
}

// exchange sends raw bytes to the server and returns its answer.
func exchange(t *testing.T, s *Server, req []byte) []byte {
	t.Helper()
	pc := listen(t, "udp4", "127.0.0.1:0")
	if _, err := pc.WriteTo(req, s.Primary.LocalAddr()); err != nil {
		t.Fatal(err)
	}
	pc.SetReadDeadline(time.Now().Add(5 * time.Second))
	buf := make([]byte, 1500)
	n, _, err := pc.ReadFrom(buf)
	if err != nil {
		t.Fatal(err)
	}
	return buf[:n]
}

func TestClassicRFC3489(t *testing.T) {
	s := startServer(t, "udp4", "127.0.0.1:0")
	req := make([]byte, 20)
	binary.BigEndian.PutUint16(req, typeBindingRequest)
	copy(req[4:], "0123456789abcdef") // 16-byte ID, no cookie
	resp := exchange(t, s, req)
	m, err := parse(resp, true)
	if err != nil || !m.classic || m.typ != typeBindingSuccess || string(m.txID[:]) != "0123456789abcdef" {
		t.Fatalf("classic response %x: %v", resp, err)
	}
	v, ok := m.get(attrMappedAddress)
	if !ok {
		t.Fatal("no MAPPED-ADDRESS")
	}
	if _, ok := m.get(attrXORMappedAddress); ok {
		t.Fatal("XOR-MAPPED-ADDRESS sent to a classic client")
	}
	ap, err := parseAddr(v, false, m.txID)
	if err != nil || ap.Addr() != netip.MustParseAddr("127.0.0.1") {
		t.Fatalf("mapped %v, %v", ap, err)
	}
}

func TestUnknownAttributeAndChangeIP(t *testing.T) {
	s := startServer(t, "udp4", "127.0.0.1:0")
	id := NewTxID()
	var full [16]byte
	binary.BigEndian.PutUint32(full[:], magicCookie)
	copy(full[4:], id[:])
	w := newBuilder(nil, typeBindingRequest, full, false)
	w.attr(0x0077, []byte{1, 2, 3}) // comprehension-required, unknown
	w.attr(0x8077, []byte{1})       // optional: ignored
	resp := exchange(t, s, w.finish(true))
	_, err := ParseResponse(resp, id)
	if !errors.Is(err, ErrErrorReply) || !strings.Contains(err.Error(), "420") {
		t.Fatalf("unknown attribute: %v", err)
	}
	m, _ := parse(resp, false)
	if v, _ := m.get(attrUnknownAttrs); !bytes.Equal(v, []byte{0x00, 0x77}) {
		t.Fatalf("UNKNOWN-ATTRIBUTES %x", v)
	}
	w = newBuilder(nil, typeBindingRequest, full, false)
	w.attr(attrChangeRequest, []byte{0, 0, 0, flagChangeIP})
	_, err = ParseResponse(exchange(t, s, w.finish(false)), id)
	if !errors.Is(err, ErrErrorReply) || !strings.Contains(err.Error(), "420") {
		t.Fatalf("change IP on a one-address server: %v", err)
	}
}

func TestServerIgnoresNonRequests(t *testing.T) {
	s := &Server{Primary: nil}
	src := netip.MustParseAddrPort("192.0.2.1:1000")
	id := NewTxID()
	req := AppendBindingRequest(nil, id)
	bad := bytes.Clone(req)
	bad[len(bad)-1] ^= 1 // FINGERPRINT wrong
	for name, b := range map[string][]byte{
		"empty": {}, "parley": {0xC1, 4, 0, 0}, "bad fingerprint": bad,
		"response": mustHex(t, "testdata/rfc5769_ipv4_response.hex"),
	} {
		if resp, _ := s.handle(b, src, false, nil); resp != nil {
			t.Errorf("%s: answered %x", name, resp)
		}
	}
	resp, _ := s.handle(req, src, false, nil)
	got, err := ParseResponse(resp, id)
	if err != nil || got != src {
		t.Fatalf("valid request: %v, %v", got, err)
	}
}

func mustHex(t testing.TB, path string) []byte {
	t.Helper()
	s, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	b, err := hex.DecodeString(strings.TrimSpace(string(s)))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestRFC5769Vectors parses the RFC 5769 §2.2 sample response (its
// FINGERPRINT must check; MESSAGE-INTEGRITY is not ours to check) and the
// §2.3 IPv6 one cut after its XOR-MAPPED-ADDRESS.
func TestRFC5769Vectors(t *testing.T) {
	id := TxID(mustHex(t, "testdata/rfc5769_ipv4_response.hex")[8:20])
	for file, want := range map[string]string{
		"testdata/rfc5769_ipv4_response.hex": "192.0.2.1:32853",
		"testdata/rfc5769_ipv6_response.hex": "[2001:db8:1234:5678:11:2233:4455:6677]:32853",
	} {
		b := mustHex(t, file)
		if !IsMessage(b) {
			t.Fatalf("%s: IsMessage false", file)
		}
		r, err := ParseFullResponse(b, id)
		if err != nil {
			t.Fatalf("%s: %v", file, err)
		}
		if r.Mapped().String() != want || r.Software != "test vector" {
			t.Fatalf("%s: mapped %v software %q", file, r.Mapped(), r.Software)
		}
		// Every truncation fails cleanly.
		for n := range len(b) {
			if _, err := ParseResponse(b[:n], id); err == nil {
				t.Fatalf("%s truncated to %d parsed", file, n)
			}
		}
	}
}

// lossyConn drops the first drop datagrams it is asked to send.
type lossyConn struct {
	net.PacketConn
	drop  int32
	sends atomic.Int32
}

func (c *lossyConn) WriteTo(b []byte, a net.Addr) (int, error) {
	if c.sends.Add(1) <= c.drop {
		return len(b), nil
	}
	return c.PacketConn.WriteTo(b, a)
}

func TestRetransmission(t *testing.T) {
	s := startServer(t, "udp4", "127.0.0.1:0")
	lc := &lossyConn{PacketConn: listen(t, "udp4", "127.0.0.1:0"), drop: 2}
	c := Client{RTO: 20 * time.Millisecond}
	got, err := c.Bind(ctxTimeout(t), lc, s.Primary.LocalAddr())
	if err != nil {
		t.Fatal(err)
	}
	if got != lc.LocalAddr().(*net.UDPAddr).AddrPort() || lc.sends.Load() != 3 {
		t.Fatalf("got %v after %d sends; want 3 sends", got, lc.sends.Load())
	}
	// Nobody answers: ErrTimeout after Attempts sends.
	silent := listen(t, "udp4", "127.0.0.1:0")
	lc2 := &lossyConn{PacketConn: listen(t, "udp4", "127.0.0.1:0")}
	c = Client{RTO: 5 * time.Millisecond, Attempts: 3}
	if _, err := c.Bind(ctxTimeout(t), lc2, silent.LocalAddr()); !errors.Is(err, ErrTimeout) || lc2.sends.Load() != 3 {
		t.Fatalf("err %v after %d sends", err, lc2.sends.Load())
	}
	// Cancellation ends the wait at once.
	ctx, cancel := context.WithCancel(t.Context())
	var wg sync.WaitGroup
	wg.Go(func() {
		_, err := Bind(ctx, listen(t, "udp4", "127.0.0.1:0"), silent.LocalAddr())
		if !errors.Is(err, context.Canceled) {
			t.Errorf("canceled Bind: %v", err)
		}
	})
	cancel()
	wg.Wait()
}

// TestBindIgnoresOtherTraffic: Bind on a socket that also receives other
// packets (Parley's, stale STUN) still finds its answer.
func TestBindIgnoresOtherTraffic(t *testing.T) {
	s := startServer(t, "udp4", "127.0.0.1:0")
	pc := listen(t, "udp4", "127.0.0.1:0")
	noise := listen(t, "udp4", "127.0.0.1:0")
	noise.WriteTo([]byte{0xC1, 4, 0, 0, 1, 2, 3}, pc.LocalAddr())
	stale := AppendBindingRequest(nil, NewTxID())
	stale[1] = 0x01 // a success response for another transaction
	noise.WriteTo(stale, pc.LocalAddr())
	got, err := Bind(ctxTimeout(t), pc, s.Primary.LocalAddr())
	if err != nil || got != pc.LocalAddr().(*net.UDPAddr).AddrPort() {
		t.Fatalf("%v, %v", got, err)
	}
}

func FuzzParse(f *testing.F) {
	f.Add(AppendBindingRequest(nil, TxID{}))
	f.Add(mustHex(f, "testdata/rfc5769_ipv4_response.hex"))
	f.Add(mustHex(f, "testdata/rfc5769_ipv6_response.hex"))
	f.Add([]byte{0, 1, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16})
	s := &Server{Software: "fuzz"}
	src := netip.MustParseAddrPort("192.0.2.1:1")
	f.Fuzz(func(t *testing.T, b []byte) {
		IsMessage(b)
		ParseFullResponse(b, TxID{})
		if len(b) >= 20 {
			ParseResponse(b, TxID(b[8:20]))
		}
		resp, _ := s.handle(b, src, false, nil)
		if resp != nil {
			// Whatever the server says must itself parse.
			if _, err := parse(resp, true); err != nil {
				t.Fatalf("server produced unparseable %x: %v", resp, err)
			}
		}
	})
}
