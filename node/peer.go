package node

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"slices"
	"sync"
	"time"

	"github.com/parley-p2p/parley/directory/client"
	"github.com/parley-p2p/parley/transport"
)

// Application error codes the node closes sessions and resets streams with.
// The transport reserves codes below 0x200 (docs/protocol.md §2); it names
// the base ApplicationErrorBase in its docs but does not export it yet.
const (
	applicationErrorBase transport.ErrorCode = 0x200

	codeSuperseded     transport.ErrorCode = applicationErrorBase + 1 // another session of the pair won
	codeNotContact     transport.ErrorCode = applicationErrorBase + 2
	codeUnknownService transport.ErrorCode = applicationErrorBase + 3
	codeLoggedOut      transport.ErrorCode = applicationErrorBase + 4
)

// infoService is the node's own stream service: each side of a new session
// tells the other what it knows about its network (its NAT type), for
// `parley status`.
const infoService = "parley.info"

// A Peer names the other side of a session, for stream handlers.
type Peer struct {
	Username string
	Device   transport.PublicKey
}

// peer is one device of a mutual contact: what the node knows about it and
// its session. Its fields are protected by Node.mu.
type peer struct {
	n       *Node
	key     transport.PublicKey
	pairKey [32]byte // punch probe MAC key
	pairID  [8]byte

	username   string
	name       string
	endpoints  []string // as the server (or the cache) last told
	lastDirect string   // the last direct address a session used
	mutual     bool
	online     bool

	current    *sess         // the pair's session, nil if none
	changed    chan struct{} // closed and replaced when current changes
	connecting chan struct{} // non-nil while a connect runs; closed when it ends
	answers    map[string]chan client.Event
	punches    map[*punch]struct{}
	opened     map[string]chan struct{} // per offer we answered: closed when the offerer says it opened
	peerRTTs   []client.RTT             // the peer's RTTs to supernodes, from its last offer or answer
	peerNAT    string                   // as the peer told us in signalling or over infoService
	lastSweep  time.Time                // when we last swept its ports (sweep.go)
	why        string                   // why there is no direct session, for status
}

// sess is one session of a pair and who started it.
type sess struct {
	s         *transport.Session
	initiator transport.PublicKey
	since     time.Time
}

func newPeer(n *Node, key transport.PublicKey, pairKey [32]byte, id [8]byte) *peer {
	return &peer{n: n, key: key, pairKey: pairKey, pairID: id,
		changed: make(chan struct{}), answers: map[string]chan client.Event{}, punches: map[*punch]struct{}{},
		opened: map[string]chan struct{}{}}
}

func (p *peer) signalLocked() {
	close(p.changed)
	p.changed = make(chan struct{})
}

// liveLocked returns the current session if it has not ended.
func (p *peer) liveLocked() *transport.Session {
	if p.current == nil {
		return nil
	}
	select {
	case <-p.current.s.Done():
		return nil
	default:
		return p.current.s
	}
}

func (p *peer) closeSessions(why string) {
	p.n.mu.Lock()
	cur := p.current
	p.n.mu.Unlock()
	if cur != nil {
		cur.s.CloseWithError(codeLoggedOut, why)
	}
}

func keyLess(a, b transport.PublicKey) bool { return bytes.Compare(a[:], b[:]) < 0 }

// acceptPeer is the transport's gate: only devices of mutual contacts may
// open sessions with us.
func (n *Node) acceptPeer(k transport.PublicKey) bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	p := n.peers[k]
	return p != nil && p.mutual
}

func (n *Node) acceptLoop(ctx context.Context) {
	for {
		s, err := n.ep.Accept(ctx)
		if err != nil {
			return
		}
		n.mu.Lock()
		p := n.peers[s.RemoteKey()]
		n.mu.Unlock()
		if p == nil {
			s.CloseWithError(codeNotContact, "not a contact")
			continue
		}
		n.addSession(p, s, s.RemoteKey())
	}
}

// addSession makes s the pair's session unless the one it has is to be
// preferred. Both sides must pick the same session without talking, so the
// rule depends only on what both see. A side dials only when it has no
// session with the peer (or, signalled, when it is the dialer), so a new
// session from the peer means the peer abandoned the old one — it
// restarted, or lost the path: the newer session wins. The exception is
// two sides dialling each other at once (both restarted while the server
// was down): a session that arrives while our own connect is running wins
// only if the smaller key started it, on both sides.
func (n *Node) addSession(p *peer, s *transport.Session, initiator transport.PublicKey) *transport.Session {
	ns := &sess{s: s, initiator: initiator, since: time.Now()}
	n.mu.Lock()
	old := p.current
	win := true
	if old != nil && p.liveLocked() != nil {
		if p.connecting != nil && ns.initiator != old.initiator {
			win = keyLess(ns.initiator, old.initiator)
		}
	} else {
		old = nil
	}
	var loser *sess
	if win {
		p.current, loser = ns, old
		p.why = ""
		p.signalLocked()
	} else {
		loser = ns
	}
	username := p.username
	cur := p.current.s
	n.mu.Unlock()
	if loser != nil {
		loser.s.CloseWithError(codeSuperseded, "superseded by another session")
	}
	if !win {
		return cur
	}
	path := s.CurrentPath().Remote
	n.log.Info("session up", "peer", username, "device", p.key.Short(), "path", path, "initiator", initiator == n.pub)
	if !n.mux.IsVirtual(path) {
		n.st.setLastDirect(n.ctx, p.key, path.String())
		n.mu.Lock()
		p.lastDirect = path.String()
		n.mu.Unlock()
	}
	n.goroutine(func(ctx context.Context) { n.watchSession(ctx, p, ns) })
	n.goroutine(func(ctx context.Context) { n.watchPath(ctx, p, s) })
	n.goroutine(func(ctx context.Context) { n.serveStreams(ctx, p, s) })
	n.goroutine(func(ctx context.Context) { n.sendInfo(ctx, s) })
	n.reportPath(p, s)
	return s
}

