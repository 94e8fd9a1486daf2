package transport

import (
	"net/netip"
	"time"

	"github.com/parley-p2p/parley/transport/internal/ackhandler"
	"github.com/parley-p2p/parley/transport/internal/aead"
	"github.com/parley-p2p/parley/transport/internal/handshake"
	"github.com/parley-p2p/parley/transport/internal/wire"
)

// maxBurst is how many packets the loop sends before it looks at incoming
// packets again.
const maxBurst = 32

// run is the session's one goroutine: it owns all protocol state, handles
// packets, timers and close requests, and sends. It exits when the session
// reaches stateClosed.
func (s *Session) run(created time.Time) {
	defer s.finish()
	s.timer = time.NewTimer(time.Hour)
	defer s.timer.Stop()
	now := time.Now()
	s.lastRecv = now
	s.lastSent = now
	if s.initiator {
		s.initBackoff = 250 * time.Millisecond
		s.sendInitiation(now)
	}
	for s.state != stateClosed {
		s.timer.Reset(max(time.Until(s.nextDeadline(created)), 0))
		select {
		case p := <-s.recvQ:
			s.handlePacket(p)
			// Take in whatever else has arrived before answering.
			for i := 0; i < 64; i++ {
				select {
				case p := <-s.recvQ:
					s.handlePacket(p)
					continue
				default:
				}
				break
			}
		case <-s.wakeCh:
		case <-s.timer.C:
			s.onTimer(time.Now(), created)
		case req := <-s.closeCh:
			s.closeLocal(req, time.Now())
		case <-s.aborted:
			s.setState(stateClosed)
		case req := <-s.moveCh:
			s.startProbe(req, time.Now())
		}
		if s.state == stateClosed {
			break
		}
		s.sendPackets(time.Now())
	}
}

// finish releases the session's connection ID and wakes every waiter.
func (s *Session) finish() {
	for _, pr := range s.probing {
		pr.result <- ErrClosed
	}
	s.probing = nil
	s.setState(stateClosed)
	s.setCloseErr(ErrClosed)
	s.ep.removeSession(s)
	close(s.done)
}

func (s *Session) pto() time.Duration {
	if !s.rtt.HasMeasurement() {
		return 2 * defaultInitialRTT
	}
	return s.rtt.PTO(true)
}

// nextDeadline is the earliest moment the loop must wake up by itself.
func (s *Session) nextDeadline(created time.Time) time.Time {
	var d time.Time
	earliest := func(t time.Time) {
		if !t.IsZero() && (d.IsZero() || t.Before(d)) {
			d = t
		}
	}
	switch s.state {
	case stateHandshaking:
		earliest(s.initSent.Add(s.initBackoff))
		earliest(created.Add(s.cfg.HandshakeTimeout))
	case stateEstablished:
		// While the anti-amplification limit forbids sending, deadlines
		// that only lead to sending would fire in vain; the next packet
		// from the peer raises the limit and re-arms them.
		if s.cur.budget() >= minPacketRoom {
			earliest(s.rpt.AckDeadline())
			earliest(s.sph.LossDetectionDeadline())
		}
		earliest(s.lastRecv.Add(s.idleTimeout))
		if s.cfg.KeepAlivePeriod > 0 {
			earliest(s.lastSent.Add(s.cfg.KeepAlivePeriod))
		}
		if s.pacingUntil.After(time.Now()) {
			earliest(s.pacingUntil)
		}
		if !s.dropPrevAt.IsZero() {
			earliest(s.dropPrevAt)
		}
		if !s.cur.validated && !s.cur.challengeSent.IsZero() {
			earliest(s.cur.challengeSent.Add(2 * s.pto()))
		}
		for _, pr := range s.probing {
			earliest(pr.p.challengeSent.Add(s.probeInterval()))
		}
	case stateClosing, stateDraining:
		earliest(s.closeAt)
	}
	if d.IsZero() {
		d = time.Now().Add(time.Hour)
	}
	return d
}

