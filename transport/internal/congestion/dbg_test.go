package congestion_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/parley-p2p/parley/transport/internal/congestion"
)

func TestDbgMatrix(t *testing.T) {
	for _, mbit := range []float64{1, 10, 1000} {
		for _, rtt := range []time.Duration{10 * time.Millisecond, 200 * time.Millisecond} {
			for _, loss := range []float64{0, 0.01, 0.05} {
				rate := mbit * 1e6 / 8
				var line string
				for _, k := range []congestion.Kind{congestion.KindBBR, congestion.KindCUBIC} {
					r := simulate(t, simConfig{kind: k, rate: rate, rtt: rtt, buffer: max(int(rate*rtt.Seconds()), 10*1452), loss: loss, duration: 20 * time.Second, warmup: 5 * time.Second, seed: 11})
					line += " " + k.String() + " " + ftoa(r.steadyUtilisation*100) + "% q " + r.meanQueueDelay.Round(time.Millisecond).String()
				}
				t.Logf("%5.0f Mbit %v loss %.0f%%:%s", mbit, rtt, loss*100, line)
			}
		}
	}
}

func ftoa(f float64) string { return string(append([]byte(nil), []byte(formatF(f))...)) }

func formatF(f float64) string { return fmt.Sprintf("%.1f", f) }
