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
	// DefaultAllocateTimeout bounds Allocate, AllocateEarly's background
	// retransmission, Refresh and Ping when their context has no deadline.
	DefaultAllocateTimeout = 10 * time.Second
	// allocateRetry is the first ALLOCATE retransmission interval; it
	// doubles up to allocateRetryMax, as the transport's handshake does.
	allocateRetry    = 250 * time.Millisecond
	allocateRetryMax = 2 * time.Second
	pingRetry        = time.Second
)

// ErrChannelClosed is returned by Send on a closed channel, or one whose
// TCP connection has failed, and is Err of a channel that Close closed.
var ErrChannelClosed = errors.New("relay: channel closed")

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
// A channel's ID derives from its ticket (ChannelID), so the client knows
// the channel before the relay answers: it creates the Channel when it
// sends the first ALLOCATE, and matches ALLOCATEDs and ERRORs to it by the
// relay's address (or TCP connection) and the channel ID. Any number of
// ALLOCATEs may be outstanding at once.
//
// Locking: c.mu protects the client's maps; each Channel's mu its state. No
// code holds both at once.
type Client struct {
	pc   net.PacketConn
	wap  addrPortWriter
	log  *slog.Logger
	bufs bufPool
	done chan struct{} // closed by Close: stops the background ALLOCATEs

	mu      sync.RWMutex // protects the fields below
	pings   map[uint64]chan time.Time
	chans   map[chanKey]*Channel // UDP channels
	tcps    map[string]*clientTCP
	deliver func(*Channel, []byte) // set by a Mux
	onClose func(*Channel)         // set by a Mux
	closed  bool

	wg      sync.WaitGroup // TCP readers and AllocateEarly's goroutines
	dropped atomic.Uint64
}

type chanKey struct {
	relay netip.AddrPort
	id    uint64
}

// NewClient returns a client that sends on pc. logger may be nil.
func NewClient(pc net.PacketConn, logger *slog.Logger) *Client {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	c := &Client{
		pc:    pc,
		log:   logger,
		done:  make(chan struct{}),
		pings: make(map[uint64]chan time.Time),
		chans: make(map[chanKey]*Channel),
		tcps:  make(map[string]*clientTCP),
	}
	c.wap, _ = pc.(addrPortWriter)
	return c
}

// Close closes the client's channels and TCP connections, and waits for
// its goroutines. It does not close the UDP socket.
func (c *Client) Close() error {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return nil
	}
	c.closed = true
	close(c.done)
	var chans []*Channel
	for _, ch := range c.chans {
		chans = append(chans, ch)
	}
	tcps := c.tcps
	c.tcps = make(map[string]*clientTCP)
	for _, t := range tcps {
		for _, ch := range t.chans {
			chans = append(chans, ch)
		}
	}
	c.mu.Unlock()
	for _, ch := range chans {
		ch.Close()
	}
	for _, t := range tcps {
		t.conn.Close()
	}
	c.wg.Wait()
	return nil
}

// Dropped counts relay packets the client could not use: malformed,
// unexpected, or for a channel it does not hold.
func (c *Client) Dropped() uint64 { return c.dropped.Load() }

// A Channel is one side of a relay allocation: packets sent on it are
// delivered to the other side's peer. Its methods are safe for concurrent
// use.
//
// A channel exists from the moment its first ALLOCATE is sent: Allocate
// returns it once the relay has answered, AllocateEarly at once. It is
// closed by Close, by the Client's Close, or when the allocation that
// created it fails (Done, Err).
type Channel struct {
	c       *Client
	relay   netip.AddrPort // UDP channels
	tcp     *clientTCP     // TCP channels
	id      uint64
	side    byte
	ticket  []byte
	expires time.Time   // the ticket's
	closed  atomic.Bool // set under mu; read without it by Send

	done      chan struct{} // closed when the channel closes
	peerReady chan struct{} // closed when the peer is first known bound

	mu        sync.Mutex // protects the fields below
	remaining uint64
	rate      uint32
	peerBound bool
	waits     []chan error // callers of outstanding ALLOCATEs, for the next answer
	err       error        // why the channel closed
}

