//go:build linux

package relay

import (
	"encoding/binary"
	"net"
	"net/netip"
	"os"
	"strconv"
	"sync/atomic"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// mmsghdr is struct mmsghdr (recvmmsg(2)): a msghdr and the byte count the
// kernel fills in. Go pads it as C does, on 32- and 64-bit alike.
type mmsghdr struct {
	hdr unix.Msghdr
	n   uint32
}

// udpSocket is what both directions need of a *net.UDPConn's descriptor.
type udpSocket struct {
	rc syscall.RawConn
	v6 bool // an AF_INET6 socket: IPv4 addresses travel v4-mapped
}

func newUDPSocket(pc net.PacketConn) (udpSocket, bool) {
	uc, ok := pc.(*net.UDPConn)
	if !ok {
		return udpSocket{}, false
	}
	rc, err := uc.SyscallConn()
	if err != nil {
		return udpSocket{}, false
	}
	domain := -1
	rc.Control(func(fd uintptr) {
		domain, _ = unix.GetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_DOMAIN)
	})
	if domain != unix.AF_INET && domain != unix.AF_INET6 {
		return udpSocket{}, false
	}
	return udpSocket{rc: rc, v6: domain == unix.AF_INET6}, true
}

// mmsgReader reads with recvmmsg(2). Its fields are the system call's
// arguments, reused: it belongs to one goroutine.
type mmsgReader struct {
	udpSocket
	hdrs  []mmsghdr
	iovs  []unix.Iovec
	names []unix.RawSockaddrInet6 // room for either family

	want   int // messages to read in this call
	got    int
	errno  syscall.Errno
	readFn func(fd uintptr) bool // r.read, bound once so reads do not allocate
}

func newMmsgReader(pc net.PacketConn, size int) batchReader {
	s, ok := newUDPSocket(pc)
	if !ok {
		return nil
	}
	r := &mmsgReader{
		udpSocket: s,
		hdrs:      make([]mmsghdr, size),
		iovs:      make([]unix.Iovec, size),
		names:     make([]unix.RawSockaddrInet6, size),
	}
	r.readFn = r.read
	return r
}

func (r *mmsgReader) readBatch(msgs []rxMsg) (int, error) {
	r.want = min(len(msgs), len(r.hdrs))
	for i := range r.want {
		r.iovs[i].Base = unsafe.SliceData(msgs[i].buf)
		r.iovs[i].SetLen(len(msgs[i].buf))
		h := &r.hdrs[i].hdr
		*h = unix.Msghdr{
			Name:    (*byte)(unsafe.Pointer(&r.names[i])),
			Namelen: uint32(unsafe.Sizeof(r.names[i])),
			Iov:     &r.iovs[i],
		}
		h.SetIovlen(1)
	}
	if err := r.rc.Read(r.readFn); err != nil {
		return 0, err // closed, or the read deadline
	}
	if r.errno != 0 {
		return 0, &net.OpError{Op: "read", Net: "udp", Err: os.NewSyscallError("recvmmsg", r.errno)}
	}
	for i := range r.got {
		msgs[i].n = int(r.hdrs[i].n)
		if r.hdrs[i].hdr.Flags&unix.MSG_TRUNC != 0 {
			msgs[i].n = 0 // larger than a slot: neither relay nor Parley
		}
		msgs[i].from = sockaddrAddrPort(&r.names[i])
	}
	return r.got, nil
}

// read is the RawConn.Read callback: it returns false to wait for the
// socket to become readable.
func (r *mmsgReader) read(fd uintptr) bool {
	for {
		n, _, errno := unix.Syscall6(unix.SYS_RECVMMSG, fd, uintptr(unsafe.Pointer(&r.hdrs[0])), uintptr(r.want), 0, 0, 0)
		switch errno {
		case unix.EINTR:
			continue
		case unix.EAGAIN:
			return false
		}
		r.got, r.errno = int(n), errno
		if errno != 0 {
			r.got = 0
		}
		return true
	}
}

