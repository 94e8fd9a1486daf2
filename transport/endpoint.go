package transport

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/parley-p2p/parley/transport/internal/handshake"
	"github.com/parley-p2p/parley/transport/internal/wire"
)

// PacketListener is the seam through which Parley opens UDP sockets: in
// production *net.ListenConfig, in tests a natlab host. Production code never
// calls net.ListenUDP directly, so that the same code runs on the in-process
// network lab unchanged.
type PacketListener interface {
	ListenPacket(ctx context.Context, network, address string) (net.PacketConn, error)
}

var _ PacketListener = (*net.ListenConfig)(nil)

// packet is one received datagram on its way to a session.
type packet struct {
	buf     []byte // pooled backing array
	data    []byte
	from    netip.AddrPort
	rcvTime time.Time
}

// EndpointStats counts what an endpoint dropped, by reason. A dropped packet
// never creates state.
type EndpointStats struct {
	Received         uint64
	DroppedMalformed uint64 // not a well-formed Parley packet
	DroppedUnknown   uint64 // for a connection ID we do not have
	DroppedAuth      uint64 // failed mac1 or AEAD authentication
	DroppedReplay    uint64 // replayed initiations and duplicated data packets
	DroppedQueueFull uint64 // a session's receive queue was full
	DroppedRefused   uint64 // handshakes refused: not listening, AcceptPeer, rate limit, accept queue full
	CookiesSent      uint64
}

type endpointCounters struct {
	received, droppedMalformed, droppedUnknown, droppedAuth, droppedReplay,
	droppedQueueFull, droppedRefused, cookiesSent atomic.Uint64
}

// An Endpoint runs the Parley transport on one UDP socket: it dials and
// accepts sessions and demultiplexes their packets by connection ID. Packets
// that are not Parley's (STUN, relay control) go to Config-independent
// handler set with HandleOther. Its methods are safe for concurrent use.
type Endpoint struct {
	pc        net.PacketConn
	key       PrivateKey
	pub       PublicKey
	cfg       Config
	log       *slog.Logger
	responder *handshake.Responder
	pool      sync.Pool
	stats     endpointCounters
	readDone  chan struct{}
	reader    batchReader
	writer    batchWriter
	offload   bool          // GSO/GRO: reads may hold several coalesced packets
	hsWorkers chan struct{} // semaphore: handshakes being authenticated

	// mu protects the fields below.
	mu          sync.Mutex
	sessions    map[wire.ConnID]*Session
	byEphemeral map[[32]byte]*Session // responder sessions not yet confirmed
	parked      []*packet             // early data ahead of its initiation, oldest first
	listening   bool
	acceptQ     chan *Session
	other       func(b []byte, from netip.AddrPort)
	closed      bool
	closing     chan struct{}

	// closeWithLastSession stops the endpoint when its last session ends
	// (the endpoint of a package-level Dial). Set before any session runs.
	closeWithLastSession bool
}

// NewEndpoint starts the transport on pc with the device's private key. The
// endpoint reads from pc until Close; it does not close pc.
func NewEndpoint(pc net.PacketConn, key PrivateKey, cfg *Config) *Endpoint {
	c := cfg.withDefaults()
	e := &Endpoint{
		pc:          pc,
		key:         key,
		pub:         key.Public(),
		cfg:         c,
		log:         c.Logger,
		responder:   handshake.NewResponder(key.keyPair()),
		sessions:    make(map[wire.ConnID]*Session),
		byEphemeral: make(map[[32]byte]*Session),
		acceptQ:     make(chan *Session, DefaultAcceptQueue),
		readDone:    make(chan struct{}),
		closing:     make(chan struct{}),
	}
	size := c.MaxPacketSize + 1 // one spare byte tells an oversized datagram
	e.pool.New = func() any { b := make([]byte, size); return &packet{buf: b} }
	e.reader, e.writer, e.offload = newBatchIO(pc)
	e.hsWorkers = make(chan struct{}, runtime.GOMAXPROCS(0))
	go e.readLoop()
	return e
}

// PublicKey is the endpoint's static public key.
func (e *Endpoint) PublicKey() PublicKey { return e.pub }

// LocalAddr is the socket's local address.
func (e *Endpoint) LocalAddr() net.Addr { return e.pc.LocalAddr() }

