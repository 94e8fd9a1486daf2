package relay

import (
	"crypto/ed25519"
	"crypto/sha256"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/parley-p2p/parley/directory/ticket"
	"github.com/parley-p2p/parley/transport"
)

// Defaults for Config's zero fields.
const (
	DefaultMaxSessions = 10000
	// DefaultIdleTimeout is well above the transport's 10 s keepalive, so
	// a live session never idles out of its relay, and well below a
	// ticket's lifetime, so dead allocations do not linger.
	DefaultIdleTimeout = 60 * time.Second

	// minBurst is the smallest token bucket: enough for a flight of
	// full-size packets even on a slow pair.
	minBurst = 64 << 10
)

// Config configures a Server. The zero value of each field but the two keys
// means the default named in its comment.
type Config struct {
	// DirectoryKey verifies tickets: the directory's Ed25519 public key
	// (GET /v1/server-key). Required.
	DirectoryKey ed25519.PublicKey
	// Identity is this supernode's device key; a ticket must name it as
	// its relay. Required.
	Identity transport.PublicKey
	// MaxSessions caps the allocations held at once; 0 means
	// DefaultMaxSessions.
	MaxSessions int
	// IdleTimeout drops an allocation when neither side has sent for this
	// long; 0 means DefaultIdleTimeout.
	IdleTimeout time.Duration
	// HoldMemory bounds the opaque bytes held for sides not yet bound, on
	// all channels together (hold.go); 0 means DefaultHoldMemory.
	HoldMemory int
	// Logger may be nil (no logs).
	Logger *slog.Logger
	// Now is the clock; nil means time.Now. Tests set it.
	Now func() time.Time
}

// DropReason says why a Server dropped a packet.
type DropReason uint8

const (
	DropMalformed      DropReason = iota // not a well-formed relay packet
	DropUnexpected                       // a relay → peer type sent to the relay
	DropUnknownChannel                   // SEND for a channel the relay does not hold
	DropExpired                          // SEND on a channel whose ticket has expired
	DropNotSide                          // SEND from an address that is neither side: a third party
	DropHoldFull                         // SEND while the other side is unbound, and the hold is full
	DropBudget                           // the ticket's byte budget is spent
	DropRate                             // the ticket's rate limit
	DropWrite                            // the write failed, or a TCP side's queue was full
	DropRejected                         // ALLOCATE refused (answered with ERROR)
	DropHoldExpired                      // held, then discarded: held too long, or the channel ended
	DropUnvalidated                      // for a side whose address is not validated, beyond its credit, and the hold cannot take it
	DropBadToken                         // CONFIRM with a token that is not its side's at its address
	numDropReasons
)

var dropNames = [numDropReasons]string{"malformed", "unexpected", "unknown-channel", "expired", "not-a-side", "hold-full", "budget", "rate", "write", "rejected", "hold-expired", "unvalidated", "bad-token"}

func (r DropReason) String() string {
	if r < numDropReasons {
		return dropNames[r]
	}
	return fmt.Sprintf("DropReason(%d)", uint8(r))
}

// Stats is a snapshot of a Server's counters.
type Stats struct {
	Allocations      int    // held now
	AllocationsTotal uint64 // created since start
	Forwarded        uint64 // packets delivered (SEND → DELIVER), held ones included
	ForwardedBytes   uint64 // their opaque payload bytes
	Held             uint64 // packets held for a side not yet bound or not validated, later Forwarded or dropped
	Validated        uint64 // UDP side addresses validated by a CONFIRM (again after a move)
	Pings            uint64 // PINGs answered
	Dropped          [numDropReasons]uint64
	Rejected         [CodeMalformed + 1]uint64 // ALLOCATEs refused, by ErrorCode
}

// Drops returns the total of Dropped.
func (s Stats) Drops() uint64 {
	var n uint64
	for _, d := range s.Dropped {
		n += d
	}
	return n
}