// ID is the channel ID, ChannelID of the ticket.
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
func (ch *Channel) Expires() time.Time { return ch.expires }

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

// Done is closed when the channel closes: by Close, by the Client's Close,
// or because the allocation that created it failed. Err then says why.
func (ch *Channel) Done() <-chan struct{} { return ch.done }

// Err returns nil while the channel is open. Once Done is closed it
// returns why: ErrChannelClosed after Close or the Client's Close; or the
// error that ended the allocation that created the channel, which is what
// Allocate would have returned: it wraps an *AllocateError if the relay
// refused, the context's error if the relay did not answer in time, or
// ErrChannelClosed if a TCP connection ended first.
func (ch *Channel) Err() error {
	ch.mu.Lock()
	defer ch.mu.Unlock()
	return ch.err
}

// Remaining is the byte budget the relay reported in its latest answer,
// and Rate its rate limit in bytes per second; zero before the first
// answer.
func (ch *Channel) Remaining() (budget uint64, rate uint32) {
	ch.mu.Lock()
	defer ch.mu.Unlock()
	return ch.remaining, ch.rate
}

func (ch *Channel) update(a allocatedBody) {
	ch.mu.Lock()
	ch.remaining = a.remaining
	ch.rate = a.rate
	ready := a.peerBound && !ch.peerBound
	ch.peerBound = ch.peerBound || a.peerBound
	ch.mu.Unlock()
	if ready {
		close(ch.peerReady)
	}
}

// register adds a caller waiting for the relay's next answer on ch, and
// returns where the answer will come: nil for an ALLOCATED, else the error.
// It returns nil if ch is closed.
func (ch *Channel) register() chan error {
	ch.mu.Lock()
	defer ch.mu.Unlock()
	if ch.closed.Load() {
		return nil
	}
	w := make(chan error, 1)
	ch.waits = append(ch.waits, w)
	return w
}

// unregister removes w, whose caller stopped waiting.
func (ch *Channel) unregister(w chan error) {
	ch.mu.Lock()
	defer ch.mu.Unlock()
	for i, x := range ch.waits {
		if x == w {
			ch.waits = append(ch.waits[:i], ch.waits[i+1:]...)
			return
		}
	}
}

// answer passes err (nil for an ALLOCATED) to every caller waiting on ch.
func (ch *Channel) answer(err error) {
	ch.mu.Lock()
	ws := ch.waits
	ch.waits = nil
	ch.mu.Unlock()
	for _, w := range ws {
		w <- err // buffered, and each w is answered once
	}
}

// Send sends b to the other side through the relay, as one SEND. It may be
// called as soon as Allocate or AllocateEarly returns: until the other side
// allocates, the relay holds what this side sends (up to MaxHeldPackets
// packets and MaxHeldBytes bytes, for MaxHoldTime) and delivers it when the
// other side binds, which saves waiting for PeerReady. The relay drops a
// packet silently beyond that, or if the ticket's budget or rate does not
// allow it. Send does not retain b.
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

// Refresh sends the channel's ALLOCATE again and waits for the answer, as
// Allocate does: it keeps the allocation from idling out, moves this side
// to the address the relay now sees (after a NAT rebinding), and updates
// PeerBound and Remaining. A peer refreshes an idle channel it wants to
// keep, and one whose path has stalled. If the relay has forgotten the
// allocation (it restarted, or the channel idled out), the refresh creates
// it again, with the same ID, and this side bound; the other side must
// refresh too. A failed Refresh does not close the channel.
func (ch *Channel) Refresh(ctx context.Context) error {
	ctx, cancel := withDefaultTimeout(ctx)
	defer cancel()
	w, pkt, err := ch.c.start(ch)
	if err == nil {
		err = ch.c.await(ctx, ch, w, pkt)
	}
	if err != nil {
		return fmt.Errorf("refresh relay channel on %v: %w", ch.Relay(), err)
	}
	return nil
}

