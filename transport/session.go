package transport

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/parley-p2p/parley/transport/internal/ackhandler"
	"github.com/parley-p2p/parley/transport/internal/aead"
	"github.com/parley-p2p/parley/transport/internal/congestion"
	"github.com/parley-p2p/parley/transport/internal/handshake"
	"github.com/parley-p2p/parley/transport/internal/replay"
	"github.com/parley-p2p/parley/transport/internal/wire"
)

// sessionState is where a session is in its life.
//
//	             response                 Close / error
//	handshaking ─────────▶ established ───────────────▶ closing ─┐
//	     │                     │                                  │ 3 PTO
//	     │ timeout             │ peer's CLOSE / idle timeout      ▼
//	     └─────────────────────┴─────────────▶ draining ───────▶ closed
//
// The responder starts in established: it has keys as soon as it answers.
// closing resends CLOSE (at most once per PTO) to anything the peer still
// sends; draining sends nothing. Both wait three PTOs so that stray packets
// of the old session are absorbed, then the connection ID is released.
type sessionState uint8

const (
	stateHandshaking sessionState = iota
	stateEstablished
	stateClosing
	stateDraining
	stateClosed
)

func (s sessionState) String() string {
	switch s {
	case stateHandshaking:
		return "handshaking"
	case stateEstablished:
		return "established"
	case stateClosing:
		return "closing"
	case stateDraining:
		return "draining"
	case stateClosed:
		return "closed"
	}
	return fmt.Sprintf("sessionState(%d)", uint8(s))
}

// Frame kinds recorded with sent packets, for loss recovery.
const (
	kindStream uint8 = iota + 1
	kindMaxData
	kindMaxStreamData
	kindMaxStreams
	kindResetStream
	kindStopSending
	kindPing
	kindPathChallenge
	kindPathResponse
	kindDatagram
)

// controlFrame is a frame other than STREAM and ACK waiting to be sent.
type controlFrame struct {
	kind uint8
	id   uint64
	v    uint64
	v2   uint64
	data [8]byte
	to   netip.AddrPort // PATH_RESPONSE and PATH_CHALLENGE: the path to use
}

// path is one network path to the peer: an address and what we know of it.
type path struct {
	addr      netip.AddrPort
	udpAddr   *net.UDPAddr // cached for WriteTo
	validated bool
	recvBytes uint64 // before validation: the amplification budget is 3× this
	sentBytes uint64

	challenge       [8]byte
	challengeSent   time.Time
	challengeN      int
	challengeQueued bool // a PATH_CHALLENGE for this path waits to be sent
}

func newPath(addr netip.AddrPort, validated bool) *path {
	return &path{addr: addr, udpAddr: net.UDPAddrFromAddrPort(addr), validated: validated}
}

// budget applies the anti-amplification limit (RFC 9000 §8): to an
// unvalidated address, never more than three times what it sent us. It
// returns how many more bytes may be sent on p.
func (p *path) budget() int {
	if p.validated {
		return MaxPacketSize
	}
	if p.sentBytes >= 3*p.recvBytes {
		return 0
	}
	return int(min(3*p.recvBytes-p.sentBytes, MaxPacketSize))
}

// minPacketRoom is the smallest packet worth sending: header, an ACK or a
// PING, and the tag.
const minPacketRoom = 64

// SessionStats are counters of one session.
type SessionStats struct {
	PacketsSent, PacketsReceived uint64
	BytesSent, BytesReceived     uint64
	EarlyPacketsSent             uint64 // early data (0-RTT) packets, before the response
	EarlyPacketsReceived         uint64 // early data packets accepted (responder)
	PacketsLost                  uint64 // declared lost by loss detection
	SpuriousLosses               uint64 // declared lost, then acknowledged after all
	PTOs                         uint64 // probe timeouts that fired
	DroppedDuplicate             uint64 // replayed or duplicated packets
	DroppedAuth                  uint64 // failed authentication
	SmoothedRTT, MinRTT          time.Duration
	CongestionWindow             int
	KeyUpdates                   int
	PathChanges                  int
}

