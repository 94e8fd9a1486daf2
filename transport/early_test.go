package transport

import (
	"context"
	"io"
	"net"
	"net/netip"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/parley-p2p/parley/natlab"
	"github.com/parley-p2p/parley/transport/internal/wire"
)

// hookConn passes every datagram the endpoint writes through write, which
// may drop, hold or reorder it.
type hookConn struct {
	net.PacketConn
	mu    sync.Mutex
	write func(pc net.PacketConn, b []byte, addr net.Addr) (int, error)
}

func (c *hookConn) WriteTo(b []byte, addr net.Addr) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.write(c.PacketConn, b, addr)
}

// earlyWorld is a two-host lab with 25 ms one way (50 ms RTT), a listener
// on b, and a's socket wrapped in write (nil: unchanged).
func earlyWorld(t *testing.T, write func(pc net.PacketConn, b []byte, addr net.Addr) (int, error)) (ep *Endpoint, ln *Listener) {
	t.Helper()
	_, a, b := labWorld(t, natlab.Link{Delay: 25 * time.Millisecond})
	ctx := context.Background()
	pcA, err := a.ListenPacket(ctx, "udp4", ":4000")
	if err != nil {
		t.Fatal(err)
	}
	pcB, err := b.ListenPacket(ctx, "udp4", ":5000")
	if err != nil {
		t.Fatal(err)
	}
	ln, err = Listen(pcB, newKey(t), nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	if write != nil {
		pcA = &hookConn{PacketConn: pcA, write: write}
	}
	ep = NewEndpoint(pcA, newKey(t), nil)
	t.Cleanup(func() { ep.Close() })
	return ep, ln
}

// earlyExchange dials early, writes msg on a new stream at once, and has
// the listener's side echo it. It returns when the listener read msg and
// when the dialer read the echo, both since the dial, and both sessions.
func earlyExchange(t *testing.T, ep *Endpoint, ln *Listener, msg string) (read, echoed time.Duration, client, server *Session) {
	t.Helper()
	ctx := context.Background()
	start := time.Now()
	addr := netip.MustParseAddrPort(ln.Addr().String())
	client, err := ep.DialEarly(addr, ln.Endpoint().PublicKey())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		client.Close()
		<-client.Done()
	})
	st, err := client.OpenStream(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := st.Write([]byte(msg)); err != nil {
		t.Fatal(err)
	}
	server, err = ln.Accept(ctx)
	if err != nil {
		t.Fatal(err)
	}
	sst, err := server.AcceptStream(ctx)
	if err != nil {
		t.Fatal(err)
	}
	got := make([]byte, len(msg))
	if _, err := io.ReadFull(sst, got); err != nil || string(got) != msg {
		t.Fatalf("listener read %q, %v; want %q", got, err, msg)
	}
	read = time.Since(start)
	if _, err := sst.Write(got); err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadFull(st, got); err != nil || string(got) != msg {
		t.Fatalf("dialer read echo %q, %v; want %q", got, err, msg)
	}
	echoed = time.Since(start)
	if err := client.Handshake(ctx); err != nil {
		t.Fatalf("Handshake: %v", err)
	}
	return read, echoed, client, server
}

// TestEarlyDataOneWay: data written right after DialEarly reaches the
// listener with the initiation, one way (25 ms), and its echo is back in
// one round trip; a Dial that waits for the response takes a round trip
// more before the first byte can leave.
func TestEarlyDataOneWay(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ep, ln := earlyWorld(t, nil)
		read, echoed, client, server := earlyExchange(t, ep, ln, "hello")
		if read > 26*time.Millisecond {
			t.Errorf("listener read the first message %v after the dial; want one way, 25 ms", read)
		}
		if echoed > 51*time.Millisecond {
			t.Errorf("echo back %v after the dial; want one round trip, 50 ms", echoed)
		}
		if n := client.Stats().EarlyPacketsSent; n == 0 {
			t.Error("dialer sent no early data packet")
		}
		if n := server.Stats().EarlyPacketsReceived; n == 0 {
			t.Error("listener took in no early data packet")
		}
	})
}

