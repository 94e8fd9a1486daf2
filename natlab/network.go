package natlab

import (
	"fmt"
	"net/netip"
	"time"
)

// A Network is one IPv4 segment: hosts and NATs attach to it with an
// address from its prefix. It delivers a datagram to the attachment that
// owns the destination address; a destination outside the prefix goes to
// the network's gateway, the NAT whose Inside it is, if it has one.
//
// Networks are independent address spaces: two LANs may use the same
// prefix, as two homes both using 192.168.1.0/24 do.
type Network struct {
	w      *World
	name   string
	prefix netip.Prefix

	// Protected by World.mu.
	ifaces  map[netip.Addr]*iface
	gateway *iface // the inside of the NAT serving this network, or nil
	next    netip.Addr
	c       Counters
}

// An iface attaches a node to a Network with one address, through two pipes.
type iface struct {
	node node
	net  *Network   // protected by World.mu
	addr netip.Addr // protected by World.mu
	up   pipe       // node → network
	down pipe       // network → node
}

// A node is what sits at the end of an iface: a Host, or a side of a NAT.
type node interface {
	// receiveLocked takes ownership of p, arriving at time now.
	receiveLocked(w *World, p *packet, now time.Duration)
}

func newIface(n node, up, down Link) *iface {
	ifc := &iface{node: n}
	ifc.up.ifc, ifc.up.up = ifc, true
	ifc.down.ifc = ifc
	ifc.up.setLink(up)
	ifc.down.setLink(down)
	return ifc
}

// NewNetwork adds a network for the IPv4 prefix p (at most /30); its name
// must be unique among networks. Hosts and
// NAT outsides get addresses from .2 upwards in order of attachment; .1 is
// kept for the gateway of a NAT whose Inside this is.
func (w *World) NewNetwork(name string, p netip.Prefix) *Network {
	if !p.IsValid() || !p.Addr().Is4() || p.Bits() > 30 {
		panic(fmt.Sprintf("natlab: network %q: prefix %v is not an IPv4 prefix of /30 or shorter", name, p))
	}
	p = p.Masked()
	n := &Network{
		w:      w,
		name:   name,
		prefix: p,
		ifaces: make(map[netip.Addr]*iface),
		next:   p.Addr().Next().Next(),
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, o := range w.nets {
		if o.name == name {
			panic(fmt.Sprintf("natlab: network name %q already used", name))
		}
	}
	w.nets = append(w.nets, n)
	return n
}

// Name returns the network's name.
func (n *Network) Name() string { return n.name }

// Prefix returns the network's prefix.
func (n *Network) Prefix() netip.Prefix { return n.prefix }

// gatewayAddr is the address a NAT takes on its inside network.
func (n *Network) gatewayAddr() netip.Addr { return n.prefix.Addr().Next() }

// usable reports whether a can be given to an attachment: inside the prefix
// and neither its network nor its broadcast address.
func (n *Network) usable(a netip.Addr) bool {
	return n.prefix.Contains(a) && a != n.prefix.Addr() && n.prefix.Contains(a.Next())
}

// allocLocked returns a free address, searching upward from the last one
// handed out and wrapping once.
func (n *Network) allocLocked() netip.Addr {
	start := n.next
	for a := start; ; {
		if n.usable(a) && a != n.gatewayAddr() && n.ifaces[a] == nil {
			n.next = a.Next()
			return a
		}
		a = a.Next()
		if !n.prefix.Contains(a) {
			a = n.prefix.Addr()
		}
		if a == start {
			panic(fmt.Sprintf("natlab: network %q has no free address", n.name))
		}
	}
}

func (n *Network) attachLocked(ifc *iface, a netip.Addr) {
	ifc.net, ifc.addr = n, a
	n.ifaces[a] = ifc
}

func (n *Network) detachLocked(ifc *iface) {
	if n.ifaces[ifc.addr] == ifc {
		delete(n.ifaces, ifc.addr)
	}
}

// routeLocked delivers p, sent onto the network by from at time now.
func (n *Network) routeLocked(w *World, p *packet, from *iface, now time.Duration) {
	dst := p.dst.Addr()
	to := n.ifaces[dst]
	if to == nil && !n.prefix.Contains(dst) {
		to = n.gateway
	}
	if to == nil || to == from {
		// A gateway never sends back out of itself: no routing loops.
		n.c.Dropped[DropNoRoute]++
		p.release()
		return
	}
	n.c.pass(p)
	to.down.sendLocked(w, p, now)
}
