package relay

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/parley-p2p/parley/directory/ticket"
)

// Client timing.
const (
	// DefaultAllocateTimeout bounds Allocate and Ping when their context
	// has no deadline.
	DefaultAllocateTimeout = 10 * time.Second
	// allocateRetry is the first ALLOCATE retransmission interval; it
	// doubles up to allocateRetryMax, as the transport's handshake does.
	allocateRetry    = 250 * time.Millisecond
	allocateRetryMax = 2 * time.Second
	pingRetry        = time.Second
)

var (
	// ErrChannelClosed is returned by Send on a closed channel, or one
	// whose TCP connection has failed.
	ErrChannelClosed = errors.New("relay: channel closed")
	// ErrChannelLost means a refresh got a different channel: the relay
	// forgot the allocation (it restarted, or the channel idled out).
	// Allocate again.
	ErrChannelLost = errors.New("relay: channel lost")
)

// AllocateError is a relay's refusal of an ALLOCATE.
type AllocateError struct {
	Code   ErrorCode
	Reason string // from the relay; escape before display
}

func (e *AllocateError) Error() string {
	return fmt.Sprintf("relay refused the allocation: %v (%q)", e.Code, e.Reason)
}

// Client is a peer's side of relaying: it allocates channels on supernodes
// and sends on them, over the peer's shared UDP socket or over TCP. It does
// not read the UDP socket: the peer's demultiplexer (normally a Mux) passes
// it relay packets with HandlePacket. Its methods are safe for concurrent
// use.
//
// An ALLOCATED carries no request identifier, so the client keeps at most
// one ALLOCATE outstanding per relay (others wait) and matches the answer
// by the relay's address and the ticket's expiry.
type Client struct {
	pc   net.PacketConn
	wap  addrPortWriter
	log  *slog.Logger
	bufs bufPool

	mu      sync.RWMutex // protects the fields below
	waits   map[netip.AddrPort]*allocWait
	sems    map[netip.AddrPort]chan struct{}
	pings   map[uint64]chan time.Time
	chans   map[chanKey]*Channel // UDP channels
	tcps    map[string]*clientTCP
	deliver func(*Channel, []byte) // set by a Mux
	onClose func(*Channel)         // set by a Mux
	closed  bool

	wg      sync.WaitGroup // TCP reader goroutines
	dropped atomic.Uint64
}

type chanKey struct {
	relay netip.AddrPort
	id    uint64
}

// allocWait is an outstanding ALLOCATE.
type allocWait struct {
	relay   netip.AddrPort // for UDP
	tcp     *clientTCP     // for TCP
	side    byte
	ticket  []byte
	expires int64 // the ticket's, to match the ALLOCATED
	res     chan allocResult

	// Under Client.mu:
	done    bool     // the ALLOCATE's caller has returned
	created *Channel // the channel its answer created, if new
}

// finish ends w for its caller, which returns ch (nil on failure). A
// channel that w's answer created and the caller does not return is
// closed: the caller gave up as the answer came.
func (c *Client) finish(w *allocWait, ch *Channel) {
	c.mu.Lock()
	w.done = true
	orphan := w.created
	c.mu.Unlock()
	if orphan != nil && orphan != ch {
		orphan.Close()
	}
}

type allocResult struct {
	ch  *Channel
	err error
}

func (w *allocWait) answer(r allocResult) {
	select {
	case w.res <- r:
	default: // already answered (a retransmission's answer)
	}
}

// NewClient returns a client that sends on pc. logger may be nil.
func NewClient(pc net.PacketConn, logger *slog.Logger) *Client {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	c := &Client{
		pc:    pc,
		log:   logger,
		waits: make(map[netip.AddrPort]*allocWait),
		sems:  make(map[netip.AddrPort]chan struct{}),
		pings: make(map[uint64]chan time.Time),
		chans: make(map[chanKey]*Channel),
		tcps:  make(map[string]*clientTCP),
	}
	c.wap, _ = pc.(addrPortWriter)
	return c
}

