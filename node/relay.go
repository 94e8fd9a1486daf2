package node

import (
	"context"
	"errors"
	"fmt"
	"math"
	"net"
	"net/netip"
	"strconv"
	"sync"
	"time"

	"github.com/parley-p2p/parley/directory/client"
	"github.com/parley-p2p/parley/relay"
	"github.com/parley-p2p/parley/transport"
)

// This file is the node's use of supernodes: measuring them, choosing the
// relay for a pair, setting up a relayed path, and volunteering as one.

// measureSupernodes reads the candidate relays from the server and measures
// our RTT to each (relay PING over the shared socket), caching the result
// for offers and for reconnecting while the server is down.
func (n *Node) measureSupernodes(ctx context.Context, dc *client.Client) {
	list, err := dc.Supernodes(ctx)
	if err != nil {
		n.log.Debug("list supernodes", "err", err)
		return
	}
	var (
		wg  sync.WaitGroup
		mu  sync.Mutex
		out []cachedSupernode
	)
	n.mu.Lock()
	tcpOnly := n.udpBlocked && n.cfg.dialTCP() != nil
	n.mu.Unlock()
	for _, sn := range list {
		if tcpOnly {
			// UDP PINGs cannot get through: keep every supernode,
			// unmeasured, for relaying over TCP.
			out = append(out, cachedSupernode{Key: transport.PublicKey(sn.Key), Addr: sn.Addr, TCPPort: sn.TCPPort})
			continue
		}
		addr, err := netip.ParseAddrPort(sn.Addr)
		if err != nil {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			pctx, cancel := context.WithTimeout(ctx, 2*time.Second)
			defer cancel()
			rtt, err := n.rc.Ping(pctx, addr)
			if err != nil {
				return
			}
			mu.Lock()
			out = append(out, cachedSupernode{Key: transport.PublicKey(sn.Key), Addr: sn.Addr, TCPPort: sn.TCPPort, RTT: rtt})
			mu.Unlock()
		}()
	}
	wg.Wait()
	if err := n.st.replaceSupernodes(ctx, out); err != nil {
		n.log.Warn("save supernodes", "err", err)
	}
	if out, err = n.st.supernodes(ctx); err != nil { // sorted by RTT
		return
	}
	n.mu.Lock()
	n.supernodes = out
	n.mu.Unlock()
}

// ensureSupernodes measures the supernodes if none is known (none was
// listed when we last looked), so that a relay can carry a session being
// set up if need be.
func (n *Node) ensureSupernodes(ctx context.Context) {
	n.mu.Lock()
	dc, up, known := n.dc, n.serverUp, len(n.supernodes) > 0
	n.mu.Unlock()
	if dc != nil && up && !known {
		n.measureSupernodes(ctx, dc)
	}
}

// rttVector is our RTT to each measured supernode, for offers.
func (n *Node) rttVectorLocked() []client.RTT {
	v := []client.RTT{}
	for _, sn := range n.supernodes {
		if len(v) == 16 {
			break
		}
		v = append(v, client.RTT{Relay: client.Key(sn.Key), MS: float64(sn.RTT) / float64(time.Millisecond)})
	}
	return v
}

// chooseRelay picks the supernode R minimising RTT(us,R) + RTT(R,peer)
// from both RTT vectors: the end-to-end latency of the relayed path, not
// the latency to whichever relay is nearest to one side. Without a relay
// both sides measured, it picks our nearest. It never picks the peer.
func chooseRelay(ours []cachedSupernode, theirs []client.RTT, peer transport.PublicKey) (cachedSupernode, bool) {
	their := map[transport.PublicKey]float64{}
	for _, r := range theirs {
		their[transport.PublicKey(r.Relay)] = r.MS
	}
	best, bestCost, found := cachedSupernode{}, math.Inf(1), false
	for _, sn := range ours {
		if sn.Key == peer {
			continue
		}
		ms, ok := their[sn.Key]
		if !ok {
			continue
		}
		if cost := float64(sn.RTT)/float64(time.Millisecond) + ms; cost < bestCost {
			best, bestCost, found = sn, cost, true
		}
	}
	if !found {
		for _, sn := range ours { // sorted by our RTT
			if sn.Key != peer {
				return sn, true
			}
		}
	}
	return best, found
}

