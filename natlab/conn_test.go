package natlab

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"os"
	"runtime"
	"sync"
	"syscall"
	"testing"
	"testing/synctest"
	"time"
)

func TestReadDeadlineVirtual(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		w, a, _ := Pair(Link{})
		defer w.Close()
		c := listen(t, a, ":0")
		start := time.Now()
		c.SetReadDeadline(start.Add(3 * time.Second))
		_, _, err := c.ReadFrom(make([]byte, 10))
		if !errors.Is(err, os.ErrDeadlineExceeded) {
			t.Fatalf("err = %v, want os.ErrDeadlineExceeded", err)
		}
		var ne net.Error
		if !errors.As(err, &ne) || !ne.Timeout() {
			t.Fatalf("err = %v is not a net.Error with Timeout()", err)
		}
		if d := time.Since(start); d != 3*time.Second {
			t.Fatalf("read returned after %v, want exactly 3s", d)
		}
		// Clearing the deadline makes reads block again until data comes.
		c.SetReadDeadline(time.Time{})
		go func() {
			time.Sleep(time.Second)
			send(t, c, addrOf(c), []byte("late"))
		}()
		if n, _, err := c.ReadFrom(make([]byte, 10)); err != nil || n != 4 {
			t.Fatalf("read = %d, %v", n, err)
		}
	})
}

func TestDeadlineExtendedWhileBlocked(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		w, a, _ := Pair(Link{})
		defer w.Close()
		c := listen(t, a, ":0")
		start := time.Now()
		c.SetDeadline(start.Add(time.Second))
		done := make(chan error)
		go func() {
			_, _, err := c.ReadFrom(make([]byte, 10))
			done <- err
		}()
		time.Sleep(500 * time.Millisecond)
		c.SetReadDeadline(start.Add(5 * time.Second))
		if err := <-done; !errors.Is(err, os.ErrDeadlineExceeded) {
			t.Fatalf("err = %v", err)
		}
		if d := time.Since(start); d != 5*time.Second {
			t.Fatalf("blocked read ended after %v, want the extended 5s", d)
		}
	})
}

func TestReadDeadlineRealTime(t *testing.T) {
	w, a, _ := Pair(Link{})
	defer w.Close()
	c := listen(t, a, ":0")
	start := time.Now()
	c.SetReadDeadline(start.Add(30 * time.Millisecond))
	_, _, err := c.ReadFrom(make([]byte, 10))
	if !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("err = %v", err)
	}
	if d := time.Since(start); d < 30*time.Millisecond {
		t.Fatalf("deadline fired after %v, before 30ms", d)
	}
}

func TestWriteDeadline(t *testing.T) {
	w, a, b := Pair(Link{})
	defer w.Close()
	ca, cb := listen(t, a, ":0"), listen(t, b, ":0")
	ca.SetWriteDeadline(time.Now().Add(-time.Second))
	if _, err := ca.WriteTo([]byte("x"), cb.LocalAddr()); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("write after the deadline: err = %v", err)
	}
	ca.SetWriteDeadline(time.Time{})
	if _, err := ca.WriteTo([]byte("x"), cb.LocalAddr()); err != nil {
		t.Fatal(err)
	}
}

func TestCloseUnblocksReaders(t *testing.T) {
	w, a, _ := Pair(Link{})
	defer w.Close()
	c := listen(t, a, ":0")
	var wg sync.WaitGroup
	errs := make(chan error, 3)
	for range 3 {
		wg.Go(func() {
			_, _, err := c.ReadFrom(make([]byte, 10))
			errs <- err
		})
	}
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if !errors.Is(err, net.ErrClosed) {
			t.Fatalf("reader got %v, want net.ErrClosed", err)
		}
	}
	if err := c.Close(); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("second Close: %v", err)
	}
	if _, err := c.WriteTo([]byte("x"), c.LocalAddr()); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("write after Close: %v", err)
	}
	// The port is free again.
	listen(t, a, addrOf(c).String())
}

func TestWorldCloseUnblocksAndLeavesNoGoroutines(t *testing.T) {
	base := runtime.NumGoroutine()
	w, a, b := Pair(Link{Delay: time.Hour, Rate: 1e6})
	ca, cb := listen(t, a, ":0"), listen(t, b, ":0")
	ca.SetReadDeadline(time.Now().Add(time.Hour)) // a pending timer
	errs := make(chan error, 2)
	for _, c := range []*Conn{ca, cb} {
		go func() {
			_, _, err := c.ReadFrom(make([]byte, 10))
			errs <- err
		}()
	}
	for range 100 {
		send(t, ca, addrOf(cb), make([]byte, 1000)) // in flight for an hour
	}
	w.Close()
	for range 2 {
		if err := <-errs; !errors.Is(err, net.ErrClosed) {
			t.Fatalf("reader got %v, want net.ErrClosed", err)
		}
	}
	if _, err := a.ListenPacket(context.Background(), "udp4", ":0"); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("listen after Close: %v", err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for runtime.NumGoroutine() > base {
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<16)
			t.Fatalf("%d goroutines remain, %d before:\n%s", runtime.NumGoroutine(), base, buf[:runtime.Stack(buf, true)])
		}
		runtime.Gosched()
		time.Sleep(time.Millisecond)
	}
}