// Close forgets the channel locally (a Mux forgets its virtual address).
// The relay drops the allocation when it idles out or expires.
func (ch *Channel) Close() error {
	ch.closeWith(ErrChannelClosed)
	return nil
}

// closeWith closes ch, for the reason err: Err's value, and the answer to
// the callers still waiting on it.
func (ch *Channel) closeWith(err error) {
	ch.mu.Lock()
	if ch.closed.Load() {
		ch.mu.Unlock()
		return
	}
	ch.closed.Store(true)
	ch.err = err
	ws := ch.waits
	ch.waits = nil
	ch.mu.Unlock()

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
	// Last, so that whoever waits on Done finds the virtual address gone.
	close(ch.done)
	for _, w := range ws {
		w <- err
	}
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

// withDefaultTimeout bounds ctx by DefaultAllocateTimeout if it has no
// deadline.
func withDefaultTimeout(ctx context.Context) (context.Context, context.CancelFunc) {
	if _, ok := ctx.Deadline(); ok {
		return ctx, func() {}
	}
	return context.WithTimeout(ctx, DefaultAllocateTimeout)
}

// Allocate binds side (0 for the ticket's device A, 1 for B) of the
// ticket's channel on the relay at relay, over UDP, and returns the channel
// once the relay has answered. It retransmits the ALLOCATE (250 ms,
// doubling to 2 s) until the relay answers, ctx ends, or
// DefaultAllocateTimeout passes if ctx has no deadline. A refusal is an
// *AllocateError. Allocating a ticket again returns the same *Channel.
func (c *Client) Allocate(ctx context.Context, relay netip.AddrPort, side byte, tk []byte) (*Channel, error) {
	relay = netip.AddrPortFrom(relay.Addr().Unmap(), relay.Port())
	t, err := checkAllocate(side, tk)
	if err != nil {
		return nil, err
	}
	ctx, cancel := withDefaultTimeout(ctx)
	defer cancel()
	return c.allocate(ctx, relay, nil, side, tk, t)
}

// AllocateEarly is Allocate without the wait: it returns the channel as
// soon as the first ALLOCATE is sent, and Send works at once. The relay
// handles a peer's packets in order, so SENDs right behind the ALLOCATE
// find this side bound, and are held until the other side binds
// (docs/protocol.md §6.2, §6.3): a dialling peer's first flight leaves
// without waiting a round trip to the relay. (A SEND that the network
// delivers before the ALLOCATE is dropped; the transport retransmits it.)
//
// In the background, the client retransmits the ALLOCATE as Allocate does
// until the relay answers. If the relay refuses, or does not answer before
// ctx ends (DefaultAllocateTimeout if ctx has no deadline), the channel
// closes and its Err says why: so ctx bounds the allocation, not the call,
// and must outlive the call. A channel the client already held for the
// ticket is returned as it is, and not closed if this ALLOCATE fails.
func (c *Client) AllocateEarly(ctx context.Context, relay netip.AddrPort, side byte, tk []byte) (*Channel, error) {
	relay = netip.AddrPortFrom(relay.Addr().Unmap(), relay.Port())
	t, err := checkAllocate(side, tk)
	if err != nil {
		return nil, err
	}
	return c.allocateEarly(ctx, relay, nil, side, tk, t)
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

// allocate binds side of the ticket tk (parsed: t) on relay over UDP, or
// on the TCP connection tc if not nil, and waits for the answer.
func (c *Client) allocate(ctx context.Context, relay netip.AddrPort, tc *clientTCP, side byte, tk []byte, t ticket.Ticket) (*Channel, error) {
	ch, created, w, pkt, err := c.begin(relay, tc, side, tk, t)
	if err != nil {
		return nil, err
	}
	if err := c.await(ctx, ch, w, pkt); err != nil {
		err = fmt.Errorf("allocate on relay %v: %w", ch.Relay(), err)
		if created {
			ch.closeWith(err)
		}
		return nil, err
	}
	return ch, nil
}

// allocateEarly is allocate, waiting for the answer in a goroutine.
func (c *Client) allocateEarly(ctx context.Context, relay netip.AddrPort, tc *clientTCP, side byte, tk []byte, t ticket.Ticket) (*Channel, error) {
	ch, created, w, pkt, err := c.begin(relay, tc, side, tk, t)
	if err != nil {
		return nil, err
	}
	c.mu.Lock()
	if c.closed { // Close has closed ch, or will
		c.mu.Unlock()
		ch.unregister(w)
		return nil, net.ErrClosed
	}
	c.wg.Add(1)
	c.mu.Unlock()
	go func() {
		defer c.wg.Done()
		ctx, cancel := withDefaultTimeout(ctx)
		defer cancel()
		if err := c.await(ctx, ch, w, pkt); err != nil {
			c.log.Debug("relay: allocation failed", "relay", ch.Relay(), "channel", ch.id, "err", err)
			if created {
				ch.closeWith(fmt.Errorf("allocate on relay %v: %w", ch.Relay(), err))
			}
		}
	}()
	return ch, nil
}

// begin returns the client's channel for the ticket tk on relay or tc,
// creating it if there is none (created), and sends its ALLOCATE: w is
// where the answer will come, pkt the ALLOCATE to retransmit.
func (c *Client) begin(relay netip.AddrPort, tc *clientTCP, side byte, tk []byte, t ticket.Ticket) (ch *Channel, created bool, w chan error, pkt []byte, err error) {
	for {
		ch, created, err = c.open(relay, tc, side, tk, t)
		if err != nil {
			return nil, false, nil, nil, err
		}
		w, pkt, err = c.start(ch)
		if errors.Is(err, errGone) && !created {
			continue // closed since open found it: make another
		}
		if err != nil {
			err = fmt.Errorf("allocate on relay %v: %w", ch.Relay(), err)
			if created {
				ch.closeWith(err)
			}
			return nil, false, nil, nil, err
		}
		return ch, created, w, pkt, nil
	}
}

// open returns the client's open channel for the ticket tk (parsed: t) on
// relay (UDP) or tc (TCP), or creates one; created says which.
func (c *Client) open(relay netip.AddrPort, tc *clientTCP, side byte, tk []byte, t ticket.Ticket) (ch *Channel, created bool, err error) {
	id := ChannelID(tk)
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return nil, false, net.ErrClosed
	}
	k := chanKey{relay, id}
	if tc != nil {
		ch = tc.chans[id]
	} else {
		ch = c.chans[k]
	}
	if ch != nil && !ch.closed.Load() {
		if !bytes.Equal(ch.ticket, tk) || ch.side != side {
			// Another ticket with the same ID (a relay would refuse it),
			// or this client binding both sides of one ticket.
			return nil, false, fmt.Errorf("relay: channel %016x is already bound by this client, for side %d of its ticket", id, ch.side)
		}
		return ch, false, nil
	}
	ch = &Channel{c: c, relay: relay, tcp: tc, id: id, side: side, ticket: bytes.Clone(tk), expires: t.ExpiresAt,
		done: make(chan struct{}), peerReady: make(chan struct{})}
	if tc != nil {
		tc.chans[id] = ch
	} else {
		c.chans[k] = ch
	}
	return ch, true, nil
}

var errGone = errors.New("relay: channel closed meanwhile")

// start sends ch's ALLOCATE, registered for the answer: w is where it will
// come, pkt the ALLOCATE to retransmit. It fails with errGone if ch is
// closed, and if the write fails on a TCP connection; a failed UDP write is
// retransmitted like a lost one.
func (c *Client) start(ch *Channel) (w chan error, pkt []byte, err error) {
	w = ch.register()
	if w == nil {
		return nil, nil, errGone
	}
	if ch.tcp != nil {
		// Unpadded: a TCP side needs no credit.
		pkt = appendAllocate(make([]byte, frameHeader, frameHeader+AllocateSize), ch.side, ch.ticket, 0)
		binary.BigEndian.PutUint16(pkt, uint16(AllocateSize))
		if err := ch.tcp.write(pkt); err != nil {
			ch.unregister(w)
			return nil, nil, err
		}
		return w, pkt, nil
	}
	// Padded, so that the relay may send this side a first flight before
	// its CONFIRM validates it (docs/protocol.md §6.2).
	pkt = appendAllocate(make([]byte, 0, PaddedAllocateSize), ch.side, ch.ticket, PaddedAllocateSize)
	if err := c.writeUDP(pkt, ch.relay); err != nil {
		c.log.Debug("relay: allocate send failed", "relay", ch.relay, "err", err)
	}
	return w, pkt, nil
}

// await waits for the answer w to ch's ALLOCATE pkt, which start sent.
// Over UDP it retransmits pkt after 250 ms, doubling up to 2 s; TCP is
// reliable. It returns nil for an ALLOCATED, the error for an ERROR, or
// ctx's error.
func (c *Client) await(ctx context.Context, ch *Channel, w chan error, pkt []byte) error {
	var timer *time.Timer
	var retry <-chan time.Time // nil over TCP
	interval := allocateRetry
	if ch.tcp == nil {
		timer = time.NewTimer(interval)
		defer timer.Stop()
		retry = timer.C
	}
	for {
		select {
		case err := <-w:
			return err
		case <-retry:
			if err := c.writeUDP(pkt, ch.relay); err != nil {
				c.log.Debug("relay: allocate send failed", "relay", ch.relay, "err", err)
			}
			interval = min(2*interval, allocateRetryMax)
			timer.Reset(interval)
		case <-ctx.Done():
			return ch.giveUp(w, ctx.Err())
		case <-c.done:
			return ch.giveUp(w, net.ErrClosed)
		}
	}
}

// giveUp stops waiting on w and returns err, unless the answer came
// meanwhile.
func (ch *Channel) giveUp(w chan error, err error) error {
	ch.unregister(w)
	select {
	case aerr := <-w:
		return aerr
	default:
		return err
	}
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
		ch := c.chans[chanKey{from, h.channel}]
		c.mu.RUnlock()
		c.answer(ch, h, body)
	case TypePong:
		c.pong(body)
	default:
		c.dropped.Add(1)
	}
}

