//go:build linux

package node

import (
	"net"
	"net/netip"
	"sync"
	"unsafe"

	"golang.org/x/sys/unix"
)

// writeTTL sends b to addr on pc with the IP TTL set to ttl, when pc is a
// real UDP socket; on anything else (natlab, which has no TTL) it sends b
// as is. It uses an IP_TTL control message, which sets the TTL of this
// datagram alone, so that the transport's packets sent at the same moment
// keep the default TTL; where the kernel refuses the control message it
// sets IP_TTL on the socket around the write instead.
func writeTTL(pc net.PacketConn, b []byte, addr netip.AddrPort, ttl int) error {
	uc, ok := pc.(*net.UDPConn)
	if !ok || !addr.Addr().Is4() {
		_, err := pc.WriteTo(b, net.UDPAddrFromAddrPort(addr))
		return err
	}
	oob := make([]byte, unix.CmsgSpace(4))
	h := (*unix.Cmsghdr)(unsafe.Pointer(&oob[0]))
	h.Level, h.Type = unix.IPPROTO_IP, unix.IP_TTL
	h.SetLen(unix.CmsgLen(4))
	*(*int32)(unsafe.Pointer(&oob[unix.CmsgLen(0)])) = int32(ttl)
	if _, _, err := uc.WriteMsgUDPAddrPort(b, oob, addr); err == nil {
		return nil
	}
	return writeSocketTTL(uc, b, addr, ttl)
}

// socketTTLMu serialises the fallback's setsockopt-write-setsockopt.
var socketTTLMu sync.Mutex

func writeSocketTTL(uc *net.UDPConn, b []byte, addr netip.AddrPort, ttl int) error {
	rc, err := uc.SyscallConn()
	if err != nil {
		return err
	}
	socketTTLMu.Lock()
	defer socketTTLMu.Unlock()
	old := 64
	rc.Control(func(fd uintptr) {
		if v, err := unix.GetsockoptInt(int(fd), unix.IPPROTO_IP, unix.IP_TTL); err == nil {
			old = v
		}
		err = unix.SetsockoptInt(int(fd), unix.IPPROTO_IP, unix.IP_TTL, ttl)
	})
	if err != nil {
		return err
	}
	_, werr := uc.WriteToUDPAddrPort(b, addr)
	rc.Control(func(fd uintptr) { unix.SetsockoptInt(int(fd), unix.IPPROTO_IP, unix.IP_TTL, old) })
	return werr
}
