package relay

import (
	"errors"
	"net"
	"net/netip"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/parley-p2p/parley/internal/deadline"
)

// VirtualPrefix holds the virtual addresses a Mux gives relay channels:
// a unique local (RFC 4193) prefix, "parl" in ASCII after fd00. They never
// reach a real socket.
var VirtualPrefix = netip.MustParsePrefix("fd00:7061:726c::/48")

// muxQueue is how many received packets wait for ReadFrom; beyond it the
// Mux drops, as a full socket buffer would.
const muxQueue = 1024

// Mux is the net.PacketConn a peer's transport runs on: it carries both
// direct packets and packets relayed through channels, so that the
// transport's path migration moves a session between a relay and a direct
// path without knowing relays exist.
//
// The Mux owns reading the real socket. Its reader goroutine reads a batch
// of datagrams at a time (on Linux, with recvmmsg; see batch.go) and sorts
// every one: Parley packets (0xC1) wait for ReadFrom with their real source
// address; relay packets for a peer (answers, DELIVERs) go to the Client,
// which hands DELIVERs back to wait for ReadFrom with the channel's virtual
// address; relay packets for a supernode (ALLOCATE, SEND, PING, CONFIRM)
// go to the Server set with ServeRelay, which forwards a batch's SENDs
// together; anything else (STUN) goes to the HandleOther function. WriteTo
// a virtual address sends through the channel; to a real address, straight
// to the socket.
//
// All methods are safe for concurrent use. Close stops the reader; it does
// not close the socket, which belongs to the caller.
type Mux struct {
	pc  net.PacketConn
	wap addrPortWriter
	c   *Client

	in         chan muxPacket
	bufs       bufPool
	rdl        deadline.Deadline
	done       chan struct{} // closed by Close
	readerDone chan struct{}
	dead       chan struct{} // closed when the socket fails
	readErr    error         // set before dead is closed

	mu      sync.Mutex // protects the fields below
	byAddr  map[netip.AddrPort]*Channel
	addrOf  map[*Channel]netip.AddrPort
	other   func(b []byte, from netip.AddrPort)
	server  *Server
	closed  bool
	dropped atomic.Uint64
}

type muxPacket struct {
	bp   *[]byte
	n    int
	from netip.AddrPort
}

type addrPortReader interface {
	ReadFromUDPAddrPort(b []byte) (int, netip.AddrPort, error)
}

// NewMux starts demultiplexing pc. c receives the relay packets for this
// peer and its DELIVERs surface through the Mux; c may be nil for a socket
// that only serves as a supernode or talks directly.
func NewMux(pc net.PacketConn, c *Client) *Mux {
	m := &Mux{
		pc:         pc,
		c:          c,
		in:         make(chan muxPacket, muxQueue),
		rdl:        deadline.New(),
		done:       make(chan struct{}),
		readerDone: make(chan struct{}),
		dead:       make(chan struct{}),
		byAddr:     make(map[netip.AddrPort]*Channel),
		addrOf:     make(map[*Channel]netip.AddrPort),
	}
	m.wap, _ = pc.(addrPortWriter)
	if c != nil {
		c.mu.Lock()
		c.deliver = m.deliver
		c.onClose = m.forget
		c.mu.Unlock()
	}
	go m.readLoop()
	return m
}

// HandleOther sets the function that receives datagrams that are neither
// Parley nor relay packets, such as STUN responses. b is valid only during
// the call, which runs on the Mux's reader goroutine: it must not block.
func (m *Mux) HandleOther(fn func(b []byte, from netip.AddrPort)) {
	m.mu.Lock()
	m.other = fn
	m.mu.Unlock()
}

// ServeRelay makes the Mux pass relay packets addressed to a supernode
// (ALLOCATE, SEND, PING, CONFIRM) to s: the peer volunteers as a supernode
// on its one socket. nil stops it.
func (m *Mux) ServeRelay(s *Server) {
	m.mu.Lock()
	m.server = s
	m.mu.Unlock()
}

// VirtualAddr returns the address under which ch's packets appear: an
// address in VirtualPrefix whose last 8 bytes are the channel ID, port
// derived from the ID. Bytes 6–7 tell apart channels with the same ID on
// different relay addresses (one ticket allocated at a relay's IPv4 and
// IPv6 addresses has one ID). The address stays the same as long as ch is
// open; a channel has it from the moment AllocateEarly returns it.
func (m *Mux) VirtualAddr(ch *Channel) netip.AddrPort {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.addrLocked(ch)
}