// sockaddrAddrPort decodes a sockaddr_in or sockaddr_in6. A link-local IPv6
// source keeps its scope as a numeric zone.
func sockaddrAddrPort(sa *unix.RawSockaddrInet6) netip.AddrPort {
	p := (*[2]byte)(unsafe.Pointer(&sa.Port))
	port := binary.BigEndian.Uint16(p[:])
	switch sa.Family {
	case unix.AF_INET:
		sa4 := (*unix.RawSockaddrInet4)(unsafe.Pointer(sa))
		return netip.AddrPortFrom(netip.AddrFrom4(sa4.Addr), port)
	case unix.AF_INET6:
		a := netip.AddrFrom16(sa.Addr)
		if sa.Scope_id != 0 {
			a = a.WithZone(strconv.FormatUint(uint64(sa.Scope_id), 10))
		}
		return netip.AddrPortFrom(a, port)
	}
	return netip.AddrPort{}
}

// mmsgWriter writes with sendmmsg(2), and a run of equal-sized datagrams to
// one address as one GSO message. It keeps no per-call state (that is in
// each txBatch's txScratch), so goroutines may share it.
type mmsgWriter struct {
	udpSocket
	plain plainWriter // for what the batch cannot carry
	// gsoMax is the largest segment a GSO message may have; 0 when the
	// socket has no UDP_SEGMENT. A segment that the path's MTU does not
	// allow fails with EINVAL and lowers it; a device without checksum
	// offload fails with EIO and ends GSO.
	gsoMax atomic.Int32
}

func newMmsgWriter(pc net.PacketConn) batchWriter {
	s, ok := newUDPSocket(pc)
	if !ok {
		return nil
	}
	w := &mmsgWriter{udpSocket: s, plain: newPlainWriter(pc)}
	s.rc.Control(func(fd uintptr) {
		if _, err := unix.GetsockoptInt(int(fd), unix.SOL_UDP, unix.UDP_SEGMENT); err == nil {
			w.gsoMax.Store(MaxPacketSize)
		}
	})
	return w
}

// txScratch holds a batch's sendmmsg arguments: one mmsghdr, sockaddr and
// UDP_SEGMENT control message per message, and one iovec per datagram, a
// message's iovecs side by side.
type txScratch struct {
	hdrs   []mmsghdr
	names  []unix.RawSockaddrInet6
	oob    []byte
	iovs   []unix.Iovec
	pkt    []int  // the datagram in tx.msgs behind each iovec
	first  []int  // each message's first iovec
	placed []bool // by datagram: in a message already

	// The callback's arguments and results.
	from, to int
	sent     int
	errno    syscall.Errno
	sendFn   func(fd uintptr) bool
}

// oobSize is the room for one UDP_SEGMENT control message.
var oobSize = unix.CmsgSpace(2)

func (sc *txScratch) grow(n int) {
	if len(sc.iovs) >= n {
		return
	}
	n = max(n, batchSize)
	sc.hdrs = make([]mmsghdr, n)
	sc.names = make([]unix.RawSockaddrInet6, n)
	sc.oob = make([]byte, n*oobSize)
	sc.iovs = make([]unix.Iovec, n)
	sc.pkt = make([]int, n)
	sc.first = make([]int, n+1)
	sc.placed = make([]bool, n)
	sc.sendFn = sc.send
}

// putSockaddr encodes a as the socket's family wants it into sa and
// returns its length, or 0 if a cannot be sent by sendmmsg from this
// socket (an IPv6 address on an IPv4 socket, or a zoned address: the plain
// writer handles or refuses those).
func (s *udpSocket) putSockaddr(sa *unix.RawSockaddrInet6, a netip.AddrPort) uint32 {
	ip := a.Addr()
	if ip.Zone() != "" {
		return 0
	}
	p := (*[2]byte)(unsafe.Pointer(&sa.Port))
	binary.BigEndian.PutUint16(p[:], a.Port())
	if !s.v6 {
		if !ip.Is4() {
			return 0
		}
		sa4 := (*unix.RawSockaddrInet4)(unsafe.Pointer(sa))
		sa4.Family = unix.AF_INET
		sa4.Addr = ip.As4()
		return unix.SizeofSockaddrInet4
	}
	sa.Family = unix.AF_INET6
	sa.Flowinfo = 0
	sa.Addr = ip.As16() // an IPv4 address comes out v4-mapped
	sa.Scope_id = 0
	return unix.SizeofSockaddrInet6
}

