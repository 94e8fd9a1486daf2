package natlab

import (
	"fmt"
	"net/netip"
	"time"
)

// A Behavior is one of RFC 4787's three classes of NAT mapping (§4.1) or
// filtering (§5) behaviour. The zero value is EndpointIndependent.
type Behavior uint8

const (
	// EndpointIndependent: as mapping, one external port per internal
	// endpoint whatever the destination (RFC 4787 REQ-1 asks for this); as
	// filtering, any external endpoint may send to a mapped port.
	EndpointIndependent Behavior = iota
	// AddressDependent: as mapping, one external port per internal endpoint
	// and destination IP; as filtering, only IPs the internal endpoint has
	// sent to may send back, from any port.
	AddressDependent
	// AddressAndPortDependent: as mapping, one external port per internal
	// endpoint and destination IP:port (a "symmetric NAT"); as filtering,
	// only the exact IP:port sent to may send back.
	AddressAndPortDependent
)

func (b Behavior) String() string {
	switch b {
	case EndpointIndependent:
		return "EndpointIndependent"
	case AddressDependent:
		return "AddressDependent"
	case AddressAndPortDependent:
		return "AddressAndPortDependent"
	}
	return fmt.Sprintf("Behavior(%d)", uint8(b))
}

// key reduces a remote endpoint to what the behaviour distinguishes.
func (b Behavior) key(remote netip.AddrPort) netip.AddrPort {
	switch b {
	case EndpointIndependent:
		return netip.AddrPort{}
	case AddressDependent:
		return netip.AddrPortFrom(remote.Addr(), 0)
	}
	return remote
}

// DefaultMappingTimeout is the mapping timeout when
// NATConfig.MappingTimeout is zero: RFC 4787 REQ-5's two-minute minimum.
const DefaultMappingTimeout = 2 * time.Minute

// NAT ports are drawn from [natPortLow, 65535] when the internal port
// cannot be preserved.
const natPortLow = 1024

// sweepEvery is how many new mappings a NAT creates between sweeps of its
// table for expired mappings.
const sweepEvery = 256

// NATConfig configures a NAT. Inside and Outside are required; the zero
// value of every other field is a full-cone NAT (endpoint-independent
// mapping and filtering) with a two-minute timeout and no hairpinning.
type NATConfig struct {
	Inside  *Network // the private side; the NAT becomes its gateway, .1
	Outside *Network // the public side, where the NAT gets its PublicAddr

	Mapping   Behavior
	Filtering Behavior

	// MappingTimeout is how long a mapping lives after the last datagram
	// that refreshed it; zero means DefaultMappingTimeout. Outbound
	// datagrams always refresh (RFC 4787 REQ-6).
	MappingTimeout time.Duration
	// InboundRefresh makes inbound datagrams refresh mappings too, which
	// RFC 4787 REQ-6 allows; by default they do not, so a peer that only
	// receives loses its mapping, as behind many real NATs.
	InboundRefresh bool

	// Hairpin lets an inside host reach another inside host through the
	// NAT's public address (RFC 4787 REQ-9); the receiver sees the sender's
	// external address. Without it such datagrams are dropped
	// (DropNoHairpin).
	Hairpin bool

	// BlockUDP makes the NAT a firewall that drops all UDP both ways
	// (DropFirewall), as some corporate networks do.
	BlockUDP bool

	// Link is the NAT's attachment to Outside in both directions, e.g. a
	// household's access link shared by every host behind it. The zero
	// Link is ideal. The inside attachment is always ideal.
	Link Link
}

// A NAT joins an inside network to an outside one, translating the source
// of outbound datagrams to its public address and a mapped port, and the
// destination of inbound datagrams back, per RFC 4787.
//
// Port assignment preserves the internal port when no live mapping holds
// it on the public side (RFC 4787 §4.2.1 port preservation), and otherwise
// picks a free port at random from 1024–65535. Mappings expire lazily: a
// datagram that finds its mapping older than the timeout treats it as gone.
type NAT struct {
	w       *World
	name    string
	cfg     NATConfig
	timeout time.Duration
	inside  *iface // node is (*natInside)(n)
	outside *iface // node is (*natOutside)(n)

	// Protected by World.mu.
	byKey   map[mappingKey]*mapping
	byPort  map[uint16]*mapping
	retired map[uint16]bool // ports of the mappings dropped by the last Rebind
	created int             // mappings created, to pace sweeps
	c       Counters
}

type mappingKey struct {
	internal netip.AddrPort
	remote   netip.AddrPort // reduced by NATConfig.Mapping
}