// watchSession forgets a session when it ends.
func (n *Node) watchSession(ctx context.Context, p *peer, ss *sess) {
	select {
	case <-ctx.Done():
		return
	case <-ss.s.Done():
	}
	n.mu.Lock()
	if p.current == ss {
		p.current = nil
		p.why = fmt.Sprintf("the last session ended: %v", ss.s.Err())
		p.signalLocked()
	}
	username := p.username
	n.mu.Unlock()
	n.log.Info("session down", "peer", username, "device", p.key.Short(), "err", ss.s.Err())
}

// reportPath tells the server which path the pair's session uses, for its
// dashboard; best effort.
func (n *Node) reportPath(p *peer, s *transport.Session) {
	n.mu.Lock()
	dc, up := n.dc, n.serverUp
	n.mu.Unlock()
	if dc == nil || !up {
		return
	}
	path := "direct"
	if n.mux.IsVirtual(s.CurrentPath().Remote) {
		path = "relayed"
	}
	n.goroutine(func(ctx context.Context) {
		ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		dc.ReportSession(ctx, client.Key(p.key), path)
	})
}

// Handle registers fn to serve the streams peers open for service (for
// example "chat"). fn runs on its own goroutine and owns the stream.
func (n *Node) Handle(service string, fn func(Peer, *transport.Stream)) {
	n.handlersMu.Lock()
	n.handlers[service] = fn
	n.handlersMu.Unlock()
}

// OpenStream opens a stream to username's device for service, connecting
// first if needed. Every application shares the pair's one session.
func (n *Node) OpenStream(ctx context.Context, username, service string) (*transport.Stream, error) {
	if len(service) == 0 || len(service) > 255 {
		return nil, errors.New("node: service name must be 1 to 255 bytes")
	}
	s, err := n.Connect(ctx, username)
	if err != nil {
		return nil, err
	}
	return openService(ctx, s, service)
}

// openService opens a stream on s and writes its header: the service name,
// one length byte then the name.
func openService(ctx context.Context, s *transport.Session, service string) (*transport.Stream, error) {
	st, err := s.OpenStream(ctx)
	if err != nil {
		return nil, err
	}
	hdr := append([]byte{byte(len(service))}, service...)
	if _, err := st.Write(hdr); err != nil {
		st.Reset(codeUnknownService)
		return nil, err
	}
	return st, nil
}

func (n *Node) serveStreams(ctx context.Context, p *peer, s *transport.Session) {
	for {
		st, err := s.AcceptStream(ctx)
		if err != nil {
			return
		}
		n.goroutine(func(ctx context.Context) { n.serveStream(ctx, p, st) })
	}
}

func (n *Node) serveStream(ctx context.Context, p *peer, st *transport.Stream) {
	st.SetReadDeadline(time.Now().Add(10 * time.Second))
	var l [1]byte
	if _, err := io.ReadFull(st, l[:]); err != nil {
		st.Reset(codeUnknownService)
		return
	}
	name := make([]byte, l[0])
	if _, err := io.ReadFull(st, name); err != nil {
		st.Reset(codeUnknownService)
		return
	}
	st.SetReadDeadline(time.Time{})
	service := string(name)
	if service == infoService {
		n.readInfo(p, st)
		return
	}
	n.handlersMu.RLock()
	fn := n.handlers[service]
	n.handlersMu.RUnlock()
	if fn == nil {
		st.CloseRead(codeUnknownService)
		st.Reset(codeUnknownService)
		return
	}
	n.mu.Lock()
	who := Peer{Username: p.username, Device: p.key}
	n.mu.Unlock()
	fn(who, st)
}

// peerInfo is what each side tells the other on infoService.
type peerInfo struct {
	NAT string `json:"nat"`
}

func (n *Node) sendInfo(ctx context.Context, s *transport.Session) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	st, err := openService(ctx, s, infoService)
	if err != nil {
		return
	}
	n.mu.Lock()
	info := peerInfo{NAT: n.nat}
	n.mu.Unlock()
	json.NewEncoder(st).Encode(info)
	st.Close()
}

func (n *Node) readInfo(p *peer, st *transport.Stream) {
	defer st.Close()
	st.SetReadDeadline(time.Now().Add(10 * time.Second))
	var info peerInfo
	if err := json.NewDecoder(io.LimitReader(st, 4096)).Decode(&info); err != nil {
		return
	}
	n.mu.Lock()
	p.peerNAT = info.NAT
	n.mu.Unlock()
}

// pickPeer chooses username's device to talk to: the one with a session,
// else an online one, else the first.
func (n *Node) pickPeer(username string) (*peer, error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.dc == nil && len(n.contacts) == 0 {
		return nil, ErrNotLoggedIn
	}
	var best *peer
	for _, c := range n.contacts {
		if c.Username != username {
			continue
		}
		if c.State != "mutual" {
			return nil, fmt.Errorf("%s is not a mutual contact yet (%s)", username, c.State)
		}
		for _, d := range c.Devices {
			p := n.peers[d.Key]
			switch {
			case p == nil:
			case p.liveLocked() != nil:
				return p, nil
			case best == nil || (p.online && !best.online):
				best = p
			}
		}
	}
	if best == nil {
		return nil, fmt.Errorf("%s: %w", username, ErrNotContact)
	}
	return best, nil
}

