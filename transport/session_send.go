package transport

import (
	"crypto/rand"
	"errors"
	"sync"
	"time"

	"github.com/parley-p2p/parley/transport/internal/ackhandler"
	"github.com/parley-p2p/parley/transport/internal/aead"
	"github.com/parley-p2p/parley/transport/internal/wire"
)

// errSessionEnded stops frame processing once the session is closing.
var errSessionEnded = errors.New("transport: session ended")

func randRead(b []byte) { rand.Read(b) }

// sendPackets sends what the session has to send now, within the
// congestion window, the pacing rate and the anti-amplification limit.
func (s *Session) sendPackets(now time.Time) {
	if s.state == stateHandshaking && s.initiator {
		s.sendEarlyPackets(now)
		return
	}
	if s.state != stateEstablished {
		return
	}
	defer s.flush()
	s.sendPathResponses(now)
	s.pacingUntil = time.Time{}
	for i := 0; i < maxBurst; i++ {
		probe := s.probes > 0
		ackDue := s.ackDue(now)
		work := s.hasWork()
		if !work && !ackDue && !probe {
			// Nothing to send although the window would allow it: the
			// rate samples taken now must not lower the bandwidth estimate.
			if s.sph.SendAllowed(now) {
				s.sph.OnAppLimited()
			}
			return
		}
		if !probe {
			if !s.sph.SendAllowed(now) {
				switch {
				case s.cur.challengeQueued:
					// Path validation does not wait for the window: one
					// packet of control frames (and an ACK), no data.
					s.controlOnly = true
					s.sendPacket(now, false, false)
					s.controlOnly = false
				case ackDue:
					s.sendPacket(now, true, false)
				}
				return
			}
			if t := s.sph.NextSendTime(now); t.After(now) {
				if ackDue {
					s.sendPacket(now, true, false)
				}
				s.pacingUntil = t
				return
			}
		}
		if s.cur.budget() < minPacketRoom {
			return
		}
		if !s.sendPacket(now, !work && !probe, probe) {
			return
		}
		if probe {
			s.probes--
		}
	}
	// More to send: come back after looking at incoming packets.
	s.wake()
}

func (s *Session) ackDue(now time.Time) bool {
	d := s.rpt.AckDeadline()
	return !d.IsZero() && !now.Before(d)
}

// hasWork reports whether anything but an ACK is waiting to be sent.
func (s *Session) hasWork() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.control) > 0 || len(s.datagramsOut) > 0 || len(s.sendQueue) > 0
}

// sendPacket builds, seals and sends one packet. ackOnly limits it to an
// ACK; probe forces an ack-eliciting packet (a PING if nothing else). It
// reports whether a packet was sent.
func (s *Session) sendPacket(now time.Time, ackOnly, probe bool) bool {
	buf, pn := s.startPacket(s.cur)
	limit := s.cfg.MaxPacketSize - aead.Overhead
	if pm := int(s.peerParams.MaxUDPPayloadSize); pm >= 1200 && pm < s.cfg.MaxPacketSize {
		limit = pm - aead.Overhead
	}
	limit = min(limit, s.cur.budget()-aead.Overhead)
	frames := s.frames[:0]
	ackEliciting := false
	ackLargest, hasAck := uint64(0), false

	// ACK first: it is small and keeps the peer's sender going.
	if !s.rpt.AckDeadline().IsZero() || ackOnly {
		var delay time.Duration
		s.ranges, delay = s.rpt.AppendAckRanges(s.ranges[:0], now)
		if len(s.ranges) > 0 {
			s.ackBuf.Ranges = s.ackBuf.Ranges[:0]
			for _, r := range s.ranges {
				s.ackBuf.Ranges = append(s.ackBuf.Ranges, wire.AckRange{Smallest: r.Smallest, Largest: r.Largest})
			}
			s.ackBuf.DelayMicros = uint64(delay / time.Microsecond)
			for len(s.ackBuf.Ranges) > 1 && len(buf)+s.ackBuf.Length() > limit {
				s.ackBuf.Ranges = s.ackBuf.Ranges[:len(s.ackBuf.Ranges)-1]
			}
			buf = s.ackBuf.Append(buf)
			ackLargest, hasAck = s.ackBuf.Ranges[0].Largest, true
		}
	}
	if !ackOnly {
		buf, frames, ackEliciting = s.appendControl(buf, frames, limit)
	}
	if !ackOnly && !s.controlOnly {
		buf, frames, ackEliciting = s.appendDatagrams(buf, frames, limit, ackEliciting)
		var streamed bool
		buf, frames, streamed = s.appendStreams(buf, frames, limit)
		ackEliciting = ackEliciting || streamed
	}
	if probe && !ackEliciting {
		f := wire.PingFrame{}
		buf = f.Append(buf)
		frames = append(frames, ackhandler.Frame{Kind: kindPing})
		ackEliciting = true
	}
	if len(buf) == wire.DataHeaderLen {
		return false
	}
	s.frames = frames
	s.seal(buf, pn, now, ackEliciting, frames, s.cur)
	if hasAck {
		s.sph.RecordAckFrame(pn, ackLargest)
	}
	return true
}

