package transportbench

import (
	"fmt"
	"os"
	"runtime"
	"testing"
	"time"
)

// TestMain fails the run if goroutines started by the tests outlive them:
// every transport's server, client and connections must shut down. Closing
// sessions finish in the background (Parley's closing period, quic-go's
// draining), so it waits for the count to come down, with a deadline.
func TestMain(m *testing.M) {
	before := runtime.NumGoroutine()
	code := m.Run()
	deadline := time.Now().Add(10 * time.Second)
	for runtime.NumGoroutine() > before && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if n := runtime.NumGoroutine(); n > before && code == 0 {
		buf := make([]byte, 1<<20)
		fmt.Fprintf(os.Stderr, "%d goroutines leaked (%d before the tests):\n%s\n", n-before, before, buf[:runtime.Stack(buf, true)])
		code = 1
	}
	os.Exit(code)
}
