package transport

import (
	"encoding/binary"
	"errors"
	"net"
	"net/netip"
	"sync/atomic"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// offloadConn uses Linux UDP segmentation offload: GSO (UDP_SEGMENT, since
// Linux 4.18) to send many packets in one sendmsg, and GRO (UDP_GRO, since
// 5.0) to receive coalesced packets in one recvmsg. Each is switched off at
// the first sign the kernel or device does not support it.
type offloadConn struct {
	c   *net.UDPConn
	gso atomic.Bool
	gro bool
	oob []byte // read side, used only by the reader goroutine
}

func newOffloadIO(c *net.UDPConn) (batchReader, batchWriter, bool) {
	o := &offloadConn{c: c, oob: make([]byte, unix.CmsgSpace(4)*2)}
	rc, err := c.SyscallConn()
	if err != nil {
		return nil, nil, false
	}
	rc.Control(func(fd uintptr) {
		if _, err := unix.GetsockoptInt(int(fd), unix.SOL_UDP, unix.UDP_SEGMENT); err == nil {
			o.gso.Store(true)
		}
		if unix.SetsockoptInt(int(fd), unix.SOL_UDP, unix.UDP_GRO, 1) == nil {
			o.gro = true
		}
		// Bigger socket buffers: a burst of a GSO batch per session.
		unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUF, 4<<20)
		unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_SNDBUF, 4<<20)
	})
	return o, o, true
}

func (o *offloadConn) writeBatch(b []byte, seg int, to *net.UDPAddr) error {
	if len(b) <= seg || !o.gso.Load() {
		return plainWriter{o.c}.writeBatch(b, seg, to)
	}
	var oob [unix.SizeofCmsghdr + 8]byte
	h := (*unix.Cmsghdr)(unsafe.Pointer(&oob[0]))
	h.Level = unix.SOL_UDP
	h.Type = unix.UDP_SEGMENT
	h.SetLen(unix.CmsgLen(2))
	binary.NativeEndian.PutUint16(oob[unix.CmsgLen(0):], uint16(seg))
	_, _, err := o.c.WriteMsgUDP(b, oob[:unix.CmsgSpace(2)], to)
	if err != nil {
		var errno syscall.Errno
		if errors.As(err, &errno) && (errno == unix.EIO || errno == unix.EINVAL || errno == unix.EOPNOTSUPP) {
			// No GSO on this path (e.g. a device without checksum
			// offload): fall back for good and resend the batch.
			o.gso.Store(false)
			return plainWriter{o.c}.writeBatch(b, seg, to)
		}
	}
	return err
}

func (o *offloadConn) readBatch(b []byte) (int, int, netip.AddrPort, error) {
	if !o.gro {
		n, from, err := o.c.ReadFromUDPAddrPort(b)
		return n, n, from, err
	}
	n, oobn, _, from, err := o.c.ReadMsgUDPAddrPort(b, o.oob)
	if err != nil {
		return n, n, from, err
	}
	seg := n
	oob := o.oob[:oobn]
	for len(oob) >= unix.SizeofCmsghdr {
		h := (*unix.Cmsghdr)(unsafe.Pointer(&oob[0]))
		l := int(h.Len)
		if l < unix.SizeofCmsghdr || l > len(oob) {
			break
		}
		if h.Level == unix.SOL_UDP && h.Type == unix.UDP_GRO && l >= unix.CmsgLen(2) {
			data := oob[unix.CmsgLen(0):l]
			if len(data) >= 4 {
				seg = int(binary.NativeEndian.Uint32(data))
			} else {
				seg = int(binary.NativeEndian.Uint16(data))
			}
		}
		oob = oob[min(unix.CmsgSpace(l-unix.CmsgLen(0)), len(oob)):]
	}
	if seg <= 0 || seg > n {
		seg = n
	}
	return n, seg, from, nil
}