// sendEarlyPackets sends, right behind the initiation, stream data written
// before the response arrived: early data (§3.5), sealed under the key
// derived from the initiation, within the congestion window and the early
// allowance. Loss recovery treats the packets like any other: they share
// the packet number space, and what the responder does not acknowledge is
// sent again under the session keys.
func (s *Session) sendEarlyPackets(now time.Time) {
	if s.initiation == nil {
		return
	}
	defer s.flush()
	for i := 0; i < maxBurst; i++ {
		s.mu.Lock()
		work := len(s.sendQueue) > 0
		s.mu.Unlock()
		if !work || !s.sph.SendAllowed(now) {
			return
		}
		if s.earlySealer == nil {
			k, err := s.initiation.EarlyKey()
			if err != nil {
				return // the data waits for the session keys
			}
			s.earlySealer = aead.NewSealer(k)
		}
		pn := s.nextPN
		hdr := wire.EarlyHeader{Ephemeral: s.initiation.Ephemeral(), PacketNumber: pn}
		buf := hdr.Append(s.outBuf(s.cur))
		buf, frames, any := s.appendStreams(buf, s.frames[:0], s.cfg.MaxPacketSize-aead.Overhead)
		if !any {
			return
		}
		s.frames = frames
		out := s.earlySealer.Seal(buf[wire.EarlyHeaderLen:wire.EarlyHeaderLen], buf[:wire.EarlyHeaderLen], buf[wire.EarlyHeaderLen:], pn)
		pkt := buf[:wire.EarlyHeaderLen+len(out)]
		s.nextPN++
		s.commitOut(len(pkt))
		s.cur.sentBytes += uint64(len(pkt))
		s.sph.SentPacket(now, pn, len(pkt), true, frames)
		s.lastSent = now
		s.counters.packetsSent.Add(1)
		s.counters.bytesSent.Add(uint64(len(pkt)))
		s.counters.earlySent.Add(1)
	}
}

// seal encrypts the packet in buf (header and plaintext frames), sends it
// on p, and records it for loss recovery.
func (s *Session) seal(buf []byte, pn uint64, now time.Time, ackEliciting bool, frames []ackhandler.Frame, p *path) {
	// Pad tiny packets so the ciphertext is long enough for any future
	// header protection sample; it costs a few bytes on ACK-only packets.
	if len(buf) < wire.DataHeaderLen+4 {
		buf = wire.AppendPadding(buf, wire.DataHeaderLen+4-len(buf))
	}
	out := s.sealer.Seal(buf[wire.DataHeaderLen:wire.DataHeaderLen], buf[:wire.DataHeaderLen], buf[wire.DataHeaderLen:], pn)
	pkt := buf[:wire.DataHeaderLen+len(out)]
	s.nextPN++
	s.commitOut(len(pkt))
	p.sentBytes += uint64(len(pkt))
	s.sph.SentPacket(now, pn, len(pkt), ackEliciting, frames)
	s.lastSent = now
	s.keyPhaseN++
	s.counters.packetsSent.Add(1)
	s.counters.bytesSent.Add(uint64(len(pkt)))
	if (s.keyPhaseN >= s.cfg.KeyUpdatePackets || now.Sub(s.keyPhaseAt) >= s.cfg.KeyUpdateInterval) &&
		s.phaseAcked && s.sealer.KeyPhase() == s.opener.KeyPhase() {
		s.log.Debug("key update", "packets", s.keyPhaseN)
		s.updateSendKey(now)
	}
}

