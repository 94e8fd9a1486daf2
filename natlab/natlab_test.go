package natlab

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"math"
	"net"
	"net/netip"
	"os"
	"strconv"
	"syscall"
	"testing"
	"testing/synctest"
	"time"
)

// listen opens a Conn on h at address, failing the test on error.
func listen(t testing.TB, h *Host, address string) *Conn {
	t.Helper()
	pc, err := h.ListenPacket(context.Background(), "udp4", address)
	if err != nil {
		t.Fatalf("listen on %s at %q: %v", h, address, err)
	}
	return pc.(*Conn)
}

// addrOf returns c's address as a netip.AddrPort.
func addrOf(c *Conn) netip.AddrPort {
	return c.LocalAddr().(*net.UDPAddr).AddrPort()
}

func send(t testing.TB, c *Conn, to netip.AddrPort, payload []byte) {
	t.Helper()
	if _, err := c.WriteToUDPAddrPort(payload, to); err != nil {
		t.Fatalf("write to %v: %v", to, err)
	}
}

// recv reads one datagram from c, waiting at most d.
func recv(t testing.TB, c *Conn, d time.Duration) ([]byte, netip.AddrPort) {
	t.Helper()
	b, from, err := tryRecv(c, d)
	if err != nil {
		t.Fatalf("read on %v: %v", addrOf(c), err)
	}
	return b, from
}

func tryRecv(c *Conn, d time.Duration) ([]byte, netip.AddrPort, error) {
	c.SetReadDeadline(time.Now().Add(d))
	defer c.SetReadDeadline(time.Time{})
	buf := make([]byte, 65536)
	n, from, err := c.ReadFromUDPAddrPort(buf)
	return buf[:n], from, err
}

// seqPacket returns a payload of size bytes starting with seq.
func seqPacket(seq uint32, size int) []byte {
	b := make([]byte, max(size, 4))
	binary.BigEndian.PutUint32(b, seq)
	return b
}

// readQueued reads every datagram already in c's receive queue and returns
// their sequence numbers. On an ideal path datagrams are queued before
// WriteTo returns, so this needs no waiting.
func readQueued(t testing.TB, c *Conn) []uint32 {
	t.Helper()
	c.mu.Lock()
	n := c.q.len()
	c.mu.Unlock()
	seqs := make([]uint32, 0, n)
	buf := make([]byte, 65536)
	for range n {
		if _, _, err := c.ReadFromUDPAddrPort(buf); err != nil {
			t.Fatal(err)
		}
		seqs = append(seqs, binary.BigEndian.Uint32(buf))
	}
	return seqs
}

// drain reads datagrams until none arrives for idle, returning their
// sequence numbers in arrival order.
func drain(c *Conn, idle time.Duration) []uint32 {
	var seqs []uint32
	for {
		b, _, err := tryRecv(c, idle)
		if err != nil {
			return seqs
		}
		seqs = append(seqs, binary.BigEndian.Uint32(b))
	}
}

func TestRoundTripRealTime(t *testing.T) {
	w, a, b := Pair(Link{})
	defer w.Close()
	ca := listen(t, a, ":0")
	cb := listen(t, b, "10.0.0.3:5000")

	if got := addrOf(cb); got != netip.MustParseAddrPort("10.0.0.3:5000") {
		t.Fatalf("b's LocalAddr = %v, want 10.0.0.3:5000", got)
	}
	if got := addrOf(ca); got.Addr() != a.Addr() || got.Port() < ephemeralLow || got.Port() > ephemeralHigh {
		t.Fatalf("a's LocalAddr = %v, want %v with an ephemeral port", got, a.Addr())
	}

	msg := []byte("hello")
	if _, err := ca.WriteTo(msg, cb.LocalAddr()); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 100)
	n, from, err := cb.ReadFrom(buf)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(buf[:n], msg) || from.(*net.UDPAddr).AddrPort() != addrOf(ca) {
		t.Fatalf("b got %q from %v, want %q from %v", buf[:n], from, msg, addrOf(ca))
	}
	if _, err := cb.WriteTo([]byte("world"), from); err != nil {
		t.Fatal(err)
	}
	got, from2 := recv(t, ca, 5*time.Second)
	if string(got) != "world" || from2 != addrOf(cb) {
		t.Fatalf("a got %q from %v", got, from2)
	}
	st := w.Stats()
	if d := st.Hosts["b"].Sockets; d.Packets != 1 || d.Bytes != 5 {
		t.Errorf("b's socket counters = %v, want 1 packet of 5 bytes", d)
	}
}

