package node

import (
	"context"
	"fmt"
	"time"

	"github.com/parley-p2p/parley/relay"
	"github.com/parley-p2p/parley/transport"
)

// This file keeps each session on a working path: it notices a direct path
// that died and moves the session onto a relay, notices a relay that died
// and moves it onto another, keeps relay channels bound (refreshing them,
// and renewing their tickets before they expire), and releases channels
// the session no longer uses. Moving back to a direct path is the job of
// retryDirect (relay.go), which re-punches every Config.RefreshInterval.
//
// A path is stalled when we have been sending for stallAfter without
// receiving anything, or when nothing at all arrived for the keepalive
// period plus a margin (the peer's keepalives or the ACKs of ours should
// have). A stalled path is confirmed dead by a Ping that is not answered
// within a few RTTs. Both sides see the same death; the side with the
// smaller key acts at once and the other only after fallbackGrace, so that
// normally one relay channel is set up, and the other side follows the
// session onto it (our packets arrive from the relay: the transport
// switches to it, docs/protocol.md §4.3).
const (
	pathCheckInterval = time.Second
	minStall          = 2 * time.Second // a stall is at least this long
	stallRTTs         = 8               // ... and at least this many RTTs
	quietMargin       = 5 * time.Second // beyond the keepalive period
	fallbackGrace     = 3 * time.Second // the larger key's extra wait
	relayRefreshEvery = 30 * time.Second
	// renewBefore is how long before its ticket expires a relayed session
	// moves to a fresh channel. The side that allocated the channel (side
	// 0) renews first; the other side renews only if that did not happen.
	renewBefore     = 2 * time.Minute
	renewBeforeLate = time.Minute
	// channelLinger keeps a channel the session moved away from for a
	// while: the peer may send on it until it notices the move.
	channelLinger = 30 * time.Second
)

// pathWatch is the state of one session's watcher.
type pathWatch struct {
	p *peer
	s *transport.Session

	sentAtRecv   uint64    // PacketsSent when PacketsReceived last grew
	lastRecv     uint64    // PacketsReceived at the last check
	unanswered   time.Time // when we first saw packets sent since the last receipt; zero if none
	stallSince   time.Time // when the current stall began; zero if none
	refreshed    *relay.Channel
	lastRefresh  time.Time
	current      *relay.Channel // the channel the session used at the last check
	retired      map[*relay.Channel]time.Time
	failedRelays map[string]bool // relay addresses found dead during this session
}

// watchPath runs for the life of the pair's session s.
func (n *Node) watchPath(ctx context.Context, p *peer, s *transport.Session) {
	w := &pathWatch{p: p, s: s, retired: map[*relay.Channel]time.Time{}, failedRelays: map[string]bool{}}
	defer func() {
		for ch := range w.retired {
			ch.Close()
		}
	}()
	t := time.NewTicker(pathCheckInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-s.Done():
			// The channels go with the session; a new one sets up its own.
			if w.current != nil {
				w.current.Close()
			}
			return
		case <-t.C:
		}
		n.checkPath(ctx, w)
	}
}