// relayPath sets up a relay channel to p through sn and returns the
// channel's virtual address, which the transport dials like any other.
// The peer learns the ticket through an offer and allocates its side.
func (n *Node) relayPath(ctx context.Context, p *peer, sn cachedSupernode, session string) (netip.AddrPort, error) {
	n.mu.Lock()
	dc := n.dc
	n.mu.Unlock()
	if dc == nil {
		return netip.AddrPort{}, ErrNotLoggedIn
	}
	// One round trip to the server: it signs the ticket and passes it to
	// the peer with the offer, and the peer allocates its side while we
	// allocate ours.
	relayKey := client.Key(sn.Key)
	tk, _, relayAddr, err := dc.OfferRelay(ctx, client.Offer{To: client.Key(p.key), Kind: "offer", Session: session,
		Candidates: []string{}, RTTs: []client.RTT{}, Relay: &relayKey})
	if err != nil {
		return netip.AddrPort{}, fmt.Errorf("relay offer: %w", err)
	}
	addr, err := netip.ParseAddrPort(relayAddr)
	if err != nil {
		addr, _ = netip.ParseAddrPort(sn.Addr)
	}
	// We need not wait for the relay's answer, nor for the peer to bind
	// its side: the relay takes SENDs right behind our ALLOCATE and holds
	// them until the peer binds (docs/protocol.md §6.2, §6.3), so the
	// initiation and its early data are there the moment the peer binds.
	ch, err := n.allocateEarly(addr, sn.TCPPort, 0, tk) // we requested the ticket: device A
	if err != nil {
		return netip.AddrPort{}, err
	}
	return n.mux.VirtualAddr(ch), nil
}

// allocate binds side of the ticket's channel on the relay at addr: over
// our UDP socket, or, when our UDP is blocked, over TCP to tcpPort (the
// port the relay announced; if none, Config.RelayTCP's or 443).
func (n *Node) allocate(ctx context.Context, addr netip.AddrPort, tcpPort int, side byte, tk []byte) (*relay.Channel, error) {
	return n.allocateWith(ctx, addr, tcpPort, side, tk, false)
}

func (n *Node) allocateWith(ctx context.Context, addr netip.AddrPort, tcpPort int, side byte, tk []byte, early bool) (*relay.Channel, error) {
	n.mu.Lock()
	blocked := n.udpBlocked
	n.mu.Unlock()
	if dial := n.cfg.dialTCP(); blocked && dial != nil {
		port := n.cfg.relayTCPPort()
		if tcpPort > 0 {
			port = strconv.Itoa(tcpPort)
		}
		taddr := net.JoinHostPort(addr.Addr().String(), port)
		allocate := n.rc.AllocateTCP
		if early {
			allocate = n.rc.AllocateTCPEarly
		}
		ch, err := allocate(ctx, taddr, dial, side, tk)
		if err != nil {
			return nil, fmt.Errorf("allocate over TCP at %s: %w", taddr, err)
		}
		return ch, nil
	}
	if early {
		return n.rc.AllocateEarly(ctx, addr, side, tk)
	}
	return n.rc.Allocate(ctx, addr, side, tk)
}

// allocateEarly is allocate that returns as soon as the ALLOCATE is sent
// (relay.Client.AllocateEarly): the channel can carry packets at once, and
// closes if the relay refuses or does not answer within the punch timeout.
func (n *Node) allocateEarly(addr netip.AddrPort, tcpPort int, side byte, tk []byte) (*relay.Channel, error) {
	// The context bounds the allocation, which outlives this call.
	actx, cancel := context.WithTimeout(n.ctx, n.cfg.punchTimeout())
	ch, err := n.allocateWith(actx, addr, tcpPort, side, tk, true)
	if err != nil {
		cancel()
		return nil, err
	}
	go func() {
		select {
		case <-ch.Done():
		case <-actx.Done():
		}
		cancel()
	}()
	return ch, nil
}

// bindRelay allocates our side (device B) of a relay channel a peer
// offered; its packets then surface through the Mux.
func (n *Node) bindRelay(ctx context.Context, p *peer, ev client.Event) {
	relayKey := transport.PublicKey(*ev.Relay)
	n.mu.Lock()
	var addr netip.AddrPort
	var tcpPort int
	for _, sn := range n.supernodes {
		if sn.Key == relayKey {
			addr, _ = netip.ParseAddrPort(sn.Addr)
			tcpPort = sn.TCPPort
		}
	}
	dc := n.dc
	n.mu.Unlock()
	if !addr.IsValid() && dc != nil {
		// Not measured by us: ask the server where it is.
		if list, err := dc.Supernodes(ctx); err == nil {
			for _, sn := range list {
				if transport.PublicKey(sn.Key) == relayKey {
					addr, _ = netip.ParseAddrPort(sn.Addr)
					tcpPort = sn.TCPPort
				}
			}
		}
	}
	if !addr.IsValid() {
		n.log.Info("relay offer for an unknown supernode", "device", p.key.Short(), "relay", relayKey.Short())
		return
	}
	actx, cancel := context.WithTimeout(ctx, n.cfg.punchTimeout())
	defer cancel()
	if _, err := n.allocate(actx, addr, tcpPort, 1, ev.Ticket); err != nil {
		n.log.Info("bind relay", "relay", addr, "err", err)
	}
}

