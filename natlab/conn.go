package natlab

import (
	"fmt"
	"net"
	"net/netip"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/parley-p2p/parley/internal/deadline"
)

// queueOverhead is what each queued datagram costs a Conn's receive buffer
// beyond its payload, like the kernel's per-skb overhead; it bounds a queue
// of empty datagrams.
const queueOverhead = 64

// A Conn is a UDP socket on a Host. It implements net.PacketConn with the
// kernel's semantics: writes never block and succeed even when the datagram
// is later lost; each Conn has a bounded receive queue that drops new
// datagrams when full (DropSocketBuffer); deadlines make reads and writes
// fail with an error satisfying errors.Is(err, os.ErrDeadlineExceeded) and
// net.Error.Timeout; Close unblocks readers with net.ErrClosed.
//
// Like *net.UDPConn it also has ReadFromUDPAddrPort and WriteToUDPAddrPort,
// which allocate nothing, and SetReadBuffer. All methods are safe for
// concurrent use.
type Conn struct {
	w    *World
	h    *Host
	port uint16

	closing  atomic.Bool   // set first by Close; stops writes
	closedCh chan struct{} // closed by Close; wakes readers
	notify   chan struct{} // a datagram was queued (cap 1)
	rd, wd   deadline.Deadline

	// lastFrom caches the *net.UDPAddr last returned by ReadFrom, so a
	// stream of datagrams from one peer does not allocate an address each.
	lastFrom atomic.Pointer[cachedAddr]

	mu       sync.Mutex // protects the fields below; taken after World.mu
	closed   bool
	q        pktRing
	qBytes   int
	bufBytes int
}

type cachedAddr struct {
	ap netip.AddrPort
	ua *net.UDPAddr
}

func newConn(h *Host, port uint16, buf int) *Conn {
	return &Conn{
		w:        h.w,
		h:        h,
		port:     port,
		closedCh: make(chan struct{}),
		notify:   make(chan struct{}, 1),
		rd:       deadline.New(),
		wd:       deadline.New(),
		bufBytes: buf,
	}
}

// enqueue adds p to the receive queue, or reports false if the queue is
// full or the Conn closed; the caller then still owns p. Called with
// World.mu held.
func (c *Conn) enqueue(p *packet) bool {
	size := len(p.b) + queueOverhead
	c.mu.Lock()
	if c.closed || c.qBytes+size > c.bufBytes {
		c.mu.Unlock()
		return false
	}
	c.q.push(p)
	c.qBytes += size
	c.mu.Unlock()
	c.signal()
	return true
}

func (c *Conn) signal() {
	select {
	case c.notify <- struct{}{}:
	default:
	}
}

// ReadFromUDPAddrPort reads one datagram into b, like
// (*net.UDPConn).ReadFromUDPAddrPort. A datagram longer than b is
// truncated. It blocks until a datagram arrives, the read deadline passes
// or the Conn is closed.
func (c *Conn) ReadFromUDPAddrPort(b []byte) (int, netip.AddrPort, error) {
	for {
		dl := c.rd.Wait()
		if deadline.Passed(dl) {
			return 0, netip.AddrPort{}, c.opError("read", os.ErrDeadlineExceeded)
		}
		c.mu.Lock()
		if c.closed {
			c.mu.Unlock()
			return 0, netip.AddrPort{}, c.opError("read", net.ErrClosed)
		}
		if p := c.q.pop(); p != nil {
			c.qBytes -= len(p.b) + queueOverhead
			more := c.q.len() > 0
			c.mu.Unlock()
			if more {
				c.signal() // pass the wake-up on to any other reader
			}
			n := copy(b, p.b)
			src := p.src
			p.release()
			return n, src, nil
		}
		c.mu.Unlock()
		select {
		case <-c.notify:
		case <-dl:
		case <-c.closedCh:
		}
	}
}

// ReadFrom implements net.PacketConn. The returned address is a
// *net.UDPAddr that may be shared with earlier and later calls: treat it
// as read-only.
func (c *Conn) ReadFrom(b []byte) (int, net.Addr, error) {
	n, ap, err := c.ReadFromUDPAddrPort(b)
	if err != nil {
		return n, nil, err
	}
	if ca := c.lastFrom.Load(); ca != nil && ca.ap == ap {
		return n, ca.ua, nil
	}
	ua := net.UDPAddrFromAddrPort(ap)
	c.lastFrom.Store(&cachedAddr{ap: ap, ua: ua})
	return n, ua, nil
}

