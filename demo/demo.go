// Package demo runs Parley end to end in one process, on the natlab
// emulated network, so that anyone can see it work with one command:
// `parley demo`.
//
// Today it shows the transport: two peers on a lossy, delayed,
// rate-limited link open an authenticated session and move data over
// several streams; the demo prints the handshake time in round trips and
// the goodput. It grows with the system (directory server, NATs,
// supernodes, chat and files) as those land.
package demo

import (
	"context"
	"crypto/sha256"
	"fmt"
	"io"
	"math/rand/v2"
	"net/netip"
	"sync"
	"time"

	"github.com/parley-p2p/parley/natlab"
	"github.com/parley-p2p/parley/transport"
)

// Options tune the demo. The zero value runs the default scenario.
type Options struct {
	RTT     time.Duration // round-trip time of the link; 0 means 60 ms
	Loss    float64       // random loss each way; 0 means 1%
	RateBit int64         // link rate in bit/s; 0 means 50 Mbit/s
	Bytes   int64         // bytes to move in total; 0 means 16 MiB
	Streams int           // concurrent streams; 0 means 4
	Seed    uint64
}

func (o *Options) defaults() {
	if o.RTT == 0 {
		o.RTT = 60 * time.Millisecond
	}
	if o.Loss == 0 {
		o.Loss = 0.01
	}
	if o.RateBit == 0 {
		o.RateBit = 50e6
	}
	if o.Bytes == 0 {
		o.Bytes = 16 << 20
	}
	if o.Streams == 0 {
		o.Streams = 4
	}
	if o.Seed == 0 {
		o.Seed = 1
	}
}

// Result is what the demo measured.
type Result struct {
	Handshake       time.Duration
	HandshakeRTTs   float64
	Transferred     int64
	Elapsed         time.Duration
	GoodputBitPerS  float64
	PacketsSent     uint64
	PacketsLost     uint64
	DroppedByLab    uint64
	VerifiedStreams int
}

// Run runs the demo, writing a human-readable account to out.
func Run(ctx context.Context, out io.Writer, o Options) (Result, error) {
	o.defaults()
	var res Result
	w := natlab.New(natlab.Config{Seed: o.Seed})
	defer w.Close()
	inet := w.NewNetwork("internet", netip.MustParsePrefix("203.0.113.0/24"))
	link := natlab.Link{Delay: o.RTT / 4, Jitter: o.RTT / 60, Rate: o.RateBit, Loss: o.Loss}
	alice := w.NewHost("alice", inet, link)
	clean := link
	clean.Loss = 0 // the loss is on alice's link only: o.Loss each way
	bob := w.NewHost("bob", inet, clean)
	fmt.Fprintf(out, "Parley demo: alice %v and bob %v on an emulated link: %v RTT, %.1f%% loss each way, %d Mbit/s\n",
		alice.Addr(), bob.Addr(), o.RTT, o.Loss*100, o.RateBit/1e6)

	aliceKey, err := transport.GeneratePrivateKey()
	if err != nil {
		return res, err
	}
	bobKey, err := transport.GeneratePrivateKey()
	if err != nil {
		return res, err
	}
	pcB, err := bob.ListenPacket(ctx, "udp4", ":7000")
	if err != nil {
		return res, err
	}
	pcA, err := alice.ListenPacket(ctx, "udp4", ":7000")
	if err != nil {
		return res, err
	}
	ln, err := transport.Listen(pcB, bobKey, nil)
	if err != nil {
		return res, err
	}
	defer ln.Close()

	start := time.Now()
	sess, err := transport.Dial(ctx, pcA, pcB.LocalAddr(), bobKey.Public(), &transport.Config{PrivateKey: aliceKey})
	if err != nil {
		return res, fmt.Errorf("alice dials bob: %w", err)
	}
	defer func() { sess.Close(); <-sess.Done() }()
	res.Handshake = time.Since(start)
	res.HandshakeRTTs = float64(res.Handshake) / float64(o.RTT)
	peer, err := ln.Accept(ctx)
	if err != nil {
		return res, err
	}
	fmt.Fprintf(out, "handshake: mutually authenticated (Noise IK) in %v = %.2f round trips; bob sees alice as %s\n",
		res.Handshake.Round(time.Millisecond), res.HandshakeRTTs, peer.RemoteKey().Short())

	per := o.Bytes / int64(o.Streams)
	var mu sync.Mutex
	sums := map[uint64][32]byte{}
	var wg sync.WaitGroup
	errc := make(chan error, 2*o.Streams)
	wg.Add(o.Streams)
	go func() {
		for i := 0; i < o.Streams; i++ {
			st, err := peer.AcceptStream(ctx)
			if err != nil {
				errc <- err
				for ; i < o.Streams; i++ {
					wg.Done()
				}
				return
			}
			go func() {
				defer wg.Done()
				h := sha256.New()
				if _, err := io.Copy(h, st); err != nil {
					errc <- err
					return
				}
				mu.Lock()
				sums[st.ID()] = [32]byte(h.Sum(nil))
				mu.Unlock()
			}()
		}
	}()
	t0 := time.Now()
	want := map[uint64][32]byte{}
	var sendWG sync.WaitGroup
	for i := 0; i < o.Streams; i++ {
		st, err := sess.OpenStream(ctx)
		if err != nil {
			return res, err
		}
		sendWG.Add(1)
		go func(seed uint64) {
			defer sendWG.Done()
			var s [32]byte
			s[0] = byte(seed)
			src := io.LimitReader(rand.NewChaCha8(s), per)
			h := sha256.New()
			if _, err := io.Copy(io.MultiWriter(st, h), src); err != nil {
				errc <- err
			}
			st.CloseWrite()
			mu.Lock()
			want[st.ID()] = [32]byte(h.Sum(nil))
			mu.Unlock()
		}(uint64(i))
	}
	done := make(chan struct{})
	go func() { sendWG.Wait(); wg.Wait(); close(done) }()
	select {
	case <-done:
	case err := <-errc:
		return res, err
	case <-ctx.Done():
		return res, ctx.Err()
	}
	res.Elapsed = time.Since(t0)
	res.Transferred = per * int64(o.Streams)
	for id, s := range want {
		if sums[id] != s {
			return res, fmt.Errorf("stream %d arrived corrupted", id)
		}
		res.VerifiedStreams++
	}
	res.GoodputBitPerS = float64(res.Transferred) * 8 / res.Elapsed.Seconds()
	st := sess.Stats()
	res.PacketsSent, res.PacketsLost = st.PacketsSent, st.PacketsLost
	res.DroppedByLab = w.Stats().Total().Drops()
	fmt.Fprintf(out, "transfer: %d MiB on %d streams in %v: goodput %.1f Mbit/s (%.0f%% of the link), SHA-256 verified on every stream\n",
		res.Transferred>>20, o.Streams, res.Elapsed.Round(time.Millisecond), res.GoodputBitPerS/1e6, 100*res.GoodputBitPerS/float64(o.RateBit))
	fmt.Fprintf(out, "network: the lab dropped %d datagrams; alice sent %d packets, %d declared lost and resent; smoothed RTT %v\n",
		res.DroppedByLab, st.PacketsSent, st.PacketsLost, st.SmoothedRTT.Round(time.Millisecond))
	return res, nil
}