// Close closes the client's TCP connections and waits for their readers.
// Its channels stop working. It does not close the UDP socket.
func (c *Client) Close() error {
	c.mu.Lock()
	c.closed = true
	tcps := c.tcps
	c.tcps = make(map[string]*clientTCP)
	chans := c.chans
	c.chans = make(map[chanKey]*Channel)
	c.mu.Unlock()
	for _, t := range tcps {
		t.conn.Close()
	}
	c.wg.Wait()
	for _, ch := range chans {
		ch.Close()
	}
	for _, t := range tcps {
		c.mu.RLock()
		var tc []*Channel
		for _, ch := range t.chans {
			tc = append(tc, ch)
		}
		c.mu.RUnlock()
		for _, ch := range tc {
			ch.Close()
		}
	}
	return nil
}

// Dropped counts relay packets the client could not use: malformed,
// unexpected, or for a channel it does not hold.
func (c *Client) Dropped() uint64 { return c.dropped.Load() }

// A Channel is one side of a relay allocation: packets sent on it are
// delivered to the other side's peer. Its methods are safe for concurrent
// use.
type Channel struct {
	c      *Client
	relay  netip.AddrPort // UDP channels
	tcp    *clientTCP     // TCP channels
	id     uint64
	side   byte
	ticket []byte
	closed atomic.Bool

	peerReady chan struct{} // closed when the peer is first known bound

	mu        sync.Mutex // protects the fields below
	expires   time.Time
	remaining uint64
	rate      uint32
	peerBound bool
}

// ID is the channel ID the relay chose.
func (ch *Channel) ID() uint64 { return ch.id }

// Side is 0 for the ticket's device A, 1 for device B.
func (ch *Channel) Side() byte { return ch.side }

// Relay is the relay's address: "ip:port" for UDP, "tcp:host:port" for a
// channel bound over TCP.
func (ch *Channel) Relay() string {
	if ch.tcp != nil {
		return "tcp:" + ch.tcp.addr
	}
	return ch.relay.String()
}

// Expires is when the ticket, and so the channel, expires.
func (ch *Channel) Expires() time.Time {
	ch.mu.Lock()
	defer ch.mu.Unlock()
	return ch.expires
}

// PeerBound reports whether the other side has allocated, as the relay
// said in an answer to an Allocate or Refresh, or in the ALLOCATED it sends
// when the other side binds. Sides never unbind, so once true it stays.
func (ch *Channel) PeerBound() bool {
	ch.mu.Lock()
	defer ch.mu.Unlock()
	return ch.peerBound
}

// PeerReady is closed once PeerBound is true.
func (ch *Channel) PeerReady() <-chan struct{} { return ch.peerReady }

// Remaining is the byte budget the relay reported in its latest answer,
// and Rate its rate limit in bytes per second.
func (ch *Channel) Remaining() (budget uint64, rate uint32) {
	ch.mu.Lock()
	defer ch.mu.Unlock()
	return ch.remaining, ch.rate
}

func (ch *Channel) update(a allocatedBody) {
	ch.mu.Lock()
	ch.expires = a.expiry()
	ch.remaining = a.remaining
	ch.rate = a.rate
	ready := a.peerBound && !ch.peerBound
	ch.peerBound = ch.peerBound || a.peerBound
	ch.mu.Unlock()
	if ready {
		close(ch.peerReady)
	}
}

// Send sends b to the other side through the relay, as one SEND. It may be
// called as soon as Allocate returns: until the other side allocates, the
// relay holds what this side sends (up to MaxHeldPackets packets and
// MaxHeldBytes bytes, for MaxHoldTime) and delivers it when the other side
// binds, which saves waiting for PeerReady. The relay drops a packet
// silently beyond that, or if the ticket's budget or rate does not allow
// it. Send does not retain b.
func (ch *Channel) Send(b []byte) error {
	if ch.closed.Load() {
		return ErrChannelClosed
	}
	if len(b) > MaxPayload {
		return fmt.Errorf("relay: packet of %d bytes is larger than %d", len(b), MaxPayload)
	}
	c := ch.c
	n := HeaderSize + len(b)
	bp := c.bufs.get(frameHeader + n)
	defer c.bufs.put(bp)
	if ch.tcp != nil {
		f := (*bp)[:frameHeader+n]
		binary.BigEndian.PutUint16(f, uint16(n))
		putHeader(f[frameHeader:], TypeSend, ch.id)
		copy(f[frameHeader+HeaderSize:], b)
		return ch.tcp.write(f)
	}
	pkt := (*bp)[:n]
	putHeader(pkt, TypeSend, ch.id)
	copy(pkt[HeaderSize:], b)
	return c.writeUDP(pkt, ch.relay)
}