func TestRoundTripVirtualTimeIsExact(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		// a's link has 100 ms one way, b's is ideal: a 200 ms RTT.
		w, a, b := Pair(Link{Delay: 100 * time.Millisecond})
		defer w.Close()
		ca, cb := listen(t, a, ":0"), listen(t, b, ":0")

		start := time.Now()
		send(t, ca, addrOf(cb), []byte("ping"))
		_, from := recv(t, cb, time.Minute)
		if d := time.Since(start); d != 100*time.Millisecond {
			t.Fatalf("one way took %v, want exactly 100ms", d)
		}
		send(t, cb, from, []byte("pong"))
		recv(t, ca, time.Minute)
		if d := time.Since(start); d != 200*time.Millisecond {
			t.Fatalf("round trip took %v, want exactly 200ms", d)
		}
	})
}

func TestRoundTripRealTimeDelay(t *testing.T) {
	w, a, b := Pair(Link{Delay: 20 * time.Millisecond})
	defer w.Close()
	ca, cb := listen(t, a, ":0"), listen(t, b, ":0")

	start := time.Now()
	send(t, ca, addrOf(cb), []byte("ping"))
	_, from := recv(t, cb, 10*time.Second)
	send(t, cb, from, []byte("pong"))
	recv(t, ca, 10*time.Second)
	// Real timers fire late, never early.
	if d := time.Since(start); d < 40*time.Millisecond || d > 5*time.Second {
		t.Fatalf("round trip took %v, want at least 40ms", d)
	}
}

func TestJitterBoundsWithoutReordering(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const delay, jitter = 50 * time.Millisecond, 10 * time.Millisecond
		w, a, b := NewPair(Config{Seed: 7}, Link{Delay: delay, Jitter: jitter})
		defer w.Close()
		ca, cb := listen(t, a, ":0"), listen(t, b, ":0")

		const n = 200
		start := time.Now()
		go func() {
			for i := range n {
				send(t, ca, addrOf(cb), seqPacket(uint32(i), 8))
				time.Sleep(5 * time.Millisecond)
			}
		}()
		seen := map[time.Duration]bool{}
		for i := range n {
			b, _ := recv(t, cb, time.Minute)
			if got := binary.BigEndian.Uint32(b); got != uint32(i) {
				t.Fatalf("datagram %d arrived in place %d: jitter reordered", got, i)
			}
			// The datagram was sent at i×5ms.
			d := time.Since(start) - time.Duration(i)*5*time.Millisecond
			if d < delay-jitter || d > delay+jitter {
				t.Fatalf("datagram %d took %v, want within %v±%v", i, d, delay, jitter)
			}
			seen[d] = true
		}
		if len(seen) < n/4 {
			t.Errorf("only %d distinct delays among %d datagrams: no jitter", len(seen), n)
		}
	})
}

