package transport

import (
	"context"
	"flag"
	"fmt"
	"io"
	"testing"
	"testing/synctest"
	"time"

	"github.com/parley-p2p/parley/natlab"
)

var goodputReport = flag.Bool("goodput", false, "report goodput on emulated links (slow)")

var goodputConfig *Config // the defaults

// TestGoodputOnEmulatedLinks reports goodput as a share of the link rate.
// It asserts nothing about speed (benchmarks do that, side by side); it
// checks that data flows and prints the figures with -goodput -v.
func TestGoodputOnEmulatedLinks(t *testing.T) {
	if !*goodputReport {
		t.Skip("run with -goodput to measure")
	}
	for _, rate := range []int64{100e6, 1e9} {
		for _, rtt := range []time.Duration{10 * time.Millisecond, 50 * time.Millisecond} {
			for _, loss := range []float64{0, 0.001, 0.01, 0.02, 0.05} {
				t.Run(fmt.Sprintf("%dMbit/%v/loss=%v", rate/1e6, rtt, loss), func(t *testing.T) {
					synctest.Test(t, func(t *testing.T) {
						// Loss on alice's link only, both ways: data and ACKs each see it.
						_, a, b := labWorld(t, natlab.Link{Delay: rtt / 2, Rate: rate, Loss: loss})
						client, server := labPair(t, a, b, goodputConfig)
						ctx := context.Background()
						got := make(chan int64)
						go func() {
							st, _ := server.AcceptStream(ctx)
							n, _ := io.Copy(io.Discard, st)
							got <- n
						}()
						st, _ := client.OpenStream(ctx)
						buf := make([]byte, 64<<10)
						// Warm up 2 s, then measure 10 s.
						deadline := time.Now().Add(12 * time.Second)
						var atWarm uint64
						var sent int64
						warm := time.Now().Add(2 * time.Second)
						var warmAt time.Time
						for time.Now().Before(deadline) {
							n, err := st.Write(buf)
							sent += int64(n)
							if err != nil {
								t.Fatal(err)
							}
							if warmAt.IsZero() && !time.Now().Before(warm) {
								warmAt = time.Now()
								atWarm = server.Stats().BytesReceived
							}
						}
						rcvd := server.Stats().BytesReceived - atWarm
						el := time.Since(warmAt)
						st.CloseWrite()
						<-got
						share := float64(rcvd) * 8 / el.Seconds() / float64(rate)
						cs := client.Stats()
						t.Logf("goodput %.1f%% of link (wire bytes at receiver); lost %d spurious %d PTOs %d srtt %v", 100*share, cs.PacketsLost, cs.SpuriousLosses, cs.PTOs, cs.SmoothedRTT)
					})
				})
			}
		}
	}
}
