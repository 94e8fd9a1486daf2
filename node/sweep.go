package node

import (
	"context"
	"crypto/rand"
	"math/big"
	"net/netip"
	"time"
)

// The port sweep: reaching a symmetric NAT from an endpoint-independent one.
//
// A symmetric NAT gives the peer's probes to us a fresh public port, which
// it announced nowhere, and our NAT, filtering by address and port, drops
// them: we never sent to that port. But the peer's NAT lets in whatever
// comes back from our public address to that port, since it is the reply
// direction of the mapping the peer's probes made. So we sweep: one ping
// (the same authenticated bytes every time) to each port of the peer's
// public address. The one that lands on the peer's mapping is answered, and
// its answer comes through our NAT, which now has the entry our ping made.
// From then on both sides' probes pass and the punch ends as usual.
//
// The peer must have sent first, so that its mapping exists before our
// ping for its port arrives: a ping that comes first makes the peer's
// router keep a conntrack entry for that port (the Linux clash, see package
// lab), and the peer's NAT then never picks it. The answerer of an offer
// sweeps only after the offerer said it opened; the offerer only after the
// answer, which the symmetric answerer sends after its openers.
//
// The peer must also not send probes that reach our NAT before our sweep
// reaches its port: a bare Linux router keeps an entry for each such
// unsolicited probe, and our sweep's ping to that port, clashing with it,
// would leave from a new port the peer's NAT does not expect. So the
// symmetric side probes with the opener TTL (opener.go), which passes its
// own NAT and dies before ours, until our first ping arrives; it answers
// pings at full TTL, as always.
//
// A sweep is the whole range a Linux NAT picks random ports from,
// 1024–65535, in a random order, at Config.SweepRate pings a second: at the
// default 32,768 a second, 64,512 pings of 88 bytes on the wire (5.7 MB)
// in 2 s. A punch sweeps at most twice, stops at the first answer or when
// the punch ends, and a peer is swept at most once per sweepEvery.
//
// Pacing. Every ping of a sweep crosses the kernel (and, in the lab, a few
// namespaces' NATs) on the sending core, so a sweep that bursts starves
// the node's other paths: their keepalives and probes queue behind it. A
// sweep therefore sends small batches (sweepTick's worth of its rate, 65
// pings at the default) and, between batches, waits at least as long as
// the batch took, so that it never holds more than half a core. A batch
// that comes late — the goroutine was not scheduled, or the last batch was
// slow — does not make up the lost time beyond one tick: the sweep skips
// ahead, and on a busy machine simply runs slower (sweepPacer). In the lab
// a ping's send takes 17–80 µs (the sending core also runs conntrack and
// NAT for it in two routers' namespaces), more than the default rate
// allows at half a core: there sweeps run at 6,000–20,000 pings/s
// (docs/benchmarks.md).
//
// Skipping ahead still covers the range in time: the sweep knows the
// punch's deadline (less sweepReserve, for the pong's way back), and once
// skipping has put it behind the slowest schedule that still ends the
// round by then, each batch sends at least its share of the pings left,
// spread over the time left — never faster than the configured rate —
// and waits only for the rest of its tick (up to a whole core); past the
// deadline it sends at the full rate. So the range is covered within the
// punch's timeout whenever the rate allows it (64,512 / SweepRate seconds,
// plus sweepReserve, at most the time left when the round starts: 2.5 s
// of a sweeping punch's 15 s by default, see punchOpts.timeout) and one
// core can send that many pings in the time left, however late the
// batches come. Batches grow beyond a tick's worth, and the sweep beyond
// half a core, only while the round is behind that schedule.
//
// One sweep at a time. A node runs at most one sweep round at once
// (Node.sweeping): two at once would double the load that pacing bounds.
// Another sweep waits for its turn rather than being skipped (its peer,
// whose sweep allowance is taken, would stay relayed for sweepEvery), and
// gives up when its punch ends. Turns pass in order, round by round: a
// sweep waits at most one round of each sweep ahead of it (2 s at the
// default rate), then paces its round to its own deadline.
const (
	sweepFirstPort   = 1024
	sweepPorts       = 65536 - sweepFirstPort
	sweepTick        = 2 * time.Millisecond
	sweepReserve     = 500 * time.Millisecond
	sweepRounds      = 2
	sweepEvery       = 10 * time.Minute
	defaultSweepRate = 32768
)

