package transport

import (
	"errors"
	"io"
	"net"
	"sync"
	"time"

	"github.com/parley-p2p/parley/transport/internal/ackhandler"
	"github.com/parley-p2p/parley/transport/internal/wire"
)

// A Stream is one ordered, reliable byte stream of a session, in both
// directions. It implements net.Conn: Read and Write may be called
// concurrently with each other and with Close and the deadline setters;
// concurrent Reads (or Writes) on one stream are serialised.
//
// Closing: CloseWrite sends FIN after the buffered data (half-close); Close
// does that and also stops reading; Reset abandons the send side with an
// error code the peer sees; CloseRead asks the peer to stop sending.
type Stream struct {
	id uint64
	s  *Session

	// readCh and writeCh wake a blocked Read or Write; capacity one, a send
	// never blocks (a pending wake-up is enough).
	readCh  chan struct{}
	writeCh chan struct{}

	// mu protects every field below. Never hold mu and Session.mu at once.
	mu sync.Mutex

	// Send side. Bytes [sendBase, writeOff) are in sendBuf; those below
	// nextOff have been sent at least once.
	sendBuf       chunkBuf
	sendBase      uint64
	writeOff      uint64
	nextOff       uint64
	peerMax       uint64 // the peer's MAX_STREAM_DATA
	acked         rangeSet
	retransmit    []sendRange
	finQueued     bool // CloseWrite called: FIN goes after writeOff
	finSent       bool
	finAcked      bool
	sendErr       error // set by Reset, STOP_SENDING or session close
	resetSent     bool
	writeDeadline time.Time
	queued        bool // in the session's send queue (protected by Session.mu, not mu)

	// Receive side.
	readOff      uint64
	ready        chunkBuf // contiguous bytes from readOff
	pending      []recvChunk
	highest      uint64 // highest offset received + 1
	finalSize    uint64
	finKnown     bool // the final size is known (FIN or RESET_STREAM)
	finReceived  bool // the peer sent FIN: a later reset changes nothing
	recvErr      error
	readClosed   bool
	window       uint64 // current receive window (auto-tuned)
	maxSent      uint64 // highest MAX_STREAM_DATA we granted
	windowEpoch  time.Time
	windowEpochO uint64
	readDeadline time.Time

	removed bool // the session forgot this stream
}

type sendRange struct {
	off uint64
	n   uint64
	fin bool
}

type recvChunk struct {
	off  uint64
	data []byte
}

func newStream(s *Session, id uint64, peerMax uint64, window uint64) *Stream {
	return &Stream{
		id:      id,
		s:       s,
		readCh:  make(chan struct{}, 1),
		writeCh: make(chan struct{}, 1),
		peerMax: peerMax,
		window:  window,
		maxSent: window,
	}
}

func wake(c chan struct{}) {
	select {
	case c <- struct{}{}:
	default:
	}
}

// ID is the stream's number within its session.
func (st *Stream) ID() uint64 { return st.id }

// LocalAddr returns the session's local address.
func (st *Stream) LocalAddr() net.Addr { return st.s.LocalAddr() }

// RemoteAddr returns the address the session currently sends to.
func (st *Stream) RemoteAddr() net.Addr { return st.s.RemoteAddr() }

// Session returns the session carrying the stream.
func (st *Stream) Session() *Session { return st.s }

// SetDeadline sets both the read and write deadlines.
func (st *Stream) SetDeadline(t time.Time) error {
	st.SetReadDeadline(t)
	st.SetWriteDeadline(t)
	return nil
}

// SetReadDeadline makes Read fail with os.ErrDeadlineExceeded after t. It
// affects a Read already blocked. A zero t means no deadline.
func (st *Stream) SetReadDeadline(t time.Time) error {
	st.mu.Lock()
	st.readDeadline = t
	st.mu.Unlock()
	wake(st.readCh)
	return nil
}

// SetWriteDeadline makes Write fail with os.ErrDeadlineExceeded after t.
// Bytes already accepted are still sent. A zero t means no deadline.
func (st *Stream) SetWriteDeadline(t time.Time) error {
	st.mu.Lock()
	st.writeDeadline = t
	st.mu.Unlock()
	wake(st.writeCh)
	return nil
}

