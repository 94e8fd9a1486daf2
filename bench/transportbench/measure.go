package transportbench

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"slices"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/parley-p2p/parley/transport"
)

// BufferSize is the size of every Write and Read in the bulk test, for every
// transport.
const BufferSize = 64 << 10

// castagnoli is CRC-32C, computed in hardware on amd64 and arm64, so that
// checking the bytes costs little next to moving them.
var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// bulkRun is one single-stream transfer: the client writes for warmup +
// dur, the server counts what arrives, and the figures are taken over dur.
type bulkRun struct {
	window   time.Duration // measured span, wall or virtual
	bytes    int64         // received by the server in the window
	total    int64         // written, and verified received, in all
	cpu      time.Duration // process CPU in the window
	checksum bool
	parley   *transport.SessionStats // the sender's, for Parley
	mss      int                     // the sender's MSS, for TCP
}

// runBulk moves data one way over one stream of one connection. With check
// set, both ends hash every byte and the hashes must match; the byte count
// is always checked. Sleeps use the time package, so under synctest the
// window is virtual time.
func runBulk(ctx context.Context, t Transport, n *Net, warmup, dur time.Duration, check bool) (r bulkRun, err error) {
	srv, cli, err := t.Start(ctx, n)
	if err != nil {
		return r, fmt.Errorf("%s: start: %w", t.Name, err)
	}
	defer srv.Close()
	defer cli.Close()

	type recvResult struct {
		n   int64
		sum uint32
		err error
	}
	var received atomic.Int64
	recvDone := make(chan recvResult, 1)
	var sconn Conn
	sconnReady := make(chan struct{})
	go func() {
		var res recvResult
		defer func() { recvDone <- res }()
		c, err := srv.Accept(ctx)
		if err != nil {
			res.err = fmt.Errorf("accept: %w", err)
			close(sconnReady)
			return
		}
		sconn = c
		close(sconnReady)
		st, err := c.AcceptStream(ctx)
		if err != nil {
			res.err = fmt.Errorf("accept stream: %w", err)
			return
		}
		buf := make([]byte, BufferSize)
		for {
			k, err := st.Read(buf)
			if k > 0 {
				received.Add(int64(k))
				if check {
					res.sum = crc32.Update(res.sum, castagnoli, buf[:k])
				}
			}
			if err == io.EOF {
				break
			}
			if err != nil {
				res.err = fmt.Errorf("read: %w", err)
				break
			}
		}
		res.n = received.Load()
		st.Close()
	}()

	conn, err := cli.Dial(ctx)
	if err != nil {
		return r, fmt.Errorf("%s: dial: %w", t.Name, err)
	}
	defer conn.Close()
	st, err := conn.OpenStream(ctx)
	if err != nil {
		return r, fmt.Errorf("%s: open stream: %w", t.Name, err)
	}

	var stop atomic.Bool
	var sent int64
	var sentSum uint32
	var werr error
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		buf := make([]byte, BufferSize)
		rand.Read(buf)
		for seq := uint64(0); !stop.Load(); seq++ {
			if check {
				// Vary the content so that a repeated or misplaced
				// buffer changes the hash.
				binary.LittleEndian.PutUint64(buf, seq)
				sentSum = crc32.Update(sentSum, castagnoli, buf)
			}
			k, err := st.Write(buf)
			sent += int64(k)
			if err != nil {
				werr = err
				return
			}
		}
	}()

	sleep(ctx, warmup)
	b0, c0, t0 := received.Load(), cpuTime(), time.Now()
	sleep(ctx, dur)
	b1, c1, t1 := received.Load(), cpuTime(), time.Now()
	stop.Store(true)
	wg.Wait()
	if werr != nil {
		return r, fmt.Errorf("%s: write: %w", t.Name, werr)
	}
	if err := st.CloseWrite(); err != nil {
		return r, fmt.Errorf("%s: close write: %w", t.Name, err)
	}
	var res recvResult
	select {
	case res = <-recvDone:
	case <-time.After(2 * time.Minute):
		return r, fmt.Errorf("%s: receiver did not finish: %d of %d bytes", t.Name, received.Load(), sent)
	}
	<-sconnReady
	if sconn != nil {
		defer sconn.Close()
	}
	if res.err != nil {
		return r, fmt.Errorf("%s: %w", t.Name, res.err)
	}
	if res.n != sent {
		return r, fmt.Errorf("%s: received %d bytes, sent %d", t.Name, res.n, sent)
	}
	if check && res.sum != sentSum {
		return r, fmt.Errorf("%s: received bytes differ from those sent (CRC-32C %08x, want %08x)", t.Name, res.sum, sentSum)
	}
	r = bulkRun{window: t1.Sub(t0), bytes: b1 - b0, total: sent, cpu: c1 - c0, checksum: check}
	if ps, ok := conn.(interface{ Stats() transport.SessionStats }); ok {
		s := ps.Stats()
		r.parley = &s
	}
	if m, ok := conn.(interface{ MSS() int }); ok {
		r.mss = m.MSS()
	}
	return r, nil
}