// sweepTarget returns the address to sweep for a punch towards a peer
// behind peerNAT with the candidates remote, or the zero Addr when a sweep
// cannot help: we must be behind an endpoint-independent NAT (a public
// side hears the peer's probes anyway; two symmetric NATs defeat a sweep),
// and the peer behind a symmetric one. Its first candidate is its STUN
// reflexive address (candidates are sorted so, see discover).
func sweepTarget(ourNAT, peerNAT string, remote []netip.AddrPort) netip.Addr {
	if ourNAT != "endpoint-independent" || peerNAT != "symmetric" || len(remote) == 0 {
		return netip.Addr{}
	}
	a := remote[0].Addr()
	if !a.IsGlobalUnicast() || a.IsPrivate() {
		return netip.Addr{}
	}
	return a
}

// addSweep sets opt up for a port sweep towards p: the sweep itself when
// we are to sweep p's ports, or, when p is to sweep ours, the quiet TTL for
// our probes and as our only opener TTL.
func (n *Node) addSweep(opt *punchOpts, p *peer, remote []netip.AddrPort) {
	opt.sweep = n.sweepFor(p, remote)
	if opt.quietTTL = n.quietTTLFor(p); opt.quietTTL > 0 && len(opt.openTTLs) > 0 {
		opt.openTTLs = []int{opt.quietTTL}
	}
}

// quietTTLFor is the TTL our probes towards p keep until p's first ping
// arrives: the opener TTL when p will sweep our ports (we are symmetric,
// it is endpoint-independent), else 0 (full TTL).
func (n *Node) quietTTLFor(p *peer) int {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.cfg.RelayOnly || n.nat != "symmetric" || p.peerNAT != "endpoint-independent" {
		return 0
	}
	return openerTTLFirst
}

// sweepRate is the sweep's pings per second; 0 when sweeps are off.
func (c *Config) sweepRate() int {
	switch {
	case c.SweepRate < 0:
		return 0
	case c.SweepRate == 0:
		return defaultSweepRate
	}
	return c.SweepRate
}