// Server is the supernode side of relaying. It verifies tickets, holds
// allocations and forwards SENDs as DELIVERs; what one side sends before
// the other has bound, it holds and delivers when the other binds (hold.go);
// it sends a UDP side no more than its credit until that side's address is
// validated (validate.go). HandlePacket and ServeTCP may be called from any
// number of goroutines at once.
//
// Locking: s.mu protects the allocation maps; each allocation's mu protects
// its sides, their validation, counters and hold; s.tokens has its own
// lock. The order is s.mu, then allocation.mu, then s.tokens.mu; the
// forwarding path takes s.mu only for reading, releases it, then takes the
// allocation's lock. Within one batch it looks a channel up once: later
// SENDs on it reuse the allocation without s.mu (its ID and expiry never
// change; one swept meanwhile serves at most the rest of that batch). An
// ALLOCATE or CONFIRM that lets held packets go keeps the allocation's lock
// while it writes them, so that no SEND forwarded meanwhile overtakes them;
// and while anything is held for a side, what else comes for it joins the
// hold, behind.
type Server struct {
	cfg   Config
	plain plainWriter // pc, one datagram per write
	batch batchWriter // pc, many datagrams per write where it can
	log   *slog.Logger

	mu        sync.RWMutex // protects the fields below
	byID      map[uint64]*allocation
	byTicket  map[[sha256.Size]byte]*allocation
	nextSweep time.Time

	bufs   bufPool // for DELIVERs, answers and TCP frames
	tokens tokenJar

	heldBytes atomic.Int64 // opaque bytes in all allocations' holds

	allocsTotal atomic.Uint64
	forwarded   atomic.Uint64
	fwdBytes    atomic.Uint64
	held        atomic.Uint64
	validated   atomic.Uint64
	pings       atomic.Uint64
	dropped     [numDropReasons]atomic.Uint64
	rejected    [CodeMalformed + 1]atomic.Uint64
}

// addrPortWriter is implemented by *net.UDPConn and natlab's Conn: a write
// that does not allocate a net.Addr.
type addrPortWriter interface {
	WriteToUDPAddrPort(b []byte, addr netip.AddrPort) (int, error)
}

// side is where one side of an allocation receives: a UDP address or a TCP
// connection.
type side struct {
	addr netip.AddrPort // valid for a UDP side
	tcp  *tcpConn       // non-nil for a TCP side
}

func (s side) bound() bool    { return s.addr.IsValid() || s.tcp != nil }
func (s side) is(o side) bool { return s.addr == o.addr && s.tcp == o.tcp }
func (s side) String() string {
	if s.tcp != nil {
		return "tcp:" + s.tcp.remote
	}
	return s.addr.String()
}

// allocation is one ticket's channel: two sides and what they may still
// send. (It fits the allocator's 224-byte size class, which the memory
// figure in docs/benchmarks.md counts on: grow it with care.)
type allocation struct {
	id           uint64
	key          [sha256.Size]byte // SHA-256 of the ticket
	expiresUnix  int64             // the ticket's expiry, Unix seconds, for ALLOCATED
	expiresNanos int64             // the same in Unix nanoseconds (saturated): the hot path's form
	rate         float64           // bytes per second
	burst        float64

	mu         sync.Mutex // protects the fields below
	sides      [2]side
	valid      [2]bool  // the side's address is validated (validate.go), or it is a TCP connection
	credit     [2]int64 // bytes the relay may still send to an unvalidated side
	budget     uint64   // bytes left
	tokens     float64  // token bucket, bytes
	refilled   int64    // Unix nanoseconds of the last refill
	lastActive int64    // Unix nanoseconds of the last ALLOCATE or SEND
	hold       *hold    // what a side sent that the other could not receive yet; nil if nothing
}