// appendControl adds queued control frames that fit.
func (s *Session) appendControl(buf []byte, frames []ackhandler.Frame, limit int) ([]byte, []ackhandler.Frame, bool) {
	s.mu.Lock()
	queue := s.control
	s.control = nil
	s.mu.Unlock()
	ackEliciting := false
	var rest []controlFrame
	seen := uint32(0) // bit per kind: coalesce session-wide duplicates
	for i, c := range queue {
		var enc []byte
		rec := ackhandler.Frame{Kind: c.kind, StreamID: c.id}
		switch c.kind {
		case kindPing:
			// A keepalive is needless in a packet with other frames; an
			// application Ping (id > 0) is always sent, to track its ACK.
			if c.id == 0 && (seen&(1<<kindPing) != 0 || ackEliciting) {
				continue
			}
			f := wire.PingFrame{}
			enc = f.Append(s.scratch[:0])
		case kindMaxData:
			if seen&(1<<kindMaxData) != 0 {
				continue
			}
			s.flowMu.Lock()
			v := s.recvMaxSent
			s.flowMu.Unlock()
			f := wire.MaxDataFrame{Maximum: v}
			enc = f.Append(s.scratch[:0])
		case kindMaxStreams:
			if seen&(1<<kindMaxStreams) != 0 {
				continue
			}
			s.mu.Lock()
			s.maxIncoming = s.peerOpenedLive() + uint64(s.cfg.MaxIncomingStreams)
			v := s.maxIncoming
			s.mu.Unlock()
			f := wire.MaxStreamsFrame{Maximum: v}
			enc = f.Append(s.scratch[:0])
		case kindMaxStreamData:
			st := s.stream(c.id)
			if st == nil {
				continue
			}
			st.mu.Lock()
			v, done := st.maxSent, st.finKnown || st.readClosed || st.recvErr != nil
			st.mu.Unlock()
			if done {
				continue
			}
			f := wire.MaxStreamDataFrame{StreamID: c.id, Maximum: v}
			enc = f.Append(s.scratch[:0])
		case kindResetStream:
			f := wire.ResetStreamFrame{StreamID: c.id, ErrorCode: c.v, FinalSize: c.v2}
			enc = f.Append(s.scratch[:0])
			rec.Length, rec.Offset = c.v, c.v2
		case kindStopSending:
			f := wire.StopSendingFrame{StreamID: c.id, ErrorCode: c.v}
			enc = f.Append(s.scratch[:0])
			rec.Length = c.v
		case kindPathChallenge:
			if c.to != s.cur.addr || s.cur.validated || c.data != s.cur.challenge {
				continue
			}
			s.cur.challengeQueued = false
			f := wire.PathChallengeFrame{Data: c.data}
			enc = f.Append(s.scratch[:0])
		case kindPathResponse:
			f := wire.PathResponseFrame{Data: c.data}
			enc = f.Append(s.scratch[:0])
		default:
			continue
		}
		if len(buf)+len(enc) > limit {
			rest = append(rest, queue[i:]...)
			break
		}
		seen |= 1 << c.kind
		buf = append(buf, enc...)
		frames = append(frames, rec)
		ackEliciting = true
	}
	if len(rest) > 0 {
		s.mu.Lock()
		s.control = append(rest, s.control...)
		s.mu.Unlock()
	}
	return buf, frames, ackEliciting
}

// peerOpenedLive is how many peer-opened streams are finished; the peer may
// open MaxIncomingStreams beyond that. Called with s.mu held.
func (s *Session) peerOpenedLive() uint64 {
	live := uint64(0)
	for id := range s.streams {
		if (id%2 == 1) == s.initiator {
			live++
		}
	}
	return s.peerOpened - live
}

func (s *Session) appendDatagrams(buf []byte, frames []ackhandler.Frame, limit int, ackEliciting bool) ([]byte, []ackhandler.Frame, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for len(s.datagramsOut) > 0 {
		d := s.datagramsOut[0]
		f := wire.DatagramFrame{Data: d}
		if len(buf)+f.Length() > limit {
			break
		}
		buf = f.Append(buf)
		frames = append(frames, ackhandler.Frame{Kind: kindDatagram})
		ackEliciting = true
		s.datagramsOut[0] = nil
		s.datagramsOut = s.datagramsOut[1:]
	}
	return buf, frames, ackEliciting
}

// appendStreams fills the rest of the packet with stream data, taking the
// streams in the send queue in turn.
func (s *Session) appendStreams(buf []byte, frames []ackhandler.Frame, limit int) ([]byte, []ackhandler.Frame, bool) {
	any := false
	for limit-len(buf) > 24 {
		s.mu.Lock()
		if len(s.sendQueue) == 0 {
			s.mu.Unlock()
			break
		}
		st := s.sendQueue[0]
		s.mu.Unlock()

		credit := s.peerMaxData - min(s.peerMaxData, s.sentData)
		out, rec, newBytes, ok, more := st.appendFrame(buf, limit-len(buf), credit)
		if ok {
			buf = out
			frames = append(frames, rec)
			s.sentData += newBytes
			any = true
		}
		if more && !ok {
			break // packet full
		}
		if !more {
			s.mu.Lock()
			st.queued = false
			if len(s.sendQueue) > 0 && s.sendQueue[0] == st {
				// Shift rather than reslice, so the backing array (and
				// its capacity) is reused: no allocation per message.
				n := copy(s.sendQueue, s.sendQueue[1:])
				s.sendQueue[n] = nil
				s.sendQueue = s.sendQueue[:n]
			}
			s.mu.Unlock()
			// A Write may have added data after appendFrame looked.
			st.mu.Lock()
			w := st.hasSendWorkLocked(s.peerMaxData - min(s.peerMaxData, s.sentData))
			st.mu.Unlock()
			if w {
				s.scheduleStream(st)
			}
		}
	}
	// Round robin: the stream at the head goes to the back after a packet.
	s.mu.Lock()
	if n := len(s.sendQueue); n > 1 {
		head := s.sendQueue[0]
		copy(s.sendQueue, s.sendQueue[1:])
		s.sendQueue[n-1] = head
	}
	s.mu.Unlock()
	return buf, frames, any
}