// WriteToUDPAddrPort sends b to addr, like
// (*net.UDPConn).WriteToUDPAddrPort. It copies b, never blocks, and returns
// len(b) even if the datagram is then dropped.
func (c *Conn) WriteToUDPAddrPort(b []byte, addr netip.AddrPort) (int, error) {
	if c.closing.Load() {
		return 0, c.opError("write", net.ErrClosed)
	}
	if deadline.Passed(c.wd.Wait()) {
		return 0, c.opError("write", os.ErrDeadlineExceeded)
	}
	addr = netip.AddrPortFrom(addr.Addr().Unmap(), addr.Port())
	if !addr.Addr().Is4() || addr.Port() == 0 {
		return 0, c.opError("write", fmt.Errorf("natlab: bad destination %v: %w", addr, syscall.EINVAL))
	}
	if len(b) > maxPayload {
		return 0, c.opError("write", syscall.EMSGSIZE)
	}
	p := newPacket(netip.AddrPort{}, addr, b)
	w := c.w
	w.mu.Lock()
	if w.closed {
		w.mu.Unlock()
		p.release()
		return 0, c.opError("write", net.ErrClosed)
	}
	p.src = netip.AddrPortFrom(c.h.ifc.addr, c.port)
	c.h.sendLocked(w, p, w.now())
	w.mu.Unlock()
	return len(b), nil
}

// WriteTo implements net.PacketConn; addr must be a *net.UDPAddr.
func (c *Conn) WriteTo(b []byte, addr net.Addr) (int, error) {
	ua, ok := addr.(*net.UDPAddr)
	if !ok || ua == nil {
		return 0, c.opError("write", fmt.Errorf("natlab: destination %v (%T) is not a *net.UDPAddr: %w", addr, addr, syscall.EINVAL))
	}
	return c.WriteToUDPAddrPort(b, ua.AddrPort())
}

// Close closes the Conn, unblocking readers, and frees its port. Closing
// twice returns an error wrapping net.ErrClosed.
func (c *Conn) Close() error {
	c.closing.Store(true)
	w := c.w
	w.mu.Lock()
	if c.h.conns[c.port] == c {
		delete(c.h.conns, c.port)
	}
	w.mu.Unlock()

	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return c.opError("close", net.ErrClosed)
	}
	c.closed = true
	for p := c.q.pop(); p != nil; p = c.q.pop() {
		p.release()
	}
	c.qBytes = 0
	c.mu.Unlock()
	close(c.closedCh)
	c.rd.Set(time.Time{}) // stop the deadline timers
	c.wd.Set(time.Time{})
	return nil
}

// LocalAddr returns the Conn's address as a *net.UDPAddr. Unlike the
// kernel, which reports 0.0.0.0 for a socket bound to every address, it
// reports the host's current address: a natlab host has exactly one, and
// it changes when the host moves.
func (c *Conn) LocalAddr() net.Addr {
	c.w.mu.Lock()
	a := c.h.ifc.addr
	c.w.mu.Unlock()
	return net.UDPAddrFromAddrPort(netip.AddrPortFrom(a, c.port))
}

// SetDeadline sets both the read and the write deadline.
func (c *Conn) SetDeadline(t time.Time) error {
	if err := c.SetReadDeadline(t); err != nil {
		return err
	}
	return c.SetWriteDeadline(t)
}

// SetReadDeadline sets when pending and future reads fail; the zero time
// means never.
func (c *Conn) SetReadDeadline(t time.Time) error {
	if c.closing.Load() {
		return c.opError("set", net.ErrClosed)
	}
	c.rd.Set(t)
	return nil
}

// SetWriteDeadline sets when future writes fail; the zero time means never.
// Writes never block, so it only matters once it has passed.
func (c *Conn) SetWriteDeadline(t time.Time) error {
	if c.closing.Load() {
		return c.opError("set", net.ErrClosed)
	}
	c.wd.Set(t)
	return nil
}

// SetReadBuffer sets the size of the receive queue in bytes (each datagram
// counts its payload plus 64). Datagrams already queued stay.
func (c *Conn) SetReadBuffer(bytes int) error {
	if bytes <= 0 {
		return c.opError("set", fmt.Errorf("natlab: read buffer %d: %w", bytes, syscall.EINVAL))
	}
	c.mu.Lock()
	c.bufBytes = bytes
	c.mu.Unlock()
	return nil
}

// SetWriteBuffer accepts and ignores a send buffer size: writes never
// queue in a Conn.
func (c *Conn) SetWriteBuffer(bytes int) error { return nil }

func (c *Conn) opError(op string, err error) error {
	return &net.OpError{Op: op, Net: "udp", Source: c.LocalAddr(), Err: err}
}
