package transport

import (
	"context"
	"io"
	"testing"
	"time"
)

func BenchmarkBulkLoopback(b *testing.B) {
	cfg := &Config{MaxPacketSize: 1452}
	client, server := pairOnLoopback(b, cfg)
	ctx := context.Background()
	done := make(chan int64)
	go func() {
		st, _ := server.AcceptStream(ctx)
		n, _ := io.Copy(io.Discard, st)
		done <- n
	}()
	st, _ := client.OpenStream(ctx)
	buf := make([]byte, 64<<10)
	b.SetBytes(int64(len(buf)))
	b.ResetTimer()
	start := time.Now()
	for i := 0; i < b.N; i++ {
		st.Write(buf)
	}
	st.CloseWrite()
	n := <-done
	b.ReportMetric(float64(n)*8/time.Since(start).Seconds()/1e6, "Mbit/s")
	b.Log(client.Stats())
}