func (s *Session) onTimer(now time.Time, created time.Time) {
	switch s.state {
	case stateHandshaking:
		if now.Sub(created) >= s.cfg.HandshakeTimeout {
			s.startErr = ErrHandshakeTimeout
			s.setCloseErr(ErrHandshakeTimeout)
			s.setState(stateClosed)
			return
		}
		if !now.Before(s.initSent.Add(s.initBackoff)) {
			s.initBackoff = min(2*s.initBackoff, 2*time.Second)
			s.sendInitiation(now)
		}
	case stateEstablished:
		if now.Sub(s.lastRecv) >= s.idleTimeout {
			s.log.Debug("session idle timeout", "idle", s.idleTimeout)
			s.setCloseErr(IdleTimeoutError{})
			s.setState(stateClosed)
			return
		}
		if dl := s.sph.LossDetectionDeadline(); !dl.IsZero() && !now.Before(dl) {
			s.probes += s.sph.OnLossDetectionTimeout(now)
		}
		if s.cfg.KeepAlivePeriod > 0 && now.Sub(s.lastSent) >= s.cfg.KeepAlivePeriod {
			s.queueControl(controlFrame{kind: kindPing})
			s.lastSent = now // queued: do not fire again before it can go
		}
		if !s.dropPrevAt.IsZero() && !now.Before(s.dropPrevAt) {
			s.opener.DropPrevious()
			s.dropPrevAt = time.Time{}
		}
		s.retryProbes(now)
		if p := s.cur; !p.validated && !p.challengeSent.IsZero() && now.Sub(p.challengeSent) >= 2*s.pto() {
			if p.challengeN >= maxPathChallengeRetransmits && s.prev != nil && s.prev.validated {
				s.log.Debug("path validation failed; returning to previous path", "failed", p.addr, "to", s.prev.addr)
				cur := s.prev
				s.prev = nil
				s.setCurrent(cur)
			} else {
				s.sendChallenge(now)
			}
		}
	case stateClosing, stateDraining:
		if !now.Before(s.closeAt) {
			s.setState(stateClosed)
		}
	}
}

func (s *Session) sendInitiation(now time.Time) {
	if s.initPacket == nil {
		ini, pkt, err := handshake.Initiate(nil, s.ep.key.keyPair(), [32]byte(s.remoteKey), s.localParams(), s.cookie, now)
		if err != nil {
			s.startErr = err
			s.setCloseErr(err)
			s.setState(stateClosed)
			return
		}
		s.initiation, s.initPacket = ini, pkt
	} else {
		s.initRetransmitted = true
	}
	s.initSent = now
	s.ep.write(s.initPacket, s.cur.udpAddr)
}

func (s *Session) handlePacket(p *packet) {
	defer s.ep.putPacket(p)
	now := p.rcvTime
	b := p.data
	switch wire.PacketType(b[1]) {
	case wire.TypeResponse:
		s.handleResponse(p, now)
	case wire.TypeCookieReply:
		if s.state != stateHandshaking {
			return
		}
		c, err := s.initiation.ConsumeCookieReply(b)
		if err != nil {
			s.ep.stats.droppedAuth.Add(1)
			return
		}
		s.cookie = &c
		s.initPacket = nil // the next initiation carries mac2
		s.initRetransmitted = true
		s.sendInitiation(now)
	case wire.TypeInitiation:
		// The initiator did not get our response: send it again. It is no
		// larger than the initiation, so this cannot amplify.
		if !s.confirmed && s.response != nil {
			s.ep.write(s.response, newPath(p.from, false).udpAddr)
		}
	case wire.TypeData:
		s.handleData(p, now)
	case wire.TypeEarlyData:
		s.handleEarly(p, now)
	}
}

