package transportbench

import (
	"context"
	"fmt"
	"io"
	"net"
	"testing"
	"testing/synctest"
	"time"

	"github.com/parley-p2p/parley/natlab"
)

// A GridPoint is one emulated link: a rate, a round-trip time and a random
// loss probability applied to each direction.
type GridPoint struct {
	RateMbps int           `json:"rate_mbps"`
	RTT      time.Duration `json:"rtt_ns"`
	Loss     float64       `json:"loss"`
}

func (p GridPoint) String() string {
	return fmt.Sprintf("%dMbit-%dms-%gpct", p.RateMbps, p.RTT.Milliseconds(), p.Loss*100)
}

// Grid is the grid of links: 100 Mbit/s and 1 Gbit/s × RTT 10 and
// 50 ms × loss 0, 0.1, 1, 2 and 5 %.
func Grid() []GridPoint {
	var g []GridPoint
	for _, rate := range []int{100, 1000} {
		for _, rtt := range []time.Duration{10 * time.Millisecond, 50 * time.Millisecond} {
			for _, loss := range []float64{0, 0.001, 0.01, 0.02, 0.05} {
				g = append(g, GridPoint{RateMbps: rate, RTT: rtt, Loss: loss})
			}
		}
	}
	return g
}

// GridResult is one transport's goodput on one link.
type GridResult struct {
	Transport string    `json:"transport"`
	Point     GridPoint `json:"link"`
	Mbps      float64   `json:"goodput_mbps"`
	Share     float64   `json:"share_of_link"` // goodput / link rate
	// PacketsLost is Parley's sender's count of packets declared lost.
	PacketsLost   uint64 `json:"packets_lost,omitempty"`
	BytesVerified int64  `json:"bytes_verified"`
	Error         string `json:"error,omitempty"`
}

// GridRun measures t's single-stream goodput on the link p, in virtual time:
// it creates a natlab pair inside a testing/synctest bubble, so the link's
// rate, delay and loss are exact to the nanosecond whatever the CPU does;
// the transports' own CPU cost does not count (time stands still while they
// compute). The sender is on the host whose link is p, so data and
// acknowledgements both cross it (each direction with p.Loss).
func GridRun(t *testing.T, tr Transport, p GridPoint, warmup, dur time.Duration, check bool, seed uint64) GridResult {
	res := GridResult{Transport: tr.Name, Point: p}
	synctest.Test(t, func(t *testing.T) {
		link := natlab.Link{Rate: int64(p.RateMbps) * 1e6, Delay: p.RTT / 2, Loss: p.Loss}
		w, a, b := natlab.NewPair(natlab.Config{Seed: seed}, link)
		defer w.Close()
		listen := func(h *natlab.Host) func() (net.PacketConn, error) {
			return func() (net.PacketConn, error) { return h.ListenPacket(context.Background(), "udp4", ":0") }
		}
		n := &Net{ServerPacket: listen(b), ClientPacket: listen(a), PacketSize: NatlabPacketSize}
		r, err := runBulk(context.Background(), tr, n, warmup, dur, check)
		if err != nil {
			res.Error = err.Error()
			return
		}
		res.Mbps = float64(r.bytes) * 8 / r.window.Seconds() / 1e6
		res.Share = res.Mbps / float64(p.RateMbps)
		res.BytesVerified = r.total
		if r.parley != nil {
			res.PacketsLost = r.parley.PacketsLost
		}
	})
	return res
}

// RunGrid measures every transport on every point, each in its own bubble,
// logging a line per point.
func RunGrid(t *testing.T, o Options, points []GridPoint, transports []Transport, log io.Writer) []GridResult {
	var out []GridResult
	for i, p := range points {
		for _, tr := range transports {
			start := time.Now()
			r := GridRun(t, tr, p, o.GridWarmup, o.GridDuration, o.Checksum, uint64(i+1))
			fmt.Fprintf(log, "natlab %v %s: %.1f%% of the link (%.1fs)\n", p, tr.Name, r.Share*100, time.Since(start).Seconds())
			if r.Error != "" {
				fmt.Fprintf(log, "  error: %s\n", r.Error)
			}
			out = append(out, r)
		}
	}
	return out
}
