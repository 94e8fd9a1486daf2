package transportbench

import (
	"context"
	"flag"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// quick is a smoke test's figures: long enough to move megabytes, short
// enough that the whole file runs in well under a minute.
var quick = Options{
	Warmup: 100 * time.Millisecond, Duration: 300 * time.Millisecond,
	GridWarmup: 200 * time.Millisecond, GridDuration: time.Second,
	TTFBTrials: 1, HandshakeConcurrency: 2, Checksum: true, Quick: true,
}

// TestBulkMovesVerifiedBytes checks that every loopback contestant moves
// data byte-exact (count and CRC-32C) and reports a positive rate.
func TestBulkMovesVerifiedBytes(t *testing.T) {
	for _, tr := range LoopbackTransports(1410) {
		t.Run(tr.Name, func(t *testing.T) {
			r, err := Bulk(context.Background(), tr, quick.Warmup, quick.Duration, true, 0)
			if err != nil {
				t.Fatal(err)
			}
			if r.BytesInWindow < 1<<20 || r.Mbps <= 0 || !r.Checksummed || r.BytesVerified < r.BytesInWindow {
				t.Errorf("implausible result %+v", r)
			}
			if tr.MSS > 0 && (r.MSS <= 0 || r.MSS > tr.MSS) {
				t.Errorf("MSS clamp %d not in effect: kernel reports %d", tr.MSS, r.MSS)
			}
			if tr.Kind == "parley" && (r.UDPPerPacket > LoopbackPacketSize || r.PayloadPerPacket < 1000) {
				t.Errorf("Parley packets: %.0f B UDP, %.0f B payload", r.UDPPerPacket, r.PayloadPerPacket)
			}
		})
	}
}

// TestRequestResponseAndHandshakes runs the latency and handshake tests
// briefly on each kind of transport.
func TestRequestResponseAndHandshakes(t *testing.T) {
	for _, tr := range []Transport{{Name: NameParley, Kind: "parley"}, {Name: NameQUIC, Kind: "quic"}, {Name: NameTLS, Kind: "tls"}} {
		t.Run(tr.Name, func(t *testing.T) {
			ctx := context.Background()
			rr, err := RequestResponse(ctx, tr, 4<<10, quick.Warmup, quick.Duration)
			if err != nil {
				t.Fatal(err)
			}
			if rr.Exchanges < 10 || rr.P50us <= 0 || rr.P99us < rr.P50us {
				t.Errorf("implausible result %+v", rr)
			}
			h, err := Handshakes(ctx, tr, quick.HandshakeConcurrency, true, quick.Warmup, quick.Duration)
			if err != nil {
				t.Fatal(err)
			}
			if h.Handshakes < 1 {
				t.Errorf("no handshakes: %+v", h)
			}
		})
	}
}

// TestTTFBDelayedTCP checks the emulated path: TCP + TLS 1.3 with client
// certificates needs three round trips before the server's first byte
// (SYN, TLS flight, client Finished), so at 20 ms RTT it cannot be faster
// than 60 ms, and on an idle loopback it is not much slower.
func TestTTFBDelayedTCP(t *testing.T) {
	const rtt = 20 * time.Millisecond
	r, err := TTFB(context.Background(), Transport{Name: NameTLS, Kind: "tls"}, &Net{TCPDelay: rtt / 2}, "delayed", rtt, 1)
	if err != nil {
		t.Fatal(err)
	}
	if r.ServerFirstRTTs < 3 || r.RequestRTTs < 3 {
		t.Errorf("TLS first byte after %.2f / %.2f RTTs, want ≥ 3", r.ServerFirstRTTs, r.RequestRTTs)
	}
}

// TestGridPoint runs one natlab point per transport in virtual time and
// checks that data arrived, byte-exact, at a plausible share of the link.
func TestGridPoint(t *testing.T) {
	p := GridPoint{RateMbps: 100, RTT: 10 * time.Millisecond, Loss: 0}
	var out strings.Builder
	res := RunGrid(t, quick, []GridPoint{p}, GridTransports(), &out)
	t.Log(out.String())
	if len(res) != len(GridTransports()) {
		t.Fatalf("%d results, want %d", len(res), len(GridTransports()))
	}
	for _, r := range res {
		if r.Error != "" {
			t.Errorf("%s: %s", r.Transport, r.Error)
		}
		// No loss and a window that leaves slow start: anything
		// working gets well over half the link; nothing beats it.
		if r.Share < 0.5 || r.Share > 1 {
			t.Errorf("%s: %.1f%% of the link", r.Transport, r.Share*100)
		}
	}
	if err := PlotGrid(res, filepath.Join(t.TempDir(), "grid.png")); err != nil {
		t.Fatal(err)
	}
}

// TestEvaluate checks targets against hand-made figures.
func TestEvaluate(t *testing.T) {
	r := &Report{
		Bulk: []BulkResult{
			{Transport: NameParley, Mbps: 3000, CPUSecondsPerGB: 1},
			{Transport: NameQUIC, Mbps: 1000, CPUSecondsPerGB: 3},
			{Transport: NameTLSClamped, Mbps: 5000},
		},
	}
	r.Evaluate()
	want := map[string]bool{
		"loopback goodput, Parley / quic-go":               true,
		"CPU per GB, Parley / quic-go":                     true,
		"loopback goodput, Parley / TCP+TLS (clamped MSS)": false,
	}
	if len(r.Targets) != len(want) {
		t.Fatalf("%d targets, want %d: %+v", len(r.Targets), len(want), r.Targets)
	}
	for _, tg := range r.Targets {
		if p, ok := want[tg.Name]; !ok || p != tg.Pass {
			t.Errorf("target %q pass=%v (value %.2f), want %v", tg.Name, tg.Pass, tg.Value, p)
		}
	}
}

// BenchmarkBulk runs the loopback bulk test per transport, for profiling:
//
//	go test -run '^$' -bench 'Bulk/Parley' -benchtime 1x -cpuprofile cpu.out ./transportbench
func BenchmarkBulk(b *testing.B) {
	for _, tr := range LoopbackTransports(1420) {
		b.Run(strings.ReplaceAll(tr.Name, " ", "_"), func(b *testing.B) {
			for b.Loop() {
				r, err := Bulk(context.Background(), tr, time.Second, 5*time.Second, false, 0)
				if err != nil {
					b.Fatal(err)
				}
				b.ReportMetric(r.Mbps, "Mbit/s")
				b.ReportMetric(r.CPUSecondsPerGB, "CPU-s/GB")
			}
		})
	}
}

var manySources = flag.Bool("many-sources", true, "BenchmarkHandshakes: dial each connection from its own source address")

// BenchmarkHandshakes runs the handshake test per transport, for profiling.
func BenchmarkHandshakes(b *testing.B) {
	for _, tr := range []Transport{{Name: NameParley, Kind: "parley"}, {Name: NameQUIC, Kind: "quic"}, {Name: NameTLS, Kind: "tls"}} {
		b.Run(tr.Name, func(b *testing.B) {
			for b.Loop() {
				r, err := Handshakes(context.Background(), tr, 4, *manySources, time.Second, 5*time.Second)
				if err != nil {
					b.Fatal(err)
				}
				b.ReportMetric(r.PerSecond, "handshakes/s")
				b.ReportMetric(float64(r.Failed), "failed")
			}
		})
	}
}

func TestThousands(t *testing.T) {
	for n, want := range map[int]string{0: "0", 999: "999", 1000: "1,000", 1234567: "1,234,567", -1000: "-1,000"} {
		if got := thousands(n); got != want {
			t.Errorf("thousands(%d) = %q, want %q", n, got, want)
		}
	}
}

// TestWriteMarkdown checks that every measured figure reaches the tables.
func TestWriteMarkdown(t *testing.T) {
	r := &Report{
		Bulk: []BulkResult{{Transport: NameParley, Mbps: 12345.6, CPUSecondsPerGB: 1.04}},
		RR:   []RRResult{{Transport: NameQUIC, Size: 64, P50us: 18.4, P99us: 54.8}, {Transport: NameQUIC, Size: 4096, P50us: 40.2, P99us: 91.7}},
		Grid: []GridResult{{Transport: NameParleyGrid, Point: GridPoint{RateMbps: 100, RTT: 50 * time.Millisecond, Loss: 0.01}, Share: 0.927}},
	}
	r.Evaluate()
	var b strings.Builder
	r.WriteMarkdown(&b)
	for _, want := range []string{
		"| Parley | 12,346 Mbit/s | 1.04 | — |",
		"| quic-go | 18.4 µs | 54.8 µs | 40.2 µs | 91.7 µs |",
		"| 100 Mbit/s, 50ms | Parley 1280 B | — | — | 92.7 | — | — |",
	} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("missing %q in:\n%s", want, b.String())
		}
	}
}
