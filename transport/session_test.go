package transport

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"io"
	"net"
	"net/netip"
	"os"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/parley-p2p/parley/natlab"
	"github.com/parley-p2p/parley/transport/internal/handshake"
	"github.com/parley-p2p/parley/transport/internal/wire"
)

func TestAddressChangeMidTransfer(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		_, a, b := labWorld(t, natlab.Link{Delay: 10 * time.Millisecond, Rate: 100e6, Loss: 0.01})
		client, server := labPair(t, a, b, nil)
		before := server.RemoteAddr().String()
		var moved atomic.Bool
		transfer(t, client, server, 3, 4<<20, func(total int64) {
			if total > 4<<20 && !moved.Load() {
				moved.Store(true)
				if err := a.SetAddr(netip.MustParseAddr("10.0.0.77")); err != nil {
					t.Error(err)
				}
			}
		})
		after := server.RemoteAddr().String()
		if !strings.HasPrefix(after, "10.0.0.77:") || after == before {
			t.Fatalf("server still sends to %s (was %s)", after, before)
		}
		if server.Stats().PathChanges == 0 {
			t.Fatal("no path change counted")
		}
	})
}

func TestHandshakeFloodDoesNotStopRealHandshake(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		w := natlab.New(natlab.Config{Seed: 3})
		t.Cleanup(func() { w.Close() })
		n := w.NewNetwork("net", netip.MustParsePrefix("10.0.0.0/24"))
		link := natlab.Link{Delay: 5 * time.Millisecond}
		srvHost := w.NewHost("server", n, link)
		attacker := w.NewHost("attacker", n, link)
		cliHost := w.NewHost("client", n, link)

		ctx := context.Background()
		pcS, _ := srvHost.ListenPacket(ctx, "udp4", ":5000")
		srvKey := newKey(t)
		ln, err := Listen(pcS, srvKey, nil)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { ln.Close() })

		// The attacker knows the server's public key, so its initiations
		// pass mac1 and cost a Diffie-Hellman each — the strongest flood
		// short of a real key. Some are plain garbage too.
		pcA, _ := attacker.ListenPacket(ctx, "udp4", ":6000")
		stop := make(chan struct{})
		flooded := make(chan int)
		go func() {
			sent := 0
			eve, _ := handshake.GenerateKeyPair()
			garbage := make([]byte, wire.InitiationLen)
			for i := 0; i < 20000; i++ {
				select {
				case <-stop:
					flooded <- sent
					return
				default:
				}
				_, pkt, _ := handshake.Initiate(nil, eve, [32]byte(srvKey.Public()), wire.HandshakeParams{SenderCID: wire.ConnID{byte(i)}}, nil, time.Now())
				// Forge: corrupt the encrypted static so DH fails after mac1 is recomputed.
				pkt[60] ^= 0xff
				k := macKeyFor(srvKey.Public())
				copy(pkt[wire.InitiationMAC1Offset:], mac1(k, pkt[:wire.InitiationMAC1Offset]))
				pcA.WriteTo(pkt, pcS.LocalAddr())
				rand.Read(garbage)
				garbage[0], garbage[1] = 0xC1, 1
				pcA.WriteTo(garbage, pcS.LocalAddr())
				sent += 2
				if i%100 == 0 {
					time.Sleep(time.Millisecond) // ~200k packets/s of virtual time
				}
			}
			flooded <- sent
		}()
		time.Sleep(20 * time.Millisecond)
		pcC, _ := cliHost.ListenPacket(ctx, "udp4", ":7000")
		dctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		sess, err := Dial(dctx, pcC, pcS.LocalAddr(), srvKey.Public(), &Config{PrivateKey: newKey(t)})
		close(stop)
		sent := <-flooded
		if err != nil {
			t.Fatalf("real handshake failed under a flood of %d packets: %v", sent, err)
		}
		defer func() { sess.Close(); <-sess.Done() }()
		acc, err := ln.Accept(dctx)
		if err != nil {
			t.Fatal(err)
		}
		if acc.RemoteKey() != sess.ep.PublicKey() {
			t.Fatal("accepted the wrong session")
		}
		st := ln.Endpoint().Stats()
		t.Logf("flood of %d packets: %+v", sent, st)
		if st.DroppedAuth == 0 {
			t.Fatal("forged initiations were not dropped as unauthenticated")
		}
		// Only the real handshake created a session.
		select {
		case extra := <-ln.ep.acceptQ:
			t.Fatalf("a forged handshake created a session from %v", extra.RemoteAddr())
		default:
		}
	})
}

