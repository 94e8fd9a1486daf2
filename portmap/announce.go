package portmap

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/netip"
	"time"
)

// Announcements. A PCP or NAT-PMP server that starts, or whose external
// address changes, says so to every host on its LAN: it multicasts to port
// 5350 of the all-hosts group, 224.0.0.1 (and ff02::1 for PCP over IPv6).
//
//   - PCP (RFC 6887 §14.1.3): an unsolicited ANNOUNCE response, the 24-byte
//     response header with opcode 128 (R | ANNOUNCE), result SUCCESS,
//     lifetime 0 and the server's new epoch time.
//   - NAT-PMP (RFC 6886 §3.2.1): an unsolicited external address response,
//     12 bytes: version 0, opcode 128, result 0, the epoch time and the
//     external address.
//
// Either carries an epoch time, which the client checks (epoch.observe):
// one that has fallen behind means that the server lost its mappings, and
// the client maps again at once. So does a NAT-PMP announcement of another
// external address, since a NAT-PMP mapping's address is the one the
// client last learned. Announcements from anywhere but the gateway are
// ignored (fromGateway). When the client cannot open the socket (another program holds
// port 5350 without sharing it, or multicast is unavailable), it falls
// back to what every response carries: the epoch, checked at each renewal.
const (
	announcePort = 5350
	// announceJitter bounds the random wait before mapping again after an
	// announcement, so that the hosts of a LAN that all hear the same
	// multicast do not all ask the restarted gateway at the same moment.
	announceJitter = 2 * time.Second
)

var (
	announceGroup4 = netip.AddrPortFrom(netip.MustParseAddr("224.0.0.1"), announcePort)
	announceGroup6 = netip.AddrPortFrom(netip.MustParseAddr("ff02::1"), announcePort)
)

// announcement is a parsed PCP or NAT-PMP announcement.
type announcement struct {
	Protocol Protocol
	Epoch    uint32
	External netip.Addr // NAT-PMP: the gateway's external address
}

var errNotAnnouncement = errors.New("not an announcement")

// parseAnnouncement parses a datagram received on port 5350: a PCP
// ANNOUNCE response or a NAT-PMP external address response, with result
// success. Anything else is an error. It never panics.
func parseAnnouncement(b []byte) (announcement, error) {
	if len(b) == 0 {
		return announcement{}, errNotAnnouncement
	}
	switch b[0] {
	case pcpVersion:
		r, err := parsePCPResponse(b)
		if err != nil {
			return announcement{}, err
		}
		if r.Op != pcpOpReply|pcpOpAnnounce || r.Result != pcpSuccess {
			return announcement{}, fmt.Errorf("pcp: %w: opcode %d, result %v", errNotAnnouncement, r.Op, r.Result)
		}
		return announcement{Protocol: PCP, Epoch: r.Epoch}, nil
	case pmpVersion:
		r, err := parsePMPResponse(b)
		if err != nil {
			return announcement{}, err
		}
		if r.Op != pmpOpReply|pmpOpAddr || r.Result != pmpSuccess {
			return announcement{}, fmt.Errorf("nat-pmp: %w: opcode %d, result %v", errNotAnnouncement, r.Op, r.Result)
		}
		if err := checkExternal(NATPMP, netip.AddrPortFrom(r.External, 1)); err != nil {
			return announcement{}, err
		}
		return announcement{Protocol: NATPMP, Epoch: r.Epoch, External: r.External}, nil
	}
	return announcement{}, fmt.Errorf("%w: version %d", errNotAnnouncement, b[0])
}

// listener hears one gateway's announcements. Its goroutine belongs to the
// Client, which counts it in lwg; stop ends it without waiting, so that it
// may be called with c.op held while the goroutine waits for c.op.
type listener struct {
	gw     netip.Addr
	pc     net.PacketConn
	cancel context.CancelFunc
}

func (l *listener) stop() {
	l.cancel()
	l.pc.Close()
}

// listenLocked makes sure that announcements from st's gateway are heard
// when st is a PCP or NAT-PMP mapping, and that none are otherwise. A
// socket that cannot be opened is tried again at the next commit. c.op
// must be held.
func (c *Client) listenLocked(st *mapState) {
	want := st.Protocol == PCP || st.Protocol == NATPMP
	c.mu.Lock()
	l := c.lis
	if l != nil && (!want || l.gw != st.Gateway) {
		c.lis = nil
		l.stop()
		l = nil
	}
	c.mu.Unlock()
	if !want || l != nil {
		return
	}
	network, group := "udp4", announceGroup4
	if st.Gateway.Is6() {
		network, group = "udp6", announceGroup6
	}
	pc, err := c.listenMulticast(network, interfaceOf(st.Internal.Addr()), net.UDPAddrFromAddrPort(group))
	if err != nil {
		c.log.Debug("portmap: cannot hear the gateway's announcements; a restart is noticed at renewal", "group", group, "err", err)
		return
	}
	ctx, cancel := context.WithCancel(context.Background())
	l = &listener{gw: st.Gateway, pc: pc, cancel: cancel}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed || c.lis != nil {
		l.stop()
		return
	}
	c.lis = l
	c.lwg.Go(func() { c.hear(ctx, l) })
}