// A Session is an authenticated, encrypted association between two
// devices, carrying streams and datagrams. Its methods are safe for
// concurrent use.
type Session struct {
	ep        *Endpoint
	cfg       Config
	log       *slog.Logger
	initiator bool
	localCID  wire.ConnID
	remoteCID wire.ConnID
	remoteKey PublicKey

	recvQ    chan *packet
	wakeCh   chan struct{}
	closeCh  chan closeRequest
	done     chan struct{} // closed when the run loop has exited
	ready    chan struct{} // closed when the handshake completed
	closing  chan struct{} // closed when closeErr is set
	startErr error         // why the handshake failed; set before done closes

	rttNanos     atomic.Int64 // smoothed RTT, for stream window auto-tuning
	curValidated atomic.Bool
	remoteAddr   atomic.Pointer[net.UDPAddr]

	// mu protects the fields below, which user goroutines share with the
	// run loop. Never hold mu and a Stream's mu at once.
	mu             sync.Mutex
	streams        map[uint64]*Stream
	sendQueue      []*Stream
	control        []controlFrame
	datagramsOut   [][]byte
	nextStreamN    uint64 // streams we opened so far
	peerMaxStreams uint64 // how many streams the peer lets us open
	peerStreamData uint64 // the peer's initial credit for a stream we open
	peerDatagrams  int    // the peer's max datagram payload; -1 before the handshake
	streamCredit   chan struct{}
	acceptQ        []*Stream
	acceptCh       chan struct{}
	closeErr       error
	stats          SessionStats // the fields not in counters

	counters sessionCounters // per-packet counters, without the lock

	// flowMu protects session-level receive flow control, which Read (user
	// goroutines) and the run loop both touch.
	flowMu        sync.Mutex
	recvHighest   uint64 // sum of the streams' highest offsets
	recvConsumed  uint64 // bytes the application has read
	recvMaxSent   uint64 // MAX_DATA granted to the peer
	recvWindow    uint64
	recvEpoch     time.Time
	recvEpochRead uint64

	datagramsIn chan []byte

	// Everything below belongs to the run loop alone.
	state       sessionState
	initiation  *handshake.Initiator
	initPacket  []byte // resent until answered (initiator)
	initSent    time.Time
	initBackoff time.Duration
	cookie      *[16]byte
	response    []byte // resent for a retransmitted initiation (responder)
	confirmed   bool   // responder: the initiator proved it has the keys
	dialed      netip.AddrPort

	// Early data (§3.5). The initiator seals stream data written before
	// the response under earlySealer (made at the first early packet); the
	// responder opens it with earlyOpener, derived when the first early
	// packet of initEph, the initiation's ephemeral key, arrives.
	earlySealer *aead.Sealer
	earlyOpener *aead.Opener
	initEph     [32]byte
	inEarly     bool // handling an early packet's frames: STREAM, PING, PADDING only

	sealer     *aead.Sealer
	opener     *aead.Opener
	replay     replay.Filter
	keyPhaseN  uint64    // packets sent in the current key phase
	keyPhaseAt time.Time // when the current phase began
	dropPrevAt time.Time // when to forget the previous receive key
	phaseAcked bool      // a packet of the current phase was acknowledged

	rtt    *congestion.RTTStats
	cc     congestion.Controller
	sph    *ackhandler.SentPacketHandler
	rpt    *ackhandler.ReceivedPacketTracker
	ranges []ackhandler.Range
	ackBuf wire.AckFrame
	frames []ackhandler.Frame

	controlOnly bool // sendPacket: control frames only (a challenge past the window)

	cur, prev *path

	// The path a MovePath or UsePath left, and when: for a few PTOs the
	// peer's packets from there do not pull the session back (§4.3).
	leftAddr netip.AddrPort
	leftAt   time.Time

	peerMaxData   uint64 // the peer's MAX_DATA
	sentData      uint64 // new stream bytes sent, counted against peerMaxData
	peerParams    wire.HandshakeParams
	idleTimeout   time.Duration
	lastRecv      time.Time
	lastSent      time.Time
	closeAt       time.Time
	lastCloseSent time.Time
	closeCode     ErrorCode
	maxIncoming   uint64 // cumulative streams the peer may open (we granted)
	peerOpened    uint64 // streams the peer opened so far
	timer         *time.Timer
	scratch       [128]byte

	// The pending GSO batch: packets sealed but not yet written.
	batch      []byte
	batchBuf   *[]byte // batch's pooled backing array
	batchTo    *net.UDPAddr
	batchSeg   int
	batchN     int
	batchShort bool // the last packet is shorter than batchSeg: flush next

	dgramDrops   uint64
	nextPN       uint64 // never reused: the AEAD nonce
	largestRecv  uint64
	phaseFirstPN uint64 // first packet number sent in the current key phase
	probes       int    // probe packets the PTO asked for
	pacingUntil  time.Time
	closeReason  string

	initRetransmitted bool // Karn: no RTT sample from a resent initiation

	aborted   chan struct{}
	abortOnce sync.Once

	moveCh  chan moveRequest
	probing []*probe // paths being validated at the application's request

	lastRecvNanos atomic.Int64 // for LastReceived

	pingMu  sync.Mutex // protects pings and pingSeq
	pings   map[uint64]pingWaiter
	pingSeq uint64
}