func TestBandwidthSerialization(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		// 8 Mbit/s is one byte per microsecond.
		const rate, size, n = 8_000_000, 1000, 100
		wire := time.Duration(size+headerBytes) * time.Microsecond
		w, a, b := Pair(Link{Rate: rate, QueueBytes: 1 << 20})
		defer w.Close()
		ca, cb := listen(t, a, ":0"), listen(t, b, ":0")

		start := time.Now()
		for i := range n {
			send(t, ca, addrOf(cb), seqPacket(uint32(i), size))
		}
		for i := range n {
			recv(t, cb, time.Minute)
			if got, want := time.Since(start), time.Duration(i+1)*wire; got != want {
				t.Fatalf("datagram %d arrived after %v, want %v", i, got, want)
			}
		}
		// N bytes at R bit/s take N×8/R.
		if got, want := time.Since(start), time.Duration(n*(size+headerBytes)*8)*time.Second/rate; got != want {
			t.Fatalf("transfer took %v, want %v", got, want)
		}
	})
}

func TestBandwidthAndDelayAdd(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		w, a, b := Pair(Link{Rate: 8_000_000, Delay: 30 * time.Millisecond})
		defer w.Close()
		ca, cb := listen(t, a, ":0"), listen(t, b, ":0")
		start := time.Now()
		send(t, ca, addrOf(cb), make([]byte, 972)) // 1000 bytes on the wire
		recv(t, cb, time.Minute)
		if got, want := time.Since(start), 30*time.Millisecond+1000*time.Microsecond; got != want {
			t.Fatalf("arrived after %v, want %v", got, want)
		}
	})
}

func TestQueueOverflowDrops(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const size, queued = 1000, 10
		w, a, b := Pair(Link{Rate: 8_000_000, QueueBytes: queued * (size + headerBytes)})
		defer w.Close()
		ca, cb := listen(t, a, ":0"), listen(t, b, ":0")

		for i := range 50 {
			send(t, ca, addrOf(cb), seqPacket(uint32(i), size))
		}
		got := drain(cb, time.Second)
		if len(got) != queued {
			t.Fatalf("received %d datagrams of a 50-datagram burst, want the %d that fit the queue", len(got), queued)
		}
		for i, s := range got {
			if s != uint32(i) {
				t.Fatalf("received %v: drop-tail must keep the head of the burst", got)
			}
		}
		if d := a.Stats().Link.Up.Dropped[DropQueueFull]; d != 40 {
			t.Fatalf("queue-full drops = %d, want 40", d)
		}

		// Once the queue has drained the link accepts again.
		send(t, ca, addrOf(cb), seqPacket(99, size))
		if s := drain(cb, time.Second); len(s) != 1 || s[0] != 99 {
			t.Fatalf("after draining got %v, want [99]", s)
		}
	})
}

func TestDefaultQueueIsBDP(t *testing.T) {
	var pp pipe
	pp.setLink(Link{Rate: 100e6, Delay: 50 * time.Millisecond})
	// 100 Mbit/s × 100 ms = 1.25 MB = 100 ms of transmission.
	if pp.queueTime != 100*time.Millisecond {
		t.Fatalf("default queue = %v of transmission, want 100ms", pp.queueTime)
	}
	pp.setLink(Link{Rate: 1e6})
	// 64 KiB at 1 Mbit/s.
	if want := time.Duration(64<<10*8) * time.Microsecond; pp.queueTime != want {
		t.Fatalf("default queue = %v of transmission, want %v", pp.queueTime, want)
	}
}

func TestMTU(t *testing.T) {
	w, a, b := Pair(Link{})
	defer w.Close()
	ca, cb := listen(t, a, ":0"), listen(t, b, ":0")

	send(t, ca, addrOf(cb), make([]byte, 1473)) // 1501 bytes: dropped
	send(t, ca, addrOf(cb), make([]byte, 1472)) // 1500 bytes: passes
	b1, _ := recv(t, cb, 5*time.Second)
	if len(b1) != 1472 {
		t.Fatalf("received %d bytes, want the 1472-byte datagram", len(b1))
	}
	if d := a.Stats().Link.Up.Dropped[DropMTU]; d != 1 {
		t.Fatalf("MTU drops = %d, want 1", d)
	}

	a.SetLink(Link{MTU: 9000})
	b.SetLink(Link{MTU: 9000})
	send(t, ca, addrOf(cb), make([]byte, 8972))
	if got, _ := recv(t, cb, 5*time.Second); len(got) != 8972 {
		t.Fatalf("jumbo datagram: received %d bytes", len(got))
	}

	_, err := ca.WriteToUDPAddrPort(make([]byte, maxPayload+1), addrOf(cb))
	if !errors.Is(err, syscall.EMSGSIZE) {
		t.Fatalf("writing %d bytes: err = %v, want EMSGSIZE", maxPayload+1, err)
	}
}