// wait blocks until ch is signalled, the deadline passes or the session
// ends. It is called without st.mu held.
func (st *Stream) wait(ch chan struct{}, deadline time.Time) {
	var timeout <-chan time.Time
	if !deadline.IsZero() {
		d := time.Until(deadline)
		if d <= 0 {
			return
		}
		t := time.NewTimer(d)
		defer t.Stop()
		timeout = t.C
	}
	select {
	case <-ch:
	case <-timeout:
	case <-st.s.done:
	}
}

// Read reads data in order. It returns io.EOF after the peer's FIN and a
// *StreamError if the peer reset the stream.
func (st *Stream) Read(b []byte) (int, error) {
	st.mu.Lock()
	for {
		if st.ready.len() > 0 {
			n := 0
			for n < len(b) && st.ready.len() > 0 {
				m := copy(b[n:], st.ready.slice(st.readOff, uint64(len(b)-n)))
				n += m
				st.readOff += uint64(m)
				st.ready.release(st.readOff)
			}
			upd, newMax := st.windowUpdateLocked()
			st.maybeDoneLocked()
			st.mu.Unlock()
			if upd {
				st.s.queueControl(controlFrame{kind: kindMaxStreamData, id: st.id, v: newMax})
			}
			st.s.onAppRead(n)
			return n, nil
		}
		if len(b) == 0 {
			st.mu.Unlock()
			return 0, nil
		}
		if st.recvErr != nil {
			err := st.recvErr
			st.mu.Unlock()
			return 0, err
		}
		if st.finKnown && st.readOff == st.finalSize {
			st.maybeDoneLocked()
			st.mu.Unlock()
			return 0, io.EOF
		}
		if st.readClosed {
			st.mu.Unlock()
			return 0, ErrClosed
		}
		if err := st.s.closeError(); err != nil {
			st.mu.Unlock()
			return 0, err
		}
		dl := st.readDeadline
		if !dl.IsZero() && !time.Now().Before(dl) {
			st.mu.Unlock()
			return 0, errDeadline
		}
		st.mu.Unlock()
		st.wait(st.readCh, dl)
		st.mu.Lock()
	}
}

// windowUpdateLocked decides whether to grant the peer more credit: when
// less than half the window is left. The window doubles (up to the maximum)
// when the previous one was used up in less than a few round trips, so a
// fast sender is not held back by a small initial window.
func (st *Stream) windowUpdateLocked() (bool, uint64) {
	if st.finKnown || st.readClosed || st.recvErr != nil {
		return false, 0
	}
	if st.maxSent-st.readOff > st.window/2 {
		return false, 0
	}
	now := time.Now()
	if !st.windowEpoch.IsZero() {
		rtt := st.s.smoothedRTT()
		used := st.readOff - st.windowEpochO
		if elapsed := now.Sub(st.windowEpoch); used >= st.window/2 && elapsed < 4*rtt {
			st.window = min(2*st.window, uint64(st.s.cfg.MaxStreamWindow))
		}
	}
	st.windowEpoch = now
	st.windowEpochO = st.readOff
	st.maxSent = st.readOff + st.window
	return true, st.maxSent
}

// Write writes b to the stream, blocking while the send buffer is full. It
// returns a *StreamError if the stream was reset.
func (st *Stream) Write(b []byte) (int, error) {
	total := 0
	st.mu.Lock()
	for len(b) > 0 {
		if st.sendErr != nil {
			err := st.sendErr
			st.mu.Unlock()
			return total, err
		}
		if st.finQueued {
			st.mu.Unlock()
			return total, errWriteAfterClose
		}
		if err := st.s.closeError(); err != nil {
			st.mu.Unlock()
			return total, err
		}
		limit := max(st.sendBase+uint64(DefaultSendBufferPerStream), st.peerMax)
		if st.writeOff < limit {
			n := min(uint64(len(b)), limit-st.writeOff)
			st.sendBuf.write(b[:n])
			st.writeOff += n
			b = b[n:]
			total += int(n)
			st.mu.Unlock()
			st.s.scheduleStream(st)
			st.mu.Lock()
			continue
		}
		dl := st.writeDeadline
		if !dl.IsZero() && !time.Now().Before(dl) {
			st.mu.Unlock()
			return total, errDeadline
		}
		st.mu.Unlock()
		st.wait(st.writeCh, dl)
		st.mu.Lock()
	}
	st.mu.Unlock()
	return total, nil
}

var errWriteAfterClose = errors.New("transport: write after CloseWrite")

