package natlab

import (
	"net"
	"net/netip"
	"testing"
	"time"
)

// BenchmarkThroughput measures datagrams per second from one sender to one
// reader, and allocations per datagram, over an ideal link and over
// rate-limited ones. The sender keeps at most window datagrams unread, fewer
// than the link's queue and the socket buffer hold, so nothing is dropped
// and the figures are the lab's own cost (ideal) or the emulated rate.
//
// Measured on the project's 2-core machine (shared with other work):
// ideal 1200 B ≈ 3.2–3.8 M pkts/s; 1 Gbit/s with 1200 B ≈ 101.7 k pkts/s
// (976 Mbit/s of payload, the line rate); 1 Gbit/s with 64 B ≈ 1.35 M
// pkts/s (line rate); 0 allocs/op everywhere.
func BenchmarkThroughput(b *testing.B) {
	for _, bc := range []struct {
		name   string
		link   Link
		size   int
		window int
		iface  bool // use the net.PacketConn methods rather than the AddrPort ones
	}{
		{name: "ideal/1200B", size: 1200, window: 256},
		{name: "ideal/1200B/PacketConn", size: 1200, window: 256, iface: true},
		{name: "ideal/64B", size: 64, window: 256},
		{name: "1Gbps/1200B", link: Link{Rate: 1e9}, size: 1200, window: 1024},
		{name: "1Gbps/64B", link: Link{Rate: 1e9}, size: 64, window: 4096},
		{name: "1Gbps+10ms/1200B", link: Link{Rate: 1e9, Delay: 10 * time.Millisecond}, size: 1200, window: 1800},
	} {
		b.Run(bc.name, func(b *testing.B) {
			benchThroughput(b, bc.link, bc.size, bc.window, bc.iface)
		})
	}
}

func benchThroughput(b *testing.B, l Link, size, window int, iface bool) {
	w, ha, hb := Pair(l)
	defer w.Close()
	ca, cb := listen(b, ha, ":0"), listen(b, hb, ":0")
	dst := addrOf(cb)
	udst := net.UDPAddrFromAddrPort(dst)

	// tokens is the window: the sender takes one per datagram, the reader
	// gives one back per datagram read. Nothing should be lost; if anything
	// is, its token comes back by timeout so the benchmark cannot stall.
	tokens := make(chan struct{}, window)
	for range window {
		tokens <- struct{}{}
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		buf := make([]byte, 65536)
		for {
			var err error
			if iface {
				_, _, err = cb.ReadFrom(buf)
			} else {
				_, _, err = cb.ReadFromUDPAddrPort(buf)
			}
			if err != nil {
				return
			}
			select {
			case tokens <- struct{}{}:
			default:
			}
		}
	}()

	payload := make([]byte, size)
	timeout := time.NewTimer(time.Hour)
	b.ReportAllocs()
	b.SetBytes(int64(size))
	b.ResetTimer()
	start := time.Now()
	for range b.N {
		select {
		case <-tokens:
		default:
			timeout.Reset(50 * time.Millisecond)
			select {
			case <-tokens:
			case <-timeout.C:
			}
			timeout.Stop()
		}
		var err error
		if iface {
			_, err = ca.WriteTo(payload, udst)
		} else {
			_, err = ca.WriteToUDPAddrPort(payload, dst)
		}
		if err != nil {
			b.Fatal(err)
		}
	}
	// Wait for the datagrams in flight, then stop the reader.
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); {
		st := hb.Stats().Sockets
		drops := ha.Stats().Link.Up.Drops()
		cb.mu.Lock()
		queued := cb.q.len()
		cb.mu.Unlock()
		if st.Packets+drops >= uint64(b.N) && queued == 0 {
			break
		}
		time.Sleep(100 * time.Microsecond)
	}
	elapsed := time.Since(start)
	b.StopTimer()
	cb.Close()
	<-done

	st := hb.Stats().Sockets
	b.ReportMetric(float64(st.Packets)/elapsed.Seconds(), "pkts/s")
	b.ReportMetric(float64(st.Bytes)*8/elapsed.Seconds()/1e6, "Mbit/s")
	if d := w.Stats().Total().Drops(); d != 0 {
		b.Fatalf("%d datagrams dropped: %v", d, w.Stats().Total())
	}
}

// BenchmarkNATForwarding measures the cost of a datagram through a NAT with
// address-and-port-dependent filtering on an ideal path.
func BenchmarkNATForwarding(b *testing.B) {
	w := New(Config{})
	defer w.Close()
	inet := w.NewNetwork("internet", netip.MustParsePrefix("203.0.113.0/24"))
	lan := w.NewNetwork("lan", netip.MustParsePrefix("192.168.1.0/24"))
	w.NewNAT("nat", NATConfig{Inside: lan, Outside: inet, Filtering: AddressAndPortDependent})
	cc := listen(b, w.NewHost("client", lan, Link{}), ":0")
	sc := listen(b, w.NewHost("server", inet, Link{}), ":0")
	dst := addrOf(sc)
	payload := make([]byte, 1200)
	buf := make([]byte, 2048)
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		// One datagram each way: out through the mapping, back through the
		// filter. Both are delivered before WriteTo returns.
		if _, err := cc.WriteToUDPAddrPort(payload, dst); err != nil {
			b.Fatal(err)
		}
		_, from, err := sc.ReadFromUDPAddrPort(buf)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := sc.WriteToUDPAddrPort(payload, from); err != nil {
			b.Fatal(err)
		}
		if _, _, err := cc.ReadFromUDPAddrPort(buf); err != nil {
			b.Fatal(err)
		}
	}
}