// Refresh sends the channel's ALLOCATE again: it keeps the allocation from
// idling out, moves this side to the address the relay now sees (after a
// NAT rebinding), and updates PeerBound and Remaining. A peer refreshes an
// idle channel it wants to keep, and one whose path has stalled.
func (ch *Channel) Refresh(ctx context.Context) error {
	var got *Channel
	var err error
	if ch.tcp != nil {
		got, err = ch.c.allocateOn(ctx, ch.tcp, ch.side, ch.ticket)
	} else {
		got, err = ch.c.Allocate(ctx, ch.relay, ch.side, ch.ticket)
	}
	if err != nil {
		return err
	}
	if got != ch {
		ch.Close()
		got.Close()
		return ErrChannelLost
	}
	return nil
}

// Close forgets the channel locally (a Mux forgets its virtual address).
// The relay drops the allocation when it idles out or expires.
func (ch *Channel) Close() error {
	if ch.closed.Swap(true) {
		return nil
	}
	c := ch.c
	c.mu.Lock()
	if ch.tcp != nil {
		if ch.tcp.chans[ch.id] == ch {
			delete(ch.tcp.chans, ch.id)
		}
	} else if k := (chanKey{ch.relay, ch.id}); c.chans[k] == ch {
		delete(c.chans, k)
	}
	onClose := c.onClose
	c.mu.Unlock()
	if onClose != nil {
		onClose(ch)
	}
	return nil
}

func (c *Client) writeUDP(b []byte, to netip.AddrPort) error {
	var err error
	if c.wap != nil {
		_, err = c.wap.WriteToUDPAddrPort(b, to)
	} else {
		_, err = c.pc.WriteTo(b, net.UDPAddrFromAddrPort(to))
	}
	return err
}

// Allocate binds side (0 for the ticket's device A, 1 for B) of the
// ticket's channel on the relay at relay, over UDP. It retransmits the
// ALLOCATE (250 ms, doubling to 2 s) until the relay answers, ctx ends, or
// DefaultAllocateTimeout passes if ctx has no deadline. A refusal is an
// *AllocateError. Allocating a ticket again returns the same *Channel.
func (c *Client) Allocate(ctx context.Context, relay netip.AddrPort, side byte, tk []byte) (*Channel, error) {
	relay = netip.AddrPortFrom(relay.Addr().Unmap(), relay.Port())
	t, err := checkAllocate(side, tk)
	if err != nil {
		return nil, err
	}
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, DefaultAllocateTimeout)
		defer cancel()
	}
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return nil, net.ErrClosed
	}
	sem := c.sems[relay]
	if sem == nil {
		sem = make(chan struct{}, 1)
		c.sems[relay] = sem
	}
	c.mu.Unlock()
	select {
	case sem <- struct{}{}:
	case <-ctx.Done():
		return nil, fmt.Errorf("allocate on relay %v: %w", relay, ctx.Err())
	}
	defer func() { <-sem }()

	// w keeps a copy of tk: the reader goroutine creates the channel from
	// it (see answer).
	w := &allocWait{relay: relay, side: side, ticket: bytes.Clone(tk), expires: t.ExpiresAt.Unix(), res: make(chan allocResult, 1)}
	c.mu.Lock()
	c.waits[relay] = w
	c.mu.Unlock()
	var ch *Channel
	defer func() {
		c.mu.Lock()
		delete(c.waits, relay)
		c.mu.Unlock()
		c.finish(w, ch)
	}()

	pkt := appendAllocate(make([]byte, 0, AllocateSize), side, tk)
	retry := allocateRetry
	timer := time.NewTimer(0)
	defer timer.Stop()
	for {
		select {
		case r := <-w.res:
			if r.err != nil {
				return nil, fmt.Errorf("allocate on relay %v: %w", relay, r.err)
			}
			ch = r.ch
			return ch, nil
		case <-timer.C:
			if err := c.writeUDP(pkt, relay); err != nil {
				c.log.Debug("relay: allocate send failed", "relay", relay, "err", err)
			}
			timer.Reset(retry)
			retry = min(2*retry, allocateRetryMax)
		case <-ctx.Done():
			return nil, fmt.Errorf("allocate on relay %v: %w", relay, ctx.Err())
		}
	}
}