// CloseWrite sends FIN after the data already written: the peer reads
// io.EOF. Reading goes on.
func (st *Stream) CloseWrite() error {
	st.mu.Lock()
	if st.finQueued || st.sendErr != nil {
		st.mu.Unlock()
		return nil
	}
	st.finQueued = true
	st.mu.Unlock()
	st.s.scheduleStream(st)
	return nil
}

// CloseRead stops reading: buffered and future data are discarded and the
// peer is asked (STOP_SENDING) to stop sending, with code.
func (st *Stream) CloseRead(code ErrorCode) error {
	st.mu.Lock()
	if st.readClosed || st.recvErr != nil || (st.finKnown && st.readOff == st.finalSize) {
		st.readClosed = true
		st.maybeDoneLocked()
		st.mu.Unlock()
		return nil
	}
	st.readClosed = true
	st.ready.reset()
	st.pending = nil
	st.maybeDoneLocked()
	st.mu.Unlock()
	wake(st.readCh)
	st.s.queueControl(controlFrame{kind: kindStopSending, id: st.id, v: uint64(code)})
	return nil
}

// Close closes both directions: it sends FIN after the buffered data and
// stops reading. It does not wait for the data to be acknowledged; the
// session keeps delivering it.
func (st *Stream) Close() error {
	st.CloseWrite()
	st.CloseRead(0)
	return nil
}

// Reset abandons the send side: unsent data is dropped and the peer's reads
// fail with a *StreamError carrying code.
func (st *Stream) Reset(code ErrorCode) error {
	st.mu.Lock()
	if st.sendErr != nil || st.finAcked {
		st.mu.Unlock()
		return nil
	}
	st.sendErr = &StreamError{StreamID: st.id, Code: code}
	final := st.writeOff
	st.resetSent = true
	st.retransmit = nil
	st.sendBuf.reset()
	st.maybeDoneLocked()
	st.mu.Unlock()
	wake(st.writeCh)
	st.s.queueControl(controlFrame{kind: kindResetStream, id: st.id, v: uint64(code), v2: final})
	return nil
}

// --- called by the session loop ---

// hasSendWorkLocked reports whether the stream has a frame to send given
// connCredit bytes of connection-level credit for new data.
func (st *Stream) hasSendWorkLocked(connCredit uint64) bool {
	if st.sendErr != nil {
		return false
	}
	if len(st.retransmit) > 0 {
		return true
	}
	if st.nextOff < st.writeOff && st.nextOff < st.peerMax && connCredit > 0 {
		return true
	}
	return st.finQueued && !st.finSent && st.nextOff == st.writeOff
}

// appendFrame appends one STREAM frame of at most room bytes to dst. It
// returns the new dst, the record for loss recovery, how many new bytes
// (never sent before) it carries, whether it appended anything, and whether
// the stream has more to send.
func (st *Stream) appendFrame(dst []byte, room int, connCredit uint64) (out []byte, rec ackhandler.Frame, newBytes uint64, ok, more bool) {
	st.mu.Lock()
	defer st.mu.Unlock()
	if st.sendErr != nil {
		return dst, rec, 0, false, false
	}
	// Retransmissions first: lost data goes out again in a new packet.
	for len(st.retransmit) > 0 {
		r := &st.retransmit[0]
		// Skip what was acknowledged meanwhile (a spurious loss).
		if r.off+r.n <= st.sendBase && !(r.fin && !st.finAcked) {
			st.retransmit = st.retransmit[1:]
			continue
		}
		if r.off < st.sendBase {
			r.n -= st.sendBase - r.off
			r.off = st.sendBase
		}
		if r.n > 0 && (r.off+r.n > st.writeOff || st.sendBuf.len() == 0) {
			// Cannot happen while the buffer holds every unacknowledged
			// byte; never index outside it if it does.
			st.retransmit = st.retransmit[1:]
			continue
		}
		n := uint64(wire.MaxStreamDataLen(st.id, r.off, room))
		if n == 0 && (r.n > 0 || room < wire.StreamFrameOverhead(st.id, r.off, 0)) {
			return dst, rec, 0, false, true
		}
		n = min(n, r.n)
		var data []byte
		if n > 0 {
			data = st.sendBuf.slice(r.off, n)
			n = uint64(len(data))
		}
		fin := r.fin && n == r.n
		f := wire.StreamFrame{StreamID: st.id, Offset: r.off, Data: data, Fin: fin}
		dst = f.Append(dst)
		rec = ackhandler.Frame{Kind: kindStream, StreamID: st.id, Offset: r.off, Length: n, Fin: fin}
		r.off += n
		r.n -= n
		if r.n == 0 {
			st.retransmit = st.retransmit[1:]
		}
		return dst, rec, 0, true, st.hasSendWorkLocked(connCredit)
	}
	avail := st.writeOff - st.nextOff
	avail = min(avail, st.peerMax-min(st.peerMax, st.nextOff), connCredit)
	finNow := st.finQueued && !st.finSent
	if avail == 0 && !(finNow && st.nextOff == st.writeOff) {
		return dst, rec, 0, false, false
	}
	n := uint64(wire.MaxStreamDataLen(st.id, st.nextOff, room))
	if n == 0 && (avail > 0 || room < wire.StreamFrameOverhead(st.id, st.nextOff, 0)) {
		return dst, rec, 0, false, true
	}
	n = min(n, avail)
	var data []byte
	if n > 0 {
		data = st.sendBuf.slice(st.nextOff, n)
		n = uint64(len(data))
	}
	fin := finNow && st.nextOff+n == st.writeOff
	f := wire.StreamFrame{StreamID: st.id, Offset: st.nextOff, Data: data, Fin: fin}
	dst = f.Append(dst)
	rec = ackhandler.Frame{Kind: kindStream, StreamID: st.id, Offset: st.nextOff, Length: n, Fin: fin}
	st.nextOff += n
	if fin {
		st.finSent = true
	}
	return dst, rec, n, true, st.hasSendWorkLocked(connCredit - n)
}