// sendPathResponses answers PATH_CHALLENGEs on the address each came from
// (RFC 9000 §8.2.2), in packets of their own that the congestion window
// does not hold back: the peer's path validation must not wait behind our
// data. An answer on the current path stays within its anti-amplification
// limit, and waits in the queue when that is spent.
func (s *Session) sendPathResponses(now time.Time) {
	s.mu.Lock()
	var answers []controlFrame
	kept := s.control[:0]
	for _, c := range s.control {
		if c.kind == kindPathResponse && (c.to != s.cur.addr || s.cur.budget() >= minPacketRoom) {
			answers = append(answers, c)
			continue
		}
		kept = append(kept, c)
	}
	s.control = kept
	s.mu.Unlock()
	for _, c := range answers {
		p := s.cur
		if c.to != p.addr {
			p = newPath(c.to, false)
		}
		buf, pn := s.startPacket(p)
		f := wire.PathResponseFrame{Data: c.data}
		buf = f.Append(buf)
		s.seal(buf, pn, now, false, nil, p)
	}
}

// sendClose sends a packet holding only the CLOSE frame.
func (s *Session) sendClose(now time.Time) {
	defer s.flush()
	buf, pn := s.startPacket(s.cur)
	reason := s.closeReason
	if max := s.cfg.MaxPacketSize - aead.Overhead - len(buf) - 20; len(reason) > max {
		reason = reason[:max]
	}
	f := wire.CloseFrame{ErrorCode: s.closeCode, Reason: reason}
	buf = f.Append(buf)
	s.lastCloseSent = now
	s.seal(buf, pn, now, false, nil, s.cur)
}

// startPacket begins a data packet to p at the end of the pending batch:
// it returns the buffer holding the header and the packet's number.
func (s *Session) startPacket(p *path) ([]byte, uint64) {
	hdr := wire.DataHeader{KeyPhase: s.sealer.KeyPhase(), DestCID: s.remoteCID, PacketNumber: s.nextPN}
	return hdr.Append(s.outBuf(p)), s.nextPN
}

// outBuf returns an empty slice at the end of the pending batch with room
// for one packet to p, flushing the batch first when p is another address,
// the batch is full, or its last packet was short.
func (s *Session) outBuf(p *path) []byte {
	if s.batchN > 0 && (s.batchTo != p.udpAddr || cap(s.batch)-len(s.batch) < s.cfg.MaxPacketSize ||
		s.batchN >= maxBatchSegments || s.batchShort) {
		s.flush()
	}
	if s.batch == nil {
		s.batchBuf = getBatch(max(maxBatchBytes, s.cfg.MaxPacketSize))
		s.batch = (*s.batchBuf)[:0]
	}
	s.batchTo = p.udpAddr
	return s.batch[len(s.batch):len(s.batch)]
}

// commitOut adds to the batch the n-byte packet just written at its end.
// All packets of a batch but the last have the size of the first (GSO).
func (s *Session) commitOut(n int) {
	start := len(s.batch)
	if s.batchN > 0 && n > s.batchSeg {
		// Larger than the batch's packets: send those, then move this one
		// to the front as the start of a new batch.
		s.ep.writeBatch(s.batch[:start], s.batchSeg, s.batchTo)
		copy(s.batch[:n], s.batch[start:start+n])
		s.batch = s.batch[:n]
		s.batchN, s.batchSeg, s.batchShort = 1, n, false
		return
	}
	if s.batchN == 0 {
		s.batchSeg = n
	}
	s.batch = s.batch[:start+n]
	s.batchN++
	if n < s.batchSeg {
		s.batchShort = true
	}
}

// flush sends the pending batch and returns its buffer to the pool, so an
// idle session holds no send buffer.
func (s *Session) flush() {
	if s.batchN > 0 {
		s.ep.writeBatch(s.batch, s.batchSeg, s.batchTo)
	}
	if s.batchBuf != nil {
		batchPool.Put(s.batchBuf)
		s.batchBuf, s.batch = nil, nil
	}
	s.batchN, s.batchShort = 0, false
}

// batchPool holds *[]byte, so that Get and Put do not allocate.
var batchPool sync.Pool

func getBatch(size int) *[]byte {
	if b, ok := batchPool.Get().(*[]byte); ok && cap(*b) >= size {
		return b
	}
	b := make([]byte, 0, size)
	return &b
}