// Connect returns the session with username's device, setting one up if
// there is none: through an offer over the server when it answers, else
// from the cached endpoints.
func (n *Node) Connect(ctx context.Context, username string) (*transport.Session, error) {
	for attempt := 0; ; attempt++ {
		p, err := n.pickPeer(username)
		if err != nil {
			return nil, err
		}
		n.mu.Lock()
		if s := p.liveLocked(); s != nil {
			n.mu.Unlock()
			return s, nil
		}
		if ch := p.connecting; ch != nil && attempt == 0 {
			n.mu.Unlock()
			select {
			case <-ch:
				continue
			case <-ctx.Done():
				return nil, ctx.Err()
			}
		}
		ch := make(chan struct{})
		p.connecting = ch
		n.mu.Unlock()
		s, err := n.connect(ctx, p)
		n.mu.Lock()
		if p.connecting == ch {
			p.connecting = nil
		}
		close(ch)
		if err != nil && p.liveLocked() == nil {
			p.why = err.Error()
		}
		n.mu.Unlock()
		if err != nil {
			return nil, fmt.Errorf("connect to %s: %w", username, err)
		}
		return s, nil
	}
}

// reconnectKnown reconnects at startup to the contacts that a direct
// session reached before (their last direct address is cached), a few at a
// time: from the cached addresses if the server is down, through an offer
// if it is up. Peers then reach us again without waiting for us to send.
func (n *Node) reconnectKnown(ctx context.Context) {
	n.mu.Lock()
	var names []string
	seen := map[string]bool{}
	for _, p := range n.peers {
		if p.mutual && p.lastDirect != "" && !seen[p.username] {
			seen[p.username] = true
			names = append(names, p.username)
		}
	}
	loggedIn := n.username != ""
	n.mu.Unlock()
	if !loggedIn {
		return
	}
	sem := make(chan struct{}, 4)
	var wg sync.WaitGroup
	for _, name := range names {
		select {
		case sem <- struct{}{}:
		case <-ctx.Done():
			return
		}
		wg.Add(1)
		go func() {
			defer func() { <-sem; wg.Done() }()
			cctx, cancel := context.WithTimeout(ctx, 2*n.cfg.punchTimeout())
			defer cancel()
			if _, err := n.Connect(cctx, name); err != nil {
				n.log.Debug("reconnect at startup", "peer", name, "err", err)
			}
		}()
	}
	wg.Wait()
}

// offeredCandidatesLocked are the candidates we offer peers: none in
// relay-only mode, which keeps our addresses from them.
func (n *Node) offeredCandidatesLocked() []netip.AddrPort {
	if n.cfg.RelayOnly {
		return nil
	}
	return n.candidates
}

func addrStrings(as []netip.AddrPort) []string {
	out := make([]string, 0, len(as))
	for _, a := range as {
		out = append(out, a.String())
	}
	return out
}

// parseCandidates keeps the well-formed IPv4 candidates (the socket is
// IPv4), without duplicates.
func parseCandidates(ss ...[]string) []netip.AddrPort {
	var out []netip.AddrPort
	seen := map[netip.AddrPort]bool{}
	for _, list := range ss {
		for _, s := range list {
			a, err := netip.ParseAddrPort(s)
			if err != nil {
				continue
			}
			a = netip.AddrPortFrom(a.Addr().Unmap(), a.Port())
			if !a.Addr().Is4() || a.Port() == 0 || a.Addr().IsUnspecified() || seen[a] {
				continue
			}
			seen[a] = true
			out = append(out, a)
		}
	}
	return out
}

// connect sets up a session with p; the caller holds p.connecting.
func (n *Node) connect(ctx context.Context, p *peer) (*transport.Session, error) {
	id := randomID()
	ans := make(chan client.Event, 1)
	n.mu.Lock()
	p.answers[id] = ans
	cands := n.offeredCandidatesLocked()
	rtts := n.rttVectorLocked()
	nat := n.nat
	dc, up := n.dc, n.serverUp
	cached := parseCandidates([]string{p.lastDirect}, p.endpoints)
	n.mu.Unlock()
	handedOff := false // the answer is awaited by upgradeOnAnswer
	defer func() {
		if !handedOff {
			n.forgetAnswers(p, id)
		}
	}()
	var remote []netip.AddrPort
	var peerRTTs []client.RTT
	signalled := false
	if len(rtts) == 0 {
		n.ensureSupernodes(ctx)
		n.mu.Lock()
		rtts = n.rttVectorLocked()
		n.mu.Unlock()
	}
	// We dial (the offerer does), and the relay channel is set up at
	// once, beside the offer, with the relay chosen from the peer's RTT
	// vector of an earlier exchange (or our nearest): the first message
	// need not wait for the answer, nor for hole punching.
	var early <-chan pathResult
	if dc != nil && up {
		early = n.startRelay(ctx, p, id)
	}
	if dc != nil && up {
		octx, cancel := context.WithTimeout(ctx, n.cfg.punchTimeout())
		err := dc.SendOffer(octx, client.Offer{To: client.Key(p.key), Kind: "offer", Session: id,
			Candidates: addrStrings(cands), RTTs: rtts, NAT: nat})
	wait:
		for err == nil {
			select {
			case ev := <-ans:
				remote, signalled = parseCandidates(ev.Candidates), true
				peerRTTs = ev.RTTs
				n.notePeerNAT(p, ev.NAT)
				break wait
			case r := <-early:
				// The relay is ready before the answer: the session
				// opens there now, and moves onto a direct path when
				// the answer has come and a probe is answered.
				early = nil
				if r.err != nil {
					continue
				}
				s, err := n.ep.DialEarly(r.addr, p.key)
				if err != nil {
					continue
				}
				s = n.addSession(p, s, n.pub)
				// The peer's candidates come with the answer: probing
				// has not begun.
				why := whyProbing
				if n.cfg.RelayOnly {
					why = n.relayedWhy(nil, nil)
				}
				n.setWhy(p, why)
				deadline, _ := octx.Deadline()
				handedOff = true
				n.goroutine(func(nctx context.Context) { n.upgradeOnAnswer(nctx, p, s, id, ans, cached, deadline) })
				cancel()
				return s, nil
			case <-octx.Done():
				break wait
			}
		}
		cancel()
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		if !signalled {
			n.log.Info("no answer to offer; using cached endpoints", "device", p.key.Short(), "err", err)
		}
	}
	// Cached addresses may still work (the peer's NAT kept its mapping),
	// and cost nothing to probe.
	remote = parseCandidates(addrStrings(remote), addrStrings(cached))
	if !signalled {
		id = "" // no relay without the server: the peer would not hear of it
		if len(remote) == 0 {
			return nil, fmt.Errorf("%w: the directory server is unreachable and no address of the device is cached", ErrNoPath)
		}
	}
	n.mu.Lock()
	opt := punchOpts{openTTLs: n.openTTLsLocked(!signalled)}
	if signalled {
		p.peerRTTs = peerRTTs
	}
	n.mu.Unlock()
	if signalled {
		opt.opened = n.sayOpened(dc, p, id)
		n.addSweep(&opt, p, remote)
	}
	if !signalled && early != nil {
		// The peer did not hear of it: release the channel if one was
		// set up after all.
		go func(early <-chan pathResult) {
			if r := <-early; r.err == nil {
				if ch := n.mux.Channel(r.addr); ch != nil {
					ch.Close()
				}
			}
		}(early)
		early = nil
	}
	return n.establish(ctx, p, remote, true, id, opt, early)
}