func TestListenErrors(t *testing.T) {
	w, a, b := Pair(Link{})
	defer w.Close()
	ctx := context.Background()
	listen(t, a, ":5000")
	for _, tc := range []struct {
		network, address string
		want             error
	}{
		{"udp4", ":5000", syscall.EADDRINUSE},
		{"udp4", b.Addr().String() + ":0", syscall.EADDRNOTAVAIL},
		{"udp6", ":0", nil},
		{"tcp", ":0", nil},
		{"udp4", "localhost:0", nil},
		{"udp4", "[2001:db8::1]:0", nil},
		{"udp4", ":99999", nil},
		{"udp4", "nonsense", nil},
	} {
		pc, err := a.ListenPacket(ctx, tc.network, tc.address)
		if err == nil {
			pc.Close()
			t.Errorf("ListenPacket(%q, %q) succeeded", tc.network, tc.address)
			continue
		}
		if pc != nil {
			t.Errorf("ListenPacket(%q, %q) returned a non-nil conn with its error", tc.network, tc.address)
		}
		if tc.want != nil && !errors.Is(err, tc.want) {
			t.Errorf("ListenPacket(%q, %q) = %v, want %v", tc.network, tc.address, err, tc.want)
		}
	}
	for _, ok := range []string{"", "0.0.0.0:0", "[::]:0", a.Addr().String() + ":6000", ":7000"} {
		listen(t, a, ok)
	}
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if _, err := a.ListenPacket(cctx, "udp4", ":0"); !errors.Is(err, context.Canceled) {
		t.Errorf("listen with a canceled context: %v", err)
	}
}

func TestWriteErrors(t *testing.T) {
	w, a, _ := Pair(Link{})
	defer w.Close()
	c := listen(t, a, ":0")
	for _, addr := range []net.Addr{nil, (*net.UDPAddr)(nil), &net.TCPAddr{IP: net.IPv4(10, 0, 0, 3), Port: 1}, &net.UDPAddr{IP: net.ParseIP("2001:db8::1"), Port: 1}, &net.UDPAddr{IP: net.IPv4(10, 0, 0, 3)}} {
		if _, err := c.WriteTo([]byte("x"), addr); err == nil {
			t.Errorf("WriteTo(%v) succeeded", addr)
		}
	}
}

func TestWriteCopiesBuffer(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		w, a, b := Pair(Link{Delay: 10 * time.Millisecond})
		defer w.Close()
		ca, cb := listen(t, a, ":0"), listen(t, b, ":0")
		buf := []byte("original")
		send(t, ca, addrOf(cb), buf)
		copy(buf, "clobbered")
		if got, _ := recv(t, cb, time.Minute); string(got) != "original" {
			t.Fatalf("received %q: WriteTo kept the caller's buffer", got)
		}
	})
}

func TestSocketBufferOverflow(t *testing.T) {
	w, a, b := Pair(Link{})
	defer w.Close()
	ca, cb := listen(t, a, ":0"), listen(t, b, ":0")
	if err := cb.SetReadBuffer(10 * (100 + queueOverhead)); err != nil {
		t.Fatal(err)
	}
	for range 25 {
		send(t, ca, addrOf(cb), make([]byte, 100))
	}
	if got := len(readQueued(t, cb)); got != 10 {
		t.Fatalf("read %d datagrams, want the 10 that fit the buffer", got)
	}
	if d := b.Stats().Sockets.Dropped[DropSocketBuffer]; d != 15 {
		t.Fatalf("socket-buffer drops = %d, want 15", d)
	}
}

func TestLocalAddrIsUDPAddr(t *testing.T) {
	w, a, _ := Pair(Link{})
	defer w.Close()
	c := listen(t, a, ":4242")
	ua, ok := c.LocalAddr().(*net.UDPAddr)
	if !ok || ua.Port != 4242 || !ua.IP.Equal(net.IPv4(10, 0, 0, 2)) {
		t.Fatalf("LocalAddr = %#v", c.LocalAddr())
	}
}

func TestReadFromAddressCache(t *testing.T) {
	w, a, b := Pair(Link{})
	defer w.Close()
	ca, cb, cc := listen(t, a, ":0"), listen(t, b, ":0"), listen(t, b, ":0")
	buf := make([]byte, 10)
	for _, from := range []*Conn{cb, cb, cc, cb} {
		send(t, from, addrOf(ca), []byte("x"))
		_, addr, err := ca.ReadFrom(buf)
		if err != nil {
			t.Fatal(err)
		}
		if got := addr.(*net.UDPAddr).AddrPort(); got != netip.AddrPortFrom(b.Addr(), addrOf(from).Port()) {
			t.Fatalf("ReadFrom address = %v, want %v", got, addrOf(from))
		}
	}
}

func FuzzParseListenAddr(f *testing.F) {
	for _, s := range []string{"", ":0", "1.2.3.4:5", "[::]:1", "[::ffff:1.2.3.4]:80", "x:y", ":65536", "%"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		ip, _, err := parseListenAddr(s)
		if err == nil && ip.IsValid() && !ip.Is4() {
			t.Fatalf("parseListenAddr(%q) accepted non-IPv4 %v", s, ip)
		}
	})
}
