package transport

import (
	"context"
	"crypto/sha256"
	"fmt"
	"io"
	"math/rand/v2"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/parley-p2p/parley/natlab"
)

// labPair runs a listener on b and dials it from a, over w.
func labPair(t *testing.T, a, b *natlab.Host, cfg *Config) (client, server *Session) {
	t.Helper()
	ctx := context.Background()
	pcA, err := a.ListenPacket(ctx, "udp4", ":4000")
	if err != nil {
		t.Fatal(err)
	}
	pcB, err := b.ListenPacket(ctx, "udp4", ":5000")
	if err != nil {
		t.Fatal(err)
	}
	srvKey := newKey(t)
	ln, err := Listen(pcB, srvKey, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	c := Config{}
	if cfg != nil {
		c = *cfg
	}
	c.PrivateKey = newKey(t)
	client, err = Dial(ctx, pcA, pcB.LocalAddr(), srvKey.Public(), &c)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		client.Close()
		<-client.Done() // the closing period: three PTOs
	})
	server, err = ln.Accept(ctx)
	if err != nil {
		t.Fatal(err)
	}
	return client, server
}

// labWorld returns a two-host lab whose link (on a, both ways) is l. The
// world closes after every session of the test has ended.
func labWorld(t *testing.T, l natlab.Link) (w *natlab.World, a, b *natlab.Host) {
	w, a, b = natlab.NewPair(natlab.Config{Seed: 7}, l)
	t.Cleanup(func() { w.Close() })
	return w, a, b
}

// pattern is a deterministic pseudo-random byte source, so that sender and
// receiver can hash the same stream without holding it in memory.
type pattern struct{ r *rand.ChaCha8 }

func newPattern(seed uint64) *pattern {
	var s [32]byte
	s[0] = byte(seed)
	s[1] = byte(seed >> 8)
	return &pattern{rand.NewChaCha8(s)}
}

func (p *pattern) Read(b []byte) (int, error) { return p.r.Read(b) }

// transfer sends size bytes on each of n streams from client to server
// and checks that every stream arrives byte-exact, by SHA-256. during, if
// set, is called from the writers with the running total of bytes written.
func transfer(t *testing.T, client, server *Session, n int, size int64, during func(total int64)) {
	t.Helper()
	ctx := context.Background()
	var mu sync.Mutex
	got := make(map[uint64][32]byte)
	var recv sync.WaitGroup
	recv.Add(n)
	go func() {
		for i := 0; i < n; i++ {
			st, err := server.AcceptStream(ctx)
			if err != nil {
				t.Errorf("accept: %v", err)
				for ; i < n; i++ {
					recv.Done()
				}
				return
			}
			go func() {
				defer recv.Done()
				h := sha256.New()
				if _, err := io.Copy(h, st); err != nil {
					t.Errorf("stream %d: read: %v", st.ID(), err)
				}
				mu.Lock()
				got[st.ID()] = [32]byte(h.Sum(nil))
				mu.Unlock()
			}()
		}
	}()
	want := make(map[uint64][32]byte)
	var send sync.WaitGroup
	var total int64
	for i := 0; i < n; i++ {
		st, err := client.OpenStream(ctx)
		if err != nil {
			t.Fatal(err)
		}
		send.Add(1)
		go func(seed uint64) {
			defer send.Done()
			h := sha256.New()
			src := io.LimitReader(newPattern(seed), size)
			buf := make([]byte, 32<<10)
			for {
				m, err := src.Read(buf)
				if m > 0 {
					h.Write(buf[:m])
					if _, werr := st.Write(buf[:m]); werr != nil {
						t.Errorf("write: %v", werr)
						return
					}
					if during != nil {
						mu.Lock()
						total += int64(m)
						during(total)
						mu.Unlock()
					}
				}
				if err != nil {
					break
				}
			}
			st.CloseWrite()
			mu.Lock()
			want[st.ID()] = [32]byte(h.Sum(nil))
			mu.Unlock()
		}(uint64(i))
	}
	send.Wait()
	recv.Wait()
	if len(got) != n {
		t.Fatalf("received %d streams, want %d", len(got), n)
	}
	for id, w := range want {
		if got[id] != w {
			t.Errorf("stream %d: received data differs from sent data", id)
		}
	}
}

func TestLossyTransferByteExact(t *testing.T) {
	size := int64(16 << 20) // × 4 streams = 64 MiB
	if raceEnabled || testing.Short() {
		size = 2 << 20
	}
	for _, loss := range []float64{0, 0.05, 0.20} {
		t.Run(fmt.Sprintf("loss=%v", loss), func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				w, a, b := labWorld(t, natlab.Link{
					Delay:     100 * time.Millisecond, // 200 ms RTT
					Jitter:    5 * time.Millisecond,
					Rate:      200e6,
					Loss:      loss,
					Duplicate: 0.10,
					Reorder:   0.05,
				})
				_ = w
				client, server := labPair(t, a, b, nil)
				start := time.Now()
				transfer(t, client, server, 4, size, nil)
				el := time.Since(start)
				st := client.Stats()
				t.Logf("%d MiB in %v virtual (%.1f Mbit/s): %+v; receiver dropped %d duplicates",
					4*size>>20, el.Round(time.Millisecond), float64(4*size)*8/el.Seconds()/1e6, st, server.Stats().DroppedDuplicate)
				if loss == 0.20 && server.Stats().DroppedDuplicate == 0 {
					t.Error("10% duplication produced no dropped duplicates: the replay filter is not in the path")
				}
			})
		})
	}
}