func checkAllocate(side byte, tk []byte) (ticket.Ticket, error) {
	if side > 1 {
		return ticket.Ticket{}, fmt.Errorf("relay: side %d, want 0 or 1", side)
	}
	t, err := ticket.Parse(tk)
	if err != nil {
		return t, fmt.Errorf("relay: %w", err)
	}
	return t, nil
}

// bind returns the channel for an ALLOCATED answer to w (nil: none),
// creating it or updating the one a previous Allocate of the same ticket
// created. It runs on the goroutine that read the answer, before the next
// packet is read: the relay may follow the answer at once with DELIVERs of
// what it held (docs/protocol.md §6.3), and they must find the channel. It
// returns nil if w's caller has already returned.
func (c *Client) bind(k chanKey, t *clientTCP, side byte, tk []byte, a allocatedBody, w *allocWait) *Channel {
	c.mu.Lock()
	if w != nil && w.done {
		c.mu.Unlock()
		return nil
	}
	var ch *Channel
	if t != nil {
		ch = t.chans[k.id]
	} else {
		ch = c.chans[k]
	}
	if ch == nil || ch.closed.Load() {
		ch = &Channel{c: c, relay: k.relay, tcp: t, id: k.id, side: side, ticket: append([]byte(nil), tk...),
			peerReady: make(chan struct{})}
		if t != nil {
			t.chans[k.id] = ch
		} else {
			c.chans[k] = ch
		}
		if w != nil {
			w.created = ch
		}
	}
	c.mu.Unlock()
	ch.update(a)
	return ch
}

// HandlePacket processes a relay packet that arrived on the shared UDP
// socket from from: answers to ALLOCATE and PING, and DELIVERs, which go to
// the Mux. It does not retain b.
func (c *Client) HandlePacket(b []byte, from netip.AddrPort) {
	from = netip.AddrPortFrom(from.Addr().Unmap(), from.Port())
	h, body, err := parseHeader(b)
	if err != nil {
		c.dropped.Add(1)
		return
	}
	switch h.typ {
	case TypeDeliver:
		c.mu.RLock()
		ch := c.chans[chanKey{from, h.channel}]
		fn := c.deliver
		c.mu.RUnlock()
		if ch == nil || fn == nil {
			c.dropped.Add(1)
			return
		}
		fn(ch, body)
	case TypeAllocated, TypeError:
		c.mu.RLock()
		w := c.waits[from]
		ch := c.chans[chanKey{from, h.channel}]
		c.mu.RUnlock()
		c.answer(w, ch, h, body)
	case TypePong:
		c.pong(body)
	default:
		c.dropped.Add(1)
	}
}

// answer passes an ALLOCATED or ERROR to the outstanding ALLOCATE w.
//
// An ALLOCATED for a channel we hold (ch) updates it: it answers a refresh
// of it, or comes late for an earlier ALLOCATE of it (a retransmission's
// answer), or is the relay saying that the other side bound. It answers w
// only if w is for the same ticket: under load a late answer for one
// channel used to be taken for the next ALLOCATE to the same relay, whose
// ticket often has the same expiry second ("relay: channel lost").
//
// An ALLOCATED that answers w creates its channel here, not in w's
// goroutine (see bind); if w's caller gives up as it comes, the caller
// closes the channel again (finish).
func (c *Client) answer(w *allocWait, ch *Channel, h header, body []byte) {
	if h.typ == TypeAllocated && ch != nil {
		a, err := parseAllocated(body)
		if err != nil || a.expires != ch.Expires().Unix() {
			c.dropped.Add(1)
			return
		}
		ch.update(a)
		if w != nil && bytes.Equal(w.ticket, ch.ticket) {
			w.answer(allocResult{ch: ch})
		}
		return
	}
	if w == nil {
		c.dropped.Add(1)
		return
	}
	if h.typ == TypeError {
		code, reason, err := parseError(body)
		if err != nil {
			c.dropped.Add(1)
			return
		}
		w.answer(allocResult{err: &AllocateError{Code: code, Reason: reason}})
		return
	}
	a, err := parseAllocated(body)
	if err != nil || h.channel == 0 || a.expires != w.expires {
		c.dropped.Add(1)
		return
	}
	if ch := c.bind(chanKey{w.relay, h.channel}, w.tcp, w.side, w.ticket, a, w); ch != nil {
		w.answer(allocResult{ch: ch})
	}
}

