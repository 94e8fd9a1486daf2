package transport

import (
	"net"
	"net/netip"
)

// maxBatchBytes bounds one GSO batch: a UDP datagram's 64 KiB.
const maxBatchBytes = 65000

// maxBatchSegments is the kernel's limit on segments per GSO send.
const maxBatchSegments = 64

// batchWriter sends several equal-sized packets to one address at once. On
// Linux with a *net.UDPConn this is one sendmsg with UDP_SEGMENT (GSO); other
// sockets get one write per packet.
type batchWriter interface {
	// writeBatch sends b as packets of seg bytes (the last may be shorter).
	writeBatch(b []byte, seg int, to *net.UDPAddr) error
}

// plainWriter writes one packet per call, for any net.PacketConn.
type plainWriter struct{ pc net.PacketConn }

func (w plainWriter) writeBatch(b []byte, seg int, to *net.UDPAddr) error {
	var err error
	for len(b) > 0 {
		n := min(seg, len(b))
		if _, e := w.pc.WriteTo(b[:n], to); e != nil && err == nil {
			err = e
		}
		b = b[n:]
	}
	return err
}

// batchReader reads one datagram, which with GRO may hold several
// coalesced packets of seg bytes each (seg == n when not coalesced).
type batchReader interface {
	readBatch(b []byte) (n, seg int, from netip.AddrPort, err error)
}

type addrPortReaderConn struct{ r addrPortReader }

func (r addrPortReaderConn) readBatch(b []byte) (int, int, netip.AddrPort, error) {
	n, from, err := r.r.ReadFromUDPAddrPort(b)
	return n, n, from, err
}

type plainReader struct{ pc net.PacketConn }

func (r plainReader) readBatch(b []byte) (int, int, netip.AddrPort, error) {
	n, a, err := r.pc.ReadFrom(b)
	var from netip.AddrPort
	if ua, ok := a.(*net.UDPAddr); ok {
		from = ua.AddrPort()
	}
	return n, n, from, err
}

// newBatchIO picks the fastest way to use pc.
func newBatchIO(pc net.PacketConn) (batchReader, batchWriter, bool) {
	if uc, ok := pc.(*net.UDPConn); ok {
		if r, w, ok := newOffloadIO(uc); ok {
			return r, w, true
		}
	}
	var r batchReader = plainReader{pc}
	if ar, ok := pc.(addrPortReader); ok {
		r = addrPortReaderConn{ar}
	}
	return r, plainWriter{pc}, false
}
