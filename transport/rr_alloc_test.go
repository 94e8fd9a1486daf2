package transport

import (
	"context"
	"io"
	"runtime"
	"testing"
)

// TestRequestResponseDoesNotAllocate checks that a steady exchange of small
// messages allocates nothing on either side: garbage per message turns into
// GC pauses, which show up as latency tails.
func TestRequestResponseDoesNotAllocate(t *testing.T) {
	if raceEnabled {
		t.Skip("the race detector's instrumentation allocates")
	}
	client, server := pairOnLoopback(t, &Config{MaxPacketSize: 1452})
	ctx := context.Background()
	go func() {
		st, _ := server.AcceptStream(ctx)
		buf := make([]byte, 64)
		for {
			if _, err := io.ReadFull(st, buf); err != nil {
				return
			}
			st.Write(buf)
		}
	}()
	st, _ := client.OpenStream(ctx)
	buf := make([]byte, 64)
	for i := 0; i < 2000; i++ {
		st.Write(buf)
		io.ReadFull(st, buf)
	}
	var m0, m1 runtime.MemStats
	runtime.ReadMemStats(&m0)
	const n = 5000
	for i := 0; i < n; i++ {
		st.Write(buf)
		io.ReadFull(st, buf)
	}
	runtime.ReadMemStats(&m1)
	perExchange := float64(m1.Mallocs-m0.Mallocs) / n
	t.Logf("%.2f allocations and %.0f bytes per exchange (both ends)", perExchange, float64(m1.TotalAlloc-m0.TotalAlloc)/n)
	// A little slack for the runtime's own (timers, the occasional
	// flow-control update).
	if perExchange > 0.2 {
		t.Fatalf("%.2f allocations per 64-byte request/response", perExchange)
	}
}
