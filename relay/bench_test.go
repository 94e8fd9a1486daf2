package relay

import (
	"bufio"
	"context"
	"crypto/ed25519"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"io"
	"math"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"runtime"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/net/ipv4"

	"github.com/parley-p2p/parley/directory/ticket"
	"github.com/parley-p2p/parley/transport"
)

// BenchmarkForward measures the forwarding path alone (SEND in, DELIVER
// out, on a socket that discards), on one goroutine: what one core can
// forward before the kernel's share. "N" forwards one packet per
// HandlePacket call, as for a TCP side; "batch/N" forwards batches of
// batchSize as the Mux hands them over, each written by one writeBatch
// (the socket here takes one packet per call).
// forwardRig is a relay with one channel whose sides are bound and
// validated, without a rate limit, and a SEND of size bytes on it from A.
func forwardRig(b *testing.B, size int) (*rig, []byte) {
	// A real clock, so that the rate limit's bucket refills.
	r := newRig(b, func(c *Config) { c.Now = time.Now })
	r.clock.t = time.Now()
	tk := r.ticket(func(tk *ticket.Ticket) { tk.Rate = 1<<32 - 1; tk.Budget = 1 << 62 })
	r.srv.HandlePacket(appendAllocate(nil, 0, tk, 0), addrA)
	r.srv.HandlePacket(appendAllocate(nil, 1, tk, 0), addrB)
	sent := r.conn.take()
	h, _, _ := parseHeader(sent[0].b)
	confirmAt(r.srv, h.channel, 0, addrA)
	confirmAt(r.srv, h.channel, 1, addrB)
	r.conn.keep = false
	// One core forwards faster than a ticket's largest rate (2^32-1 B/s):
	// lift the limit, keeping its arithmetic.
	for _, a := range r.srv.byID {
		a.rate, a.burst, a.tokens = math.Inf(1), math.Inf(1), math.Inf(1)
	}
	return r, sendPkt(h.channel, make([]byte, size))
}

func BenchmarkForward(b *testing.B) {
	for _, size := range []int{1232, 1452} {
		b.Run(fmt.Sprint(size), func(b *testing.B) {
			r, pkt := forwardRig(b, size)
			b.SetBytes(int64(size))
			b.ReportAllocs()
			for b.Loop() {
				r.srv.HandlePacket(pkt, addrA)
			}
			if st := r.srv.Stats(); st.Drops() != 0 || st.Forwarded == 0 {
				b.Fatalf("stats %+v", st)
			}
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "pkt/s")
		})
	}
	for _, size := range []int{1232, 1452} {
		b.Run(fmt.Sprint("batch/", size), func(b *testing.B) {
			r, pkt := forwardRig(b, size)
			slots := make([][]byte, batchSize)
			for i := range slots {
				slots[i] = make([]byte, len(pkt))
			}
			var tx txBatch
			b.SetBytes(int64(size) * batchSize)
			b.ReportAllocs()
			for b.Loop() {
				for _, s := range slots {
					copy(s, pkt[:HeaderSize]) // the Mux reads a fresh SEND
					r.srv.handleBatched(s, addrA, &tx)
				}
				r.srv.flush(&tx)
			}
			if st := r.srv.Stats(); st.Drops() != 0 || st.Forwarded == 0 {
				b.Fatalf("stats %+v", st)
			}
			b.ReportMetric(float64(b.N)*batchSize/b.Elapsed().Seconds(), "pkt/s")
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/batchSize, "ns/pkt")
		})
	}
}

// TestRelayProcess is not a test: it is the relay process of the loopback
// benchmarks, run by them with GOMAXPROCS=1. It serves one UDP socket as a
// supernode does, with a Mux whose reader hands relay packets to the
// Server, until its stdin closes.
func TestRelayProcess(t *testing.T) {
	if os.Getenv("PARLEY_RELAY_PROCESS") == "" {
		t.Skip("the relay process of BenchmarkRelayLoopback")
	}
	dir, _ := hex.DecodeString(os.Getenv("PARLEY_RELAY_DIRKEY"))
	idb, _ := hex.DecodeString(os.Getenv("PARLEY_RELAY_ID"))
	var id [32]byte
	copy(id[:], idb)
	pc, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	pc.SetReadBuffer(4 << 20)
	pc.SetWriteBuffer(4 << 20)
	srv := NewServer(Config{DirectoryKey: dir, Identity: id}, pc)
	mux := NewMux(pc, nil)
	mux.ServeRelay(srv)
	fmt.Printf("relay-addr %v gomaxprocs %d\n", pc.LocalAddr(), runtime.GOMAXPROCS(0))
	io.Copy(io.Discard, os.Stdin)
	mux.Close()
	pc.Close()
}

