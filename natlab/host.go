package natlab

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"syscall"
	"time"
)

// Ephemeral ports are drawn from Linux's default range.
const (
	ephemeralLow  = 32768
	ephemeralHigh = 60999
)

// A Host is a machine with one IPv4 address on one Network. It hands out
// UDP sockets (Conns) through ListenPacket, which makes *Host a
// PacketListener.
type Host struct {
	w    *World
	name string

	// Protected by World.mu.
	ifc   *iface
	conns map[uint16]*Conn
	c     Counters // delivery to sockets
}

// NewHost attaches a new host to n with the next free address; l is its link
// in both directions (see SetLinks to set them apart). The name must be
// unique among hosts and NATs: it keys Stats.
func (w *World) NewHost(name string, n *Network, l Link) *Host {
	h := &Host{w: w, name: name, conns: make(map[uint16]*Conn)}
	h.ifc = newIface(h, l, l)
	w.mu.Lock()
	defer w.mu.Unlock()
	w.claimNameLocked("host", name)
	n.attachLocked(h.ifc, n.allocLocked())
	w.hosts = append(w.hosts, h)
	return h
}

// Name returns the host's name.
func (h *Host) Name() string { return h.name }

func (h *Host) String() string { return h.name }

// Addr returns the host's current address.
func (h *Host) Addr() netip.Addr {
	h.w.mu.Lock()
	defer h.w.mu.Unlock()
	return h.ifc.addr
}

// Network returns the network the host is attached to.
func (h *Host) Network() *Network {
	h.w.mu.Lock()
	defer h.w.mu.Unlock()
	return h.ifc.net
}

// SetLink sets the host's link in both directions.
func (h *Host) SetLink(l Link) { h.SetLinks(l, l) }

// SetLinks sets the host's uplink (host → network) and downlink (network →
// host). Datagrams already on their way keep the timing they were given;
// the queue's backlog carries over.
func (h *Host) SetLinks(up, down Link) {
	h.w.mu.Lock()
	defer h.w.mu.Unlock()
	h.ifc.up.setLink(up)
	h.ifc.down.setLink(down)
}

// Links returns the host's uplink and downlink, with defaults filled in.
func (h *Host) Links() (up, down Link) {
	h.w.mu.Lock()
	defer h.w.mu.Unlock()
	return h.ifc.up.link, h.ifc.down.link
}

// SetAddr gives the host address a on its current network, as a DHCP
// renumbering would. Open Conns keep their ports and send from a from now
// on; datagrams still addressed to the old address are dropped
// (DropNoRoute).
func (h *Host) SetAddr(a netip.Addr) error {
	h.w.mu.Lock()
	defer h.w.mu.Unlock()
	n := h.ifc.net
	if a == h.ifc.addr {
		return nil
	}
	if !n.usable(a) || a == n.gatewayAddr() {
		return fmt.Errorf("natlab: set address of %s: %v is not a host address of %v", h.name, a, n.prefix)
	}
	if n.ifaces[a] != nil {
		return fmt.Errorf("natlab: set address of %s: %v is in use on %s", h.name, a, n.name)
	}
	n.detachLocked(h.ifc)
	n.attachLocked(h.ifc, a)
	return nil
}

// MoveTo attaches the host to network n with a new address, as a phone
// moving from Wi-Fi to cellular does, and returns that address. The host
// keeps its links and its Conns keep their ports.
func (h *Host) MoveTo(n *Network) netip.Addr {
	h.w.mu.Lock()
	defer h.w.mu.Unlock()
	h.ifc.net.detachLocked(h.ifc)
	a := n.allocLocked()
	n.attachLocked(h.ifc, a)
	return a
}

// Stats returns a snapshot of the host's counters.
func (h *Host) Stats() HostStats {
	h.w.mu.Lock()
	defer h.w.mu.Unlock()
	return h.statsLocked()
}

func (h *Host) statsLocked() HostStats {
	return HostStats{
		Link:    LinkStats{Up: h.ifc.up.c, Down: h.ifc.down.c},
		Sockets: h.c,
	}
}