// onFrameAcked records that [off, off+n) (and FIN) reached the peer.
func (st *Stream) onFrameAcked(off, n uint64, fin bool) {
	st.mu.Lock()
	if fin {
		st.finAcked = true
	}
	freed := false
	if n > 0 {
		st.acked.add(off, off+n)
		if end := st.acked.advance(st.sendBase); end > st.sendBase {
			st.sendBuf.release(end)
			st.sendBase = end
			freed = true
		}
	}
	st.maybeDoneLocked()
	st.mu.Unlock()
	if freed {
		wake(st.writeCh)
	}
}

// onFrameLost queues [off, off+n) (and FIN) for retransmission. It reports
// whether the stream now has data to send.
func (st *Stream) onFrameLost(off, n uint64, fin bool) bool {
	st.mu.Lock()
	defer st.mu.Unlock()
	if st.removed || st.sendErr != nil || (off+n <= st.sendBase && !(fin && !st.finAcked)) {
		return false
	}
	st.retransmit = append(st.retransmit, sendRange{off: off, n: n, fin: fin})
	return true
}

// onMaxStreamData raises the peer's credit; it reports whether the stream
// can now send more.
func (st *Stream) onMaxStreamData(v uint64) bool {
	st.mu.Lock()
	defer st.mu.Unlock()
	if v <= st.peerMax {
		return false
	}
	st.peerMax = v
	wake(st.writeCh)
	return st.nextOff < st.writeOff
}

// onStopSending: the peer will not read any more; reset with its code.
func (st *Stream) onStopSending(code ErrorCode) {
	st.Reset(code)
}

// onStreamFrame takes in data from the peer. It returns how far the
// stream's highest received offset grew (for connection flow control), or an
// error code for a protocol violation.
func (st *Stream) onStreamFrame(off uint64, data []byte, fin bool) (grew uint64, code ErrorCode, err error) {
	st.mu.Lock()
	defer st.mu.Unlock()
	end := off + uint64(len(data))
	if end > st.maxSent {
		return 0, wire.FlowControlError, errors.New("stream data beyond the granted window")
	}
	if st.finKnown && (end > st.finalSize || (fin && end != st.finalSize)) {
		return 0, wire.FinalSizeError, errors.New("stream data beyond its final size")
	}
	if fin {
		if end < st.highest {
			return 0, wire.FinalSizeError, errors.New("FIN below data already received")
		}
		st.finKnown = true
		st.finReceived = true
		st.finalSize = end
	}
	if end > st.highest {
		grew = end - st.highest
		st.highest = end
	}
	if st.readClosed || st.recvErr != nil {
		st.maybeDoneLocked()
		return grew, 0, nil
	}
	contig := st.readOff + st.ready.len()
	if end <= contig {
		st.maybeDoneLocked()
		if fin {
			wake(st.readCh)
		}
		return grew, 0, nil // duplicate
	}
	if off <= contig {
		st.ready.write(data[contig-off:])
		st.drainPendingLocked()
		wake(st.readCh)
		return grew, 0, nil
	}
	// Out of order: keep a copy until the gap fills.
	st.insertPendingLocked(off, data)
	if fin {
		wake(st.readCh)
	}
	return grew, 0, nil
}