// relayProc is a relay process started by relayProcess.
type relayProc struct {
	addr *net.UDPAddr
	dir  ed25519.PrivateKey // signs its tickets
	id   [32]byte           // its device key
	pid  int
}

// relayProcess starts TestRelayProcess in a child process limited to one
// core.
func relayProcess(b *testing.B) *relayProc {
	pub, dir, _ := ed25519.GenerateKey(nil)
	p := &relayProc{dir: dir}
	p.id[0] = 'R'
	cmd := exec.Command(os.Args[0], "-test.run=^TestRelayProcess$")
	cmd.Env = append(os.Environ(), "PARLEY_RELAY_PROCESS=1", "GOMAXPROCS=1",
		"PARLEY_RELAY_DIRKEY="+hex.EncodeToString(pub), "PARLEY_RELAY_ID="+hex.EncodeToString(p.id[:]))
	stdin, _ := cmd.StdinPipe()
	stdout, _ := cmd.StdoutPipe()
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	p.pid = cmd.Process.Pid
	b.Cleanup(func() {
		stdin.Close()
		cmd.Wait()
	})
	sc := bufio.NewScanner(stdout)
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) >= 4 && f[0] == "relay-addr" {
			if f[3] != "1" {
				b.Fatalf("relay process runs with GOMAXPROCS=%s", f[3])
			}
			ap, err := netip.ParseAddrPort(f[1])
			if err != nil {
				b.Fatal(err)
			}
			go io.Copy(io.Discard, stdout)
			p.addr = net.UDPAddrFromAddrPort(ap)
			return p
		}
	}
	b.Fatal("relay process did not start")
	return nil
}

// cpu returns the CPU time the relay process has used, user and system
// (which includes the kernel's packet processing done on its behalf), or
// -1 if /proc does not say.
func (p *relayProc) cpu() time.Duration {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", p.pid))
	if err != nil {
		return -1
	}
	// Fields after the command name, which is in parentheses: utime and
	// stime are the 12th and 13th, in clock ticks (USER_HZ, 100).
	i := strings.LastIndexByte(string(b), ')')
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 13 {
		return -1
	}
	var ticks int64
	for _, s := range f[11:13] {
		var v int64
		fmt.Sscan(s, &v)
		ticks += v
	}
	return time.Duration(ticks) * (time.Second / 100)
}

// rawAllocate binds side of tk from pc and returns the channel ID.
func rawAllocate(t testing.TB, pc *net.UDPConn, relay *net.UDPAddr, side byte, tk []byte) uint64 {
	id, _ := rawAllocated(t, pc, relay, side, tk)
	return id
}

// rawAllocated binds side of tk from pc with an unpadded ALLOCATE, and
// validates pc's address with a CONFIRM, as a client does; it returns the
// channel ID and the ALLOCATED. What follows the ALLOCATED stays in pc.
func rawAllocated(t testing.TB, pc *net.UDPConn, relay *net.UDPAddr, side byte, tk []byte) (uint64, allocatedBody) {
	t.Helper()
	id, a := rawAllocatedUnconfirmed(t, pc, relay, side, tk, 0)
	if _, err := pc.WriteTo(appendConfirm(nil, id, confirmBody{side: side, token: a.token}), relay); err != nil {
		t.Fatal(err)
	}
	return id, a
}

// rawAllocatedUnconfirmed binds side of tk from pc with an ALLOCATE padded
// to size bytes (0: not padded), and returns the channel ID and the
// ALLOCATED, without CONFIRM: pc's address stays unvalidated.
func rawAllocatedUnconfirmed(t testing.TB, pc *net.UDPConn, relay *net.UDPAddr, side byte, tk []byte, size int) (uint64, allocatedBody) {
	t.Helper()
	buf := make([]byte, 2048)
	for range 50 {
		pc.WriteTo(appendAllocate(nil, side, tk, size), relay)
		pc.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
		n, _, err := pc.ReadFrom(buf)
		if err != nil {
			continue
		}
		if h, body, err := parseHeader(buf[:n]); err == nil && h.typ == TypeAllocated {
			pc.SetReadDeadline(time.Time{})
			a, err := parseAllocated(body)
			if err != nil {
				t.Fatal(err)
			}
			return h.channel, a
		}
	}
	t.Fatal("no ALLOCATED")
	return 0, allocatedBody{}
}