// sleep waits for d or until ctx ends.
func sleep(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
	case <-ctx.Done():
	}
}

// cpuTime is the CPU time, user and system, used so far by this process:
// both ends of every transport run in it, so this is the cost of both.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// IdleCPU measures the process's CPU use per second of wall time while it
// does nothing (the runtime's background work), to subtract from the bulk
// test's CPU figures.
func IdleCPU(d time.Duration) float64 {
	c0, t0 := cpuTime(), time.Now()
	time.Sleep(d)
	return float64(cpuTime()-c0) / float64(time.Since(t0))
}

// BulkResult is one transport's loopback bulk figure.
type BulkResult struct {
	Transport       string  `json:"transport"`
	Mbps            float64 `json:"goodput_mbps"`
	CPUSecondsPerGB float64 `json:"cpu_seconds_per_gb"`
	WindowSeconds   float64 `json:"window_seconds"`
	BytesInWindow   int64   `json:"bytes_in_window"`
	BytesVerified   int64   `json:"bytes_verified"`
	Checksummed     bool    `json:"checksummed"`
	// MSS is TCP's send MSS as the kernel reports it (TCP_INFO).
	MSS int `json:"tcp_mss,omitempty"`
	// PayloadPerPacket is Parley's stream bytes per packet sent, and
	// UDPPerPacket its mean UDP payload; PacketsLost its declared losses.
	PayloadPerPacket float64 `json:"payload_per_packet,omitempty"`
	UDPPerPacket     float64 `json:"udp_payload_per_packet,omitempty"`
	PacketsLost      uint64  `json:"packets_lost,omitempty"`
}

// Bulk measures single-stream goodput and CPU per gigabyte over loopback.
// idle is IdleCPU's figure.
func Bulk(ctx context.Context, t Transport, warmup, dur time.Duration, check bool, idle float64) (BulkResult, error) {
	r, err := runBulk(ctx, t, Loopback(), warmup, dur, check)
	if err != nil {
		return BulkResult{}, err
	}
	cpu := r.cpu.Seconds() - idle*r.window.Seconds()
	res := BulkResult{
		Transport:       t.Name,
		Mbps:            float64(r.bytes) * 8 / r.window.Seconds() / 1e6,
		CPUSecondsPerGB: cpu / (float64(r.bytes) / 1e9),
		WindowSeconds:   r.window.Seconds(),
		BytesInWindow:   r.bytes,
		BytesVerified:   r.total,
		Checksummed:     r.checksum,
		MSS:             r.mss,
	}
	if s := r.parley; s != nil && s.PacketsSent > 0 {
		res.PayloadPerPacket = float64(r.total) / float64(s.PacketsSent)
		res.UDPPerPacket = float64(s.BytesSent) / float64(s.PacketsSent)
		res.PacketsLost = s.PacketsLost
	}
	return res, nil
}

// RRResult is one transport's request/response latency for one message size.
type RRResult struct {
	Transport string  `json:"transport"`
	Size      int     `json:"size"`
	P50us     float64 `json:"p50_us"`
	P99us     float64 `json:"p99_us"`
	Exchanges int     `json:"exchanges"`
	PerSecond float64 `json:"exchanges_per_second"`
}