// handleEarly takes in an early data packet (§3.5): frames the initiator
// sent behind its initiation, before it had our response. Only a responder
// that has not yet heard a data packet takes them.
func (s *Session) handleEarly(p *packet, now time.Time) {
	if s.initiator || s.confirmed || s.state != stateEstablished {
		s.ep.stats.droppedUnknown.Add(1)
		return
	}
	b := p.data
	hdr, err := wire.ParseEarlyHeader(b)
	if err != nil || hdr.Ephemeral != s.initEph {
		s.ep.stats.droppedMalformed.Add(1)
		return
	}
	if s.earlyOpener == nil {
		k, err := handshake.ResponderEarlyKey(s.ep.key.keyPair(), [32]byte(s.remoteKey), s.initEph)
		if err != nil {
			s.ep.stats.droppedAuth.Add(1)
			return
		}
		s.earlyOpener = aead.NewOpener(k)
	}
	const h = wire.EarlyHeaderLen
	plain, _, err := s.earlyOpener.Open(b[h:h], b[:h], b[h:], hdr.PacketNumber, false)
	if !s.admit(err, hdr.PacketNumber, len(b), now) {
		return
	}
	s.counters.earlyReceived.Add(1)
	if p.from == s.cur.addr {
		s.cur.recvBytes += uint64(len(b))
	}
	if hdr.PacketNumber >= s.largestRecv {
		s.largestRecv = hdr.PacketNumber
	}
	s.inEarly = true
	ackEliciting, _, err := s.handleFrames(plain, p.from, now)
	s.inEarly = false
	if err != nil {
		return
	}
	s.rpt.ReceivedPacket(hdr.PacketNumber, now, ackEliciting)
}

func (s *Session) handleResponse(p *packet, now time.Time) {
	if s.state != stateHandshaking {
		return
	}
	params, keys, err := s.initiation.ConsumeResponse(p.data)
	if err != nil {
		s.ep.stats.droppedAuth.Add(1)
		return
	}
	if params.MaxStreams < EarlyMaxStreams || params.InitialMaxData < EarlyMaxData || params.InitialMaxStreamData < EarlyMaxData {
		// Early data may already have used that much (§3.5).
		s.startErr = ErrPeerLimits
		s.setCloseErr(ErrPeerLimits)
		s.setState(stateClosed)
		return
	}
	s.installKeys(keys, now)
	s.applyPeerParams(params)
	// Streams opened early got the early allowance as credit; the real one
	// is at least as large.
	s.mu.Lock()
	early := make([]*Stream, 0, len(s.streams))
	for _, st := range s.streams {
		early = append(early, st)
	}
	s.mu.Unlock()
	for _, st := range early {
		st.onMaxStreamData(params.InitialMaxStreamData)
	}
	s.rescheduleAll()
	if !s.initRetransmitted {
		s.rtt.UpdateRTT(now.Sub(s.initSent), 0)
		s.rttNanos.Store(int64(s.rtt.SmoothedRTT()))
		s.mu.Lock()
		s.stats.SmoothedRTT, s.stats.MinRTT = s.rtt.SmoothedRTT(), s.rtt.MinRTT()
		s.mu.Unlock()
	}
	if p.from != s.cur.addr {
		// Answered from another address (a NAT rebinding): use it, but
		// validate it before sending much.
		s.migrate(p.from, now)
	}
	s.cur.recvBytes += uint64(len(p.data))
	s.lastRecv = now
	s.setState(stateEstablished)
	// The second flight: confirm at once even if the application has
	// nothing to say yet, so the responder can validate our address.
	s.queueControl(controlFrame{kind: kindPing})
	close(s.ready)
}