func (w *mmsgWriter) writeBatch(tx *txBatch) error {
	msgs := tx.msgs
	sc := &tx.scratch
	sc.grow(len(msgs))
	placed := sc.placed[:len(msgs)]
	clear(placed)
	gsoMax := int(w.gsoMax.Load())
	var err error
	m, iov := 0, 0
	for i := range msgs {
		if placed[i] {
			continue
		}
		p := &msgs[i]
		namelen := w.putSockaddr(&sc.names[m], p.to)
		if namelen == 0 {
			if e := w.plain.write(p.b, p.to); e != nil {
				p.failed, err = true, e
			}
			continue
		}
		// A message carries the datagram and, with GSO, the address's next
		// ones in order while they are of its size; the last may be
		// shorter. Datagrams to other addresses in between wait for their
		// own messages: only the order per address matters.
		sc.first[m] = iov
		sc.iovs[iov].Base, sc.pkt[iov] = unsafe.SliceData(p.b), i
		sc.iovs[iov].SetLen(len(p.b))
		iov++
		seg, total, segs := len(p.b), len(p.b), 1
		for j := i + 1; j < len(msgs) && seg > 0 && seg <= gsoMax && segs < maxGSOSegments; j++ {
			q := &msgs[j]
			if placed[j] || q.to != p.to {
				continue
			}
			if len(q.b) > seg || total+len(q.b) > maxGSOBytes {
				break
			}
			placed[j] = true
			sc.iovs[iov].Base, sc.pkt[iov] = unsafe.SliceData(q.b), j
			sc.iovs[iov].SetLen(len(q.b))
			iov++
			segs++
			total += len(q.b)
			if len(q.b) < seg {
				break
			}
		}
		h := &sc.hdrs[m].hdr
		*h = unix.Msghdr{
			Name:    (*byte)(unsafe.Pointer(&sc.names[m])),
			Namelen: namelen,
			Iov:     &sc.iovs[sc.first[m]],
		}
		h.SetIovlen(segs)
		if segs > 1 {
			oob := sc.oob[m*oobSize : (m+1)*oobSize]
			cm := (*unix.Cmsghdr)(unsafe.Pointer(&oob[0]))
			cm.Level = unix.SOL_UDP
			cm.Type = unix.UDP_SEGMENT
			cm.SetLen(unix.CmsgLen(2))
			binary.NativeEndian.PutUint16(oob[unix.CmsgLen(0):], uint16(seg))
			h.Control = &oob[0]
			h.SetControllen(oobSize)
		}
		m++
	}
	sc.first[m] = iov

	// Message k's datagrams are msgs[sc.pkt[i]] for i in its iovecs.
	each := func(k int, fn func(p *txMsg)) {
		for i := sc.first[k]; i < sc.first[k+1]; i++ {
			fn(&msgs[sc.pkt[i]])
		}
	}
	for k := 0; k < m; {
		sc.from, sc.to = k, m
		if e := w.rc.Write(sc.sendFn); e != nil {
			// The socket is closed: nothing more will go.
			for ; k < m; k++ {
				each(k, markFailed)
			}
			return e
		}
		if sc.errno == 0 {
			k += sc.sent
			continue
		}
		// Message k failed; the kernel says why only for it.
		e := error(&net.OpError{Op: "write", Net: "udp", Err: os.NewSyscallError("sendmmsg", sc.errno)})
		if gso := sc.first[k+1]-sc.first[k] > 1; gso && (sc.errno == unix.EINVAL || sc.errno == unix.EIO || sc.errno == unix.EOPNOTSUPP) {
			if sc.errno == unix.EINVAL {
				// A segment too large for the path's MTU: GSO only
				// smaller ones from now on.
				w.gsoMax.Store(int32(len(msgs[sc.pkt[sc.first[k]]].b)) - 1)
			} else {
				w.gsoMax.Store(0) // a device without GSO
			}
			// Resend the message's datagrams one by one.
			e = nil
			each(k, func(p *txMsg) {
				if e2 := w.plain.write(p.b, p.to); e2 != nil {
					p.failed, e = true, e2
				}
			})
		} else {
			each(k, markFailed)
		}
		if e != nil {
			err = e
		}
		k++
	}
	return err
}

func markFailed(p *txMsg) { p.failed = true }

// send is the RawConn.Write callback: it returns false to wait for room in
// the socket's send buffer.
func (sc *txScratch) send(fd uintptr) bool {
	for {
		n, _, errno := unix.Syscall6(unix.SYS_SENDMMSG, fd, uintptr(unsafe.Pointer(&sc.hdrs[sc.from])), uintptr(sc.to-sc.from), 0, 0, 0)
		switch errno {
		case unix.EINTR:
			continue
		case unix.EAGAIN:
			return false
		}
		sc.sent, sc.errno = int(n), errno
		return true
	}
}