func macKeyFor(pub PublicKey) [32]byte { return handshakeMACKey(pub) }

func TestCookiesWhenForced(t *testing.T) {
	srvKey := newKey(t)
	ln, err := Listen(udp(t), srvKey, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	ln.Endpoint().ForceCookies(true)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	s, err := Dial(ctx, udp(t), ln.Addr(), srvKey.Public(), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if ln.Endpoint().Stats().CookiesSent == 0 {
		t.Fatal("no cookie reply under forced load")
	}
}

func TestStreamSemantics(t *testing.T) {
	client, server := pairOnLoopback(t, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	// Half-close: the server reads EOF, then can still answer.
	st, _ := client.OpenStream(ctx)
	st.Write([]byte("ping"))
	st.CloseWrite()
	ss, err := server.AcceptStream(ctx)
	if err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(ss)
	if err != nil || string(got) != "ping" {
		t.Fatalf("read %q, %v", got, err)
	}
	ss.Write([]byte("pong"))
	ss.Close()
	got, err = io.ReadAll(st)
	if err != nil || string(got) != "pong" {
		t.Fatalf("answer %q, %v", got, err)
	}
	if _, err := st.Write([]byte("x")); err == nil {
		t.Fatal("write after CloseWrite succeeded")
	}

	// Read deadline.
	st2, _ := client.OpenStream(ctx)
	st2.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
	_, err = st2.Read(make([]byte, 1))
	var ne net.Error
	if !errors.As(err, &ne) || !ne.Timeout() || !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("read past deadline: %v", err)
	}

	// Reset with a code reaches the peer's reader.
	st2.SetReadDeadline(time.Time{})
	st2.Write([]byte("partial"))
	ss2, err := server.AcceptStream(ctx)
	if err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 7)
	if _, err := io.ReadFull(ss2, buf); err != nil {
		t.Fatal(err)
	}
	st2.Reset(0x2a)
	_, err = ss2.Read(buf)
	var se *StreamError
	if !errors.As(err, &se) || se.Code != 0x2a || !se.Remote {
		t.Fatalf("read after peer reset: %v", err)
	}

	// CloseRead (STOP_SENDING) makes the peer's writes fail.
	st3, _ := client.OpenStream(ctx)
	st3.Write([]byte("hello"))
	ss3, _ := server.AcceptStream(ctx)
	ss3.CloseRead(7)
	deadline := time.Now().Add(5 * time.Second)
	for {
		_, err := st3.Write(make([]byte, 1024))
		if errors.As(err, &se) && se.Code == 7 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("writes still succeed after the peer's CloseRead: %v", err)
		}
		time.Sleep(time.Millisecond)
	}
}

