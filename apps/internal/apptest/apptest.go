// Package apptest builds transport sessions for the applications' tests: two
// devices on a natlab link, or on loopback UDP sockets.
package apptest

import (
	"sync"

	"context"
	"github.com/parley-p2p/parley/apps/appmux"
	"net"
	"testing"

	"github.com/parley-p2p/parley/natlab"
	"github.com/parley-p2p/parley/transport"
)

// Lab is two devices, a and b, on one natlab network, with a fixed key each
// so that several sessions between them look like reconnections of the same
// pair.
type Lab struct {
	World      *natlab.World
	A, B       *natlab.Host
	KeyA, KeyB transport.PrivateKey
	ln         *transport.Listener
	cfg        transport.Config
	t          testing.TB
}

// NewLab starts a lab whose link on a (both ways) is l, with b listening.
// cfg may be nil. Everything is closed when the test ends.
func NewLab(t testing.TB, l natlab.Link, cfg *transport.Config) *Lab {
	t.Helper()
	w, a, b := natlab.NewPair(natlab.Config{Seed: 1}, l)
	lab := &Lab{World: w, A: a, B: b, KeyA: key(t), KeyB: key(t), t: t}
	if cfg != nil {
		lab.cfg = *cfg
	}
	pc, err := b.ListenPacket(context.Background(), "udp4", ":5000")
	if err != nil {
		t.Fatal(err)
	}
	lab.ln, err = transport.Listen(pc, lab.KeyB, &lab.cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		lab.ln.Close()
		pc.Close()
		w.Close()
	})
	return lab
}

// Connect dials a new session from a to b and returns both ends. The
// sessions are closed when the test ends.
func (lab *Lab) Connect() (ab, ba *transport.Session) {
	t := lab.t
	t.Helper()
	ctx := context.Background()
	pc, err := lab.A.ListenPacket(ctx, "udp4", ":0")
	if err != nil {
		t.Fatal(err)
	}
	c := lab.cfg
	c.PrivateKey = lab.KeyA
	ab, err = transport.Dial(ctx, pc, lab.ln.Addr(), lab.KeyB.Public(), &c)
	if err != nil {
		t.Fatal(err)
	}
	ba, err = lab.ln.Accept(ctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ab.Close()
		ba.Close()
		<-ab.Done()
		<-ba.Done()
		pc.Close()
	})
	return ab, ba
}

// Loopback returns a session between two endpoints on 127.0.0.1 UDP sockets,
// in real time.
func Loopback(t testing.TB) (ab, ba *transport.Session) {
	t.Helper()
	ctx := context.Background()
	pcB, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	kb := key(t)
	ln, err := transport.Listen(pcB, kb, nil)
	if err != nil {
		t.Fatal(err)
	}
	pcA, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ab, err = transport.Dial(ctx, pcA, pcB.LocalAddr(), kb.Public(), &transport.Config{PrivateKey: key(t)})
	if err != nil {
		t.Fatal(err)
	}
	ba, err = ln.Accept(ctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ab.Close()
		<-ab.Done()
		ln.Close()
		pcA.Close()
		pcB.Close()
	})
	return ab, ba
}

func key(t testing.TB) transport.PrivateKey {
	k, err := transport.GeneratePrivateKey()
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// Serve accepts the streams of sess until it ends and hands each, with the
// application its header names, to handle on a goroutine of its own. The
// test waits for every handler when it ends (after closing sess).
func Serve(t testing.TB, sess *transport.Session, handle func(app appmux.App, conn net.Conn)) {
	var wg sync.WaitGroup
	t.Cleanup(func() {
		sess.Close()
		wg.Wait()
	})
	wg.Go(func() {
		for {
			st, err := sess.AcceptStream(context.Background())
			if err != nil {
				return
			}
			wg.Go(func() {
				defer st.Close()
				app, err := appmux.Accept(st)
				if err != nil {
					return
				}
				handle(app, st)
			})
		}
	})
}
