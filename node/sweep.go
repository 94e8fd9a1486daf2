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
const (
	sweepFirstPort   = 1024
	sweepPorts       = 65536 - sweepFirstPort
	sweepTick        = 8 * time.Millisecond
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
// ends or sweepRounds sweeps are done.
func (n *Node) sweep(ctx context.Context, target netip.Addr, ping []byte) {
	perTick := max(1, n.cfg.sweepRate()*int(sweepTick)/int(time.Second))
	t := time.NewTicker(sweepTick)
	defer t.Stop()
	for range sweepRounds {
		// A random walk of the ports: start anywhere and step by a
		// stride coprime with the range, so every port comes once.
		start, stride := randN(sweepPorts), sweepStride()
		sent := 0
		for sent < sweepPorts {
			for i := 0; i < perTick && sent < sweepPorts; i++ {
				port := sweepFirstPort + (start+sent*stride)%sweepPorts
				n.mux.WriteToUDPAddrPort(ping, netip.AddrPortFrom(target, uint16(port)))
				sent++
			}
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
		}
		n.log.Debug("port sweep done", "target", target)
	}
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
