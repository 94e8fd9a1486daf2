package node

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"time"

	"github.com/parley-p2p/parley/portmap"
)

// Port mappings. A router that offers PCP, NAT-PMP or UPnP IGD can forward
// a public port to our socket; that port, reachable from anywhere, is one
// more candidate (docs/protocol.md §8.6), and the one that makes a pair
// with a symmetric NAT on the other side direct without a port sweep.

// portmapRetry is how long after a failure (no service, a refusal) the
// daemon asks the router again.
const portmapRetry = 10 * time.Minute

// portmapEnabled reports whether the daemon asks its router for a port
// mapping: not when turned off, not in relay-only mode, and only on a real
// socket that is not bound to loopback (tests on natlab or on loopback must
// not talk to the machine's real router).
func (n *Node) portmapEnabled() bool {
	if n.cfg.PortMap == "off" || n.cfg.RelayOnly || n.cfg.Listener != nil {
		return false
	}
	uc, ok := n.pc.(*net.UDPConn)
	if !ok {
		return false
	}
	la, ok := uc.LocalAddr().(*net.UDPAddr)
	return ok && !la.IP.IsLoopback()
}

// portmapLoop keeps a port mapping for our socket on the gateway while the
// node runs, renewing it at half its lifetime, and deletes it at the end.
// When the router restarts and the client maps again by itself, the new
// mapping replaces the candidate at once.
func (n *Node) portmapLoop(ctx context.Context) {
	if !n.portmapEnabled() {
		return
	}
	port := uint16(n.pc.LocalAddr().(*net.UDPAddr).Port)
	c := portmap.New(portmap.Config{Logger: n.log.With("part", "portmap")})
	defer func() {
		n.setMapped(netip.AddrPort{})
		cctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		c.Close(cctx)
	}()
	var m portmap.Mapping
	var err error
	for {
		if _, ok := c.Current(); ok {
			m, err = c.Renew(ctx)
		} else {
			m, err = c.Map(ctx, port)
		}
		wait := portmapRetry
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			if errors.Is(err, portmap.ErrNoService) {
				n.log.Debug("no port mapping", "err", err)
			} else {
				n.log.Info("port mapping failed", "err", err)
			}
			n.setMapped(netip.AddrPort{})
		} else {
			n.setMapped(m.External)
			wait = max(time.Until(m.RenewAt), time.Second)
		}
		if !n.portmapWait(ctx, c, wait) {
			return
		}
	}
}

// portmapWait waits for wait to pass, taking on the mappings c makes by
// itself meanwhile (portmap.Client.Changed), or returns early if c lost
// the mapping. It returns false when ctx ends.
func (n *Node) portmapWait(ctx context.Context, c *portmap.Client, wait time.Duration) bool {
	t := time.NewTimer(wait)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return false
		case <-t.C:
			return true
		case <-c.Changed():
			m, ok := c.Current()
			if !ok {
				return true // map again now
			}
			n.setMapped(m.External)
			t.Reset(max(time.Until(m.RenewAt), time.Second))
		}
	}
}

// setMapped records our mapped public address and, when it changed, asks
// for our candidates to be gathered and reported again.
func (n *Node) setMapped(a netip.AddrPort) {
	n.mu.Lock()
	changed := n.mapped != a
	n.mapped = a
	n.mu.Unlock()
	if changed {
		if a.IsValid() {
			n.log.Info("router port mapping", "external", a)
		}
		n.askRediscover()
	}
}