// hear reads announcements on l until l is stopped.
func (c *Client) hear(ctx context.Context, l *listener) {
	buf := make([]byte, 1100)
	for {
		n, from, err := l.pc.ReadFrom(buf)
		if err != nil {
			if ctx.Err() == nil {
				c.log.Debug("portmap: announcements", "err", err)
			}
			return
		}
		at := time.Now()
		src, ok := from.(*net.UDPAddr)
		if !ok || !fromGateway(src.AddrPort().Addr(), l.gw) {
			continue // only the gateway speaks for its mappings
		}
		a, err := parseAnnouncement(buf[:n])
		if err != nil {
			c.log.Debug("portmap: not an announcement", "from", src, "err", err)
			continue
		}
		c.announced(ctx, l.gw, src, a, at)
	}
}

// fromGateway reports whether an announcement from src may come from the
// gateway gw: src is gw, or, for an IPv6 gateway, any link-local address.
// A router multicasting to ff02::1 sends from its link-local address,
// which the client does not know (it speaks PCP to the router's global
// or ULA address, from its own, since the mapping is for the address it
// sends from). Link-local packets cannot come from beyond the LAN, and the
// most a host on it can do with a forged announcement is have the client
// renew.
func fromGateway(src, gw netip.Addr) bool {
	src = src.Unmap()
	if src.WithZone("") == gw.WithZone("") {
		return true
	}
	return gw.Is6() && src.Is6() && src.IsLinkLocalUnicast()
}

// announced acts on an announcement a from gw, sent from src and
// received at time at: when it shows that the gateway has lost the
// current mapping, it maps again after a random wait and says so on
// Changed.
func (c *Client) announced(ctx context.Context, gw netip.Addr, src *net.UDPAddr, a announcement, at time.Time) {
	c.op.Lock()
	cur := c.current()
	if cur == nil || cur.Gateway != gw || c.known.gw != gw {
		c.op.Unlock()
		return
	}
	lost := c.observeEpochLocked(a.Protocol, a.Epoch, at)
	if a.Protocol == NATPMP && cur.Protocol == NATPMP && a.External != c.known.pmpExternal {
		c.known.pmpExternal = a.External
		lost = true
	}
	c.op.Unlock()
	c.log.Debug("portmap: announcement", "from", src, "protocol", a.Protocol, "epoch", a.Epoch, "external", a.External, "lost", lost)
	if !lost {
		return
	}
	var wait time.Duration
	if c.announceJitter > 0 {
		wait = rand.N(c.announceJitter)
	}
	c.log.Info("portmap: the gateway announced a restart or a new address; mapping again", "protocol", a.Protocol, "gateway", gw, "after", wait)
	if wait > 0 {
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
	}
	c.op.Lock()
	defer c.op.Unlock()
	if ctx.Err() != nil || c.isClosed() || c.current() != cur {
		return // closed, or Map or Renew got there first
	}
	if _, err := c.mapLocked(ctx, cur.Internal.Port()); err != nil {
		if ctx.Err() != nil {
			return
		}
		c.log.Info("portmap: mapping again after the gateway's announcement failed", "gateway", gw, "err", err)
		c.setCurrent(nil)
	}
	c.notify()
}

// interfaceOf returns the network interface that has address a, or nil.
// A link-local IPv6 address names it in its zone.
func interfaceOf(a netip.Addr) *net.Interface {
	if z := a.Zone(); z != "" {
		if ifi, err := net.InterfaceByName(z); err == nil {
			return ifi
		}
	}
	ifs, err := net.Interfaces()
	if err != nil {
		return nil
	}
	a = a.WithZone("")
	for i := range ifs {
		addrs, err := ifs[i].Addrs()
		if err != nil {
			continue
		}
		for _, ad := range addrs {
			if n, ok := ad.(*net.IPNet); ok {
				if ip, ok := netip.AddrFromSlice(n.IP); ok && ip.Unmap() == a {
					return &ifs[i]
				}
			}
		}
	}
	return nil
}

func (c *Client) listenMulticast(network string, ifi *net.Interface, group *net.UDPAddr) (net.PacketConn, error) {
	if c.cfg.ListenMulticast != nil {
		return c.cfg.ListenMulticast(network, ifi, group)
	}
	uc, err := net.ListenMulticastUDP(network, ifi, group)
	if err != nil {
		return nil, err
	}
	return uc, nil
}