func (s *Session) handleData(p *packet, now time.Time) {
	switch s.state {
	case stateHandshaking, stateDraining, stateClosed:
		return
	case stateClosing:
		if now.Sub(s.lastCloseSent) >= s.pto() {
			s.sendClose(now)
		}
		return
	}
	b := p.data
	hdr, err := wire.ParseDataHeader(b)
	if err != nil || len(b) < wire.DataHeaderLen+aead.Overhead {
		s.ep.stats.droppedMalformed.Add(1)
		return
	}
	plain, updated, err := s.opener.Open(b[wire.DataHeaderLen:wire.DataHeaderLen], b[:wire.DataHeaderLen], b[wire.DataHeaderLen:], hdr.PacketNumber, hdr.KeyPhase)
	if !s.admit(err, hdr.PacketNumber, len(b), now) {
		return
	}
	if updated {
		s.dropPrevAt = now.Add(3 * s.pto())
		if s.sealer.KeyPhase() != s.opener.KeyPhase() {
			s.updateSendKey(now)
		}
	}
	if !s.initiator && !s.confirmed {
		s.confirmed = true
		s.response = nil
		s.ep.forgetEphemeral(s)
		if p.from == s.cur.addr {
			s.cur.validated = true
			s.curValidated.Store(true)
		}
	}
	newest := hdr.PacketNumber >= s.largestRecv
	if newest {
		s.largestRecv = hdr.PacketNumber
	}
	ackEliciting, nonProbing, err := s.handleFrames(plain, p.from, now)
	if err != nil {
		return
	}
	// Follow the peer to a new address only for its newest non-probing
	// packet (RFC 9000 §9.3): a PATH_CHALLENGE is no move. And not back
	// onto a path we left on our own a moment ago: what arrives there now
	// the peer sent before it saw us move.
	if p.from != s.cur.addr && newest && nonProbing &&
		!(p.from == s.leftAddr && now.Sub(s.leftAt) < closeLingerPTOs*s.pto()) {
		s.migrate(p.from, now)
	}
	if p.from == s.cur.addr {
		s.cur.recvBytes += uint64(len(b))
	}
	s.rpt.ReceivedPacket(hdr.PacketNumber, now, ackEliciting)
}

// admit takes in an n-byte packet numbered pn that openErr says did or did
// not authenticate: it counts and refuses one that failed, or that the
// anti-replay window has seen, and notes the arrival of the rest.
func (s *Session) admit(openErr error, pn uint64, n int, now time.Time) bool {
	if openErr != nil {
		s.ep.stats.droppedAuth.Add(1)
		s.counters.droppedAuth.Add(1)
		return false
	}
	if !s.replay.Accept(pn) {
		s.ep.stats.droppedReplay.Add(1)
		s.counters.droppedDuplicate.Add(1)
		return false
	}
	s.lastRecv = now
	s.lastRecvNanos.Store(now.UnixNano())
	s.counters.packetsReceived.Add(1)
	s.counters.bytesReceived.Add(uint64(n))
	return true
}

// migrate moves the session to a new peer address (RFC 9000 §9.3): the
// peer's packets now come from there, so we send there too, within the
// anti-amplification limit until a PATH_CHALLENGE is answered.
func (s *Session) migrate(to netip.AddrPort, now time.Time) {
	s.log.Debug("peer address changed", "from", s.cur.addr, "to", to)
	if s.prev != nil && s.prev.addr == to && s.prev.validated {
		cur := s.prev
		s.prev = s.cur
		s.setCurrent(cur)
	} else {
		if s.cur.validated {
			s.prev = s.cur
		}
		s.setCurrent(newPath(to, false))
		s.sendChallenge(now)
	}
	s.mu.Lock()
	s.stats.PathChanges++
	s.mu.Unlock()
}

// setCurrent publishes the current path to other goroutines.
func (s *Session) setCurrent(p *path) {
	s.cur = p
	s.remoteAddr.Store(p.udpAddr)
	s.curValidated.Store(p.validated)
}

func (s *Session) probeInterval() time.Duration { return max(s.pto(), 50*time.Millisecond) }

// maxProbes is how many PATH_CHALLENGEs MovePath sends before giving up.
const maxProbes = 6

