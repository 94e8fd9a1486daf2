package transport

import (
	"bytes"
	"context"
	"io"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/parley-p2p/parley/natlab"
)

// TestEchoStreamsUnderLoss closes both directions of many short streams on a
// lossy link. A stream's FIN may be acknowledged before some of its data
// (the packet carrying the data was lost, the one carrying FIN was not): the
// stream must not count as finished, and forget its buffer, until every
// byte is acknowledged.
func TestEchoStreamsUnderLoss(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		_, a, b := labWorld(t, natlab.Link{Delay: 10 * time.Millisecond, Rate: 50e6, Loss: 0.05, Reorder: 0.02})
		client, server := labPair(t, a, b, nil)
		ctx := context.Background()
		go func() {
			for {
				st, err := server.AcceptStream(ctx)
				if err != nil {
					return
				}
				go func() {
					io.Copy(st, st)
					st.Close()
				}()
			}
		}()
		var wg sync.WaitGroup
		for i := 0; i < 60; i++ {
			wg.Add(1)
			go func(i int) {
				defer wg.Done()
				st, err := client.OpenStream(ctx)
				if err != nil {
					t.Error(err)
					return
				}
				msg := bytes.Repeat([]byte{byte(i)}, 20000+i*997)
				go func() { st.Write(msg); st.CloseWrite() }()
				got, err := io.ReadAll(st)
				st.Close()
				if err != nil || !bytes.Equal(got, msg) {
					t.Errorf("stream %d: %d bytes, %v", i, len(got), err)
				}
			}(i)
		}
		wg.Wait()
	})
}
