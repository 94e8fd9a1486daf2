//go:build linux

package node

import (
	"net"
	"testing"
	"time"

	"golang.org/x/net/ipv4"
)

// TestWriteTTL: an opener leaves a real socket with the TTL asked for,
// and the socket's other datagrams keep the default.
func TestWriteTTL(t *testing.T) {
	rx, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer rx.Close()
	p := ipv4.NewPacketConn(rx)
	if err := p.SetControlMessage(ipv4.FlagTTL, true); err != nil {
		t.Fatal(err)
	}
	tx, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Close()
	to := rx.LocalAddr().(*net.UDPAddr).AddrPort()
	recvTTL := func() int {
		t.Helper()
		rx.SetReadDeadline(time.Now().Add(5 * time.Second))
		buf := make([]byte, 64)
		_, cm, _, err := p.ReadFrom(buf)
		if err != nil {
			t.Fatal(err)
		}
		return cm.TTL
	}
	for _, ttl := range []int{openerTTLFirst, openerTTLSecond} {
		if err := writeTTL(tx, []byte("opener"), to, ttl); err != nil {
			t.Fatal(err)
		}
		if got := recvTTL(); got != ttl {
			t.Errorf("opener TTL %d arrived with TTL %d", ttl, got)
		}
		if _, err := tx.WriteToUDPAddrPort([]byte("plain"), to); err != nil {
			t.Fatal(err)
		}
		if got := recvTTL(); got <= openerTTLSecond {
			t.Errorf("a plain datagram after the opener left with TTL %d", got)
		}
	}
	// The fallback path, setsockopt around the write, restores the TTL.
	if err := writeSocketTTL(tx, []byte("opener"), to, 2); err != nil {
		t.Fatal(err)
	}
	if got := recvTTL(); got != 2 {
		t.Errorf("fallback opener arrived with TTL %d", got)
	}
	tx.WriteToUDPAddrPort([]byte("plain"), to)
	if got := recvTTL(); got <= 3 {
		t.Errorf("the fallback left the socket's TTL at %d", got)
	}
}