func (s *Session) startProbe(req moveRequest, now time.Time) {
	if s.state != stateEstablished {
		req.result <- ErrClosed
		return
	}
	if req.addr == s.cur.addr && s.cur.validated {
		req.result <- nil
		return
	}
	if req.vouched {
		old := s.cur
		s.leftAddr, s.leftAt = old.addr, now
		np := newPath(req.addr, true)
		np.recvBytes = old.recvBytes
		if old.validated {
			s.prev = old
		}
		s.setCurrent(np)
		s.mu.Lock()
		s.stats.PathChanges++
		s.mu.Unlock()
		s.queueControl(controlFrame{kind: kindPing})
		req.result <- nil
		return
	}
	pr := &probe{p: newPath(req.addr, false), result: req.result}
	s.probing = append(s.probing, pr)
	s.sendProbe(pr, now)
}

// sendProbe sends a packet holding only a PATH_CHALLENGE on the probe's
// path. It is exempt from the congestion window (a few bytes per RTT) and
// goes to an address the application vouched for.
func (s *Session) sendProbe(pr *probe, now time.Time) {
	randRead(pr.p.challenge[:])
	pr.p.challengeSent = now
	pr.sent++
	buf, pn := s.startPacket(pr.p)
	f := wire.PathChallengeFrame{Data: pr.p.challenge}
	buf = f.Append(buf)
	s.seal(buf, pn, now, false, nil, pr.p)
	s.flush()
}

func (s *Session) retryProbes(now time.Time) {
	kept := s.probing[:0]
	for _, pr := range s.probing {
		if now.Sub(pr.p.challengeSent) < s.probeInterval() {
			kept = append(kept, pr)
			continue
		}
		if pr.sent >= maxProbes {
			pr.result <- ErrPathUnreachable
			continue
		}
		s.sendProbe(pr, now)
		kept = append(kept, pr)
	}
	s.probing = kept
}

// onPathResponse matches a PATH_RESPONSE against the current path's
// challenge and the application's probes.
func (s *Session) onPathResponse(data [8]byte, from netip.AddrPort, now time.Time) {
	if !s.cur.validated && !s.cur.challengeSent.IsZero() && data == s.cur.challenge {
		s.log.Debug("path validated", "addr", s.cur.addr)
		s.cur.validated = true
		s.curValidated.Store(true)
	}
	for i, pr := range s.probing {
		if pr.p.challenge != data {
			continue
		}
		s.probing = append(s.probing[:i], s.probing[i+1:]...)
		s.log.Debug("moving to probed path", "addr", pr.p.addr, "answered from", from)
		old := s.cur
		s.leftAddr, s.leftAt = old.addr, now
		if from == pr.p.addr {
			pr.p.validated = true
			pr.p.recvBytes = old.recvBytes
			if old.validated {
				s.prev = old
			}
			s.setCurrent(pr.p)
			s.mu.Lock()
			s.stats.PathChanges++
			s.mu.Unlock()
		} else {
			s.migrate(from, now)
		}
		pr.result <- nil
		return
	}
}

// sendChallenge queues a PATH_CHALLENGE for the current path. It goes in
// the next packet, ahead of stream data, and the congestion window does not
// hold it back (sendPackets): after a migration the window is often full of
// packets sent on the old path, and a challenge waiting behind them would
// time out and send the session back to a dead path.
func (s *Session) sendChallenge(now time.Time) {
	p := s.cur
	randRead(p.challenge[:])
	p.challengeSent = now
	p.challengeN++
	p.challengeQueued = true
	s.queueControl(controlFrame{kind: kindPathChallenge, data: p.challenge, to: p.addr})
}

func (s *Session) updateSendKey(now time.Time) {
	s.sealer.Update()
	s.keyPhaseN = 0
	s.keyPhaseAt = now
	s.phaseAcked = false
	s.phaseFirstPN = s.nextPN
	s.mu.Lock()
	s.stats.KeyUpdates++
	s.mu.Unlock()
}