// A mapping binds an internal endpoint to an external port.
type mapping struct {
	key      mappingKey
	internal netip.AddrPort
	port     uint16
	last     time.Duration // last refresh
	// allowed holds the remote endpoints (reduced by NATConfig.Filtering)
	// the internal endpoint has sent to through this mapping; nil with
	// endpoint-independent filtering.
	allowed map[netip.AddrPort]bool
}

// NewNAT adds a NAT between cfg.Inside and cfg.Outside. It takes .1 on
// Inside, becoming its gateway, and the next free address on Outside. It
// panics if Inside already has a gateway or either network is missing.
func (w *World) NewNAT(name string, cfg NATConfig) *NAT {
	if cfg.Inside == nil || cfg.Outside == nil || cfg.Inside == cfg.Outside {
		panic(fmt.Sprintf("natlab: NAT %q needs two distinct networks", name))
	}
	n := &NAT{
		w:       w,
		name:    name,
		cfg:     cfg,
		timeout: cfg.MappingTimeout,
		byKey:   make(map[mappingKey]*mapping),
		byPort:  make(map[uint16]*mapping),
	}
	if n.timeout <= 0 {
		n.timeout = DefaultMappingTimeout
	}
	n.inside = newIface((*natInside)(n), idealLink, idealLink)
	n.outside = newIface((*natOutside)(n), cfg.Link, cfg.Link)

	w.mu.Lock()
	defer w.mu.Unlock()
	in, out := cfg.Inside, cfg.Outside
	if in.gateway != nil {
		panic(fmt.Sprintf("natlab: NAT %q: network %q already has a gateway", name, in.name))
	}
	if in.ifaces[in.gatewayAddr()] != nil {
		panic(fmt.Sprintf("natlab: NAT %q: gateway address %v is taken", name, in.gatewayAddr()))
	}
	w.claimNameLocked("NAT", name)
	in.attachLocked(n.inside, in.gatewayAddr())
	in.gateway = n.inside
	out.attachLocked(n.outside, out.allocLocked())
	w.nats = append(w.nats, n)
	return n
}

// Name returns the NAT's name.
func (n *NAT) Name() string { return n.name }

func (n *NAT) String() string { return n.name }

// PublicAddr returns the NAT's address on its outside network.
func (n *NAT) PublicAddr() netip.Addr {
	n.w.mu.Lock()
	defer n.w.mu.Unlock()
	return n.outside.addr
}

// InsideAddr returns the NAT's address on its inside network.
func (n *NAT) InsideAddr() netip.Addr {
	n.w.mu.Lock()
	defer n.w.mu.Unlock()
	return n.inside.addr
}

// SetLink changes the NAT's attachment to its outside network, both ways.
func (n *NAT) SetLink(l Link) {
	n.w.mu.Lock()
	defer n.w.mu.Unlock()
	n.outside.up.setLink(l)
	n.outside.down.setLink(l)
}

// Rebind drops every mapping, as a NAT reboot or a carrier-grade NAT's
// rebinding does: the next outbound datagram of each flow gets a new
// mapping, on a port different from the one it had, and datagrams sent to
// the old ports are filtered.
func (n *NAT) Rebind() {
	n.w.mu.Lock()
	defer n.w.mu.Unlock()
	n.retired = make(map[uint16]bool, len(n.byPort))
	for port := range n.byPort {
		n.retired[port] = true
	}
	clear(n.byKey)
	clear(n.byPort)
}

// Mappings returns the number of live mappings.
func (n *NAT) Mappings() int {
	n.w.mu.Lock()
	defer n.w.mu.Unlock()
	now := n.w.now()
	live := 0
	for _, m := range n.byPort {
		if !n.expired(m, now) {
			live++
		}
	}
	return live
}

// Stats returns a snapshot of the NAT's counters.
func (n *NAT) Stats() NATStats {
	n.w.mu.Lock()
	defer n.w.mu.Unlock()
	return n.statsLocked()
}

func (n *NAT) statsLocked() NATStats {
	return NATStats{
		Inside:   LinkStats{Up: n.inside.up.c, Down: n.inside.down.c},
		Outside:  LinkStats{Up: n.outside.up.c, Down: n.outside.down.c},
		NAT:      n.c,
		Mappings: len(n.byPort),
	}
}

func (n *NAT) expired(m *mapping, now time.Duration) bool {
	return now-m.last > n.timeout
}

func (n *NAT) drop(p *packet, r DropReason) {
	n.c.Dropped[r]++
	p.release()
}

// natInside and natOutside are the NAT seen from each of its networks.
type (
	natInside  NAT
	natOutside NAT
)