// checkPath is one look at w's session.
func (n *Node) checkPath(ctx context.Context, w *pathWatch) {
	now := time.Now()
	s, p := w.s, w.p
	ch := n.mux.Channel(s.CurrentPath().Remote)
	if ch != w.current {
		if w.current != nil {
			w.retired[w.current] = now
		}
		n.mu.Lock()
		switch {
		case ch != nil && p.why == "":
			// The session went onto a relay, perhaps by the peer's
			// doing: say why unless we know better.
			p.why = "the direct path stopped answering; relayed until a direct path answers again"
		case ch == nil:
			// Direct now, perhaps by the peer's doing: no reason to
			// be relayed is current.
			p.why = ""
		}
		n.mu.Unlock()
		delete(w.retired, ch)
		w.current = ch
	}
	for old, at := range w.retired {
		if now.Sub(at) > channelLinger {
			old.Close()
			delete(w.retired, old)
		}
	}

	st := s.Stats()
	if st.PacketsReceived != w.lastRecv {
		w.lastRecv, w.sentAtRecv, w.unanswered = st.PacketsReceived, st.PacketsSent, time.Time{}
	} else if st.PacketsSent > w.sentAtRecv && w.unanswered.IsZero() {
		w.unanswered = now
	}
	stall := max(minStall, stallRTTs*st.SmoothedRTT)
	quiet := n.tcfg.KeepAlivePeriod
	if quiet <= 0 {
		quiet = transport.DefaultKeepAlivePeriod
	}
	stalled := (!w.unanswered.IsZero() && now.Sub(w.unanswered) > stall) ||
		now.Sub(s.LastReceived()) > quiet+quietMargin
	if !stalled {
		w.stallSince = time.Time{}
		if ch != nil {
			n.keepChannel(ctx, w, ch, now)
		}
		return
	}
	if w.stallSince.IsZero() {
		w.stallSince = now
	}
	if !keyLess(n.pub, p.key) && now.Sub(w.stallSince) < fallbackGrace {
		return
	}
	// Confirm with a Ping over the path, a few RTTs long.
	pctx, cancel := context.WithTimeout(ctx, max(time.Second, 4*st.SmoothedRTT))
	_, err := s.Ping(pctx)
	cancel()
	if err == nil {
		return
	}
	if n.mux.Channel(s.CurrentPath().Remote) != ch {
		return // the session moved meanwhile (the peer acted)
	}
	if ch != nil && w.refreshed != ch {
		// A relay may have lost our binding (our NAT rebound, or it
		// restarted): bind again once before giving up on it.
		w.refreshed = ch
		rctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		err := ch.Refresh(rctx)
		cancel()
		if err == nil {
			n.log.Info("relay path stalled; refreshed the channel", "device", p.key.Short(), "relay", ch.Relay())
			w.unanswered, w.stallSince = time.Time{}, time.Time{}
			return
		}
	}
	from := "direct path"
	if ch != nil {
		from = "relay " + ch.Relay()
		w.failedRelays[ch.Relay()] = true
	} else {
		// Our NAT may have rebound, or the peer's: learn our mapping
		// again and punch anew; the relay carries the session meanwhile.
		n.goroutine(func(ctx context.Context) { n.rediscover(ctx, p) })
	}
	n.log.Info("path dead; moving to a relay", "device", p.key.Short(), "from", from)
	if n.fallBackToRelay(ctx, w) {
		n.setWhy(p, fmt.Sprintf("the %s stopped answering; relayed until a direct path answers again", from))
	}
	w.unanswered, w.stallSince = time.Time{}, time.Time{}
}

// keepChannel refreshes the relayed session's channel now and then and
// moves the session to a new channel before the ticket expires.
func (n *Node) keepChannel(ctx context.Context, w *pathWatch, ch *relay.Channel, now time.Time) {
	before := renewBefore
	if ch.Side() != 0 {
		before = renewBeforeLate
	}
	if exp := ch.Expires(); !exp.IsZero() && exp.Sub(now) < before {
		n.log.Info("relay ticket expires soon; renewing", "device", w.p.key.Short(), "relay", ch.Relay(), "expires", exp)
		n.fallBackToRelay(ctx, w)
		return
	}
	if now.Sub(w.lastRefresh) > relayRefreshEvery {
		w.lastRefresh = now
		rctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		if err := ch.Refresh(rctx); err != nil {
			n.log.Debug("refresh relay channel", "relay", ch.Relay(), "err", err)
		}
		cancel()
	}
}

// fallBackToRelay sets up a channel through the best relay not known to
// be dead and moves w's session onto it. It needs the server (for the
// ticket and to tell the peer).
func (n *Node) fallBackToRelay(ctx context.Context, w *pathWatch) bool {
	p := w.p
	n.ensureSupernodes(ctx)
	n.mu.Lock()
	var sns []cachedSupernode
	for _, sn := range n.supernodes {
		if !w.failedRelays[sn.Addr] {
			sns = append(sns, sn)
		}
	}
	peerRTTs := p.peerRTTs
	up := n.dc != nil && n.serverUp
	n.mu.Unlock()
	sn, ok := chooseRelay(sns, peerRTTs, p.key)
	if !ok || !up {
		why := "no other relay is known"
		if !up {
			why = "the directory server is unreachable, so no relay ticket"
		}
		n.log.Info("no relay to fall back to", "device", p.key.Short(), "why", why)
		n.setWhy(p, "the path stopped answering and "+why)
		return false
	}
	rctx, cancel := context.WithTimeout(ctx, n.cfg.punchTimeout())
	defer cancel()
	addr, err := n.relayPath(rctx, p, sn, randomID())
	if err != nil {
		n.log.Info("relay fallback", "device", p.key.Short(), "relay", sn.Addr, "err", err)
		w.failedRelays[sn.Addr] = true
		return false
	}
	return n.moveTo(ctx, p, w.s, addr)
}

// rediscover re-learns our reflexive address (discover re-punches with
// every peer if it changed) and otherwise re-punches with p, whose own
// mapping may have changed.
func (n *Node) rediscover(ctx context.Context, p *peer) {
	n.mu.Lock()
	dc, up, old := n.dc, n.serverUp, n.reflexive
	n.mu.Unlock()
	if dc == nil || !up {
		return
	}
	n.discover(ctx, dc)
	n.mu.Lock()
	changed := n.reflexive != old
	n.mu.Unlock()
	if !changed {
		n.repunchPeer(p)
	}
}
