//go:build !linux

package node

import (
	"net"
	"net/netip"
)

// writeTTL sends b to addr; setting the TTL is implemented on Linux only,
// so elsewhere an opener is an ordinary probe.
func writeTTL(pc net.PacketConn, b []byte, addr netip.AddrPort, ttl int) error {
	_, err := pc.WriteTo(b, net.UDPAddrFromAddrPort(addr))
	return err
}