// lostSeqs sends n datagrams over a link with the given loss, from one
// goroutine, and returns which sequence numbers did not arrive.
func lostSeqs(t *testing.T, seed uint64, l Link, n int) []uint32 {
	t.Helper()
	w, a, b := NewPair(Config{Seed: seed}, l)
	defer w.Close()
	ca, cb := listen(t, a, ":0"), listen(t, b, ":0")
	for i := range n {
		send(t, ca, addrOf(cb), seqPacket(uint32(i), 8))
	}
	got := map[uint32]bool{}
	for _, s := range readQueued(t, cb) {
		got[s] = true
	}
	var lost []uint32
	for i := range uint32(n) {
		if !got[i] {
			lost = append(lost, i)
		}
	}
	if d := a.Stats().Link.Up.Dropped[DropLoss]; d != uint64(len(lost)) {
		t.Fatalf("loss counter = %d, but %d datagrams are missing", d, len(lost))
	}
	return lost
}

func TestLossRateAndDeterminism(t *testing.T) {
	const n, loss = 20000, 0.1
	lost := lostSeqs(t, 1, Link{Loss: loss}, n)
	// Binomial: mean 2000, σ ≈ 42; allow 5σ.
	if mean, sigma := n*loss, math.Sqrt(n*loss*(1-loss)); math.Abs(float64(len(lost))-mean) > 5*sigma {
		t.Fatalf("lost %d of %d, want about %v", len(lost), n, mean)
	}
	again := lostSeqs(t, 1, Link{Loss: loss}, n)
	if !equalSeqs(lost, again) {
		t.Fatal("the same seed lost different datagrams")
	}
	other := lostSeqs(t, 2, Link{Loss: loss}, n)
	if equalSeqs(lost, other) {
		t.Fatal("different seeds lost the same datagrams")
	}
}

func equalSeqs(a, b []uint32) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func TestDuplication(t *testing.T) {
	w, a, b := NewPair(Config{Seed: 3}, Link{Duplicate: 0.2})
	defer w.Close()
	ca, cb := listen(t, a, ":0"), listen(t, b, ":0")
	const n = 5000
	for i := range n {
		send(t, ca, addrOf(cb), seqPacket(uint32(i), 8))
	}
	got := readQueued(t, cb)
	count := map[uint32]int{}
	for _, s := range got {
		count[s]++
	}
	dups := len(got) - n
	if len(count) != n || dups < 800 || dups > 1200 {
		t.Fatalf("received %d datagrams, %d distinct; want all %d and about 1000 duplicates", len(got), len(count), n)
	}
	for s, c := range count {
		if c > 2 {
			t.Fatalf("datagram %d arrived %d times", s, c)
		}
	}
}

func TestReordering(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		w, a, b := NewPair(Config{Seed: 5}, Link{Delay: 10 * time.Millisecond, Reorder: 0.1, ReorderDelay: 2 * time.Millisecond})
		defer w.Close()
		ca, cb := listen(t, a, ":0"), listen(t, b, ":0")
		const n = 1000
		go func() {
			for i := range n {
				send(t, ca, addrOf(cb), seqPacket(uint32(i), 8))
				time.Sleep(500 * time.Microsecond)
			}
		}()
		var got []uint32
		for range n {
			b, _ := recv(t, cb, time.Minute)
			got = append(got, binary.BigEndian.Uint32(b))
		}
		late := 0
		for i := 1; i < n; i++ {
			if got[i] < got[i-1] {
				late++
			}
		}
		// A held-back datagram is overtaken by the ~4 sent in the next 2 ms.
		if late < 50 || late > 150 {
			t.Fatalf("%d datagrams arrived after a later one, want about 100", late)
		}
	})
}