// supernodeLoop volunteers this device as a supernode when the role is on,
// or auto and the socket is public: it serves relay packets on the shared
// socket, registers with the directory (which dials back to verify) and
// reports its load at every refresh.
func (n *Node) supernodeLoop(ctx context.Context) {
	role := n.cfg.Supernode
	if role == "" {
		role = "auto"
	}
	if role == "off" {
		return
	}
	var srv *relay.Server
	var tcpPort int // where srv serves TCP, 0: nowhere
	var registered *client.Client
	var last relay.Stats
	lastAt := time.Now()
	defer func() {
		if srv != nil {
			n.mux.ServeRelay(nil)
		}
	}()
	t := time.NewTimer(0)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-n.snWake:
		case <-t.C:
			t.Reset(min(n.cfg.refreshInterval(), time.Minute))
		}
		n.mu.Lock()
		dc, up, nat, refl := n.dc, n.serverUp, n.nat, n.reflexive
		cands := n.candidates
		n.mu.Unlock()
		if dc == nil || !up || (role == "auto" && nat != "public") {
			continue
		}
		if srv == nil {
			key, err := dc.ServerKey(ctx)
			if err != nil {
				continue
			}
			srv = relay.NewServer(relay.Config{DirectoryKey: key, Identity: n.pub, Logger: n.log.With("part", "supernode")}, n.pc)
			n.mux.ServeRelay(srv)
			tcpPort = n.serveRelayTCP(ctx, srv)
		}
		if registered != dc {
			addr := refl
			if !addr.IsValid() && len(cands) > 0 {
				addr = cands[0]
			}
			if !addr.IsValid() {
				continue
			}
			rate, budget := n.cfg.BudgetRate, n.cfg.BudgetBytes
			if rate <= 0 {
				rate = 1 << 20
			}
			if budget <= 0 {
				budget = 1 << 30
			}
			if _, err := dc.RegisterSupernode(ctx, addr.String(), tcpPort, rate, budget); err != nil {
				n.log.Info("supernode registration", "addr", addr, "err", err)
				continue
			}
			registered = dc
			n.mu.Lock()
			n.volunteering = true
			n.mu.Unlock()
			n.log.Info("volunteering as a supernode", "addr", addr)
			continue
		}
		st := srv.Stats()
		rate := float64(st.ForwardedBytes-last.ForwardedBytes) / time.Since(lastAt).Seconds()
		last, lastAt = st, time.Now()
		load := int(math.Min(100, 100*rate/float64(max(n.cfg.BudgetRate, 1<<20))))
		if err := dc.ReportLoad(ctx, load, st.Allocations); err != nil {
			var ae *client.Error
			if errors.As(err, &ae) && ae.Code == "not_supernode" {
				registered = nil // the server forgot us (restart, expiry): register again
			}
		}
	}
}

// serveRelayTCP serves srv's TCP fallback on Config.RelayTCP, if set, until
// the node stops, and returns the port it listens on, which the directory
// lists. A failure to listen leaves the relay UDP-only (port 0).
func (n *Node) serveRelayTCP(ctx context.Context, srv *relay.Server) int {
	if n.cfg.RelayTCP == "" {
		return 0
	}
	ln, err := (&net.ListenConfig{}).Listen(ctx, "tcp", n.cfg.RelayTCP)
	if err != nil {
		n.log.Warn("relay over TCP unavailable", "addr", n.cfg.RelayTCP, "err", err)
		return 0
	}
	n.log.Info("relaying over TCP", "addr", ln.Addr())
	n.goroutine(func(ctx context.Context) {
		if err := srv.ServeTCP(ctx, ln); err != nil {
			n.log.Warn("relay over TCP stopped", "err", err)
		}
	})
	return ln.Addr().(*net.TCPAddr).Port
}

// retryDirect re-punches with every peer whose session is relayed, moving
// it onto a direct path if one answers now.
func (n *Node) retryDirect() {
	n.mu.Lock()
	var relayed []*peer
	for _, p := range n.peers {
		if s := p.liveLocked(); s != nil && n.mux.IsVirtual(s.CurrentPath().Remote) {
			relayed = append(relayed, p)
		}
	}
	n.mu.Unlock()
	for _, p := range relayed {
		n.repunchPeer(p)
	}
}