// relayPair starts a relay process and binds a channel between two
// loopback sockets.
func relayPair(b *testing.B) (relay *relayProc, pcA, pcB *net.UDPConn, id uint64) {
	relay = relayProcess(b)
	listen := func() *net.UDPConn {
		pc, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
		if err != nil {
			b.Fatal(err)
		}
		pc.SetReadBuffer(4 << 20)
		pc.SetWriteBuffer(4 << 20)
		b.Cleanup(func() { pc.Close() })
		return pc
	}
	pcA, pcB = listen(), listen()
	now := time.Now()
	tk := ticket.Sign(relay.dir, ticket.Ticket{IssuedAt: now, ExpiresAt: now.Add(time.Hour), Relay: relay.id, Budget: 1 << 62, Rate: 1<<32 - 1})
	id = rawAllocate(b, pcA, relay.addr, 0, tk)
	if id2 := rawAllocate(b, pcB, relay.addr, 1, tk); id2 != id {
		b.Fatalf("channels %x and %x", id, id2)
	}
	return relay, pcA, pcB, id
}

// BenchmarkRelayLoopback/goodput sends SENDs through a relay process
// (GOMAXPROCS=1) on loopback for 3 s, keeping a window of packets in
// flight, and counts what arrives at the other side.
func BenchmarkRelayLoopback(b *testing.B) {
	for _, size := range []int{1232, 1452} {
		b.Run(fmt.Sprintf("goodput/%d", size), func(b *testing.B) { benchGoodput(b, size) })
	}
	b.Run("latency", benchLatency)
}

func benchGoodput(b *testing.B, size int) {
	relay, pcA, pcB, id := relayPair(b)
	const window = 512 // packets: well within the 4 MiB socket buffers
	var recvPkts, recvBytes atomic.Int64
	stop := make(chan struct{})
	recvDone := make(chan struct{})
	progress := make(chan struct{}, 1) // the receiver got something
	go func() {
		defer close(recvDone)
		pc := ipv4.NewPacketConn(pcB)
		msgs := make([]ipv4.Message, 64)
		for i := range msgs {
			msgs[i].Buffers = [][]byte{make([]byte, 2048)}
		}
		for {
			pcB.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
			n, err := pc.ReadBatch(msgs, 0)
			if err != nil {
				n = 0 // a timeout: see whether to stop
			}
			for _, m := range msgs[:n] {
				recvBytes.Add(int64(m.N - HeaderSize))
			}
			recvPkts.Add(int64(n))
			select {
			case progress <- struct{}{}:
			default:
			}
			select {
			case <-stop:
				return
			default:
			}
		}
	}()
	pkt := sendPkt(id, make([]byte, size))
	pc := ipv4.NewPacketConn(pcA)
	msgs := make([]ipv4.Message, 32)
	for i := range msgs {
		msgs[i].Buffers = [][]byte{pkt}
		msgs[i].Addr = relay.addr
	}
	var sent, forgiven, forgives int64
	wait := time.NewTimer(time.Hour)
	defer wait.Stop()
	measure := func(d time.Duration) (pkts, bytes int64, el time.Duration) {
		p0, b0 := recvPkts.Load(), recvBytes.Load()
		start := time.Now()
		lastProgress, lastRecv := start, recvPkts.Load()
		for time.Since(start) < d {
			r := recvPkts.Load()
			if r != lastRecv {
				lastRecv, lastProgress = r, time.Now()
			}
			room := window - (sent - r - forgiven)
			if room < int64(len(msgs)) {
				if time.Since(lastProgress) > 5*time.Millisecond {
					forgiven = sent - r // packets lost: stop waiting for them
					forgives++
					lastProgress = time.Now()
				}
				// Wait for the receiver rather than spin: the relay
				// shares the machine's two cores with this process.
				wait.Reset(time.Millisecond)
				select {
				case <-progress:
				case <-wait.C:
				}
				continue
			}
			n, err := pc.WriteBatch(msgs, 0)
			if err != nil {
				b.Fatal(err)
			}
			sent += int64(n)
		}
		return recvPkts.Load() - p0, recvBytes.Load() - b0, time.Since(start)
	}
	measure(300 * time.Millisecond) // warm up
	b.ResetTimer()
	cpu0 := relay.cpu()
	pkts, bytes, el := measure(3 * time.Second)
	cpu := relay.cpu() - cpu0
	b.StopTimer()
	close(stop)
	<-recvDone
	b.ReportMetric(float64(bytes)*8/el.Seconds()/1e9, "Gbit/s")
	b.ReportMetric(float64(pkts)/el.Seconds(), "pkt/s")
	b.ReportMetric(float64(sent-recvPkts.Load())/float64(sent), "lost")
	if cpu0 >= 0 {
		// How busy the relay's core was, and what a packet cost it.
		b.ReportMetric(cpu.Seconds()/el.Seconds(), "relay-cores")
		b.ReportMetric(float64(cpu.Microseconds())/float64(pkts), "relay-µs/pkt")
	}
	b.Logf("load average %s; %d stalls of 5 ms", loadAverage(), forgives)
}