// answer passes an ALLOCATED or ERROR on ch's channel (nil: one the client
// does not hold) to ch. An ALLOCATED updates ch, whether it answers an
// Allocate or Refresh, comes late for a retransmitted ALLOCATE, or is the
// relay saying that the other side bound; and it answers every caller
// waiting on ch. So does an ERROR, which changes nothing else: the caller
// whose ALLOCATE created the channel closes it. Every ALLOCATED on a UDP
// channel is confirmed at once, which validates this side's address at
// the relay (docs/protocol.md §6.2): it is the one that reached us, so
// its token is the one for the address the relay now sends to.
func (c *Client) answer(ch *Channel, h header, body []byte) {
	if ch == nil {
		c.dropped.Add(1)
		return
	}
	if h.typ == TypeError {
		code, reason, err := parseError(body)
		if err != nil {
			c.dropped.Add(1)
			return
		}
		ch.answer(&AllocateError{Code: code, Reason: reason})
		return
	}
	a, err := parseAllocated(body)
	if err != nil || a.expires != ch.expires.Unix() {
		c.dropped.Add(1)
		return
	}
	if ch.tcp == nil {
		c.confirm(ch, a.token)
	}
	ch.update(a)
	ch.answer(nil)
}

// confirmResends are when a CONFIRM is sent again after the first: the
// relay does not answer one, and a lost one would leave the side limited
// to three times what it sends (a receiver sends little) until the next
// ALLOCATED. A repeat is harmless.
var confirmResends = []time.Duration{250 * time.Millisecond, time.Second}