// Stats returns the endpoint's drop counters.
func (e *Endpoint) Stats() EndpointStats {
	c := &e.stats
	return EndpointStats{
		Received: c.received.Load(), DroppedMalformed: c.droppedMalformed.Load(),
		DroppedUnknown: c.droppedUnknown.Load(), DroppedAuth: c.droppedAuth.Load(),
		DroppedReplay: c.droppedReplay.Load(), DroppedQueueFull: c.droppedQueueFull.Load(),
		DroppedRefused: c.droppedRefused.Load(), CookiesSent: c.cookiesSent.Load(),
	}
}

// HandleOther sets the function that receives datagrams that are not
// Parley packets (such as STUN responses). b is only valid during the call.
func (e *Endpoint) HandleOther(fn func(b []byte, from netip.AddrPort)) {
	e.mu.Lock()
	e.other = fn
	e.mu.Unlock()
}

// Listen makes the endpoint accept incoming sessions.
func (e *Endpoint) Listen() {
	e.mu.Lock()
	e.listening = true
	e.mu.Unlock()
}

// Accept waits for the next incoming session. Call Listen first.
func (e *Endpoint) Accept(ctx context.Context) (*Session, error) {
	select {
	case s := <-e.acceptQ:
		return s, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	case <-e.closing:
		return nil, ErrClosed
	}
}

// WriteTo sends a raw datagram on the endpoint's socket (for STUN and other
// protocols that share it).
func (e *Endpoint) WriteTo(b []byte, addr netip.AddrPort) error {
	_, err := e.pc.WriteTo(b, net.UDPAddrFromAddrPort(addr))
	return err
}

// ForceCookies makes the endpoint demand cookies from every initiator, as it
// does under load.
func (e *Endpoint) ForceCookies(on bool) { e.responder.ForceLoad(on) }

// Dial opens a session to the device with public key remote at addr. It
// returns when the handshake has completed (one round trip), or fails when
// ctx ends or the handshake times out.
func (e *Endpoint) Dial(ctx context.Context, addr netip.AddrPort, remote PublicKey) (*Session, error) {
	s, err := e.DialEarly(addr, remote)
	if err != nil {
		return nil, err
	}
	select {
	case <-s.ready:
		return s, nil
	case <-s.done:
		if s.startErr != nil {
			return nil, fmt.Errorf("dial %v: %w", addr, s.startErr)
		}
		return nil, fmt.Errorf("dial %v: %w", addr, ErrClosed)
	case <-ctx.Done():
		s.CloseWithError(wire.NoError, "")
		<-s.done
		return nil, fmt.Errorf("dial %v: %w", addr, ctx.Err())
	}
}

// DialEarly opens a session like Dial but returns at once, with the
// initiation on its way. Streams opened and written before the response
// arrives travel as early data (0-RTT, docs/protocol.md §3.5), right behind
// the initiation: the peer reads the first bytes one round trip sooner.
// Before the response the session grants the early allowance only
// (EarlyMaxStreams streams, EarlyMaxData bytes); more waits for it.
//
// Early data is protected like the initiation's payload: confidential to
// the peer and authenticated, refused when replayed, but without forward
// secrecy should the peer's static key leak later. If the handshake fails,
// the session closes: its streams fail and Err says why. Handshake waits
// for the outcome.
func (e *Endpoint) DialEarly(addr netip.AddrPort, remote PublicKey) (*Session, error) {
	addr = netip.AddrPortFrom(addr.Addr().Unmap(), addr.Port())
	e.mu.Lock()
	if e.closed {
		e.mu.Unlock()
		return nil, ErrClosed
	}
	cid := e.freshCIDLocked()
	s := newSession(e, true, cid, remote, addr)
	e.sessions[cid] = s
	e.mu.Unlock()
	go s.run(time.Now())
	return s, nil
}

func (e *Endpoint) freshCIDLocked() wire.ConnID {
	for {
		c := newCID()
		if _, ok := e.sessions[c]; !ok {
			return c
		}
	}
}

// Close closes every session (telling each peer) and stops reading. It does
// not close the socket.
func (e *Endpoint) Close() error {
	e.mu.Lock()
	if e.closed {
		e.mu.Unlock()
		<-e.readDone
		return nil
	}
	e.closed = true
	close(e.closing)
	sessions := make([]*Session, 0, len(e.sessions))
	for _, s := range e.sessions {
		sessions = append(sessions, s)
	}
	e.mu.Unlock()
	for _, s := range sessions {
		s.CloseWithError(wire.NoError, "endpoint closed")
	}
	// Sessions linger in closing state for 3 PTO; do not wait for that, but
	// stop them now: the socket is going away.
	for _, s := range sessions {
		s.abort()
	}
	for _, s := range sessions {
		<-s.done
	}
	e.stopReading()
	// Wait for handshake workers: taking every slot means none is running.
	for i := 0; i < cap(e.hsWorkers); i++ {
		e.hsWorkers <- struct{}{}
	}
	for i := 0; i < cap(e.hsWorkers); i++ {
		<-e.hsWorkers
	}
	return nil
}