// forgetAnswers stops routing answers for offer session id to p.
func (n *Node) forgetAnswers(p *peer, id string) {
	n.mu.Lock()
	delete(p.answers, id)
	n.mu.Unlock()
}

// upgradeOnAnswer finishes connect for a session that opened over the relay
// before the answer to our offer arrived: it waits for the answer (until
// deadline), punches towards the candidates it brings (and the cached
// ones), and moves s onto the direct path when a probe is answered.
func (n *Node) upgradeOnAnswer(ctx context.Context, p *peer, s *transport.Session, id string, ans <-chan client.Event, cached []netip.AddrPort, deadline time.Time) {
	defer n.forgetAnswers(p, id)
	actx, cancel := context.WithDeadline(ctx, deadline)
	var remote []netip.AddrPort
	select {
	case ev := <-ans:
		remote = parseCandidates(ev.Candidates)
		n.mu.Lock()
		p.peerRTTs = ev.RTTs
		n.mu.Unlock()
		n.notePeerNAT(p, ev.NAT)
	case <-actx.Done():
	case <-s.Done():
	}
	cancel()
	if s.Err() != nil || ctx.Err() != nil {
		return
	}
	remote = parseCandidates(addrStrings(remote), addrStrings(cached))
	if n.cfg.RelayOnly || len(remote) == 0 {
		n.setWhy(p, n.relayedWhy(remote, nil))
		return
	}
	n.mu.Lock()
	dc := n.dc
	opt := punchOpts{openTTLs: n.openTTLsLocked(false)}
	n.mu.Unlock()
	if dc != nil {
		opt.opened = n.sayOpened(dc, p, id)
	}
	n.addSweep(&opt, p, remote)
	bctx, bcancel := context.WithTimeout(ctx, opt.timeout(n.cfg.punchTimeout()))
	addr, _, err := n.punch(bctx, p, remote, opt)
	bcancel()
	r := pathResult{addr: addr}
	if err != nil {
		r.err = errors.New(noProbeAnswer(remote))
	}
	res := make(chan pathResult, 1)
	res <- r
	n.upgradeWhenPunched(ctx, p, s, res)
}

// startRelay sets up a relay channel to p for session on its own
// goroutine, through the relay chosen from our RTT vector and p's latest,
// and returns where the result will be sent; nil if no relay is known.
func (n *Node) startRelay(ctx context.Context, p *peer, session string) <-chan pathResult {
	n.mu.Lock()
	sn, ok := chooseRelay(n.supernodes, p.peerRTTs, p.key)
	n.mu.Unlock()
	if !ok {
		return nil
	}
	res := make(chan pathResult, 1)
	go func() {
		pctx, cancel := context.WithTimeout(ctx, n.cfg.punchTimeout())
		defer cancel()
		addr, err := n.relayPath(pctx, p, sn, session)
		res <- pathResult{addr: addr, relayed: true, err: err}
	}()
	return res
}