// benchLatency measures round trips of a 64-byte packet bounced by an
// echoing peer, directly and through the relay process, interleaved so
// that both see the same machine load. The relay adds two hops per round
// trip.
func benchLatency(b *testing.B) {
	relay, pcA, pcB, id := relayPair(b)
	bAddr := pcB.LocalAddr().(*net.UDPAddr)
	aAddr := pcA.LocalAddr().(*net.UDPAddr)
	// bob echoes: DELIVERs back through the relay, direct packets directly.
	echoDone := make(chan struct{})
	go func() {
		defer close(echoDone)
		buf := make([]byte, 2048)
		for {
			n, from, err := pcB.ReadFromUDPAddrPort(buf)
			if err != nil {
				return
			}
			if n > 1 && buf[0] == FormVersion {
				buf[offType] = byte(TypeSend)
				pcB.WriteToUDPAddrPort(buf[:n], from)
			} else {
				pcB.WriteTo(buf[:n], aAddr)
			}
		}
	}()
	b.Cleanup(func() {
		pcB.Close()
		<-echoDone
	})
	viaRelay := sendPkt(id, make([]byte, 64))
	direct := make([]byte, 64)
	buf := make([]byte, 2048)
	rtt := func(pkt []byte, to *net.UDPAddr) time.Duration {
		binary.BigEndian.PutUint64(pkt[len(pkt)-8:], uint64(time.Now().UnixNano()))
		start := time.Now()
		pcA.WriteTo(pkt, to)
		pcA.SetReadDeadline(time.Now().Add(time.Second))
		for {
			n, _, err := pcA.ReadFrom(buf)
			if err != nil {
				return -1
			}
			if n == len(pkt) && string(buf[n-8:n]) == string(pkt[len(pkt)-8:]) {
				return time.Since(start)
			}
		}
	}
	for range 1000 { // warm up
		rtt(viaRelay, relay.addr)
		rtt(direct, bAddr)
	}
	// One iteration is a round trip each way: -benchtime 3s gives tens of
	// thousands, enough for a p99.
	var rel, dir []time.Duration
	for b.Loop() {
		r, d := rtt(viaRelay, relay.addr), rtt(direct, bAddr)
		if r < 0 || d < 0 {
			continue // a lost packet
		}
		rel, dir = append(rel, r), append(dir, d)
	}
	if len(rel) < 100 {
		b.Fatalf("%d round trips: too few for a p99 (run with -benchtime 3s)", len(rel))
	}
	slices.Sort(rel)
	slices.Sort(dir)
	pct := func(s []time.Duration, p float64) float64 {
		return float64(s[int(float64(len(s)-1)*p)]) / 1e3
	}
	b.ReportMetric(pct(dir, 0.5), "direct-p50-µs")
	b.ReportMetric(pct(dir, 0.99), "direct-p99-µs")
	b.ReportMetric(pct(rel, 0.5), "relay-p50-µs")
	b.ReportMetric(pct(rel, 0.99), "relay-p99-µs")
	b.ReportMetric(pct(rel, 0.5)-pct(dir, 0.5), "added-p50-µs")
	b.ReportMetric(pct(rel, 0.99)-pct(dir, 0.99), "added-p99-µs")
	b.Logf("%d round trips each; load average %s", len(rel), loadAverage())
}