// TestEarlyDataLostIsResent: when every early packet is lost, the data is
// sent again under the session keys and arrives once, byte-exact.
func TestEarlyDataLostIsResent(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ep, ln := earlyWorld(t, func(pc net.PacketConn, b []byte, addr net.Addr) (int, error) {
			if wire.PacketType(b[1]) == wire.TypeEarlyData {
				return len(b), nil
			}
			return pc.WriteTo(b, addr)
		})
		read, _, client, server := earlyExchange(t, ep, ln, "hello, again")
		if client.Stats().EarlyPacketsSent == 0 {
			t.Error("dialer sent no early data packet")
		}
		if n := server.Stats().EarlyPacketsReceived; n != 0 {
			t.Errorf("listener took in %d early packets; all were dropped", n)
		}
		if read < 75*time.Millisecond {
			t.Errorf("read after %v: cannot be before the handshake and a resend", read)
		}
	})
}

// TestEarlyDataAheadOfInitiation: early data that overtakes its initiation
// is parked until the initiation is accepted, then read.
func TestEarlyDataAheadOfInitiation(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var held []byte
		ep, ln := earlyWorld(t, func(pc net.PacketConn, b []byte, addr net.Addr) (int, error) {
			switch {
			case wire.PacketType(b[1]) == wire.TypeInitiation && held == nil:
				held = append([]byte(nil), b...)
				return len(b), nil
			case wire.PacketType(b[1]) == wire.TypeEarlyData && held != nil:
				pc.WriteTo(b, addr)
				b, held = held, []byte{}
			}
			return pc.WriteTo(b, addr)
		})
		read, _, _, server := earlyExchange(t, ep, ln, "overtaken")
		if n := server.Stats().EarlyPacketsReceived; n == 0 {
			t.Error("listener took in no early packet: the parked one was lost")
		}
		if read > 26*time.Millisecond {
			t.Errorf("read after %v; want one way, 25 ms", read)
		}
	})
}

// TestEarlyDataReplayRefused: an attacker who recorded an initiation and
// its early data and sends them again gets no session, and the early data
// reaches no application.
func TestEarlyDataReplayRefused(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var recorded [][]byte
		var raw net.PacketConn // alice's socket, under the hook
		ep, ln := earlyWorld(t, func(pc net.PacketConn, b []byte, addr net.Addr) (int, error) {
			raw = pc
			if t := wire.PacketType(b[1]); t == wire.TypeInitiation || t == wire.TypeEarlyData {
				recorded = append(recorded, append([]byte(nil), b...))
			}
			return pc.WriteTo(b, addr)
		})
		_, _, _, server := earlyExchange(t, ep, ln, "pay alice 10")
		// A second on, the listener has heard alice's data packets: its
		// session is confirmed, and an initiation with the same ephemeral
		// key is no retransmission but a replay.
		time.Sleep(time.Second)
		synctest.Wait()
		early := 0
		for _, b := range recorded {
			if wire.PacketType(b[1]) == wire.TypeEarlyData {
				early++
			}
		}
		if early == 0 || wire.PacketType(recorded[0][1]) != wire.TypeInitiation {
			t.Fatalf("recorded %d packets, %d early; want the initiation and early data", len(recorded), early)
		}

		e := ln.Endpoint()
		before := e.Stats()
		for _, b := range recorded {
			if _, err := raw.WriteTo(b, ln.Addr()); err != nil {
				t.Fatal(err)
			}
		}
		time.Sleep(time.Second) // virtual: far beyond the 25 ms the replay takes
		synctest.Wait()
		after := e.Stats()
		if after.Received < before.Received+uint64(len(recorded)) || after.DroppedReplay == before.DroppedReplay {
			t.Fatalf("replay not refused: stats %+v, before %+v", after, before)
		}
		e.mu.Lock()
		queued, parked := len(e.acceptQ), len(e.parked)
		e.mu.Unlock()
		if queued != 0 {
			t.Errorf("%d sessions accepted from the replay", queued)
		}
		if parked == 0 {
			t.Error("the replayed early data was not held back (parked) but went somewhere")
		}
		if n := server.Stats().EarlyPacketsReceived; n != uint64(early) {
			t.Errorf("the first session took in %d early packets; want the %d of the dial only", n, early)
		}
	})
}