// establish opens the session with p. The dialer races two paths: it
// punches towards remote and, when a relay both sides measured is known
// and the server answers, sets up a relay channel; it dials over whichever
// is ready first. A session that starts relayed moves onto the direct path
// when a probe is answered later, so the first bytes never wait for hole
// punching. The other side probes (opening its NAT towards the dialer)
// until the session arrives, by whatever path.
//
// early, if not nil, is a relay set-up already started (startRelay), used
// instead of starting one.
func (n *Node) establish(ctx context.Context, p *peer, remote []netip.AddrPort, dialer bool, session string, opt punchOpts, early <-chan pathResult) (*transport.Session, error) {
	pctx, cancel := context.WithTimeout(ctx, n.cfg.punchTimeout())
	defer cancel()
	if n.cfg.RelayOnly {
		remote = nil
	}
	if !dialer {
		// Our probes open our NAT towards the dialer; they go on after a
		// relayed session arrives, for the dialer's upgrade, and tell us
		// why the session stays relayed.
		if len(remote) > 0 {
			n.goroutine(func(nctx context.Context) {
				bctx, bcancel := context.WithTimeout(nctx, opt.timeout(n.cfg.punchTimeout()))
				defer bcancel()
				_, _, err := n.punch(bctx, p, remote, opt)
				if err == nil || !errors.Is(bctx.Err(), context.DeadlineExceeded) {
					return
				}
				n.mu.Lock()
				if s := p.liveLocked(); s != nil && n.mux.IsVirtual(s.CurrentPath().Remote) {
					p.why = noProbeAnswer(remote)
				}
				n.mu.Unlock()
			})
		}
		for {
			n.mu.Lock()
			s := p.liveLocked()
			ch := p.changed
			n.mu.Unlock()
			if s != nil {
				if n.mux.IsVirtual(s.CurrentPath().Remote) {
					n.setWhy(p, n.relayedWhy(remote, nil))
				}
				return s, nil
			}
			select {
			case <-ch:
			case <-pctx.Done():
				if ctx.Err() != nil {
					return nil, ctx.Err()
				}
				return nil, fmt.Errorf("%w: the peer's handshake did not arrive", ErrNoPath)
			}
		}
	}

	// The punch may outlive this call (to upgrade a relayed session), so
	// it runs on the node's context with its own deadline.
	results := make(chan pathResult, 2)
	pending := 0
	if len(remote) > 0 {
		pending++
		n.goroutine(func(nctx context.Context) {
			bctx, bcancel := context.WithTimeout(nctx, opt.timeout(n.cfg.punchTimeout()))
			defer bcancel()
			addr, _, err := n.punch(bctx, p, remote, opt)
			if err != nil {
				err = errors.New(noProbeAnswer(remote))
			}
			results <- pathResult{addr: addr, err: err}
		})
	}
	n.mu.Lock()
	canRelay := n.dc != nil && n.serverUp && session != ""
	n.mu.Unlock()
	if early == nil && canRelay {
		early = n.startRelay(pctx, p, session)
	}
	haveRelay := early != nil
	if haveRelay {
		pending++
		go func() { results <- <-early }()
	}
	if pending == 0 {
		return nil, fmt.Errorf("%w: no candidates to probe and no relay", ErrNoPath)
	}
	var errs []error
	for pending > 0 {
		var r pathResult
		select {
		case r = <-results:
		case <-pctx.Done():
			r.err = pctx.Err()
		}
		pending--
		if r.err != nil {
			errs = append(errs, r.err)
			continue
		}
		// The session is returned before its handshake completes: what
		// the caller writes at once rides behind the initiation as early
		// data (docs/protocol.md §3.5), the first message's fastest way.
		s, err := n.ep.DialEarly(r.addr, p.key)
		if err != nil {
			errs = append(errs, fmt.Errorf("handshake with %v: %w", r.addr, err))
			continue
		}
		s = n.addSession(p, s, n.pub)
		if r.relayed {
			n.setWhy(p, n.relayedWhy(remote, errs))
			if pending > 0 && len(remote) > 0 {
				n.goroutine(func(nctx context.Context) { n.upgradeWhenPunched(nctx, p, s, results) })
			}
		}
		// The direct path won: keep the relay attempt until the
		// handshake is through (it is the fallback should the direct
		// handshake fail), then release its channel.
		if pending > 0 && !r.relayed && haveRelay {
			n.goroutine(func(nctx context.Context) {
				rr := <-results
				if rr.err != nil {
					return
				}
				if err := s.Handshake(nctx); err != nil && nctx.Err() == nil {
					n.log.Info("direct handshake failed; dialling the relay", "device", p.key.Short(), "err", err)
					if rs, err := n.ep.Dial(nctx, rr.addr, p.key); err == nil {
						n.addSession(p, rs, n.pub)
						return
					}
				}
				if ch := n.mux.Channel(rr.addr); ch != nil {
					ch.Close()
				}
			})
		}
		return s, nil
	}
	if ctx.Err() != nil {
		return nil, ctx.Err()
	}
	return nil, fmt.Errorf("%w: %w", ErrNoPath, errors.Join(errs...))
}

// pathResult is a path attempt's outcome: a punched address or a relay
// channel's virtual address.
type pathResult struct {
	addr    netip.AddrPort
	relayed bool
	err     error
}

// upgradeWhenPunched moves a relayed session onto the direct path when the
// punch still running for it succeeds.
func (n *Node) upgradeWhenPunched(ctx context.Context, p *peer, s *transport.Session, results <-chan pathResult) {
	var r pathResult
	select {
	case r = <-results:
	case <-ctx.Done():
		return
	}
	if r.err != nil || r.relayed {
		if r.err != nil {
			n.setWhy(p, r.err.Error())
		}
		return
	}
	if err := s.Handshake(ctx); err != nil {
		// The relayed handshake failed (the peer never bound its side of
		// the relay): open a new session on the punched path instead.
		if ctx.Err() != nil {
			return
		}
		n.log.Info("relayed handshake failed; dialling the punched path", "device", p.key.Short(), "addr", r.addr, "err", err)
		if ds, err := n.ep.Dial(ctx, r.addr, p.key); err == nil {
			n.addSession(p, ds, n.pub)
		}
		return
	}
	n.moveTo(ctx, p, s, r.addr)
}

// relayedWhy explains why a session is relayed.
func (n *Node) relayedWhy(remote []netip.AddrPort, errs []error) string {
	switch {
	case n.cfg.RelayOnly:
		return "relay-only mode: this device does not share its addresses"
	case len(remote) == 0:
		return "no direct candidates: the peer shares no addresses, or none are known"
	case len(errs) > 0:
		return errs[0].Error()
	}
	return whyProbing
}

// noProbeAnswer says why a punch towards remote failed.
func noProbeAnswer(remote []netip.AddrPort) string {
	return fmt.Sprintf("none of %d candidates answered probes", len(remote))
}

// whyProbing says a session is relayed while the punch runs.
const whyProbing = "direct probes not answered yet"