// RequestResponse measures the latency of one exchange: the client writes
// size bytes, the server reads them all and writes size bytes back, and the
// client reads them all. Exchanges run back to back on one stream, for
// warmup and then dur.
func RequestResponse(ctx context.Context, t Transport, size int, warmup, dur time.Duration) (RRResult, error) {
	srv, cli, err := t.Start(ctx, Loopback())
	if err != nil {
		return RRResult{}, fmt.Errorf("%s: start: %w", t.Name, err)
	}
	defer srv.Close()
	defer cli.Close()
	srvErr := make(chan error, 1)
	go func() {
		c, err := srv.Accept(ctx)
		if err != nil {
			srvErr <- err
			return
		}
		defer c.Close()
		st, err := c.AcceptStream(ctx)
		if err != nil {
			srvErr <- err
			return
		}
		defer st.Close()
		buf := make([]byte, size)
		for {
			if _, err := io.ReadFull(st, buf); err != nil {
				if err == io.EOF {
					err = nil
				}
				srvErr <- err
				return
			}
			if _, err := st.Write(buf); err != nil {
				srvErr <- err
				return
			}
		}
	}()
	conn, err := cli.Dial(ctx)
	if err != nil {
		return RRResult{}, fmt.Errorf("%s: dial: %w", t.Name, err)
	}
	defer conn.Close()
	st, err := conn.OpenStream(ctx)
	if err != nil {
		return RRResult{}, fmt.Errorf("%s: open stream: %w", t.Name, err)
	}
	req := make([]byte, size)
	rand.Read(req)
	resp := make([]byte, size)
	exchange := func() (time.Duration, error) {
		start := time.Now()
		if _, err := st.Write(req); err != nil {
			return 0, err
		}
		if _, err := io.ReadFull(st, resp); err != nil {
			return 0, err
		}
		return time.Since(start), nil
	}
	for end := time.Now().Add(warmup); time.Now().Before(end); {
		if _, err := exchange(); err != nil {
			return RRResult{}, fmt.Errorf("%s: warm-up exchange: %w", t.Name, err)
		}
	}
	var lat []time.Duration
	start := time.Now()
	for end := start.Add(dur); time.Now().Before(end); {
		d, err := exchange()
		if err != nil {
			return RRResult{}, fmt.Errorf("%s: exchange: %w", t.Name, err)
		}
		lat = append(lat, d)
	}
	elapsed := time.Since(start)
	if !slices.Equal(req, resp) {
		return RRResult{}, fmt.Errorf("%s: the response differs from the request", t.Name)
	}
	st.CloseWrite()
	if err := <-srvErr; err != nil {
		return RRResult{}, fmt.Errorf("%s: server: %w", t.Name, err)
	}
	slices.Sort(lat)
	return RRResult{
		Transport: t.Name,
		Size:      size,
		P50us:     us(percentile(lat, 0.50)),
		P99us:     us(percentile(lat, 0.99)),
		Exchanges: len(lat),
		PerSecond: float64(len(lat)) / elapsed.Seconds(),
	}, nil
}

func us(d time.Duration) float64 { return float64(d) / 1e3 }

// percentile returns the p-quantile of sorted samples (nearest rank).
func percentile(sorted []time.Duration, p float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	i := int(p*float64(len(sorted))+0.5) - 1
	return sorted[max(0, min(i, len(sorted)-1))]
}

// HandshakeResult is one transport's rate of mutually authenticated
// handshakes.
type HandshakeResult struct {
	Transport   string  `json:"transport"`
	PerSecond   float64 `json:"per_second"`
	Handshakes  int64   `json:"handshakes"`
	Concurrency int     `json:"concurrency"`
	// ManySources: each dial from a new socket on its own 127/8 address;
	// otherwise all from one client socket.
	ManySources bool `json:"many_sources"`
	// Failed counts dials that failed in the window (they are retried);
	// FirstError is the first failure of the whole run.
	Failed     int64  `json:"failed"`
	FirstError string `json:"first_error,omitempty"`
	// Parley's server: initiations refused (rate limit, full accept
	// queue) and cookie replies sent (the endpoint under load).
	Refused     uint64 `json:"refused,omitempty"`
	CookiesSent uint64 `json:"cookies_sent,omitempty"`
}

// Handshakes measures how many mutually authenticated connections per second
// a server accepts over loopback from conc concurrent dialers, each dialing,
// waiting for the handshake and closing in a loop: all from one client
// socket, or with manySources each from a new socket on a new source
// address, as many different clients would arrive. A handshake counts when
// the server's Accept returns it, which for every transport means the server
// has verified the client's key or certificate (and the client the
// server's, earlier).
func Handshakes(ctx context.Context, t Transport, conc int, manySources bool, warmup, dur time.Duration) (HandshakeResult, error) {
	n := Loopback()
	if manySources {
		n.ClientSource = ManySources()
	}
	srv, cli, err := t.Start(ctx, n)
	if err != nil {
		return HandshakeResult{}, fmt.Errorf("%s: start: %w", t.Name, err)
	}
	defer srv.Close()
	defer cli.Close()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var accepted atomic.Int64
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := srv.Accept(ctx)
			if err != nil {
				return
			}
			accepted.Add(1)
			c.Close()
		}
	}()
	// A dial that fails (a handshake that timed out) is counted and
	// retried: it is a finding, not a reason to stop.
	var failed atomic.Int64
	var firstErr atomic.Pointer[error]
	for range conc {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ctx.Err() == nil {
				dctx, dcancel := context.WithTimeout(ctx, 10*time.Second)
				c, err := cli.Dial(dctx)
				dcancel()
				if err != nil {
					if ctx.Err() == nil {
						failed.Add(1)
						firstErr.CompareAndSwap(nil, &err)
					}
					continue
				}
				c.Close()
			}
		}()
	}
	sleep(ctx, warmup)
	n0, f0, t0 := accepted.Load(), failed.Load(), time.Now()
	sleep(ctx, dur)
	n1, f1, t1 := accepted.Load(), failed.Load(), time.Now()
	cancel()
	wg.Wait()
	if n1 == n0 {
		err := errors.New("no handshake completed")
		if p := firstErr.Load(); p != nil {
			err = *p
		}
		return HandshakeResult{}, fmt.Errorf("%s: dial: %w", t.Name, err)
	}
	r := HandshakeResult{
		Transport:   t.Name,
		PerSecond:   float64(n1-n0) / t1.Sub(t0).Seconds(),
		Handshakes:  n1 - n0,
		Failed:      f1 - f0,
		Concurrency: conc,
		ManySources: manySources,
	}
	if p := firstErr.Load(); p != nil {
		r.FirstError = (*p).Error()
	}
	if ps, ok := srv.(interface {
		Stats() transport.EndpointStats
	}); ok {
		st := ps.Stats()
		r.Refused, r.CookiesSent = st.DroppedRefused, st.CookiesSent
	}
	return r, nil
}