// ListenPacket opens a UDP socket on the host, like net.ListenPacket.
// network must be "udp" or "udp4". address is "host:port" where host is
// empty, 0.0.0.0 or the host's own address, and port 0 picks a free
// ephemeral port; an empty address means ":0". The returned
// net.PacketConn is a *Conn. ctx only cancels the call: it does not bound
// the socket's life.
func (h *Host) ListenPacket(ctx context.Context, network, address string) (net.PacketConn, error) {
	c, err := h.listen(ctx, network, address)
	if err != nil {
		// Never return a typed nil inside the interface.
		return nil, err
	}
	return c, nil
}

func (h *Host) listen(ctx context.Context, network, address string) (*Conn, error) {
	opErr := func(err error) error {
		return &net.OpError{Op: "listen", Net: network, Err: err}
	}
	if err := ctx.Err(); err != nil {
		return nil, opErr(err)
	}
	switch network {
	case "udp", "udp4":
	default:
		return nil, opErr(net.UnknownNetworkError(network))
	}
	ip, port, err := parseListenAddr(address)
	if err != nil {
		return nil, opErr(err)
	}

	w := h.w
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.closed {
		return nil, opErr(net.ErrClosed)
	}
	if ip.IsValid() && !ip.IsUnspecified() && ip != h.ifc.addr {
		return nil, opErr(fmt.Errorf("bind %v on %s: %w", ip, h.name, syscall.EADDRNOTAVAIL))
	}
	if port == 0 {
		if port = h.ephemeralPortLocked(); port == 0 {
			return nil, opErr(fmt.Errorf("no free ephemeral port on %s: %w", h.name, syscall.EADDRINUSE))
		}
	} else if h.conns[port] != nil {
		return nil, opErr(fmt.Errorf("port %d on %s: %w", port, h.name, syscall.EADDRINUSE))
	}
	c := newConn(h, port, w.cfg.SocketBuffer)
	h.conns[port] = c
	return c, nil
}

// parseListenAddr parses ListenPacket's address argument. It never panics.
func parseListenAddr(address string) (netip.Addr, uint16, error) {
	if address == "" {
		return netip.Addr{}, 0, nil
	}
	host, portStr, err := net.SplitHostPort(address)
	if err != nil {
		return netip.Addr{}, 0, err
	}
	var ip netip.Addr
	if host != "" {
		if ip, err = netip.ParseAddr(host); err != nil {
			return netip.Addr{}, 0, fmt.Errorf("address %q: natlab resolves no names: %w", address, err)
		}
		ip = ip.Unmap()
		if ip.IsUnspecified() {
			ip = netip.Addr{} // "[::]:port" binds every address too
		} else if !ip.Is4() {
			return netip.Addr{}, 0, fmt.Errorf("address %q: natlab is IPv4 only", address)
		}
	}
	port, err := strconv.ParseUint(portStr, 10, 16)
	if err != nil {
		return netip.Addr{}, 0, fmt.Errorf("address %q: bad port: %w", address, errors.Unwrap(err))
	}
	return ip, uint16(port), nil
}

// ephemeralPortLocked picks a free port at random, or returns 0 if the
// ephemeral range is exhausted.
func (h *Host) ephemeralPortLocked() uint16 {
	const n = ephemeralHigh - ephemeralLow + 1
	start := h.w.rand.IntN(n)
	for i := range n {
		p := uint16(ephemeralLow + (start+i)%n)
		if h.conns[p] == nil {
			return p
		}
	}
	return 0
}

// sendLocked sends p, whose source is already set, from the host.
func (h *Host) sendLocked(w *World, p *packet, now time.Duration) {
	if p.dst.Addr() == h.ifc.addr {
		// Sent to itself: loopback, no link involved.
		h.receiveLocked(w, p, now)
		return
	}
	h.ifc.up.sendLocked(w, p, now)
}

func (h *Host) receiveLocked(w *World, p *packet, now time.Duration) {
	if p.dst.Addr() != h.ifc.addr {
		h.c.Dropped[DropNoRoute]++ // the host moved while p was on its way
		p.release()
		return
	}
	c := h.conns[p.dst.Port()]
	if c == nil {
		h.c.Dropped[DropNoListener]++
		p.release()
		return
	}
	n := len(p.b)
	if !c.enqueue(p) {
		h.c.Dropped[DropSocketBuffer]++
		p.release()
		return
	}
	h.c.Packets++
	h.c.Bytes += uint64(n)
}