func (e *Endpoint) removeSession(s *Session) {
	e.mu.Lock()
	if e.sessions[s.localCID] == s {
		delete(e.sessions, s.localCID)
	}
	for k, v := range e.byEphemeral {
		if v == s {
			delete(e.byEphemeral, k)
		}
	}
	stop := e.closeWithLastSession && len(e.sessions) == 0 && !e.closed
	if stop {
		e.closed = true
		close(e.closing)
	}
	e.mu.Unlock()
	if stop {
		e.stopReading()
	}
}

// stopReading unblocks and ends the read loop without closing the caller's
// socket.
func (e *Endpoint) stopReading() {
	e.pc.SetReadDeadline(time.Unix(1, 0))
	<-e.readDone
	e.pc.SetReadDeadline(time.Time{})
}

func (e *Endpoint) forgetEphemeral(s *Session) {
	e.mu.Lock()
	for k, v := range e.byEphemeral {
		if v == s {
			delete(e.byEphemeral, k)
		}
	}
	e.mu.Unlock()
}

func (e *Endpoint) write(b []byte, to *net.UDPAddr) { e.writeBatch(b, len(b), to) }

// writeBatch sends b as packets of seg bytes each (the last may be shorter).
func (e *Endpoint) writeBatch(b []byte, seg int, to *net.UDPAddr) {
	if err := e.writer.writeBatch(b, seg, to); err != nil {
		e.log.Debug("write failed", "to", to, "err", err)
	}
}

func (e *Endpoint) getPacket() *packet { return e.pool.Get().(*packet) }

func (e *Endpoint) putPacket(p *packet) {
	p.data = nil
	e.pool.Put(p)
}

type addrPortReader interface {
	ReadFromUDPAddrPort(b []byte) (int, netip.AddrPort, error)
}

func (e *Endpoint) readLoop() {
	defer close(e.readDone)
	var big []byte
	if e.offload {
		big = make([]byte, 1<<16) // GRO may coalesce up to 64 KiB
	}
	for {
		var p *packet
		var buf []byte
		if big != nil {
			buf = big
		} else {
			p = e.getPacket()
			buf = p.buf
		}
		n, seg, from, err := e.reader.readBatch(buf)
		if err != nil {
			if p != nil {
				e.putPacket(p)
			}
			e.mu.Lock()
			closed := e.closed
			e.mu.Unlock()
			if closed || errors.Is(err, net.ErrClosed) {
				return
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				continue
			}
			e.log.Debug("read failed", "err", err)
			continue
		}
		from = netip.AddrPortFrom(from.Addr().Unmap(), from.Port())
		now := time.Now()
		if p != nil {
			e.deliverRaw(p, n, from, now)
			continue
		}
		// Split a coalesced read into its packets.
		for off := 0; off < n; off += seg {
			m := min(seg, n-off)
			p := e.getPacket()
			if m > len(p.buf) {
				e.putPacket(p)
				e.stats.received.Add(1)
				e.stats.droppedMalformed.Add(1)
				continue
			}
			copy(p.buf, buf[off:off+m])
			e.deliverRaw(p, m, from, now)
		}
	}
}

// deliverRaw checks the size of a datagram read into p.buf and routes it.
func (e *Endpoint) deliverRaw(p *packet, n int, from netip.AddrPort, now time.Time) {
	e.stats.received.Add(1)
	if n > e.cfg.MaxPacketSize {
		e.stats.droppedMalformed.Add(1)
		e.putPacket(p)
		return
	}
	p.data = p.buf[:n]
	p.from = from
	p.rcvTime = now
	e.handle(p)
}