// handleFrames processes a packet's frames. It reports whether any was
// ack-eliciting; an error has already closed the session.
func (s *Session) handleFrames(b []byte, from netip.AddrPort, now time.Time) (ackEliciting, nonProbing bool, err error) {
	for len(b) > 0 {
		t, err := wire.ParseFrameType(b)
		if err != nil {
			s.protocolError(wire.FrameEncodingError, "unknown frame type", now)
			return false, false, err
		}
		if t.IsAckEliciting() {
			ackEliciting = true
		}
		if t != wire.FramePadding && t != wire.FramePathChallenge && t != wire.FramePathResponse {
			nonProbing = true
		}
		if s.inEarly && t != wire.FramePadding && t != wire.FramePing && t != wire.FrameStream && t != wire.FrameStreamFin {
			s.protocolError(wire.ProtocolViolation, "frame not allowed in early data", now)
			return false, false, errSessionEnded
		}
		var n int
		switch t {
		case wire.FramePadding:
			n = wire.PaddingLen(b)
		case wire.FramePing:
			n = 1
		case wire.FrameAck:
			n, err = wire.ParseAckFrame(b, &s.ackBuf)
			if err == nil {
				err = s.onAck(now)
			}
		case wire.FrameStream, wire.FrameStreamFin:
			var f wire.StreamFrame
			f, n, err = wire.ParseStreamFrame(b)
			if err == nil {
				err = s.onStreamFrame(&f, now)
			}
		case wire.FrameResetStream:
			var f wire.ResetStreamFrame
			f, n, err = wire.ParseResetStreamFrame(b)
			if err == nil {
				err = s.onResetStream(&f, now)
			}
		case wire.FrameStopSending:
			var f wire.StopSendingFrame
			f, n, err = wire.ParseStopSendingFrame(b)
			if err == nil {
				if st := s.stream(f.StreamID); st != nil {
					st.onStopSending(ErrorCode(f.ErrorCode))
				}
			}
		case wire.FrameMaxData:
			var f wire.MaxDataFrame
			f, n, err = wire.ParseMaxDataFrame(b)
			if err == nil && f.Maximum > s.peerMaxData {
				s.peerMaxData = f.Maximum
				s.rescheduleAll()
			}
		case wire.FrameMaxStreamData:
			var f wire.MaxStreamDataFrame
			f, n, err = wire.ParseMaxStreamDataFrame(b)
			if err == nil {
				if st := s.stream(f.StreamID); st != nil && st.onMaxStreamData(f.Maximum) {
					s.scheduleStream(st)
				}
			}
		case wire.FrameMaxStreams:
			var f wire.MaxStreamsFrame
			f, n, err = wire.ParseMaxStreamsFrame(b)
			if err == nil {
				s.mu.Lock()
				if f.Maximum > s.peerMaxStreams {
					s.peerMaxStreams = f.Maximum
				}
				s.mu.Unlock()
				wake(s.streamCredit)
			}
		case wire.FrameDataBlocked:
			_, n, err = wire.ParseDataBlockedFrame(b)
		case wire.FrameStreamDataBlocked:
			_, n, err = wire.ParseStreamDataBlockedFrame(b)
		case wire.FramePathChallenge:
			var f wire.PathChallengeFrame
			f, n, err = wire.ParsePathChallengeFrame(b)
			if err == nil {
				s.queueControl(controlFrame{kind: kindPathResponse, data: f.Data, to: from})
			}
		case wire.FramePathResponse:
			var f wire.PathResponseFrame
			f, n, err = wire.ParsePathResponseFrame(b)
			if err == nil {
				s.onPathResponse(f.Data, from, now)
			}
		case wire.FrameClose:
			var f wire.CloseFrame
			f, n, err = wire.ParseCloseFrame(b)
			if err == nil {
				s.log.Debug("peer closed session", "code", f.ErrorCode, "reason", f.Reason)
				s.setCloseErr(&SessionError{Code: f.ErrorCode, Reason: f.Reason, Remote: true})
				s.setState(stateDraining)
				s.closeAt = now.Add(closeLingerPTOs * s.pto())
				return ackEliciting, nonProbing, errSessionEnded
			}
		case wire.FrameDatagram:
			var f wire.DatagramFrame
			f, n, err = wire.ParseDatagramFrame(b)
			if err == nil {
				if s.cfg.MaxDatagramSize < 0 || len(f.Data) > s.cfg.MaxDatagramSize {
					s.protocolError(wire.ProtocolViolation, "datagram larger than allowed", now)
					return false, false, errSessionEnded
				}
				select {
				case s.datagramsIn <- append([]byte(nil), f.Data...):
				default:
					s.dgramDrops++
				}
			}
		default:
			err = wire.ErrUnknownFrame
		}
		if err != nil {
			if err != errSessionEnded {
				s.protocolError(wire.FrameEncodingError, "malformed "+t.String()+" frame", now)
			}
			return false, false, err
		}
		b = b[n:]
	}
	return ackEliciting, nonProbing, nil
}