func (m *Mux) addrLocked(ch *Channel) netip.AddrPort {
	if a, ok := m.addrOf[ch]; ok {
		return a
	}
	var b [16]byte
	p := VirtualPrefix.Addr().As16()
	copy(b[:6], p[:6])
	for i := 8; i < 16; i++ {
		b[i] = byte(ch.id >> (8 * (15 - i)))
	}
	port := uint16(ch.id>>48) ^ uint16(ch.id>>32) ^ uint16(ch.id>>16) ^ uint16(ch.id)
	if port == 0 {
		port = 1
	}
	var a netip.AddrPort
	for k := uint16(0); ; k++ {
		b[6], b[7] = byte(k>>8), byte(k)
		a = netip.AddrPortFrom(netip.AddrFrom16(b), port)
		if m.byAddr[a] == nil {
			break
		}
	}
	// Close sets closed before it calls forget, which waits for m.mu: a
	// channel open now is forgotten later; a closed one may have been
	// forgotten already, and must not come back.
	if !ch.closed.Load() {
		m.byAddr[a] = ch
		m.addrOf[ch] = a
	}
	return a
}

// IsVirtual reports whether a is a relay channel's virtual address.
func (m *Mux) IsVirtual(a netip.AddrPort) bool { return VirtualPrefix.Contains(a.Addr()) }

// Channel returns the channel behind the virtual address a, or nil.
func (m *Mux) Channel(a netip.AddrPort) *Channel {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.byAddr[a]
}

// forget drops a closed channel's address.
func (m *Mux) forget(ch *Channel) {
	m.mu.Lock()
	if a, ok := m.addrOf[ch]; ok {
		delete(m.addrOf, ch)
		delete(m.byAddr, a)
	}
	m.mu.Unlock()
}

// Dropped counts packets the Mux dropped because ReadFrom fell behind.
func (m *Mux) Dropped() uint64 { return m.dropped.Load() }

// readLoop reads the socket until Close or until it fails, a batch of
// datagrams at a time where the platform allows (batch.go). The Server's
// DELIVERs for a batch are written together once it is sorted.
func (m *Mux) readLoop() {
	defer close(m.readerDone)
	r, n := newBatchReader(m.pc)
	msgs := make([]rxMsg, n)
	for i := range msgs {
		msgs[i].buf = make([]byte, MaxPacketSize+1)
	}
	var tx txBatch
	for {
		n, err := r.readBatch(msgs)
		if err != nil {
			select {
			case <-m.done:
				return
			default:
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				continue
			}
			if errors.Is(err, net.ErrClosed) {
				m.readErr = err
				close(m.dead)
				return
			}
			continue // e.g. an ICMP error reported on the socket
		}
		m.mu.Lock()
		srv, other := m.server, m.other
		m.mu.Unlock()
		for _, msg := range msgs[:n] {
			b := msg.buf[:msg.n]
			from := netip.AddrPortFrom(msg.from.Addr().Unmap(), msg.from.Port())
			switch {
			case len(b) == 0:
			case b[0] == 0xC1: // Parley, docs/protocol.md §1
				m.push(b, from)
			case b[0] == FormVersion:
				if toServer(b) {
					if srv != nil {
						srv.handleBatched(b, from, &tx)
					}
				} else if m.c != nil {
					m.c.HandlePacket(b, from)
				}
			default:
				if other != nil {
					other(b, from)
				}
			}
		}
		if srv != nil {
			srv.flush(&tx)
		}
	}
}

// toServer reports whether the relay packet b is for a supernode (ALLOCATE,
// SEND, PING, CONFIRM) rather than for a peer's Client.
func toServer(b []byte) bool {
	if len(b) <= offType {
		return false
	}
	switch Type(b[offType]) {
	case TypeAllocate, TypeSend, TypePing, TypeConfirm:
		return true
	}
	return false
}

// deliver is the Client's hook for a DELIVER on ch (from the reader
// goroutine, or a TCP connection's).
func (m *Mux) deliver(ch *Channel, b []byte) {
	m.mu.Lock()
	if ch.closed.Load() { // closed since the Client found it (see addrLocked)
		m.mu.Unlock()
		return
	}
	a := m.addrLocked(ch)
	m.mu.Unlock()
	m.push(b, a)
}

// push queues a copy of b for ReadFrom.
func (m *Mux) push(b []byte, from netip.AddrPort) {
	bp := m.bufs.get(len(b))
	n := copy(*bp, b)
	select {
	case m.in <- muxPacket{bp, n, from}:
	default:
		m.bufs.put(bp)
		m.dropped.Add(1)
	}
}