type pingWaiter struct {
	sent time.Time
	done chan time.Duration
}

// Ping sends a PING and waits until the packet carrying it is
// acknowledged, returning the round-trip time. The application uses it to
// check a path on demand (keepalives only run every KeepAlivePeriod). If the
// packet is lost, Ping waits for the retransmitted PING's ACK... it does not
// retransmit: it waits until ctx ends.
func (s *Session) Ping(ctx context.Context) (time.Duration, error) {
	w := pingWaiter{sent: time.Now(), done: make(chan time.Duration, 1)}
	s.pingMu.Lock()
	if s.pings == nil {
		s.pings = make(map[uint64]pingWaiter)
	}
	s.pingSeq++
	id := s.pingSeq
	s.pings[id] = w
	s.pingMu.Unlock()
	defer func() {
		s.pingMu.Lock()
		delete(s.pings, id)
		s.pingMu.Unlock()
	}()
	s.queueControl(controlFrame{kind: kindPing, id: id})
	select {
	case rtt := <-w.done:
		return rtt, nil
	case <-ctx.Done():
		return 0, ctx.Err()
	case <-s.done:
		return 0, s.closeError()
	}
}

// LastReceived is when the session last received an authenticated packet.
func (s *Session) LastReceived() time.Time { return time.Unix(0, s.lastRecvNanos.Load()) }

// moveRequest asks the run loop to move the session to a new path.
type moveRequest struct {
	addr    netip.AddrPort
	vouched bool // UsePath: move at once, without a PATH_CHALLENGE
	result  chan error
}

// probe is a path the application asked to move to, while it is validated.
type probe struct {
	p      *path
	result chan error
	sent   int
}

// ErrPathUnreachable means a path did not answer validation.
var ErrPathUnreachable = errors.New("transport: path did not answer")

// MovePath moves the session to the peer address addr: the session sends a
// PATH_CHALLENGE there and, once the authenticated PATH_RESPONSE returns,
// sends everything on that path; the peer follows when our packets arrive
// from the new path. Streams carry on untouched: nothing is lost or
// repeated. It fails with ErrPathUnreachable if addr does not answer within
// a few round trips (the session stays where it was). If the response comes
// from another address than addr (a NAT that mapped the peer's reply
// elsewhere), the session moves to where the response came from. A session
// from DialEarly first waits for its handshake.
func (s *Session) MovePath(ctx context.Context, addr netip.AddrPort) error {
	return s.move(ctx, moveRequest{addr: addr})
}

// UsePath moves the session to the peer address addr at once, without
// validating it first: for an address the caller has already seen reach
// the peer both ways (Parley's daemon: one from which an authenticated
// punch probe was answered). It saves MovePath's round trip. The session
// sends a PING there at once, so that the peer follows; the path it leaves
// is kept, should the peer's packets keep coming from there.
func (s *Session) UsePath(ctx context.Context, addr netip.AddrPort) error {
	return s.move(ctx, moveRequest{addr: addr, vouched: true})
}