func loadAverage() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "unknown"
	}
	f := strings.Fields(string(b))
	return strings.Join(f[:min(3, len(f))], " ")
}

// TestMemoryPerSession allocates 10,000 channels, both sides bound, and
// measures the heap they hold: the target is under 100 MB.
func TestMemoryPerSession(t *testing.T) {
	if testing.Short() {
		t.Skip("signs and verifies 10,000 tickets")
	}
	const sessions = 10000
	r := newRig(t, nil)
	r.conn.keep = false
	tickets := make([][]byte, sessions)
	for i := range tickets {
		tickets[i] = r.ticket(func(tk *ticket.Ticket) { binary.BigEndian.PutUint32(tk.A[4:], uint32(i)) })
	}
	pkts := make([][2][]byte, sessions)
	for i, tk := range tickets {
		pkts[i] = [2][]byte{appendAllocate(nil, 0, tk, 0), appendAllocate(nil, 1, tk, 0)}
	}
	tickets = nil
	before := heap()
	for i := range pkts {
		ip := netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)})
		r.srv.HandlePacket(pkts[i][0], netip.AddrPortFrom(ip, 1000))
		r.srv.HandlePacket(pkts[i][1], netip.AddrPortFrom(ip, 2000))
	}
	after := heap()
	runtime.KeepAlive(pkts)
	if st := r.srv.Stats(); st.Allocations != sessions {
		t.Fatalf("%d allocations, want %d", st.Allocations, sessions)
	}
	total := int64(after) - int64(before)
	t.Logf("%d sessions hold %.2f MB: %d bytes per session", sessions, float64(total)/1e6, total/sessions)
	if total > 100e6 {
		t.Errorf("%d sessions hold %d bytes, want < 100 MB", sessions, total)
	}
}

func heap() uint64 {
	runtime.GC()
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapAlloc
}

// BenchmarkTransportLoopback runs a transport session between two peers on
// loopback, moving 64 MiB on one stream: on the bare sockets (raw), on
// Muxes directly, and on Muxes through an in-process relay (a third socket
// whose Mux serves the relay).
func BenchmarkTransportLoopback(b *testing.B) {
	for _, via := range []string{"raw", "direct", "relay"} {
		b.Run(via, func(b *testing.B) {
			r := newLoopRelay(b)
			var alice, bob *peer
			if via == "raw" {
				// No Mux: the transport on the sockets themselves (with
				// UDP GSO/GRO), for comparison.
				alice = &peer{key: newPrivateKey(b), pc: loopUDP(b)}
				bob = &peer{key: newPrivateKey(b), pc: loopUDP(b)}
			} else {
				alice, bob = newPeer(b, loopUDP(b)), newPeer(b, loopUDP(b))
			}
			var apc, bpc net.PacketConn = alice.pc, bob.pc
			if alice.mux != nil {
				apc, bpc = alice.mux, bob.mux
			}
			ctx := context.Background()
			to := bob.pc.LocalAddr().(*net.UDPAddr).AddrPort()
			if via == "relay" {
				tk := r.ticket(alice.key.Public(), bob.key.Public())
				chA, err := alice.client.Allocate(ctx, r.udp, 0, tk)
				if err != nil {
					b.Fatal(err)
				}
				if _, err := bob.client.Allocate(ctx, r.udp, 1, tk); err != nil {
					b.Fatal(err)
				}
				to = alice.mux.VirtualAddr(chA)
			}
			ln, err := transport.Listen(bpc, bob.key, nil)
			if err != nil {
				b.Fatal(err)
			}
			defer ln.Close()
			ep := transport.NewEndpoint(apc, alice.key, nil)
			defer ep.Close()
			cs, err := ep.Dial(ctx, to, bob.key.Public())
			if err != nil {
				b.Fatal(err)
			}
			defer cs.Close()
			ss, err := ln.Accept(ctx)
			if err != nil {
				b.Fatal(err)
			}
			const size = 64 << 20
			b.SetBytes(size)
			for b.Loop() {
				transferStreams(b, cs, ss, 1, size)
			}
			b.ReportMetric(float64(size)*8*float64(b.N)/b.Elapsed().Seconds()/1e6, "Mbit/s")
			b.Logf("relay %+v; load average %s", r.srv.Stats(), loadAverage())
		})
	}
}