// TTFBResult is one transport's time to first byte at an emulated RTT.
type TTFBResult struct {
	Transport string  `json:"transport"`
	RTTms     float64 `json:"rtt_ms"`
	Trials    int     `json:"trials"`
	// ServerFirst: from the start of Dial until the client reads the first
	// byte the server sends as soon as it has accepted the connection.
	ServerFirstMs   float64 `json:"server_first_ms"`
	ServerFirstRTTs float64 `json:"server_first_rtts"`
	// Request: from the start of Dial until the client reads the answer to
	// a one-byte request it sends as soon as Dial returns.
	RequestMs   float64 `json:"request_ms"`
	RequestRTTs float64 `json:"request_rtts"`
	// How the path was emulated: "natlab" or "delayed TCP".
	Path string `json:"path"`
}

// TTFB measures time to first byte of a new authenticated connection over
// path n, whose round-trip time is rtt, as the median of trials for each of
// the two patterns in TTFBResult.
func TTFB(ctx context.Context, t Transport, n *Net, path string, rtt time.Duration, trials int) (TTFBResult, error) {
	srv, cli, err := t.Start(ctx, n)
	if err != nil {
		return TTFBResult{}, fmt.Errorf("%s: start: %w", t.Name, err)
	}
	defer srv.Close()
	defer cli.Close()
	var first, req []time.Duration
	for i := range 2 * trials {
		serverFirst := i%2 == 0
		d, err := ttfbTrial(ctx, srv, cli, serverFirst)
		if err != nil {
			return TTFBResult{}, fmt.Errorf("%s: trial %d: %w", t.Name, i, err)
		}
		if serverFirst {
			first = append(first, d)
		} else {
			req = append(req, d)
		}
	}
	slices.Sort(first)
	slices.Sort(req)
	ms := func(d time.Duration) float64 { return float64(d) / 1e6 }
	r := TTFBResult{
		Transport:     t.Name,
		RTTms:         ms(rtt),
		Trials:        trials,
		ServerFirstMs: ms(percentile(first, 0.5)),
		RequestMs:     ms(percentile(req, 0.5)),
		Path:          path,
	}
	r.ServerFirstRTTs = r.ServerFirstMs / r.RTTms
	r.RequestRTTs = r.RequestMs / r.RTTms
	return r, nil
}

func ttfbTrial(ctx context.Context, srv Server, cli Client, serverFirst bool) (time.Duration, error) {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	srvErr := make(chan error, 1)
	release := make(chan struct{}) // the server keeps its end open until the client has read
	go func() {
		srvErr <- func() error {
			c, err := srv.Accept(ctx)
			if err != nil {
				return err
			}
			defer c.Close()
			var st Stream
			b := []byte{1}
			if serverFirst {
				if st, err = c.OpenStream(ctx); err != nil {
					return err
				}
			} else {
				if st, err = c.AcceptStream(ctx); err != nil {
					return err
				}
				if _, err := io.ReadFull(st, b); err != nil {
					return err
				}
			}
			if _, err := st.Write(b); err != nil {
				return err
			}
			select {
			case <-release:
			case <-ctx.Done():
			}
			return nil
		}()
	}()
	start := time.Now()
	d, err := func() (time.Duration, error) {
		c, err := cli.Dial(ctx)
		if err != nil {
			return 0, err
		}
		defer c.Close()
		var st Stream
		b := []byte{1}
		if serverFirst {
			if st, err = c.AcceptStream(ctx); err != nil {
				return 0, err
			}
		} else {
			if st, err = c.OpenStream(ctx); err != nil {
				return 0, err
			}
			if _, err := st.Write(b); err != nil {
				return 0, err
			}
		}
		if _, err := io.ReadFull(st, b); err != nil {
			return 0, err
		}
		return time.Since(start), nil
	}()
	close(release)
	if serr := <-srvErr; err == nil && serr != nil {
		err = fmt.Errorf("server: %w", serr)
	}
	return d, err
}