func (st *Stream) insertPendingLocked(off uint64, data []byte) {
	i := len(st.pending)
	for i > 0 && st.pending[i-1].off > off {
		i--
	}
	st.pending = append(st.pending, recvChunk{})
	copy(st.pending[i+1:], st.pending[i:])
	st.pending[i] = recvChunk{off: off, data: append([]byte(nil), data...)}
}

func (st *Stream) drainPendingLocked() {
	for len(st.pending) > 0 {
		c := st.pending[0]
		contig := st.readOff + st.ready.len()
		if c.off > contig {
			return
		}
		if end := c.off + uint64(len(c.data)); end > contig {
			st.ready.write(c.data[contig-c.off:])
		}
		st.pending[0] = recvChunk{}
		st.pending = st.pending[1:]
	}
}

// onResetStream: the peer abandoned its send side.
func (st *Stream) onResetStream(code ErrorCode, final uint64) (grew uint64, ec ErrorCode, err error) {
	st.mu.Lock()
	defer st.mu.Unlock()
	if (st.finKnown && final != st.finalSize) || final < st.highest {
		return 0, wire.FinalSizeError, errors.New("RESET_STREAM contradicts the final size")
	}
	if final > st.maxSent {
		return 0, wire.FlowControlError, errors.New("RESET_STREAM final size beyond the window")
	}
	grew = final - st.highest
	st.highest = final
	st.finKnown = true
	st.finalSize = final
	if st.recvErr == nil && !(st.finReceived && st.readOff == final) {
		st.recvErr = &StreamError{StreamID: st.id, Code: code, Remote: true}
		st.ready.reset()
		st.pending = nil
	}
	st.maybeDoneLocked()
	wake(st.readCh)
	return grew, 0, nil
}

// closeWithError fails every pending and future operation with err; it is
// called when the session ends.
func (st *Stream) closeWithError(err error) {
	st.mu.Lock()
	if st.sendErr == nil {
		st.sendErr = err
	}
	if st.recvErr == nil {
		st.recvErr = err
	}
	st.mu.Unlock()
	wake(st.readCh)
	wake(st.writeCh)
}

// maybeDoneLocked tells the session to forget the stream once both
// directions are finished.
func (st *Stream) maybeDoneLocked() {
	if st.removed {
		return
	}
	// FIN can be acknowledged before data sent ahead of it (that packet was
	// lost): the send side is done only when every byte is acknowledged.
	sendDone := (st.finAcked && st.sendBase == st.writeOff) || st.resetSent || st.sendErr != nil
	recvDone := st.readClosed || st.recvErr != nil || (st.finKnown && st.readOff == st.finalSize)
	if sendDone && recvDone {
		st.removed = true
		st.sendBuf.reset()
		st.ready.reset()
		st.s.streamDone(st)
	}
}

// rangeSet is a sorted set of disjoint half-open ranges of acknowledged
// offsets above a stream's send base.
type rangeSet []struct{ lo, hi uint64 }

func (rs *rangeSet) add(lo, hi uint64) {
	r := *rs
	i := 0
	for i < len(r) && r[i].hi < lo {
		i++
	}
	j := i
	for j < len(r) && r[j].lo <= hi {
		lo = min(lo, r[j].lo)
		hi = max(hi, r[j].hi)
		j++
	}
	if i == j {
		r = append(r, struct{ lo, hi uint64 }{})
		copy(r[i+1:], r[i:])
		r[i] = struct{ lo, hi uint64 }{lo, hi}
	} else {
		r[i] = struct{ lo, hi uint64 }{lo, hi}
		r = append(r[:i+1], r[j:]...)
	}
	*rs = r
}

// advance returns how far contiguous acknowledgement reaches from base, and
// forgets ranges below it.
func (rs *rangeSet) advance(base uint64) uint64 {
	r := *rs
	k := 0
	for k < len(r) && r[k].lo <= base {
		base = max(base, r[k].hi)
		k++
	}
	// Shift rather than reslice, keeping the capacity for the next add.
	*rs = r[:copy(r, r[k:])]
	return base
}