// handle routes one datagram. It owns p.
func (e *Endpoint) handle(p *packet) {
	b := p.data
	if !wire.IsParley(b) {
		e.mu.Lock()
		other := e.other
		e.mu.Unlock()
		if other != nil {
			other(b, p.from)
		} else {
			e.stats.droppedMalformed.Add(1)
		}
		e.putPacket(p)
		return
	}
	t, err := wire.PacketTypeOf(b)
	if err != nil {
		e.stats.droppedMalformed.Add(1)
		e.putPacket(p)
		return
	}
	switch t {
	case wire.TypeInitiation:
		e.handleInitiation(p)
		return
	case wire.TypeEarlyData:
		e.handleEarly(p)
		return
	}
	cid, err := wire.ParseDestCID(b)
	if err != nil {
		e.stats.droppedMalformed.Add(1)
		e.putPacket(p)
		return
	}
	e.mu.Lock()
	s := e.sessions[cid]
	e.mu.Unlock()
	if s == nil {
		e.stats.droppedUnknown.Add(1)
		e.putPacket(p)
		return
	}
	s.deliver(p)
}

func (s *Session) deliver(p *packet) {
	select {
	case s.recvQ <- p:
	default:
		s.ep.stats.droppedQueueFull.Add(1)
		s.ep.putPacket(p)
	}
}

// maxParked bounds the early data packets kept for initiations still being
// authenticated (or not yet arrived).
const maxParked = 16

// handleEarly routes an early data packet to the unconfirmed session of
// its initiation. One that arrives while its initiation is still being
// authenticated (on a handshake worker) or is reordered ahead of it is
// parked, a few at most, oldest dropped first: the initiator sends what
// was lost again once the session is up.
func (e *Endpoint) handleEarly(p *packet) {
	hdr, err := wire.ParseEarlyHeader(p.data)
	if err != nil {
		e.stats.droppedMalformed.Add(1)
		e.putPacket(p)
		return
	}
	e.mu.Lock()
	s := e.byEphemeral[hdr.Ephemeral]
	if s == nil && !e.closed {
		if len(e.parked) == maxParked {
			e.stats.droppedUnknown.Add(1)
			e.putPacket(e.parked[0])
			e.parked = append(e.parked[:0], e.parked[1:]...)
		}
		e.parked = append(e.parked, p)
		e.mu.Unlock()
		return
	}
	e.mu.Unlock()
	if s == nil {
		e.putPacket(p)
		return
	}
	s.deliver(p)
}

// unparkLocked removes and returns the parked early data of the initiation
// with ephemeral key eph, in arrival order.
func (e *Endpoint) unparkLocked(eph [32]byte) []*packet {
	var mine []*packet
	kept := e.parked[:0]
	for _, p := range e.parked {
		if [32]byte(p.data[4:36]) == eph {
			mine = append(mine, p)
		} else {
			kept = append(kept, p)
		}
	}
	clear(e.parked[len(kept):])
	e.parked = kept
	return mine
}

// handleInitiation screens and answers a handshake initiation. Only an
// initiation that passes mac1 (and, under load, mac2 and the rate limit)
// costs a Diffie-Hellman, and only an authenticated one creates a session.
func (e *Endpoint) handleInitiation(p *packet) {
	b := p.data
	if _, err := wire.ParseInitiation(b); err != nil {
		e.stats.droppedMalformed.Add(1)
		e.putPacket(p)
		return
	}
	e.mu.Lock()
	listening := e.listening && !e.closed
	e.mu.Unlock()
	if !listening {
		e.stats.droppedRefused.Add(1)
		e.putPacket(p)
		return
	}
	switch e.responder.Screen(b, p.from, p.rcvTime) {
	case handshake.Drop:
		e.stats.droppedAuth.Add(1)
		e.putPacket(p)
		return
	case handshake.SendCookie:
		var buf [wire.CookieReplyLen]byte
		if reply, err := e.responder.CookieReply(buf[:0], b, p.from, p.rcvTime); err == nil {
			e.stats.cookiesSent.Add(1)
			e.write(reply, net.UDPAddrFromAddrPort(p.from))
		}
		e.putPacket(p)
		return
	}
	var eph [32]byte
	copy(eph[:], b[wire.InitiationNoiseOffset:])
	e.mu.Lock()
	existing := e.byEphemeral[eph]
	e.mu.Unlock()
	if existing != nil {
		existing.deliver(p) // a retransmission: the session resends its response
		return
	}
	// The Diffie-Hellman work runs on a worker so the reader keeps routing
	// packets, with as many workers as cores. When all are busy the reader
	// does the work itself (back-pressure), and the responder counts
	// itself under load: cookies and per-source limits apply.
	select {
	case e.hsWorkers <- struct{}{}:
		e.responder.SetBusy(false)
		go func() {
			defer func() { <-e.hsWorkers }()
			e.acceptInitiation(p, eph)
		}()
	default:
		e.responder.SetBusy(true)
		e.acceptInitiation(p, eph)
	}
}

