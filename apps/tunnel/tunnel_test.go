package tunnel_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/parley-p2p/parley/apps/appmux"
	"github.com/parley-p2p/parley/apps/internal/apptest"
	"github.com/parley-p2p/parley/apps/tunnel"
	"github.com/parley-p2p/parley/natlab"
	"github.com/parley-p2p/parley/transport"
)

// serve answers the tunnel streams of sess with policy and DialLocal until
// the session ends; the test waits for every Serve to return.
func serve(t *testing.T, sess *transport.Session, policy tunnel.Policy) {
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
				app, err := appmux.Accept(st)
				if err != nil || app != appmux.Tunnel {
					t.Errorf("Accept = %v, %v", app, err)
					st.Close()
					return
				}
				tunnel.Serve(st, policy, tunnel.DialLocal)
			})
		}
	})
}

// listenTCP runs handle for every connection to a loopback TCP listener.
func listenTCP(t *testing.T, handle func(c *net.TCPConn)) uint16 {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	t.Cleanup(func() {
		ln.Close()
		wg.Wait()
	})
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Go(func() {
				defer c.Close()
				handle(c.(*net.TCPConn))
			})
		}
	})
	return uint16(ln.Addr().(*net.TCPAddr).Port)
}

func echo(c *net.TCPConn) { io.Copy(c, c) }

func timeout(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// TestEcho sends 4 MiB through a tunnel over a lossy, delayed natlab link to
// a TCP echo server and checks every byte comes back.
func TestEcho(t *testing.T) {
	lab := apptest.NewLab(t, natlab.Link{Delay: 5 * time.Millisecond, Loss: 0.01}, nil)
	ab, ba := lab.Connect()
	var policy tunnel.Ports
	port := listenTCP(t, echo)
	policy.Expose(port)
	serve(t, ba, &policy)

	ctx := timeout(t)
	conn, err := tunnel.Connect(ctx, ab, port)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(30 * time.Second))
	data := make([]byte, 4<<20)
	rand.Read(data)
	errc := make(chan error, 1)
	go func() {
		_, err := conn.Write(data)
		if err == nil {
			err = appmux.CloseWrite(conn)
		}
		errc <- err
	}()
	got, err := io.ReadAll(conn)
	if err != nil {
		t.Fatal(err)
	}
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, data) {
		t.Fatalf("echoed %d bytes, not the %d sent", len(got), len(data))
	}
}

func TestRefused(t *testing.T) {
	ab, ba := apptest.Loopback(t)
	var policy tunnel.Ports
	// A port that is exposed but has nothing listening: bind and close.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := uint16(l.Addr().(*net.TCPAddr).Port)
	l.Close()
	policy.Expose(dead)
	serve(t, ba, &policy)
	ctx := timeout(t)

	for _, tc := range []struct {
		port uint16
		code tunnel.Code
		msg  string
	}{
		{25, tunnel.NotExposed, "bob does not expose port 25"},
		{dead, tunnel.ConnectFailed, fmt.Sprintf("bob exposes port %d but nothing is listening there", dead)},
		{0, tunnel.BadRequest, "bob could not understand the request for port 0 (version mismatch?)"},
	} {
		_, err := tunnel.Connect(ctx, ab, tc.port)
		var re *tunnel.RefusedError
		if !errors.As(err, &re) {
			t.Fatalf("port %d: Connect = %v, want a RefusedError", tc.port, err)
		}
		if re.Code != tc.code || re.Port != tc.port {
			t.Errorf("port %d: refused with %v for %d, want %v", tc.port, re.Code, re.Port, tc.code)
		}
		if got := re.Message("bob"); got != tc.msg {
			t.Errorf("port %d: Message = %q, want %q", tc.port, got, tc.msg)
		}
	}
}

// TestHalfClose: the client half-closes, the server sees EOF, and its reply,
// written after that, still reaches the client.
func TestHalfClose(t *testing.T) {
	ab, ba := apptest.Loopback(t)
	port := listenTCP(t, func(c *net.TCPConn) {
		n, err := io.Copy(io.Discard, c)
		if err != nil {
			return
		}
		fmt.Fprintf(c, "read %d bytes", n)
		c.CloseWrite()
	})
	var policy tunnel.Ports
	policy.Expose(port)
	serve(t, ba, &policy)

	conn, err := tunnel.Connect(timeout(t), ab, port)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(30 * time.Second))
	if _, err := conn.Write(make([]byte, 1<<20)); err != nil {
		t.Fatal(err)
	}
	if err := appmux.CloseWrite(conn); err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(conn)
	if err != nil {
		t.Fatal(err)
	}
	if string(got) != "read 1048576 bytes" {
		t.Fatalf("reply %q", got)
	}
}

func TestForward(t *testing.T) {
	ab, ba := apptest.Loopback(t)
	var policy tunnel.Ports
	port := listenTCP(t, echo)
	policy.Expose(port)
	serve(t, ba, &policy)

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- tunnel.Forward(ctx, ln, func(context.Context) (appmux.Opener, error) { return ab, nil }, port, nil)
	}()
	for i := range 3 {
		c, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		c.SetDeadline(time.Now().Add(30 * time.Second))
		msg := fmt.Sprintf("hello %d", i)
		io.WriteString(c, msg)
		c.(*net.TCPConn).CloseWrite()
		got, err := io.ReadAll(c)
		if err != nil || string(got) != msg {
			t.Fatalf("forwarded echo = %q, %v", got, err)
		}
		c.Close()
	}
	// An open forwarded connection does not keep Forward from returning.
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	cancel()
	select {
	case err := <-done:
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("Forward = %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Forward did not return after cancel")
	}
}

func TestPortsJSON(t *testing.T) {
	var p tunnel.Ports
	if p.Allows(22) {
		t.Fatal("zero Ports allows 22")
	}
	p.Expose(8080)
	p.Expose(22)
	p.Expose(22)
	b, err := json.Marshal(&p)
	if err != nil || string(b) != "[22,8080]" {
		t.Fatalf("Marshal = %s, %v", b, err)
	}
	var q tunnel.Ports
	if err := json.Unmarshal(b, &q); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(q.List(), []uint16{22, 8080}) || !q.Allows(8080) || q.Allows(80) {
		t.Fatalf("round trip: %v", q.List())
	}
	q.Unexpose(8080)
	if q.Allows(8080) {
		t.Fatal("Unexpose")
	}
	for _, bad := range []string{"[0]", "[70000]", `"22"`, "{"} {
		if err := json.Unmarshal([]byte(bad), &q); err == nil {
			t.Errorf("Unmarshal(%s) succeeded", bad)
		}
	}
}