func (s *Session) move(ctx context.Context, req moveRequest) error {
	if err := s.Handshake(ctx); err != nil {
		return err
	}
	req.addr = netip.AddrPortFrom(req.addr.Addr().Unmap(), req.addr.Port())
	req.result = make(chan error, 1)
	select {
	case s.moveCh <- req:
	case <-s.done:
		return ErrClosed
	case <-ctx.Done():
		return ctx.Err()
	}
	select {
	case err := <-req.result:
		return err
	case <-s.done:
		return ErrClosed
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Path describes where the session currently sends.
type Path struct {
	Remote    netip.AddrPort
	Validated bool
}

// CurrentPath returns the peer address the session sends to now.
func (s *Session) CurrentPath() Path {
	a := s.remoteAddr.Load().AddrPort()
	return Path{Remote: netip.AddrPortFrom(a.Addr().Unmap(), a.Port()), Validated: s.curValidated.Load()}
}

type closeRequest struct {
	code   ErrorCode
	reason string
}

func newSession(ep *Endpoint, initiator bool, localCID wire.ConnID, remote PublicKey, addr netip.AddrPort) *Session {
	cfg := ep.cfg
	s := &Session{
		ep:           ep,
		cfg:          cfg,
		initiator:    initiator,
		localCID:     localCID,
		remoteKey:    remote,
		recvQ:        make(chan *packet, 1024),
		wakeCh:       make(chan struct{}, 1),
		closeCh:      make(chan closeRequest, 1),
		done:         make(chan struct{}),
		ready:        make(chan struct{}),
		closing:      make(chan struct{}),
		aborted:      make(chan struct{}),
		moveCh:       make(chan moveRequest),
		streams:      make(map[uint64]*Stream),
		streamCredit: make(chan struct{}, 1),
		acceptCh:     make(chan struct{}, 1),
		datagramsIn:  make(chan []byte, DefaultDatagramQueue),
		recvWindow:   uint64(cfg.SessionWindow),
		recvMaxSent:  uint64(cfg.SessionWindow),
		maxIncoming:  uint64(cfg.MaxIncomingStreams),
		cur:          newPath(addr, initiator),
		dialed:       addr,
	}
	if initiator {
		// Until the response brings the peer's limits, the early data
		// allowance every peer grants (EarlyMaxStreams, EarlyMaxData).
		s.peerMaxStreams = EarlyMaxStreams
		s.peerMaxData = EarlyMaxData
		s.peerParams.InitialMaxStreamData = EarlyMaxData
		s.peerStreamData = EarlyMaxData
		s.peerDatagrams = -1
	}
	s.log = cfg.Logger.With("session", localCID.String()[:8], "peer", remote.Short())
	s.remoteAddr.Store(s.cur.udpAddr)
	s.curValidated.Store(initiator)
	s.rtt = &congestion.RTTStats{}
	kind, err := congestion.ParseKind(cfg.Congestion)
	if err != nil {
		kind = congestion.KindBBR
	}
	s.cc = congestion.NewController(kind, s.rtt, cfg.MaxPacketSize)
	s.sph = ackhandler.NewSentPacketHandler(s.cc, s.rtt, (*sessionCallbacks)(s), ackhandler.WithMaxDatagramSize(cfg.MaxPacketSize))
	s.rpt = ackhandler.NewReceivedPacketTracker(defaultMaxAckDelay, defaultAckEvery)
	s.rttNanos.Store(int64(defaultInitialRTT))
	return s
}

func (s *Session) localParams() wire.HandshakeParams {
	dg := s.cfg.MaxDatagramSize
	if dg < 0 {
		dg = 0
	}
	return wire.HandshakeParams{
		SenderCID:            s.localCID,
		MaxIdleTimeout:       s.cfg.IdleTimeout,
		InitialMaxData:       uint64(s.cfg.SessionWindow),
		InitialMaxStreamData: uint64(s.cfg.StreamWindow),
		MaxStreams:           uint32(s.cfg.MaxIncomingStreams),
		MaxDatagramSize:      uint16(min(dg, 65535)),
		MaxUDPPayloadSize:    uint16(s.cfg.MaxPacketSize),
	}
}

// setState moves the session to a new state and logs the transition.
func (s *Session) setState(to sessionState) {
	if s.state == to {
		return
	}
	s.log.Debug("session state", "from", s.state, "to", to)
	s.state = to
}

// applyPeerParams takes in the peer's handshake parameters.
func (s *Session) applyPeerParams(p wire.HandshakeParams) {
	s.peerParams = p
	s.remoteCID = p.SenderCID
	s.peerMaxData = p.InitialMaxData
	s.idleTimeout = s.cfg.IdleTimeout
	if p.MaxIdleTimeout > 0 && p.MaxIdleTimeout < s.idleTimeout {
		s.idleTimeout = p.MaxIdleTimeout
	}
	s.mu.Lock()
	s.peerMaxStreams = uint64(p.MaxStreams)
	s.peerStreamData = p.InitialMaxStreamData
	s.peerDatagrams = int(p.MaxDatagramSize)
	s.mu.Unlock()
	wake(s.streamCredit)
}

func (s *Session) installKeys(k handshake.Keys, now time.Time) {
	s.sealer = aead.NewSealer(k.Send)
	s.opener = aead.NewOpener(k.Recv)
	s.keyPhaseAt = now
}

// Handshake waits until the session's handshake has completed, or failed
// (the error says why), or ctx ends. A session from Dial or Accept has
// completed it already.
func (s *Session) Handshake(ctx context.Context) error {
	select {
	case <-s.ready:
		return nil
	case <-s.done:
		if s.startErr != nil {
			return s.startErr
		}
		return ErrClosed
	case <-ctx.Done():
		return ctx.Err()
	}
}

// LocalAddr returns the local address of the session's socket.
func (s *Session) LocalAddr() net.Addr { return s.ep.pc.LocalAddr() }

// RemoteAddr returns the address the session currently sends to. It changes
// when the peer moves.
func (s *Session) RemoteAddr() net.Addr { return s.remoteAddr.Load() }

// RemoteKey is the peer's authenticated static public key.
func (s *Session) RemoteKey() PublicKey { return s.remoteKey }

// Done is closed when the session has ended.
func (s *Session) Done() <-chan struct{} { return s.done }

// Err returns why the session ended, or nil while it is open.
func (s *Session) Err() error { return s.closeError() }

func (s *Session) closeError() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.closeErr
}

type sessionCounters struct {
	packetsSent, packetsReceived, bytesSent, bytesReceived atomic.Uint64
	droppedDuplicate, droppedAuth                          atomic.Uint64
	earlySent, earlyReceived                               atomic.Uint64
}

// Stats returns a snapshot of the session's counters.
func (s *Session) Stats() SessionStats {
	s.mu.Lock()
	st := s.stats
	s.mu.Unlock()
	c := &s.counters
	st.PacketsSent, st.PacketsReceived = c.packetsSent.Load(), c.packetsReceived.Load()
	st.BytesSent, st.BytesReceived = c.bytesSent.Load(), c.bytesReceived.Load()
	st.EarlyPacketsSent, st.EarlyPacketsReceived = c.earlySent.Load(), c.earlyReceived.Load()
	st.DroppedDuplicate, st.DroppedAuth = c.droppedDuplicate.Load(), c.droppedAuth.Load()
	return st
}

func (s *Session) smoothedRTT() time.Duration { return time.Duration(s.rttNanos.Load()) }

// Close closes the session with NoError. Streams fail with ErrClosed; data
// not yet acknowledged is lost. It waits until the session has released its
// connection ID only in the background: Close returns once the CLOSE frame
// is on its way.
func (s *Session) Close() error { return s.CloseWithError(wire.NoError, "") }

// CloseWithError closes the session, telling the peer code and reason.
func (s *Session) CloseWithError(code ErrorCode, reason string) error {
	if len(reason) > 1024 {
		reason = reason[:1024]
	}
	select {
	case s.closeCh <- closeRequest{code: code, reason: reason}:
	default:
	}
	select {
	case <-s.done:
	case <-s.closing:
	}
	return nil
}

// setCloseErr records why the session ends (the first reason wins) and
// fails every stream and waiter.
func (s *Session) setCloseErr(err error) {
	s.mu.Lock()
	if s.closeErr != nil {
		s.mu.Unlock()
		return
	}
	s.closeErr = err
	close(s.closing)
	streams := make([]*Stream, 0, len(s.streams))
	for _, st := range s.streams {
		streams = append(streams, st)
	}
	s.mu.Unlock()
	for _, st := range streams {
		st.closeWithError(err)
	}
}

// OpenStream opens a new stream, waiting while the peer's stream limit is
// reached. The peer learns of the stream when data (or FIN) is first sent.
func (s *Session) OpenStream(ctx context.Context) (*Stream, error) {
	for {
		s.mu.Lock()
		if s.closeErr != nil {
			err := s.closeErr
			s.mu.Unlock()
			return nil, err
		}
		if s.nextStreamN < s.peerMaxStreams {
			id := s.nextStreamN * 2
			if !s.initiator {
				id++
			}
			s.nextStreamN++
			st := newStream(s, id, s.peerStreamData, uint64(s.cfg.StreamWindow))
			s.streams[id] = st
			s.mu.Unlock()
			return st, nil
		}
		s.mu.Unlock()
		select {
		case <-s.streamCredit:
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-s.done:
		}
	}
}

// AcceptStream waits for the peer to open a stream.
func (s *Session) AcceptStream(ctx context.Context) (*Stream, error) {
	for {
		s.mu.Lock()
		if len(s.acceptQ) > 0 {
			st := s.acceptQ[0]
			s.acceptQ[0] = nil
			s.acceptQ = s.acceptQ[1:]
			s.mu.Unlock()
			return st, nil
		}
		if s.closeErr != nil {
			err := s.closeErr
			s.mu.Unlock()
			return nil, err
		}
		s.mu.Unlock()
		select {
		case <-s.acceptCh:
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-s.done:
		}
	}
}

// SendDatagram sends b as one unreliable, encrypted datagram. It never
// blocks: when the queue is full the oldest queued datagram is dropped.
func (s *Session) SendDatagram(b []byte) error {
	s.mu.Lock()
	peerMax := s.peerDatagrams
	s.mu.Unlock()
	if peerMax == 0 {
		return errors.New("transport: peer does not accept datagrams")
	}
	room := s.cfg.MaxPacketSize - wire.DataHeaderLen - aead.Overhead - 1 - wire.VarintLen(uint64(len(b))) - 1
	if len(b) > room || (peerMax > 0 && len(b) > peerMax) {
		return ErrDatagramTooLarge
	}
	d := append([]byte(nil), b...)
	s.mu.Lock()
	if s.closeErr != nil {
		err := s.closeErr
		s.mu.Unlock()
		return err
	}
	if len(s.datagramsOut) >= DefaultDatagramQueue {
		s.datagramsOut = s.datagramsOut[1:]
	}
	s.datagramsOut = append(s.datagramsOut, d)
	s.mu.Unlock()
	s.wake()
	return nil
}

// ReceiveDatagram waits for the next datagram from the peer.
func (s *Session) ReceiveDatagram(ctx context.Context) ([]byte, error) {
	select {
	case d := <-s.datagramsIn:
		return d, nil
	default:
	}
	select {
	case d := <-s.datagramsIn:
		return d, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	case <-s.done:
		return nil, s.closeError()
	}
}

// wake asks the run loop to look for work.
func (s *Session) wake() { wake(s.wakeCh) }

// scheduleStream puts st in the send queue.
func (s *Session) scheduleStream(st *Stream) {
	s.mu.Lock()
	if !st.queued {
		st.queued = true
		s.sendQueue = append(s.sendQueue, st)
	}
	s.mu.Unlock()
	s.wake()
}

func (s *Session) queueControl(f controlFrame) {
	s.mu.Lock()
	if s.closeErr == nil {
		s.control = append(s.control, f)
	}
	s.mu.Unlock()
	s.wake()
}

// streamDone forgets a finished stream; for a peer-opened stream it grants
// the peer one more. Called with st.mu held (so it must not take st.mu).
func (s *Session) streamDone(st *Stream) {
	go s.forgetStream(st.id)
}

func (s *Session) forgetStream(id uint64) {
	s.mu.Lock()
	if _, ok := s.streams[id]; !ok {
		s.mu.Unlock()
		return
	}
	delete(s.streams, id)
	peerOpened := (id%2 == 0) != s.initiator
	s.mu.Unlock()
	if peerOpened {
		s.queueControl(controlFrame{kind: kindMaxStreams})
	}
}

// onAppRead does session-level flow control after the application read n
// bytes: grant more credit when half the window is used, growing the window
// when it was used up within a few round trips.
func (s *Session) onAppRead(n int) {
	s.flowMu.Lock()
	s.recvConsumed += uint64(n)
	if s.recvMaxSent-s.recvConsumed > s.recvWindow/2 {
		s.flowMu.Unlock()
		return
	}
	now := time.Now()
	if !s.recvEpoch.IsZero() && now.Sub(s.recvEpoch) < 4*s.smoothedRTT() {
		s.recvWindow = min(2*s.recvWindow, uint64(s.cfg.MaxSessionWindow))
	}
	s.recvEpoch = now
	s.recvEpochRead = s.recvConsumed
	s.recvMaxSent = s.recvConsumed + s.recvWindow
	v := s.recvMaxSent
	s.flowMu.Unlock()
	s.queueControl(controlFrame{kind: kindMaxData, v: v})
}

// newCID returns a fresh random connection ID.
func newCID() wire.ConnID {
	var c wire.ConnID
	rand.Read(c[:])
	return c
}