func TestSetLinkKillsAndRestoresPath(t *testing.T) {
	w, a, b := Pair(Link{})
	defer w.Close()
	ca, cb := listen(t, a, ":0"), listen(t, b, ":0")
	a.SetLink(Link{Loss: 1})
	send(t, ca, addrOf(cb), []byte("x"))
	if _, _, err := tryRecv(cb, 20*time.Millisecond); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("read over a dead link: err = %v, want a timeout", err)
	}
	a.SetLinks(Link{}, Link{Loss: 1})
	send(t, ca, addrOf(cb), []byte("y"))
	if got, _ := recv(t, cb, 5*time.Second); string(got) != "y" {
		t.Fatalf("got %q after restoring the uplink", got)
	}
	if up, down := a.Links(); up.Loss != 0 || down.Loss != 1 || up.MTU != DefaultMTU {
		t.Fatalf("Links() = %+v, %+v", up, down)
	}
}

func TestSanitizedLinkNeverMisbehaves(t *testing.T) {
	l := Link{Delay: -1, Jitter: -5, Rate: -3, QueueBytes: -1, Loss: math.NaN(), Duplicate: 7, Reorder: -1, MTU: -1}.sanitized()
	want := Link{Duplicate: 1, ReorderDelay: defaultReorderDelay, MTU: DefaultMTU}
	if l != want {
		t.Fatalf("sanitized = %+v, want %+v", l, want)
	}
}

func TestHostMoves(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		w := New(Config{})
		defer w.Close()
		inet := w.NewNetwork("internet", netip.MustParsePrefix("203.0.113.0/24"))
		wifi := w.NewNetwork("wifi", netip.MustParsePrefix("198.51.100.0/24"))
		server := w.NewHost("server", inet, Link{})
		phone := w.NewHost("phone", inet, Link{Delay: 10 * time.Millisecond})
		w.NewNAT("wifi-nat", NATConfig{Inside: wifi, Outside: inet})
		cs, cp := listen(t, server, ":443"), listen(t, phone, ":0")
		port := addrOf(cp).Port()

		send(t, cp, addrOf(cs), []byte("1"))
		_, from := recv(t, cs, time.Minute)
		if from != netip.AddrPortFrom(phone.Addr(), port) {
			t.Fatalf("server saw %v", from)
		}

		// Renumber on the same network: same port, new source.
		if err := phone.SetAddr(netip.MustParseAddr("203.0.113.99")); err != nil {
			t.Fatal(err)
		}
		if err := phone.SetAddr(server.Addr()); err == nil {
			t.Fatal("SetAddr to the server's address succeeded")
		}
		send(t, cp, addrOf(cs), []byte("2"))
		if _, from := recv(t, cs, time.Minute); from != netip.MustParseAddrPort("203.0.113.99:"+strconv.Itoa(int(port))) {
			t.Fatalf("after SetAddr the server saw %v", from)
		}
		// The old address is gone: the reply to it is not routed.
		send(t, cs, from, []byte("to old address"))
		if _, _, err := tryRecv(cp, time.Second); err == nil {
			t.Fatal("a datagram to the old address arrived")
		}

		// Move behind the Wi-Fi NAT, mid-conversation.
		a := phone.MoveTo(wifi)
		if !wifi.Prefix().Contains(a) || phone.Network() != wifi || addrOf(cp).Addr() != a {
			t.Fatalf("after MoveTo: address %v, LocalAddr %v", a, addrOf(cp))
		}
		send(t, cp, addrOf(cs), []byte("3"))
		_, from = recv(t, cs, time.Minute)
		if from.Addr() == netip.MustParseAddr("203.0.113.99") || !inet.Prefix().Contains(from.Addr()) {
			t.Fatalf("after moving the server saw %v, want the NAT's address", from)
		}
		send(t, cs, from, []byte("reply"))
		if got, _ := recv(t, cp, time.Minute); string(got) != "reply" {
			t.Fatalf("got %q", got)
		}
		if d := w.Stats().Networks["internet"].Dropped[DropNoRoute]; d != 1 {
			t.Fatalf("no-route drops on the internet = %d, want 1", d)
		}
	})
}