// notePeerNAT records the NAT type the peer stated in an offer or answer.
func (n *Node) notePeerNAT(p *peer, nat string) {
	if nat == "" {
		return
	}
	n.mu.Lock()
	p.peerNAT = nat
	n.mu.Unlock()
}

func (n *Node) setWhy(p *peer, why string) {
	n.mu.Lock()
	p.why = why
	n.mu.Unlock()
}

// handleOffer answers an offer from a contact's device and takes its side
// of the punch.
func (n *Node) handleOffer(ctx context.Context, ev client.Event) {
	if ev.FromDevice == nil {
		return
	}
	key := transport.PublicKey(*ev.FromDevice)
	n.mu.Lock()
	p := n.peers[key]
	n.mu.Unlock()
	if p == nil {
		// A contact we have not heard about yet (the acceptance raced the
		// offer): read the list once.
		n.refreshContacts(ctx)
		n.mu.Lock()
		p = n.peers[key]
		n.mu.Unlock()
		if p == nil {
			n.log.Info("offer from an unknown device", "from", ev.From, "device", key.Short())
			return
		}
	}
	switch ev.Kind {
	case "answer":
		// An answer to our offer, or, for an offer we answered, the
		// offerer saying it has opened its NAT (opener.go).
		n.mu.Lock()
		ch := p.answers[ev.Session]
		if gate := p.opened[ev.Session]; ch == nil && gate != nil {
			close(gate)
			delete(p.opened, ev.Session)
		}
		n.mu.Unlock()
		if ch != nil {
			select {
			case ch <- ev:
			default:
			}
		}
		return
	case "offer":
		if ev.Relay != nil && len(ev.Ticket) > 0 {
			n.bindRelay(ctx, p, ev)
			return
		}
	default:
		return
	}
	n.ensureSupernodes(ctx)
	n.notePeerNAT(p, ev.NAT)
	remote := parseCandidates(ev.Candidates)
	gate := make(chan struct{})
	n.mu.Lock()
	cands := n.offeredCandidatesLocked()
	rtts := n.rttVectorLocked()
	nat := n.nat
	dc := n.dc
	cur := p.liveLocked()
	connecting := p.connecting
	ttls := n.openTTLsLocked(true)
	p.opened[ev.Session] = gate
	p.peerRTTs = ev.RTTs
	n.mu.Unlock()
	defer func() {
		n.mu.Lock()
		delete(p.opened, ev.Session)
		n.mu.Unlock()
	}()
	if dc == nil {
		return
	}
	// Open our NAT towards the offerer before the answer tells it to
	// probe us (opener.go).
	if !n.cfg.RelayOnly && len(ttls) > 0 {
		n.sendOpeners(p, nil, remote, ttls)
	}
	if err := dc.SendOffer(ctx, client.Offer{To: client.Key(p.key), Kind: "answer", Session: ev.Session,
		Candidates: addrStrings(cands), RTTs: rtts, NAT: nat}); err != nil {
		n.log.Info("answer offer", "device", key.Short(), "err", err)
		return
	}
	opt := punchOpts{gate: gate}
	n.addSweep(&opt, p, remote)
	switch {
	case cur != nil:
		// The peer re-punches: its NAT mapping changed, or it retries a
		// direct path for a relayed session.
		n.movePath(ctx, p, cur, remote, opt)
	case connecting != nil:
		// Our own connect runs (crossing offers); it dials or waits, and
		// our probes help it through our NAT.
		if !n.cfg.RelayOnly {
			pctx, cancel := context.WithTimeout(ctx, n.cfg.punchTimeout())
			n.punch(pctx, p, remote, opt)
			cancel()
		}
	default:
		ch := make(chan struct{})
		n.mu.Lock()
		p.connecting = ch
		n.mu.Unlock()
		_, err := n.establish(ctx, p, remote, false, ev.Session, opt, nil)
		n.mu.Lock()
		if p.connecting == ch {
			p.connecting = nil
		}
		close(ch)
		if err != nil && p.liveLocked() == nil {
			p.why = err.Error()
		}
		n.mu.Unlock()
		if err != nil {
			n.log.Info("offer: no session", "from", ev.From, "err", err)
		}
	}
}

// sayOpened returns a function that tells p, through the server, that we
// have sent our openers for the offer session (an "answer" to its answer).
func (n *Node) sayOpened(dc *client.Client, p *peer, session string) func() {
	return func() {
		ctx, cancel := context.WithTimeout(n.ctx, 5*time.Second)
		defer cancel()
		if err := dc.SendOffer(ctx, client.Offer{To: client.Key(p.key), Kind: "answer", Session: session,
			Candidates: []string{}, RTTs: []client.RTT{}}); err != nil {
			n.log.Debug("say opened", "device", p.key.Short(), "err", err)
		}
	}
}

// movePath punches towards remote and moves s to the path that answers if
// it differs from the one s uses.
func (n *Node) movePath(ctx context.Context, p *peer, s *transport.Session, remote []netip.AddrPort, opt punchOpts) {
	if n.cfg.RelayOnly || len(remote) == 0 {
		return
	}
	pctx, cancel := context.WithTimeout(ctx, n.cfg.punchTimeout())
	defer cancel()
	addr, _, err := n.punch(pctx, p, remote, opt)
	if err != nil {
		if n.mux.IsVirtual(s.CurrentPath().Remote) {
			n.setWhy(p, noProbeAnswer(remote))
		}
		return
	}
	n.moveTo(ctx, p, s, addr)
}