// acceptInitiation authenticates an initiation that passed screening and,
// if it is good, creates the session and answers. It owns p.
func (e *Endpoint) acceptInitiation(p *packet, eph [32]byte) {
	b := p.data
	defer e.putPacket(p)
	pending, err := e.responder.Consume(b)
	if err != nil {
		if errors.Is(err, handshake.ErrReplay) {
			e.stats.droppedReplay.Add(1)
		} else {
			e.stats.droppedAuth.Add(1)
		}
		return
	}
	remote := PublicKey(pending.RemoteStatic)
	if e.cfg.AcceptPeer != nil && !e.cfg.AcceptPeer(remote) {
		e.stats.droppedRefused.Add(1)
		return
	}
	if len(e.acceptQ) == cap(e.acceptQ) {
		e.stats.droppedRefused.Add(1)
		return
	}
	e.mu.Lock()
	if e.closed {
		e.mu.Unlock()
		return
	}
	cid := e.freshCIDLocked()
	s := newSession(e, false, cid, remote, p.from)
	resp, keys, err := pending.Respond(nil, s.localParams())
	if err != nil {
		e.mu.Unlock()
		e.stats.droppedAuth.Add(1)
		return
	}
	now := p.rcvTime
	s.installKeys(keys, now)
	s.applyPeerParams(pending.Params)
	s.response = resp
	s.state = stateEstablished
	s.cur.recvBytes = uint64(len(b))
	s.cur.sentBytes = uint64(len(resp))
	close(s.ready)
	s.initEph = eph
	e.sessions[cid] = s
	e.byEphemeral[eph] = s
	early := e.unparkLocked(eph)
	e.mu.Unlock()
	e.write(resp, s.cur.udpAddr)
	for _, p := range early {
		s.deliver(p)
	}
	go s.run(now)
	select {
	case e.acceptQ <- s:
	default:
		s.CloseWithError(wire.InternalError, "accept queue full")
	}
}

// abort ends a session at once, without a closing period.
func (s *Session) abort() {
	select {
	case s.closeCh <- closeRequest{code: wire.NoError, reason: "abort"}:
	default:
	}
	s.abortOnce.Do(func() { close(s.aborted) })
}

// Listener accepts sessions on one socket; see Listen.
type Listener struct {
	ep *Endpoint
}

// Listen starts accepting Parley sessions on pc for the device with private
// key key. Closing the listener ends its sessions but not pc.
func Listen(pc net.PacketConn, key PrivateKey, cfg *Config) (*Listener, error) {
	if pc == nil {
		return nil, errors.New("transport: Listen needs a PacketConn")
	}
	e := NewEndpoint(pc, key, cfg)
	e.Listen()
	return &Listener{ep: e}, nil
}

// Accept waits for the next session.
func (l *Listener) Accept(ctx context.Context) (*Session, error) { return l.ep.Accept(ctx) }

// Addr is the listener's local address.
func (l *Listener) Addr() net.Addr { return l.ep.LocalAddr() }

// Endpoint returns the listener's endpoint, which can also Dial.
func (l *Listener) Endpoint() *Endpoint { return l.ep }

// Close closes the listener and its sessions.
func (l *Listener) Close() error { return l.ep.Close() }

// Dial opens a session over pc to the device with public key remote at addr.
// The local device's key is cfg.PrivateKey (a fresh random key if zero). The
// session has an endpoint of its own, which stops reading pc when the
// session ends; pc itself is not closed.
func Dial(ctx context.Context, pc net.PacketConn, addr net.Addr, remote PublicKey, cfg *Config) (*Session, error) {
	ua, ok := addr.(*net.UDPAddr)
	if !ok {
		return nil, fmt.Errorf("transport: dial: %v is not a UDP address", addr)
	}
	var key PrivateKey
	if cfg != nil {
		key = cfg.PrivateKey
	}
	if key == (PrivateKey{}) {
		var err error
		if key, err = GeneratePrivateKey(); err != nil {
			return nil, err
		}
	}
	e := NewEndpoint(pc, key, cfg)
	e.closeWithLastSession = true
	s, err := e.Dial(ctx, ua.AddrPort(), remote)
	if err != nil {
		e.Close()
		return nil, err
	}
	return s, nil
}
