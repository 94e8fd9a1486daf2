package transport

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"io"
	"net"
	"testing"
	"time"
)

func newKey(t testing.TB) PrivateKey {
	t.Helper()
	k, err := GeneratePrivateKey()
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func udp(t testing.TB) *net.UDPConn {
	t.Helper()
	c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// pairOnLoopback returns a dialled session and the matching accepted one.
func pairOnLoopback(t testing.TB, cfg *Config) (client, server *Session) {
	t.Helper()
	srvKey, cliKey := newKey(t), newKey(t)
	ln, err := Listen(udp(t), srvKey, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c := Config{}
	if cfg != nil {
		c = *cfg
	}
	c.PrivateKey = cliKey
	client, err = Dial(ctx, udp(t), ln.Addr(), srvKey.Public(), &c)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { client.Close() })
	server, err = ln.Accept(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if server.RemoteKey() != cliKey.Public() || client.RemoteKey() != srvKey.Public() {
		t.Fatal("sessions do not know each other's keys")
	}
	return client, server
}

func TestStreamEchoLoopback(t *testing.T) {
	client, server := pairOnLoopback(t, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	go func() {
		st, err := server.AcceptStream(ctx)
		if err != nil {
			return
		}
		io.Copy(st, st)
		st.CloseWrite()
	}()
	st, err := client.OpenStream(ctx)
	if err != nil {
		t.Fatal(err)
	}
	msg := make([]byte, 3<<20)
	rand.Read(msg)
	go func() {
		st.Write(msg)
		st.CloseWrite()
	}()
	got, err := io.ReadAll(st)
	if err != nil {
		t.Fatal(err)
	}
	if sha256.Sum256(got) != sha256.Sum256(msg) {
		t.Fatalf("echo mismatch: got %d bytes, want %d", len(got), len(msg))
	}
}

func TestDatagramsLoopback(t *testing.T) {
	client, server := pairOnLoopback(t, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	// Datagrams are unreliable; on loopback they arrive. Send until one does.
	want := []byte("voice frame")
	go func() {
		for ctx.Err() == nil {
			client.SendDatagram(want)
			select {
			case <-ctx.Done():
			case <-time.After(10 * time.Millisecond):
			}
		}
	}()
	got, err := server.ReceiveDatagram(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("got %q", got)
	}
	if err := client.SendDatagram(make([]byte, 70000)); !errors.Is(err, ErrDatagramTooLarge) {
		t.Fatalf("oversized datagram: %v", err)
	}
}