// receiveLocked translates an outbound datagram (RFC 4787 §4).
func (ni *natInside) receiveLocked(w *World, p *packet, now time.Duration) {
	n := (*NAT)(ni)
	if n.cfg.BlockUDP {
		n.drop(p, DropFirewall)
		return
	}
	if p.dst.Addr() == n.inside.addr {
		n.drop(p, DropNoListener) // the NAT itself runs no UDP service
		return
	}
	m := n.outboundMappingLocked(p.src, p.dst, now)
	if m == nil {
		n.drop(p, DropFiltered) // every public port is in use
		return
	}
	p.src = netip.AddrPortFrom(n.outside.addr, m.port)
	if p.dst.Addr() == n.outside.addr {
		if !n.cfg.Hairpin {
			n.drop(p, DropNoHairpin)
			return
		}
		// RFC 4787 REQ-9: hairpinned datagrams carry the sender's external
		// address and pass the receiver's filtering like any inbound one.
		n.inboundLocked(w, p, now)
		return
	}
	n.c.pass(p)
	n.outside.up.sendLocked(w, p, now)
}

// receiveLocked takes a datagram arriving from the outside network.
func (no *natOutside) receiveLocked(w *World, p *packet, now time.Duration) {
	n := (*NAT)(no)
	if n.cfg.BlockUDP {
		n.drop(p, DropFirewall)
		return
	}
	n.inboundLocked(w, p, now)
}

// inboundLocked translates a datagram addressed to the public address
// (RFC 4787 §5).
func (n *NAT) inboundLocked(w *World, p *packet, now time.Duration) {
	m := n.byPort[p.dst.Port()]
	if m == nil {
		n.drop(p, DropFiltered)
		return
	}
	if n.expired(m, now) {
		n.removeLocked(m)
		n.drop(p, DropFiltered)
		return
	}
	if n.cfg.Filtering != EndpointIndependent && !m.allowed[n.cfg.Filtering.key(p.src)] {
		n.drop(p, DropFiltered)
		return
	}
	if n.cfg.InboundRefresh {
		m.last = now
	}
	p.dst = m.internal
	n.c.pass(p)
	n.inside.up.sendLocked(w, p, now)
}

// outboundMappingLocked finds or creates the mapping for a datagram from src
// to dst, refreshes it and lets dst answer through it. It returns nil if no
// public port is free.
func (n *NAT) outboundMappingLocked(src, dst netip.AddrPort, now time.Duration) *mapping {
	key := mappingKey{internal: src, remote: n.cfg.Mapping.key(dst)}
	m := n.byKey[key]
	if m != nil && n.expired(m, now) {
		n.removeLocked(m)
		m = nil
	}
	if m == nil {
		port, ok := n.allocPortLocked(src.Port(), now)
		if !ok {
			return nil
		}
		m = &mapping{key: key, internal: src, port: port}
		if n.cfg.Filtering != EndpointIndependent {
			m.allowed = make(map[netip.AddrPort]bool)
		}
		n.byKey[key] = m
		n.byPort[port] = m
		if n.created++; n.created%sweepEvery == 0 {
			n.sweepLocked(now)
		}
	}
	m.last = now
	if m.allowed != nil {
		m.allowed[n.cfg.Filtering.key(dst)] = true
	}
	return m
}

// allocPortLocked picks the public port for a new mapping: want if free
// (port preservation), else a random free port.
func (n *NAT) allocPortLocked(want uint16, now time.Duration) (uint16, bool) {
	if want != 0 && n.portFreeLocked(want, now) {
		return want, true
	}
	const span = 65536 - natPortLow
	start := n.w.rand.IntN(span)
	for i := range span {
		port := uint16(natPortLow + (start+i)%span)
		if n.portFreeLocked(port, now) {
			return port, true
		}
	}
	return 0, false
}

func (n *NAT) portFreeLocked(port uint16, now time.Duration) bool {
	if n.retired[port] {
		return false
	}
	m := n.byPort[port]
	if m == nil {
		return true
	}
	if n.expired(m, now) {
		n.removeLocked(m)
		return true
	}
	return false
}

func (n *NAT) removeLocked(m *mapping) {
	if n.byKey[m.key] == m {
		delete(n.byKey, m.key)
	}
	if n.byPort[m.port] == m {
		delete(n.byPort, m.port)
	}
}

// sweepLocked removes expired mappings so the table does not grow with
// every flow ever seen.
func (n *NAT) sweepLocked(now time.Duration) {
	for _, m := range n.byPort {
		if n.expired(m, now) {
			n.removeLocked(m)
		}
	}
}