func TestSendToSelf(t *testing.T) {
	w, a, _ := Pair(Link{Loss: 1})
	defer w.Close()
	c1, c2 := listen(t, a, ":0"), listen(t, a, ":0")
	send(t, c1, addrOf(c2), []byte("loopback"))
	if got, _ := recv(t, c2, 5*time.Second); string(got) != "loopback" {
		t.Fatalf("got %q", got)
	}
}

func TestNoListenerAndNoRoute(t *testing.T) {
	w, a, b := Pair(Link{})
	defer w.Close()
	ca := listen(t, a, ":0")
	send(t, ca, netip.AddrPortFrom(b.Addr(), 9), []byte("x"))
	send(t, ca, netip.MustParseAddrPort("10.0.0.200:9"), []byte("x"))
	send(t, ca, netip.MustParseAddrPort("8.8.8.8:53"), []byte("x"))
	st := w.Stats()
	if d := st.Hosts["b"].Sockets.Dropped[DropNoListener]; d != 1 {
		t.Errorf("no-listener drops = %d, want 1", d)
	}
	if d := st.Networks["net"].Dropped[DropNoRoute]; d != 2 {
		t.Errorf("no-route drops = %d, want 2", d)
	}
	if tot := st.Total(); tot.Drops() != 3 {
		t.Errorf("total drops = %d (%v), want 3", tot.Drops(), tot)
	}
}

func TestAsymmetricLinks(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		w, a, b := Pair(Link{})
		defer w.Close()
		a.SetLinks(Link{Delay: 30 * time.Millisecond}, Link{Delay: 70 * time.Millisecond})
		ca, cb := listen(t, a, ":0"), listen(t, b, ":0")
		start := time.Now()
		send(t, ca, addrOf(cb), []byte("up"))
		recv(t, cb, time.Minute)
		if d := time.Since(start); d != 30*time.Millisecond {
			t.Fatalf("uplink took %v, want 30ms", d)
		}
		start = time.Now()
		send(t, cb, addrOf(ca), []byte("down"))
		recv(t, ca, time.Minute)
		if d := time.Since(start); d != 70*time.Millisecond {
			t.Fatalf("downlink took %v, want 70ms", d)
		}
	})
}

func TestVirtualTimeCostsNoRealTime(t *testing.T) {
	realStart := time.Now()
	synctest.Test(t, func(t *testing.T) {
		// A 20 s round trip, 100 times over.
		w, a, b := Pair(Link{Delay: 10 * time.Second})
		defer w.Close()
		ca, cb := listen(t, a, ":0"), listen(t, b, ":0")
		start := time.Now()
		for range 100 {
			send(t, ca, addrOf(cb), []byte("ping"))
			_, from := recv(t, cb, time.Hour)
			send(t, cb, from, []byte("pong"))
			recv(t, ca, time.Hour)
		}
		if d := time.Since(start); d != 2000*time.Second {
			t.Fatalf("100 round trips took %v of virtual time, want 2000s", d)
		}
	})
	if d := time.Since(realStart); d > 10*time.Second {
		t.Fatalf("2000 s of virtual time took %v of real time", d)
	}
}