// sweepFor returns the address a punch towards p should sweep, and takes
// p's sweep allowance: the zero Addr if no sweep is due.
func (n *Node) sweepFor(p *peer, remote []netip.AddrPort) netip.Addr {
	if n.cfg.RelayOnly || n.cfg.sweepRate() == 0 {
		return netip.Addr{}
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	target := sweepTarget(n.nat, p.peerNAT, remote)
	if !target.IsValid() || (!p.lastSweep.IsZero() && time.Since(p.lastSweep) < sweepEvery) {
		return netip.Addr{}
	}
	p.lastSweep = time.Now()
	return target
}

// sweep sends ping to every port of target, in a random order, until ctx
// ends or sweepRounds sweeps are done, one round at a time per node.
func (n *Node) sweep(ctx context.Context, target netip.Addr, ping []byte) {
	n.sweepPorts(ctx, target, func(port uint16) {
		n.mux.WriteToUDPAddrPort(ping, netip.AddrPortFrom(target, port))
	})
}

// sweepPorts runs the rounds of sweep, sending with send.
func (n *Node) sweepPorts(ctx context.Context, target netip.Addr, send func(port uint16)) {
	rate := n.cfg.sweepRate()
	deadline, ok := ctx.Deadline()
	if ok {
		deadline = deadline.Add(-sweepReserve)
	}
	for range sweepRounds {
		select {
		case n.sweeping <- struct{}{}:
		case <-ctx.Done():
			return
		}
		start := time.Now()
		sent, busy, err := sweepRound(ctx, rate, deadline, send)
		<-n.sweeping
		if err != nil {
			n.log.Debug("port sweep stopped", "target", target, "sent", sent, "took", time.Since(start), "busy", busy)
			return
		}
		n.log.Debug("port sweep done", "target", target, "sent", sent, "took", time.Since(start), "busy", busy)
	}
}

// sweepRound sends one round of a sweep: send is called once for every
// port of the range, in a random walk, at the pace of a sweepPacer. It
// returns how many were sent, the time spent sending them, and ctx's error
// if it ended the round early.
func sweepRound(ctx context.Context, rate int, deadline time.Time, send func(port uint16)) (sent int, busy time.Duration, err error) {
	// A random walk of the ports: start anywhere and step by a stride
	// coprime with the range, so every port comes once.
	start, stride := randN(sweepPorts), sweepStride()
	now := time.Now()
	pc := newSweepPacer(rate, deadline, now)
	t := time.NewTimer(0)
	defer t.Stop()
	for sent < sweepPorts {
		select {
		case <-ctx.Done():
			return sent, busy, ctx.Err()
		case <-t.C:
		}
		now = time.Now()
		for range pc.batch(now) {
			send(uint16(sweepFirstPort + (start+sent*stride)%sweepPorts))
			sent++
		}
		// Yield: wait out the rest of the tick and, unless the round is
		// behind its deadline's schedule, at least as long as the batch
		// took (at most half a core).
		took := time.Since(now)
		busy += took
		wait := pc.interval - took
		if !pc.late {
			wait = max(wait, took)
		}
		t.Reset(max(wait, 0))
	}
	return sent, busy, nil
}

// sweepPacer says how many pings each batch of a sweep round sends.
//
// It is a token bucket that holds one batch: tokens come at rate, but a
// batch that comes late gets no more than the tokens of one interval, so
// the time lost is skipped, not made up in a burst.
//
// The deadline sets a floor. The slowest schedule that still ends the
// round by the deadline sends the range evenly from the round's start to
// the deadline; while the round is ahead of that schedule, lost time is
// skipped. Once it falls behind (its batches came late for long), each
// batch sends at least its share of the pings left, for the time since the
// previous batch, spread evenly over the time left — never more than rate
// allows for that time. At or past the deadline, batches send all that
// rate allows.
type sweepPacer struct {
	rate     float64       // pings a second
	interval time.Duration // between batches: sweepTick, or one ping's time at low rates
	start    time.Time     // the round's start
	deadline time.Time     // the round should end by then; zero: no floor
	left     int           // pings left in the round
	last     time.Time     // the previous batch
	tokens   float64       // pings owed, below one after a batch ahead of the floor
	late     bool          // the last batch was behind the deadline's schedule
}

func newSweepPacer(rate int, deadline, now time.Time) *sweepPacer {
	interval := max(sweepTick, time.Second/time.Duration(max(rate, 1)))
	// The first batch comes at once, with one interval's tokens.
	return &sweepPacer{rate: float64(rate), interval: interval, start: now, deadline: deadline,
		left: sweepPorts, last: now.Add(-interval)}
}

// batch returns how many pings to send at now and counts them sent.
func (p *sweepPacer) batch(now time.Time) int {
	dt := now.Sub(p.last)
	if dt <= 0 {
		return 0
	}
	p.last = now
	p.tokens += p.rate * min(dt, p.interval).Seconds()
	want := p.tokens
	if p.late = p.behind(now); p.late {
		share := p.rate * dt.Seconds() // at or past the deadline: all rate allows
		if rest := p.deadline.Sub(now); rest > 0 {
			share = min(share, float64(p.left)*float64(dt)/float64(rest+dt))
		}
		want = max(want, share)
	}
	k := min(int(want), p.left)
	p.left -= k
	p.tokens = max(0, p.tokens-float64(k))
	return k
}

// behind reports whether the round is behind the slowest schedule that
// ends it by the deadline.
func (p *sweepPacer) behind(now time.Time) bool {
	if p.deadline.IsZero() {
		return false
	}
	if !now.Before(p.deadline) || !p.start.Before(p.deadline) {
		return p.left > 0
	}
	due := float64(sweepPorts) * float64(now.Sub(p.start)) / float64(p.deadline.Sub(p.start))
	return float64(sweepPorts-p.left) < due
}

// sweepStride returns a random step coprime with sweepPorts (2^10·63): odd
// and not a multiple of 3 or 7.
func sweepStride() int {
	for {
		s := 1 + randN(sweepPorts-1)
		if s%2 != 0 && s%3 != 0 && s%7 != 0 {
			return s
		}
	}
}

func randN(n int) int {
	v, err := rand.Int(rand.Reader, big.NewInt(int64(n)))
	if err != nil {
		return 0
	}
	return int(v.Int64())
}