func TestManyStreamsAndFlowControl(t *testing.T) {
	// Small windows force many MAX_STREAM_DATA/MAX_DATA updates, and a small
	// stream limit forces MAX_STREAMS.
	cfg := &Config{StreamWindow: 16 << 10, MaxStreamWindow: 64 << 10, SessionWindow: 32 << 10, MaxSessionWindow: 128 << 10, MaxIncomingStreams: 4}
	client, server := pairOnLoopback(t, cfg)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	const n = 40
	go func() {
		for {
			ss, err := server.AcceptStream(ctx)
			if err != nil {
				return
			}
			go func() { io.Copy(ss, ss); ss.Close() }()
		}
	}()
	errs := make(chan error, n)
	for i := 0; i < n; i++ {
		go func(i int) {
			st, err := client.OpenStream(ctx)
			if err != nil {
				errs <- err
				return
			}
			msg := bytes.Repeat([]byte{byte(i)}, 100<<10)
			go func() { st.Write(msg); st.CloseWrite() }()
			got, err := io.ReadAll(st)
			st.Close()
			if err == nil && !bytes.Equal(got, msg) {
				err = errors.New("echo differs")
			}
			errs <- err
		}(i)
	}
	for i := 0; i < n; i++ {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
}

func TestKeyUpdate(t *testing.T) {
	client, server := pairOnLoopback(t, &Config{KeyUpdatePackets: 64})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	go func() {
		ss, err := server.AcceptStream(ctx)
		if err == nil {
			io.Copy(ss, ss)
			ss.Close()
		}
	}()
	st, _ := client.OpenStream(ctx)
	msg := make([]byte, 2<<20)
	rand.Read(msg)
	go func() { st.Write(msg); st.CloseWrite() }()
	got, err := io.ReadAll(st)
	if err != nil || !bytes.Equal(got, msg) {
		t.Fatalf("echo across key updates: %d bytes, %v", len(got), err)
	}
	if client.Stats().KeyUpdates < 5 || server.Stats().KeyUpdates < 5 {
		t.Fatalf("key updates: client %d, server %d", client.Stats().KeyUpdates, server.Stats().KeyUpdates)
	}
}

func TestCloseWithReason(t *testing.T) {
	client, server := pairOnLoopback(t, nil)
	client.CloseWithError(wire.ApplicationError+5, "bye now")
	select {
	case <-server.Done():
	case <-time.After(10 * time.Second):
		t.Fatal("server session did not end")
	}
	var se *SessionError
	if err := server.Err(); !errors.As(err, &se) || !se.Remote || se.Reason != "bye now" || se.Code != wire.ApplicationError+5 {
		t.Fatalf("server saw %v", err)
	}
	ctx := context.Background()
	if _, err := server.OpenStream(ctx); err == nil {
		t.Fatal("OpenStream on a closed session succeeded")
	}
}

func TestIdleTimeoutAndKeepalive(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		w, a, b := labWorld(t, natlab.Link{Delay: 10 * time.Millisecond})
		cfg := &Config{IdleTimeout: 3 * time.Second, KeepAlivePeriod: time.Second}
		client, server := labPair(t, a, b, cfg)
		// Keepalives hold an idle session open well past the idle timeout.
		time.Sleep(20 * time.Second)
		if client.Err() != nil || server.Err() != nil {
			t.Fatalf("session died despite keepalives: %v / %v", client.Err(), server.Err())
		}
		// Cut the link: both sides time out.
		a.SetLink(natlab.Link{Loss: 1})
		time.Sleep(5 * time.Second)
		var it IdleTimeoutError
		if !errors.As(client.Err(), &it) || !errors.As(server.Err(), &it) {
			t.Fatalf("after the link died: %v / %v", client.Err(), server.Err())
		}
		_ = w
	})
}

func TestNoGoroutinesLeftAfterClose(t *testing.T) {
	before := runtime.NumGoroutine()
	func() {
		srvKey := newKey(t)
		pcS, pcC := udp(t), udp(t)
		ln, _ := Listen(pcS, srvKey, nil)
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		for i := 0; i < 5; i++ {
			s, err := Dial(ctx, pcC, ln.Addr(), srvKey.Public(), nil)
			if err != nil {
				t.Fatal(err)
			}
			st, _ := s.OpenStream(ctx)
			st.Write([]byte("x"))
			ss, _ := ln.Accept(ctx)
			a, _ := ss.AcceptStream(ctx)
			io.ReadFull(a, make([]byte, 1))
			s.Close()
			<-s.Done()
		}
		ln.Close()
	}()
	deadline := time.Now().Add(5 * time.Second)
	for runtime.NumGoroutine() > before {
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<16)
			t.Fatalf("%d goroutines left behind:\n%s", runtime.NumGoroutine()-before, buf[:runtime.Stack(buf, true)])
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestMalformedPacketsAreDroppedAndCounted(t *testing.T) {
	srvKey := newKey(t)
	ln, _ := Listen(udp(t), srvKey, nil)
	defer ln.Close()
	c := udp(t)
	sendTo := ln.Addr()
	junk := [][]byte{
		{},
		{0xC1},
		{0xC1, 9, 0, 0},
		{0xC2, 4},
		bytes.Repeat([]byte{0xC1, 4}, 30),
		append([]byte{0xC1, 4, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8}, make([]byte, 40)...),
		append([]byte{0xC1, 1, 0, 0}, make([]byte, 180)...),
	}
	for _, j := range junk {
		c.WriteTo(j, sendTo)
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		st := ln.Endpoint().Stats()
		if st.Received >= uint64(len(junk)-1) { // the empty datagram may count too
			if st.DroppedMalformed+st.DroppedUnknown+st.DroppedAuth < st.Received {
				t.Fatalf("not every bad packet was dropped: %+v", st)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("packets not seen: %+v", st)
		}
		time.Sleep(5 * time.Millisecond)
	}
	ln.ep.mu.Lock()
	n := len(ln.ep.sessions)
	ln.ep.mu.Unlock()
	if n != 0 {
		t.Fatalf("bad packets created %d sessions", n)
	}
}