// NewServer returns a relay server that writes on pc, the supernode's
// shared UDP socket. It does not read pc: the supernode's demultiplexer
// passes relay packets to HandlePacket, or, when it is a Mux (see
// Mux.ServeRelay), hands over each batch it read and the Server writes the
// batch's DELIVERs together (batch.go).
func NewServer(cfg Config, pc net.PacketConn) *Server {
	if cfg.MaxSessions <= 0 {
		cfg.MaxSessions = DefaultMaxSessions
	}
	if cfg.IdleTimeout <= 0 {
		cfg.IdleTimeout = DefaultIdleTimeout
	}
	if cfg.HoldMemory <= 0 {
		cfg.HoldMemory = DefaultHoldMemory
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Server{
		cfg:      cfg,
		plain:    newPlainWriter(pc),
		batch:    newBatchWriter(pc),
		log:      log,
		byID:     make(map[uint64]*allocation),
		byTicket: make(map[[sha256.Size]byte]*allocation),
	}
}

// Stats returns a snapshot of the server's counters.
func (s *Server) Stats() Stats {
	s.mu.RLock()
	n := len(s.byID)
	s.mu.RUnlock()
	st := Stats{
		Allocations:      n,
		AllocationsTotal: s.allocsTotal.Load(),
		Forwarded:        s.forwarded.Load(),
		ForwardedBytes:   s.fwdBytes.Load(),
		Held:             s.held.Load(),
		Validated:        s.validated.Load(),
		Pings:            s.pings.Load(),
	}
	for i := range st.Dropped {
		st.Dropped[i] = s.dropped[i].Load()
	}
	for i := range st.Rejected {
		st.Rejected[i] = s.rejected[i].Load()
	}
	return st
}

// HandlePacket processes one relay packet that arrived on the shared UDP
// socket from from. It does not retain b. It never blocks for long: writes
// to TCP sides are queued.
func (s *Server) HandlePacket(b []byte, from netip.AddrPort) {
	from = netip.AddrPortFrom(from.Addr().Unmap(), from.Port())
	s.handle(b, side{addr: from})
}

func (s *Server) handle(b []byte, from side) {
	h, body, err := parseHeader(b)
	if err != nil {
		s.dropped[DropMalformed].Add(1)
		return
	}
	switch h.typ {
	case TypeSend:
		s.forward(h.channel, b, from)
	case TypeAllocate:
		s.allocate(b, body, from)
	case TypeConfirm:
		s.confirm(h.channel, b, body, from)
	case TypePing:
		nonce, err := parsePing(body)
		if err != nil || h.channel != 0 {
			s.dropped[DropMalformed].Add(1)
			return
		}
		bp := s.bufs.get(PingSize)
		s.reply(appendPing((*bp)[:0], TypePong, nonce), from)
		s.bufs.put(bp)
		s.pings.Add(1)
	default:
		s.dropped[DropUnexpected].Add(1)
	}
}

// forward is the hot path for a SEND that arrived alone (on a TCP
// connection, or through HandlePacket): SEND in, DELIVER out. It does not
// allocate.
func (s *Server) forward(id uint64, b []byte, from side) {
	to, ok := s.admit(id, b[HeaderSize:], from, s.cfg.Now().UnixNano(), nil)
	if !ok {
		return
	}
	// DELIVER has SEND's header but for the type, so the packet is copied
	// whole and one byte changed.
	bp := s.bufs.get(len(b))
	out := (*bp)[:len(b)]
	copy(out, b)
	out[offType] = byte(TypeDeliver)
	if s.reply(out, to) {
		s.forwarded.Add(1)
		s.fwdBytes.Add(uint64(len(b) - HeaderSize))
	}
	s.bufs.put(bp)
}

// admit applies docs/protocol.md §6.3's checks to a SEND of the opaque
// packet p on channel id from from at now (Unix nanoseconds), charges its
// budget and token bucket, and the receiving side's credit if it is not
// validated, and returns the side to deliver it to. If the other side is
// not bound, or may not receive the DELIVER before it is validated, or
// the channel already holds packets for it, it holds a copy of p instead,
// to be delivered when that side can take it, and returns false; so it
// does when it drops p, which it counts. If last is not nil it caches the
// allocation looked up, for the next SEND of a batch: runs of packets on
// one channel then cost one map lookup.
func (s *Server) admit(id uint64, p []byte, from side, now int64, last **allocation) (side, bool) {
	var a *allocation
	if last != nil && *last != nil && (*last).id == id {
		a = *last
	} else {
		s.mu.RLock()
		a = s.byID[id]
		s.mu.RUnlock()
		if a == nil {
			s.dropped[DropUnknownChannel].Add(1)
			return side{}, false
		}
		if last != nil {
			*last = a
		}
	}
	if now >= a.expiresNanos {
		s.expired(a)
		return side{}, false
	}
	a.mu.Lock()
	var t int // the side p is for
	switch {
	case a.sides[0].is(from):
		t = 1
	case a.sides[1].is(from):
		t = 0
	default:
		a.mu.Unlock()
		s.dropped[DropNotSide].Add(1)
		return side{}, false
	}
	n := HeaderSize + len(p)
	a.receivedLocked(1-t, n)
	a.lastActive = now
	to := a.sides[t]
	if !to.bound() || (a.hold != nil && a.hold.to == t) || !a.mayLocked(t, n) {
		s.holdLocked(a, t, p, now)
		a.mu.Unlock()
		return side{}, false
	}
	if r := a.chargeLocked(len(p), now); r != 0 {
		a.mu.Unlock()
		s.dropped[r].Add(1)
		return side{}, false
	}
	a.sentLocked(t, n)
	a.mu.Unlock()
	return to, true
}

// expired drops a SEND on a's channel, which has expired, and what the
// channel holds.
func (s *Server) expired(a *allocation) {
	s.dropped[DropExpired].Add(1)
	a.mu.Lock()
	s.discardHoldLocked(a)
	a.mu.Unlock()
}

// chargeLocked takes n bytes from a's budget and token bucket at now (Unix
// nanoseconds), or returns the reason to drop the packet: DropBudget or
// DropRate. It returns 0 when charged.
func (a *allocation) chargeLocked(n int, now int64) DropReason {
	if uint64(n) > a.budget {
		return DropBudget
	}
	if a.tokens < float64(n) {
		a.tokens = min(a.burst, a.tokens+float64(now-a.refilled)*1e-9*a.rate)
		a.refilled = now
		if a.tokens < float64(n) {
			return DropRate
		}
	}
	a.tokens -= float64(n)
	a.budget -= uint64(n)
	return 0
}

// holdLocked holds a copy of the opaque packet p, sent at now to a's side
// t, which is not bound yet or may not receive it yet, if the hold has room
// for it (after discarding what it held too long) and the budget and bucket
// allow it; it charges p as if forwarded, now, so that holding changes
// nothing of what a ticket allows. Otherwise it counts the drop: hold-full
// if t is not bound, unvalidated if it is.
func (s *Server) holdLocked(a *allocation, t int, p []byte, now int64) {
	s.expireHoldLocked(a, now)
	full := DropHoldFull
	if a.sides[t].bound() {
		full = DropUnvalidated
	}
	n := len(p)
	if a.hold != nil && a.hold.to != t {
		// Held for the other side, whose address is not validated either:
		// one direction at a time.
		s.dropped[full].Add(1)
		return
	}
	if !a.hold.fits(n) {
		s.dropped[full].Add(1)
		return
	}
	if s.heldBytes.Add(int64(n)) > int64(s.cfg.HoldMemory) {
		s.heldBytes.Add(-int64(n))
		s.dropped[full].Add(1)
		return
	}
	if r := a.chargeLocked(n, now); r != 0 {
		s.heldBytes.Add(-int64(n))
		s.dropped[r].Add(1)
		return
	}
	if a.hold == nil {
		a.hold = &hold{to: t}
	}
	a.hold.add(p, now)
	s.held.Add(1)
}

// expireHoldLocked discards what a has held for MaxHoldTime at now.
func (s *Server) expireHoldLocked(a *allocation, now int64) {
	if a.hold == nil {
		return
	}
	packets, bytes := a.hold.expire(now)
	s.dropped[DropHoldExpired].Add(uint64(packets))
	s.heldBytes.Add(-int64(bytes))
	if a.hold.n == 0 {
		a.hold = nil
	}
}

// discardHoldLocked discards everything a holds: its channel has ended.
func (s *Server) discardHoldLocked(a *allocation) {
	if a.hold == nil {
		return
	}
	s.dropped[DropHoldExpired].Add(uint64(a.hold.n))
	s.heldBytes.Add(-int64(len(a.hold.data)))
	a.hold = nil
}

// flushHoldLocked delivers what a holds to the side it holds it for, which
// is bound, in order, as DELIVERs, as far as that side's credit allows;
// it discards what it has held for MaxHoldTime at now. What the credit
// does not cover stays held, and the hold is freed if nothing does.
func (s *Server) flushHoldLocked(a *allocation, now int64) {
	h := a.hold
	t := h.to
	to := a.sides[t]
	done := 0
	for i := range h.n {
		p := h.packet(i)
		if h.stale(i, now) {
			s.dropped[DropHoldExpired].Add(1)
			done++
			continue
		}
		if !a.mayLocked(t, HeaderSize+len(p)) {
			break
		}
		a.sentLocked(t, HeaderSize+len(p))
		done++
		bp := s.bufs.get(HeaderSize + len(p))
		out := (*bp)[:HeaderSize+len(p)]
		putHeader(out, TypeDeliver, a.id)
		copy(out[HeaderSize:], p)
		if s.reply(out, to) {
			s.forwarded.Add(1)
			s.fwdBytes.Add(uint64(len(p)))
		}
		s.bufs.put(bp)
	}
	s.heldBytes.Add(-int64(h.remove(done)))
	if h.n == 0 {
		a.hold = nil
	}
}

// handleBatched handles a packet that a Mux read from from in a batch.
// A SEND for a UDP side becomes its DELIVER in place, in b, and is queued
// on tx: b must stay as it is until the caller's s.flush(tx), which sends
// the batch's DELIVERs together. Anything else is handled as by
// HandlePacket, at once.
func (s *Server) handleBatched(b []byte, from netip.AddrPort, tx *txBatch) {
	if len(b) < HeaderSize || Type(b[offType]) != TypeSend {
		// An ALLOCATE or CONFIRM may let held packets go to a side that
		// this batch's DELIVERs, queued on tx, are for: these go first.
		if len(b) > offType && (Type(b[offType]) == TypeAllocate || Type(b[offType]) == TypeConfirm) && len(tx.msgs) > 0 {
			s.flush(tx)
		}
		// An ALLOCATE may sweep an allocation and create another with the
		// same channel ID (the same ticket, after an idle timeout): the
		// batch's later SENDs must look it up afresh.
		tx.last = nil
		s.HandlePacket(b, from)
		return
	}
	h, _, err := parseHeader(b)
	if err != nil {
		s.dropped[DropMalformed].Add(1)
		return
	}
	if tx.now == 0 {
		tx.now = s.cfg.Now().UnixNano()
	}
	n := len(b) - HeaderSize
	to, ok := s.admit(h.channel, b[HeaderSize:], side{addr: from}, tx.now, &tx.last)
	if !ok {
		return
	}
	b[offType] = byte(TypeDeliver)
	if to.tcp != nil {
		// Queued on the connection, as a copy.
		if s.reply(b, to) {
			s.forwarded.Add(1)
			s.fwdBytes.Add(uint64(n))
		}
		return
	}
	tx.msgs = append(tx.msgs, txMsg{b: b, to: to.addr, payload: n})
}

// flush sends the DELIVERs that handleBatched queued on tx, counts them,
// and empties tx.
func (s *Server) flush(tx *txBatch) {
	if len(tx.msgs) > 0 {
		err := s.batch.writeBatch(tx)
		var sent, bytes, failed uint64
		for i := range tx.msgs {
			if tx.msgs[i].failed {
				failed++
			} else {
				sent++
				bytes += uint64(tx.msgs[i].payload)
			}
		}
		s.forwarded.Add(sent)
		s.fwdBytes.Add(bytes)
		if failed > 0 {
			s.dropped[DropWrite].Add(failed)
			s.log.Debug("relay: write failed", "packets", failed, "err", err)
		}
	}
	tx.reset()
}

// reply sends b to a side: on the UDP socket, or queued on its TCP
// connection (copied). It counts a failure as DropWrite.
func (s *Server) reply(b []byte, to side) bool {
	var err error
	switch {
	case to.tcp != nil:
		if !to.tcp.enqueue(b) {
			err = errQueueFull
		}
	default:
		err = s.plain.write(b, to.addr)
	}
	if err != nil {
		s.dropped[DropWrite].Add(1)
		s.log.Debug("relay: write failed", "to", to, "err", err)
		return false
	}
	return true
}

var errQueueFull = errors.New("relay: TCP send queue full")

// allocate answers an ALLOCATE. The checks go cheapest first, so that a
// flood of junk costs no signature verification: layout, relay key, expiry,
// then (only for a ticket not already held) the Ed25519 signature. It
// finishes before the next packet from the same socket batch or TCP
// connection is handled, so SENDs right behind an ALLOCATE find their side
// bound (docs/protocol.md §6.2).
func (s *Server) allocate(pkt, body []byte, from side) {
	now := s.cfg.Now()
	req, err := parseAllocate(body)
	if err != nil {
		s.reject(len(pkt), 0, CodeMalformed, "malformed allocate", from)
		return
	}
	// An ERROR names the channel the ticket's bytes derive, so that a
	// peer that sent several ALLOCATEs knows which one failed.
	key := sha256.Sum256(req.ticket)
	id := channelID(key)
	tk, err := ticket.Parse(req.ticket)
	if err != nil {
		s.reject(len(pkt), id, CodeMalformed, "malformed ticket", from)
		return
	}
	if tk.Relay != s.cfg.Identity {
		s.reject(len(pkt), id, CodeNotForUs, "ticket is for another relay", from)
		return
	}
	if !now.Before(tk.ExpiresAt) {
		s.reject(len(pkt), id, CodeExpired, "ticket expired", from)
		return
	}
	s.mu.RLock()
	a := s.byTicket[key]
	s.mu.RUnlock()
	if a == nil {
		// Identical bytes to a ticket already verified need no second
		// verification; new ones do.
		if _, err := ticket.Verify(s.cfg.DirectoryKey, req.ticket, now); err != nil {
			switch {
			case errors.Is(err, ticket.ErrExpired):
				s.reject(len(pkt), id, CodeExpired, "ticket expired", from)
			case errors.Is(err, ticket.ErrMalformed):
				s.reject(len(pkt), id, CodeMalformed, "malformed ticket", from)
			case errors.Is(err, ticket.ErrNotYet):
				s.reject(len(pkt), id, CodeBadTicket, "ticket not yet valid", from)
			default:
				s.reject(len(pkt), id, CodeBadTicket, "bad ticket signature", from)
			}
			return
		}
		var code ErrorCode
		var reason string
		a, code, reason = s.create(key, tk, now)
		if a == nil {
			s.reject(len(pkt), id, code, reason, from)
			return
		}
	}
	d := int(req.side)
	a.mu.Lock()
	old := a.sides[d]
	other := a.sides[1-d]
	a.bindLocked(d, from)
	a.receivedLocked(d, len(pkt))
	a.lastActive = now.UnixNano()
	ans := allocatedBody{
		expires:   a.expiresUnix,
		remaining: a.budget,
		rate:      uint32(a.rate),
		peerBound: other.bound(),
		token:     s.tokens.token(a.id, req.side, from, now),
	}
	a.sentLocked(d, AllocatedSize) // within the credit: 3 × 202 > 41
	// The second side bound: tell the first (§6.2), so that it need not
	// poll, if the first may receive it.
	notice := !old.bound() && other.bound()
	var noticeAns allocatedBody
	if notice && !a.mayLocked(1-d, AllocatedSize) {
		notice = false
		s.dropped[DropUnvalidated].Add(1)
	}
	if notice {
		a.sentLocked(1-d, AllocatedSize)
		noticeAns = ans
		noticeAns.peerBound = true
		noticeAns.token = s.tokens.token(a.id, 1-req.side, other, now)
	}
	// What the other side sent while this one was unbound, or could not
	// receive, follows the ALLOCATEDs (§6.3) as far as this side's credit
	// allows, and the lock is kept until it has gone, so that the other
	// side's next SENDs come after it.
	flush := a.hold != nil && a.hold.to == d
	if !flush {
		a.mu.Unlock()
	}
	if !old.is(from) {
		s.log.Debug("relay: side bound", "channel", a.id, "side", req.side, "from", old, "to", from)
	}
	bp := s.bufs.get(AllocatedSize)
	s.reply(appendAllocated((*bp)[:0], a.id, ans), from)
	if notice {
		s.reply(appendAllocated((*bp)[:0], a.id, noticeAns), other)
	}
	s.bufs.put(bp)
	if flush {
		s.flushHoldLocked(a, now.UnixNano())
		a.mu.Unlock()
	}
}

// confirm handles a CONFIRM on channel id from from: if it comes from the
// address its side is bound to, with that side's token there, the address
// is validated, and what the channel holds for the side goes to it
// (docs/protocol.md §6.2). The relay sends nothing back.
func (s *Server) confirm(id uint64, pkt, body []byte, from side) {
	c, err := parseConfirm(body)
	if err != nil {
		s.dropped[DropMalformed].Add(1)
		return
	}
	if from.tcp != nil {
		s.dropped[DropUnexpected].Add(1) // a TCP side needs no validation
		return
	}
	s.mu.RLock()
	a := s.byID[id]
	s.mu.RUnlock()
	if a == nil {
		s.dropped[DropUnknownChannel].Add(1)
		return
	}
	now := s.cfg.Now()
	if now.UnixNano() >= a.expiresNanos {
		s.expired(a)
		return
	}
	d := int(c.side)
	a.mu.Lock()
	if !a.sides[d].is(from) {
		a.mu.Unlock()
		s.dropped[DropNotSide].Add(1)
		return
	}
	a.receivedLocked(d, len(pkt))
	if !s.tokens.valid(c.token, id, c.side, from.addr, now) {
		a.mu.Unlock()
		s.dropped[DropBadToken].Add(1)
		return
	}
	if a.valid[d] {
		a.mu.Unlock()
		return
	}
	a.valid[d] = true
	s.validated.Add(1)
	if a.hold != nil && a.hold.to == d {
		s.flushHoldLocked(a, now.UnixNano())
	}
	a.mu.Unlock()
	s.log.Debug("relay: side validated", "channel", id, "side", d, "at", from)
}

// create adds an allocation for a verified ticket whose SHA-256 is key, or
// returns the one a concurrent ALLOCATE of the same ticket created first.
// It refuses with CodeFull, and a reason, when the relay holds its maximum
// of allocations, or when another ticket's allocation has the channel ID
// this one derives (a 64-bit collision: never seen in practice, but the ID
// must name one allocation).
func (s *Server) create(key [sha256.Size]byte, tk ticket.Ticket, now time.Time) (*allocation, ErrorCode, string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if a := s.byTicket[key]; a != nil {
		return a, 0, ""
	}
	if now.After(s.nextSweep) || len(s.byID) >= s.cfg.MaxSessions {
		s.sweepLocked(now)
	}
	if len(s.byID) >= s.cfg.MaxSessions {
		return nil, CodeFull, "relay full"
	}
	id := channelID(key)
	if s.byID[id] != nil {
		s.log.Warn("relay: channel ID collision", "channel", id)
		return nil, CodeFull, "channel ID in use"
	}
	rate := float64(tk.Rate)
	a := &allocation{
		id:           id,
		key:          key,
		expiresUnix:  tk.ExpiresAt.Unix(),
		expiresNanos: unixNanos(tk.ExpiresAt),
		rate:         rate,
		burst:        max(rate, minBurst),
		budget:       tk.Budget,
		refilled:     now.UnixNano(),
		lastActive:   now.UnixNano(),
	}
	a.tokens = a.burst
	s.byID[id] = a
	s.byTicket[key] = a
	s.allocsTotal.Add(1)
	s.log.Debug("relay: allocated", "channel", id, "expires", tk.ExpiresAt)
	return a, 0, ""
}

// unixNanos is t.UnixNano, but saturates instead of overflowing for a time
// after 2262.
func unixNanos(t time.Time) int64 {
	if t.After(time.Unix(0, math.MaxInt64)) {
		return math.MaxInt64
	}
	return t.UnixNano()
}

// sweepLocked removes expired and idle allocations, and discards what the
// others have held too long. It runs at most every half idle timeout, from
// create, so that the server needs no goroutine.
func (s *Server) sweepLocked(now time.Time) {
	nanos := now.UnixNano()
	idle := now.Add(-s.cfg.IdleTimeout).UnixNano()
	for id, a := range s.byID {
		a.mu.Lock()
		dead := nanos >= a.expiresNanos || a.lastActive <= idle
		if dead {
			s.discardHoldLocked(a)
		} else {
			s.expireHoldLocked(a, nanos)
		}
		a.mu.Unlock()
		if dead {
			delete(s.byID, id)
			delete(s.byTicket, a.key)
		}
	}
	s.nextSweep = now.Add(s.cfg.IdleTimeout / 2)
}

// reject answers an ALLOCATE of size n with ERROR on channel id (the
// ticket's, or 0 if the ALLOCATE has none).
func (s *Server) reject(n int, id uint64, code ErrorCode, reason string, to side) {
	s.dropped[DropRejected].Add(1)
	s.rejected[code].Add(1)
	bp := s.bufs.get(smallBuf)
	if b := appendError((*bp)[:0], id, code, reason, n); len(b) > 0 {
		s.reply(b, to)
	}
	s.bufs.put(bp)
}