func (s *Session) stream(id uint64) *Stream {
	s.mu.Lock()
	st := s.streams[id]
	s.mu.Unlock()
	return st
}

func (s *Session) rescheduleAll() {
	s.mu.Lock()
	var ready []*Stream
	for _, st := range s.streams {
		if !st.queued {
			ready = append(ready, st)
		}
	}
	s.mu.Unlock()
	credit := s.peerMaxData - s.sentData
	for _, st := range ready {
		st.mu.Lock()
		w := st.hasSendWorkLocked(credit)
		st.mu.Unlock()
		if w {
			s.scheduleStream(st)
		}
	}
}

func (s *Session) onAck(now time.Time) error {
	s.ranges = s.ranges[:0]
	for _, r := range s.ackBuf.Ranges {
		s.ranges = append(s.ranges, ackhandler.Range{Smallest: r.Smallest, Largest: r.Largest})
	}
	delay := time.Duration(s.ackBuf.DelayMicros) * time.Microsecond
	if err := s.sph.ReceivedAck(now, s.ranges, delay); err != nil {
		s.protocolError(wire.ProtocolViolation, "acknowledgement of an unsent packet", now)
		return errSessionEnded
	}
	if len(s.ranges) > 0 && s.ranges[0].Largest >= s.phaseFirstPN {
		s.phaseAcked = true
	}
	// The peer has seen our ACKs up to here: stop repeating those ranges.
	s.rpt.IgnoreBelow(s.sph.LowestUnconfirmedAck())
	s.rttNanos.Store(int64(s.rtt.SmoothedRTT()))
	hs := s.sph.Stats()
	s.mu.Lock()
	s.stats.PacketsLost = hs.PacketsLost
	s.stats.SpuriousLosses = hs.SpuriousLosses
	s.stats.PTOs = hs.PTOs
	s.stats.SmoothedRTT = hs.SmoothedRTT
	s.stats.MinRTT = hs.MinRTT
	s.stats.CongestionWindow = s.cc.CongestionWindow()
	s.mu.Unlock()
	return nil
}

// peerStream returns the stream id for an incoming frame, opening it (and
// any lower-numbered ones) if the peer is starting it. It returns nil for a
// stream already finished and forgotten.
func (s *Session) peerStream(id uint64, now time.Time) (*Stream, error) {
	s.mu.Lock()
	if st := s.streams[id]; st != nil {
		s.mu.Unlock()
		return st, nil
	}
	peerOpened := (id%2 == 1) == s.initiator
	if !peerOpened {
		n := id / 2
		s.mu.Unlock()
		if n >= s.nextStreamN {
			s.protocolError(wire.StreamStateError, "frame for a stream we never opened", now)
			return nil, errSessionEnded
		}
		return nil, nil // ours, finished
	}
	n := id / 2
	if n < s.peerOpened {
		s.mu.Unlock()
		return nil, nil // finished and forgotten
	}
	if n >= s.maxIncoming {
		s.mu.Unlock()
		s.protocolError(wire.StreamLimitError, "too many streams", now)
		return nil, errSessionEnded
	}
	var st *Stream
	for ; s.peerOpened <= n; s.peerOpened++ {
		sid := s.peerOpened*2 + id%2
		st = newStream(s, sid, s.peerParams.InitialMaxStreamData, uint64(s.cfg.StreamWindow))
		s.streams[sid] = st
		s.acceptQ = append(s.acceptQ, st)
	}
	s.mu.Unlock()
	wake(s.acceptCh)
	return st, nil
}