// moveTo moves s onto addr, a punched address (an authenticated probe was
// answered from it, so the transport need not validate it again:
// Session.UsePath), and reports whether the session is there.
func (n *Node) moveTo(ctx context.Context, p *peer, s *transport.Session, addr netip.AddrPort) bool {
	if addr == s.CurrentPath().Remote {
		return true
	}
	mctx, cancel := context.WithTimeout(ctx, n.cfg.punchTimeout())
	defer cancel()
	if err := s.UsePath(mctx, addr); err != nil {
		n.log.Info("move path", "device", p.key.Short(), "addr", addr, "err", err)
		return false
	}
	n.log.Info("moved session", "device", p.key.Short(), "addr", addr)
	if !n.mux.IsVirtual(addr) {
		n.setWhy(p, "")
		n.st.setLastDirect(ctx, p.key, addr.String())
	}
	n.reportPath(p, s)
	return true
}

// repunchAll tells every peer with a session our new candidates after our
// NAT mapping changed, and punches again with each.
func (n *Node) repunchAll() {
	n.mu.Lock()
	var ps []*peer
	for _, p := range n.peers {
		if p.liveLocked() != nil {
			ps = append(ps, p)
		}
	}
	n.mu.Unlock()
	for _, p := range ps {
		n.repunchPeer(p)
	}
}

// repunchPeer sends p an offer with our candidates over the server and,
// when it answers, punches with it and moves the session to the path that
// answers (the peer, receiving an offer while it has a session, does the
// same). Without the server there is no re-punch: keepalives from a new
// mapping still reach a peer that is public or behind a full cone.
func (n *Node) repunchPeer(p *peer) {
	n.mu.Lock()
	dc, up := n.dc, n.serverUp
	cands := n.offeredCandidatesLocked()
	rtts := n.rttVectorLocked()
	nat := n.nat
	n.mu.Unlock()
	if dc == nil || !up || n.cfg.RelayOnly {
		return
	}
	n.goroutine(func(ctx context.Context) {
		id := randomID()
		ans := make(chan client.Event, 1)
		n.mu.Lock()
		p.answers[id] = ans
		n.mu.Unlock()
		defer func() {
			n.mu.Lock()
			delete(p.answers, id)
			n.mu.Unlock()
		}()
		octx, cancel := context.WithTimeout(ctx, n.cfg.punchTimeout())
		defer cancel()
		if err := dc.SendOffer(octx, client.Offer{To: client.Key(p.key), Kind: "offer", Session: id,
			Candidates: addrStrings(cands), RTTs: rtts, NAT: nat}); err != nil {
			return
		}
		select {
		case ev := <-ans:
			n.notePeerNAT(p, ev.NAT)
			remote := parseCandidates(ev.Candidates)
			n.mu.Lock()
			s := p.liveLocked()
			p.peerRTTs = ev.RTTs
			opt := punchOpts{openTTLs: n.openTTLsLocked(false), opened: n.sayOpened(dc, p, id)}
			n.mu.Unlock()
			n.addSweep(&opt, p, remote)
			if s != nil {
				n.movePath(ctx, p, s, remote, opt)
			}
		case <-octx.Done():
		}
	})
}

// punch is one run of probing towards a peer's candidates.
type punch struct {
	p      *peer
	result chan punchResult // the first answered probe (cap 1)
	added  chan struct{}    // a new address was learnt (cap 1)
	heard  chan struct{}    // closed at the first authenticated ping from the peer
	once   sync.Once        // closes heard

	mu    sync.Mutex // protects the fields below
	addrs []netip.AddrPort
	sent  map[[8]byte]time.Time
}

// ping returns a new ping to the punch's peer, its transaction ID noted as
// sent now.
func (pu *punch) ping() probe {
	pr := probe{Type: probeTypePing, Pair: pu.p.pairID}
	rand.Read(pr.Tx[:])
	pu.mu.Lock()
	pu.sent[pr.Tx] = time.Now()
	pu.mu.Unlock()
	return pr
}

type punchResult struct {
	addr netip.AddrPort
	rtt  time.Duration
}

// punchOpts say how a punch opens (openers, in opener.go) before probing.
type punchOpts struct {
	// openTTLs are the TTLs of the openers sent to every candidate before
	// the first probe; none when our address is public.
	openTTLs []int
	// opened, if set, runs (on its own goroutine) once the openers are
	// out: the offerer tells the answerer.
	opened func()
	// gate, if set, holds back our probes until it is closed (the peer
	// said it opened), the peer's first probe arrives, or openerWait
	// passes. The answerer of an offer waits so; it still answers the
	// peer's probes at once.
	gate <-chan struct{}
	// sweep, if valid, is the peer's public address, whose ports the
	// punch sweeps (sweep.go) once the gate opens.
	sweep netip.Addr
	// quietTTL, if positive, is the IP TTL of our probes until the first
	// ping from the peer arrives, and our only opener TTL: the symmetric
	// side of a sweep keeps its probes from reaching the peer's NAT
	// (sweep.go).
	quietTTL int
}

// timeout is how long a punch with these options may run: three times the
// usual when one side sweeps (sweep.go), so that a sweep slowed by a busy
// machine still covers the range before either side gives up.
func (o punchOpts) timeout(d time.Duration) time.Duration {
	if o.sweep.IsValid() || o.quietTTL > 0 {
		return 3 * d
	}
	return d
}

// openerWait bounds how long the answerer of an offer waits for the
// offerer to open before it probes anyway.
const openerWait = time.Second

// addAddr adds a peer address learnt from an authenticated probe.
//
// The first ping heard also starts a probe round at once, even from a known
// address: it is the moment the peer's NAT opened towards us (after a port
// sweep, say), and waiting for the next round would waste up to a second.
func (pu *punch) addAddr(a netip.AddrPort) {
	first := false
	pu.once.Do(func() { close(pu.heard); first = true })
	pu.mu.Lock()
	known := slices.Contains(pu.addrs, a)
	if !known {
		pu.addrs = append(pu.addrs, a)
	}
	pu.mu.Unlock()
	if known && !first {
		return
	}
	select {
	case pu.added <- struct{}{}:
	default:
	}
}