// ReadFromUDPAddrPort reads the next Parley packet, direct or relayed, like
// (*net.UDPConn).ReadFromUDPAddrPort. A relayed packet's address is its
// channel's virtual address.
func (m *Mux) ReadFromUDPAddrPort(b []byte) (int, netip.AddrPort, error) {
	select {
	case <-m.rdl.Wait():
		return 0, netip.AddrPort{}, m.opErr("read", os.ErrDeadlineExceeded)
	default:
	}
	select {
	case p := <-m.in:
		n := copy(b, (*p.bp)[:p.n])
		m.bufs.put(p.bp)
		return n, p.from, nil
	case <-m.rdl.Wait():
		return 0, netip.AddrPort{}, m.opErr("read", os.ErrDeadlineExceeded)
	case <-m.done:
		return 0, netip.AddrPort{}, m.opErr("read", net.ErrClosed)
	case <-m.dead:
		return 0, netip.AddrPort{}, m.opErr("read", m.readErr)
	}
}

// ReadFrom implements net.PacketConn; the address is a *net.UDPAddr.
func (m *Mux) ReadFrom(b []byte) (int, net.Addr, error) {
	n, a, err := m.ReadFromUDPAddrPort(b)
	if err != nil {
		return 0, nil, err
	}
	return n, net.UDPAddrFromAddrPort(a), nil
}

var errNoChannel = errors.New("relay: no channel for this virtual address")

// WriteToUDPAddrPort sends b to a: through the relay channel if a is
// virtual, else on the socket.
func (m *Mux) WriteToUDPAddrPort(b []byte, a netip.AddrPort) (int, error) {
	a = netip.AddrPortFrom(a.Addr().Unmap(), a.Port())
	if VirtualPrefix.Contains(a.Addr()) {
		m.mu.Lock()
		ch := m.byAddr[a]
		m.mu.Unlock()
		if ch == nil {
			return 0, m.opErr("write", errNoChannel)
		}
		if err := ch.Send(b); err != nil {
			return 0, m.opErr("write", err)
		}
		return len(b), nil
	}
	if m.wap != nil {
		return m.wap.WriteToUDPAddrPort(b, a)
	}
	return m.pc.WriteTo(b, net.UDPAddrFromAddrPort(a))
}

// WriteTo implements net.PacketConn; addr must be a *net.UDPAddr.
func (m *Mux) WriteTo(b []byte, addr net.Addr) (int, error) {
	ua, ok := addr.(*net.UDPAddr)
	if !ok {
		return 0, m.opErr("write", errors.New("relay: not a UDP address"))
	}
	return m.WriteToUDPAddrPort(b, ua.AddrPort())
}

func (m *Mux) opErr(op string, err error) error {
	return &net.OpError{Op: op, Net: "udp", Addr: m.pc.LocalAddr(), Err: err}
}

// Close stops the Mux: pending and future reads fail with net.ErrClosed.
// It waits for the reader goroutine. It does not close the socket or the
// Client.
func (m *Mux) Close() error {
	m.mu.Lock()
	if m.closed {
		m.mu.Unlock()
		return nil
	}
	m.closed = true
	close(m.done)
	m.mu.Unlock()
	if m.c != nil {
		m.c.mu.Lock()
		m.c.deliver = nil
		m.c.onClose = nil
		m.c.mu.Unlock()
	}
	// Unblock the reader without closing the caller's socket.
	m.pc.SetReadDeadline(time.Unix(1, 0))
	<-m.readerDone
	m.pc.SetReadDeadline(time.Time{})
	m.rdl.Set(time.Time{})
	for {
		select {
		case p := <-m.in:
			m.bufs.put(p.bp)
		default:
			return nil
		}
	}
}

// LocalAddr is the socket's address.
func (m *Mux) LocalAddr() net.Addr { return m.pc.LocalAddr() }

// SetDeadline sets the read deadline; writes never block.
func (m *Mux) SetDeadline(t time.Time) error { return m.SetReadDeadline(t) }

// SetReadDeadline makes pending and future reads fail after t with an
// error satisfying errors.Is(err, os.ErrDeadlineExceeded). Zero means
// never.
func (m *Mux) SetReadDeadline(t time.Time) error {
	m.rdl.Set(t)
	return nil
}

// SetWriteDeadline is accepted and ignored: writes do not block (UDP), or
// block only on a TCP channel's connection.
func (m *Mux) SetWriteDeadline(t time.Time) error { return nil }