func (s *Session) onStreamFrame(f *wire.StreamFrame, now time.Time) error {
	st, err := s.peerStream(f.StreamID, now)
	if err != nil || st == nil {
		return err
	}
	grew, code, err := st.onStreamFrame(f.Offset, f.Data, f.Fin)
	if err != nil {
		s.protocolError(code, err.Error(), now)
		return errSessionEnded
	}
	return s.countReceived(grew, now)
}

func (s *Session) onResetStream(f *wire.ResetStreamFrame, now time.Time) error {
	st, err := s.peerStream(f.StreamID, now)
	if err != nil || st == nil {
		return err
	}
	grew, code, err := st.onResetStream(ErrorCode(f.ErrorCode), f.FinalSize)
	if err != nil {
		s.protocolError(code, err.Error(), now)
		return errSessionEnded
	}
	return s.countReceived(grew, now)
}

// countReceived applies session-level flow control to newly received bytes.
func (s *Session) countReceived(grew uint64, now time.Time) error {
	if grew == 0 {
		return nil
	}
	s.flowMu.Lock()
	s.recvHighest += grew
	over := s.recvHighest > s.recvMaxSent
	s.flowMu.Unlock()
	if over {
		s.protocolError(wire.FlowControlError, "session flow control exceeded", now)
		return errSessionEnded
	}
	return nil
}

// protocolError closes the session because the peer broke the protocol.
func (s *Session) protocolError(code ErrorCode, reason string, now time.Time) {
	s.log.Debug("protocol error", "code", code, "reason", reason)
	s.closeLocal(closeRequest{code: code, reason: reason}, now)
}

func (s *Session) closeLocal(req closeRequest, now time.Time) {
	switch s.state {
	case stateHandshaking:
		s.startErr = ErrClosed
		s.setCloseErr(ErrClosed)
		s.setState(stateClosed)
		return
	case stateEstablished:
	default:
		return
	}
	s.setCloseErr(&SessionError{Code: req.code, Reason: req.reason})
	s.closeCode = req.code
	s.closeReason = req.reason
	s.setState(stateClosing)
	s.closeAt = now.Add(closeLingerPTOs * s.pto())
	s.sendClose(now)
}

// --- loss recovery callbacks (run on the loop) ---

type sessionCallbacks Session

func (c *sessionCallbacks) OnFrameAcked(f ackhandler.Frame) {
	s := (*Session)(c)
	switch f.Kind {
	case kindStream:
		if st := s.stream(f.StreamID); st != nil {
			st.onFrameAcked(f.Offset, f.Length, f.Fin)
		}
	case kindPing:
		if f.StreamID == 0 {
			return // a keepalive or probe, not Ping's
		}
		s.pingMu.Lock()
		w, ok := s.pings[f.StreamID]
		s.pingMu.Unlock()
		if ok {
			select {
			case w.done <- time.Since(w.sent):
			default:
			}
		}
	}
}

func (c *sessionCallbacks) OnFrameLost(f ackhandler.Frame) {
	s := (*Session)(c)
	switch f.Kind {
	case kindStream:
		if st := s.stream(f.StreamID); st != nil && st.onFrameLost(f.Offset, f.Length, f.Fin) {
			s.scheduleStream(st)
		}
	case kindMaxData, kindMaxStreams:
		s.queueControl(controlFrame{kind: f.Kind})
	case kindMaxStreamData:
		if st := s.stream(f.StreamID); st != nil {
			s.queueControl(controlFrame{kind: kindMaxStreamData, id: f.StreamID})
		}
	case kindResetStream:
		s.queueControl(controlFrame{kind: kindResetStream, id: f.StreamID, v: f.Length, v2: f.Offset})
	case kindStopSending:
		s.queueControl(controlFrame{kind: kindStopSending, id: f.StreamID, v: f.Length})
	}
}