// confirm sends the relay a CONFIRM of ch's side with token, now and at
// confirmResends while ch is open.
func (c *Client) confirm(ch *Channel, token [TokenSize]byte) {
	pkt := appendConfirm(make([]byte, 0, ConfirmSize), ch.id, confirmBody{side: ch.side, token: token})
	send := func() {
		if ch.closed.Load() {
			return
		}
		if err := c.writeUDP(pkt, ch.relay); err != nil {
			c.log.Debug("relay: confirm send failed", "relay", ch.relay, "err", err)
		}
	}
	send()
	for _, d := range confirmResends {
		time.AfterFunc(d, send)
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
	wmu  sync.Mutex // serialises writes
	dead atomic.Bool

	chans map[uint64]*Channel // under c.mu
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
// relayTCPAddr over TCP, for a peer whose UDP is blocked, and returns the
// channel once the relay has answered. It dials with dial (nil means a
// net.Dialer) unless the client already has a live connection to that
// address, which channels share. DELIVERs for the channel arrive over the
// connection and surface through the Mux like those over UDP.
func (c *Client) AllocateTCP(ctx context.Context, relayTCPAddr string, dial func(ctx context.Context, network, addr string) (net.Conn, error), side byte, tk []byte) (*Channel, error) {
	t, err := checkAllocate(side, tk)
	if err != nil {
		return nil, err
	}
	ctx, cancel := withDefaultTimeout(ctx)
	defer cancel()
	tc, err := c.tcpConn(ctx, relayTCPAddr, dial)
	if err != nil {
		return nil, err
	}
	return c.allocate(ctx, netip.AddrPort{}, tc, side, tk, t)
}

// AllocateTCPEarly is AllocateTCP without waiting for the relay's answer,
// as AllocateEarly is Allocate's: it returns once the connection is up (a
// new one takes a round trip) and the ALLOCATE written. The relay reads a
// connection in order, so SENDs on the channel follow the ALLOCATE there.
// If the relay refuses, the connection ends, or ctx ends first
// (DefaultAllocateTimeout if it has no deadline), the channel closes, and
// its Err says why.
func (c *Client) AllocateTCPEarly(ctx context.Context, relayTCPAddr string, dial func(ctx context.Context, network, addr string) (net.Conn, error), side byte, tk []byte) (*Channel, error) {
	t, err := checkAllocate(side, tk)
	if err != nil {
		return nil, err
	}
	dctx, cancel := withDefaultTimeout(ctx)
	tc, err := c.tcpConn(dctx, relayTCPAddr, dial)
	cancel()
	if err != nil {
		return nil, err
	}
	return c.allocateEarly(ctx, netip.AddrPort{}, tc, side, tk, t)
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
	t = &clientTCP{c: c, conn: conn, addr: addr, chans: make(map[uint64]*Channel)}
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

func (t *clientTCP) readLoop() {
	c := t.c
	var err error
	defer func() {
		t.dead.Store(true)
		t.conn.Close()
		c.mu.Lock()
		if c.tcps[t.addr] == t {
			delete(c.tcps, t.addr)
		}
		var chans []*Channel
		for _, ch := range t.chans {
			chans = append(chans, ch)
		}
		c.mu.Unlock()
		// No answer can come now: fail what waits for one. (A caller
		// that registers later fails to write, for t is dead.)
		for _, ch := range chans {
			ch.answer(fmt.Errorf("%w: TCP connection to the relay ended: %v", ErrChannelClosed, err))
		}
	}()
	r := bufio.NewReaderSize(t.conn, 64<<10)
	var buf []byte
	for {
		var pkt []byte
		pkt, err = readFrame(r, &buf)
		if err != nil {
			c.log.Debug("relay: TCP connection ended", "relay", t.addr, "err", err)
			return
		}
		h, body, perr := parseHeader(pkt)
		if perr != nil {
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
			ch := t.chans[h.channel]
			c.mu.RUnlock()
			c.answer(ch, h, body)
		case TypePong:
			c.pong(body)
		default:
			c.dropped.Add(1)
		}
	}
}