func (c *Client) pong(body []byte) {
	nonce, err := parsePong(body)
	if err != nil {
		c.dropped.Add(1)
		return
	}
	now := time.Now()
	c.mu.RLock()
	ch := c.pings[nonce]
	c.mu.RUnlock()
	if ch == nil {
		c.dropped.Add(1)
		return
	}
	select {
	case ch <- now:
	default:
	}
}

// Ping measures the round-trip time to the relay at relay with PING/PONG,
// resending every second until an answer, ctx ends, or
// DefaultAllocateTimeout passes if ctx has no deadline. Each attempt has
// its own nonce, so a late answer never shortens the measurement. Pings
// also keep the NAT mapping towards the relay open.
func (c *Client) Ping(ctx context.Context, relay netip.AddrPort) (time.Duration, error) {
	relay = netip.AddrPortFrom(relay.Addr().Unmap(), relay.Port())
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, DefaultAllocateTimeout)
		defer cancel()
	}
	got := make(chan time.Time, 1)
	var nonces []uint64
	sent := make(map[uint64]time.Time)
	defer func() {
		c.mu.Lock()
		for _, n := range nonces {
			delete(c.pings, n)
		}
		c.mu.Unlock()
	}()
	timer := time.NewTimer(0)
	defer timer.Stop()
	for {
		select {
		case <-timer.C:
			nonce := randUint64()
			c.mu.Lock()
			c.pings[nonce] = got
			c.mu.Unlock()
			nonces = append(nonces, nonce)
			sent[nonce] = time.Now()
			if err := c.writeUDP(appendPing(make([]byte, 0, PingSize), TypePing, nonce), relay); err != nil {
				c.log.Debug("relay: ping send failed", "relay", relay, "err", err)
			}
			timer.Reset(pingRetry)
		case at := <-got:
			// The newest attempt that could have been answered bounds the
			// RTT from below; the oldest from above. Attribute the answer
			// to the newest attempt sent before it, the conservative choice.
			var best time.Time
			for _, t := range sent {
				if !t.After(at) && t.After(best) {
					best = t
				}
			}
			return at.Sub(best), nil
		case <-ctx.Done():
			return 0, fmt.Errorf("ping relay %v: %w", relay, ctx.Err())
		}
	}
}

func randUint64() uint64 {
	var b [8]byte
	rand.Read(b[:])
	return binary.BigEndian.Uint64(b[:])
}

// clientTCP is a TCP connection to one relay, shared by the channels bound
// over it. Its reader goroutine belongs to the Client.
type clientTCP struct {
	c    *Client
	conn net.Conn
	addr string
	sem  chan struct{} // one ALLOCATE in flight
	wmu  sync.Mutex    // serialises writes
	dead atomic.Bool

	// Under c.mu:
	wait  *allocWait
	chans map[uint64]*Channel
}

func (t *clientTCP) write(frame []byte) error {
	if t.dead.Load() {
		return ErrChannelClosed
	}
	t.wmu.Lock()
	_, err := t.conn.Write(frame)
	t.wmu.Unlock()
	if err != nil {
		t.conn.Close()
		return fmt.Errorf("relay: TCP write: %w", err)
	}
	return nil
}

// AllocateTCP binds side of the ticket's channel on the relay at
// relayTCPAddr over TCP, for a peer whose UDP is blocked. It dials with dial
// (nil means a net.Dialer) unless the client already has a live
// connection to that address, which channels share. DELIVERs for the
// channel arrive over the connection and surface through the Mux like
// those over UDP.
func (c *Client) AllocateTCP(ctx context.Context, relayTCPAddr string, dial func(ctx context.Context, network, addr string) (net.Conn, error), side byte, tk []byte) (*Channel, error) {
	if _, err := checkAllocate(side, tk); err != nil {
		return nil, err
	}
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, DefaultAllocateTimeout)
		defer cancel()
	}
	t, err := c.tcpConn(ctx, relayTCPAddr, dial)
	if err != nil {
		return nil, err
	}
	return c.allocateOn(ctx, t, side, tk)
}