// heard reports whether the punch has had a ping from the peer.
func heard(pu *punch) bool {
	select {
	case <-pu.heard:
		return true
	default:
		return false
	}
}

// openTTLsLocked are the opener TTLs for our side: none with a public
// address (no NAT to open), the first opener's when we open first.
func (n *Node) openTTLsLocked(first bool) []int {
	if n.nat == "public" {
		return nil
	}
	if first {
		return []int{openerTTLFirst}
	}
	return []int{openerTTLFirst, openerTTLSecond}
}

// sendOpeners sends one opener per TTL to each of remote. Openers are
// ordinary pings: where one does arrive (a peer without a NAT, or one
// further away than its TTL guessed) it is answered like any probe.
func (n *Node) sendOpeners(p *peer, pu *punch, remote []netip.AddrPort, ttls []int) {
	var buf [probeSize]byte
	for _, ttl := range ttls {
		for _, a := range remote {
			var pr probe
			pr.Type, pr.Pair = probeTypePing, p.pairID
			rand.Read(pr.Tx[:])
			if pu != nil {
				pu.mu.Lock()
				pu.sent[pr.Tx] = time.Now()
				pu.mu.Unlock()
			}
			if err := writeTTL(n.pc, appendProbe(buf[:0], pr, &p.pairKey, n.pub), a, ttl); err != nil {
				n.log.Debug("opener", "to", a, "ttl", ttl, "err", err)
			}
		}
	}
}

// punch probes remote until a probe is answered, and returns where the
// answer came from — which, behind a NAT that remapped (the Linux clash),
// is not necessarily any announced candidate. Probes from the peer teach
// it more addresses to probe.
func (n *Node) punch(ctx context.Context, p *peer, remote []netip.AddrPort, opt punchOpts) (netip.AddrPort, time.Duration, error) {
	pu := &punch{p: p, result: make(chan punchResult, 1), added: make(chan struct{}, 1), heard: make(chan struct{}),
		addrs: append([]netip.AddrPort(nil), remote...), sent: map[[8]byte]time.Time{}}
	n.mu.Lock()
	p.punches[pu] = struct{}{}
	n.mu.Unlock()
	defer func() {
		n.mu.Lock()
		delete(p.punches, pu)
		n.mu.Unlock()
	}()
	if len(opt.openTTLs) > 0 {
		n.sendOpeners(p, pu, remote, opt.openTTLs)
	}
	if opt.opened != nil {
		n.goroutine(func(context.Context) { opt.opened() })
	}
	if opt.gate != nil {
		wait := time.NewTimer(openerWait)
		select {
		case <-opt.gate:
		case <-pu.heard:
		case <-wait.C:
		case r := <-pu.result:
			wait.Stop()
			return r.addr, r.rtt, nil
		case <-ctx.Done():
			wait.Stop()
			return netip.AddrPort{}, 0, ctx.Err()
		}
		wait.Stop()
	}
	if opt.sweep.IsValid() {
		ping := appendProbe(nil, pu.ping(), &p.pairKey, n.pub)
		sctx, stop := context.WithCancel(ctx)
		defer stop()
		n.log.Debug("port sweep", "device", p.key.Short(), "target", opt.sweep)
		go n.sweep(sctx, opt.sweep, ping)
	}
	interval := 100 * time.Millisecond
	t := time.NewTimer(0)
	defer t.Stop()
	var buf []byte
	round := func() {
		pu.mu.Lock()
		addrs := append([]netip.AddrPort(nil), pu.addrs...)
		pu.mu.Unlock()
		for _, a := range addrs {
			buf = appendProbe(buf[:0], pu.ping(), &p.pairKey, n.pub)
			if opt.quietTTL > 0 && !heard(pu) {
				writeTTL(n.pc, buf, a, opt.quietTTL)
				continue
			}
			n.mux.WriteToUDPAddrPort(buf, a)
		}
	}
	for {
		select {
		case r := <-pu.result:
			return r.addr, r.rtt, nil
		case <-pu.added:
			round()
		case <-t.C:
			round()
			t.Reset(interval)
			interval = min(2*interval, time.Second)
		case <-ctx.Done():
			return netip.AddrPort{}, 0, ctx.Err()
		}
	}
}

// handleProbe answers an authenticated ping where it came from and passes
// pongs to the punches waiting for them. It runs on the socket's reader
// goroutine.
func (n *Node) handleProbe(b []byte, from netip.AddrPort) {
	pr, err := parseProbe(b)
	if err != nil {
		return
	}
	n.mu.Lock()
	p := n.pairs[pr.Pair]
	var punches []*punch
	if p != nil {
		for pu := range p.punches {
			punches = append(punches, pu)
		}
	}
	n.mu.Unlock()
	if p == nil || !verifyProbe(b, &p.pairKey, p.key) {
		return
	}
	switch pr.Type {
	case probeTypePing:
		pong := probe{Type: probeTypePong, Pair: pr.Pair, Tx: pr.Tx, Addr: from}
		var buf [probeSize]byte
		n.mux.WriteToUDPAddrPort(appendProbe(buf[:0], pong, &p.pairKey, n.pub), from)
		for _, pu := range punches {
			pu.addAddr(from)
		}
	case probeTypePong:
		now := time.Now()
		for _, pu := range punches {
			pu.mu.Lock()
			at, ok := pu.sent[pr.Tx]
			pu.mu.Unlock()
			if ok {
				select {
				case pu.result <- punchResult{addr: from, rtt: now.Sub(at)}:
				default:
				}
			}
		}
	}
}