// tcpConn returns the live connection to addr, dialling one if needed.
func (c *Client) tcpConn(ctx context.Context, addr string, dial func(ctx context.Context, network, addr string) (net.Conn, error)) (*clientTCP, error) {
	c.mu.RLock()
	t := c.tcps[addr]
	c.mu.RUnlock()
	if t != nil && !t.dead.Load() {
		return t, nil
	}
	if dial == nil {
		var d net.Dialer
		dial = d.DialContext
	}
	conn, err := dial(ctx, "tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("dial relay %v: %w", addr, err)
	}
	if tc, ok := conn.(*net.TCPConn); ok {
		tc.SetNoDelay(true) // frames are packets: never wait to coalesce
	}
	t = &clientTCP{c: c, conn: conn, addr: addr, sem: make(chan struct{}, 1), chans: make(map[uint64]*Channel)}
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		conn.Close()
		return nil, net.ErrClosed
	}
	if old := c.tcps[addr]; old != nil && !old.dead.Load() {
		// Another caller dialled first: use theirs.
		c.mu.Unlock()
		conn.Close()
		return old, nil
	}
	c.tcps[addr] = t
	c.wg.Add(1)
	c.mu.Unlock()
	go func() {
		defer c.wg.Done()
		t.readLoop()
	}()
	return t, nil
}

// allocateOn sends an ALLOCATE over t and waits for the answer. TCP is
// reliable, so there is no retransmission.
func (c *Client) allocateOn(ctx context.Context, t *clientTCP, side byte, tk []byte) (*Channel, error) {
	tt, err := checkAllocate(side, tk)
	if err != nil {
		return nil, err
	}
	select {
	case t.sem <- struct{}{}:
	case <-ctx.Done():
		return nil, fmt.Errorf("allocate on relay tcp:%v: %w", t.addr, ctx.Err())
	}
	defer func() { <-t.sem }()
	w := &allocWait{tcp: t, side: side, ticket: bytes.Clone(tk), expires: tt.ExpiresAt.Unix(), res: make(chan allocResult, 1)}
	c.mu.Lock()
	t.wait = w
	c.mu.Unlock()
	var ch *Channel
	defer func() {
		c.mu.Lock()
		t.wait = nil
		c.mu.Unlock()
		c.finish(w, ch)
	}()
	pkt := appendAllocate(make([]byte, frameHeader, frameHeader+AllocateSize), side, tk)
	binary.BigEndian.PutUint16(pkt, uint16(AllocateSize))
	if err := t.write(pkt); err != nil {
		return nil, fmt.Errorf("allocate on relay tcp:%v: %w", t.addr, err)
	}
	select {
	case r := <-w.res:
		if r.err != nil {
			return nil, fmt.Errorf("allocate on relay tcp:%v: %w", t.addr, r.err)
		}
		ch = r.ch
		return ch, nil
	case <-ctx.Done():
		return nil, fmt.Errorf("allocate on relay tcp:%v: %w", t.addr, ctx.Err())
	}
}

func (t *clientTCP) readLoop() {
	c := t.c
	defer func() {
		t.dead.Store(true)
		t.conn.Close()
		c.mu.Lock()
		if c.tcps[t.addr] == t {
			delete(c.tcps, t.addr)
		}
		c.mu.Unlock()
	}()
	r := bufio.NewReaderSize(t.conn, 64<<10)
	var buf []byte
	for {
		pkt, err := readFrame(r, &buf)
		if err != nil {
			c.log.Debug("relay: TCP connection ended", "relay", t.addr, "err", err)
			return
		}
		h, body, err := parseHeader(pkt)
		if err != nil {
			c.dropped.Add(1)
			continue
		}
		switch h.typ {
		case TypeDeliver:
			c.mu.RLock()
			ch := t.chans[h.channel]
			fn := c.deliver
			c.mu.RUnlock()
			if ch == nil || fn == nil {
				c.dropped.Add(1)
				continue
			}
			fn(ch, body)
		case TypeAllocated, TypeError:
			c.mu.RLock()
			w := t.wait
			ch := t.chans[h.channel]
			c.mu.RUnlock()
			c.answer(w, ch, h, body)
		case TypePong:
			c.pong(body)
		default:
			c.dropped.Add(1)
		}
	}
}
