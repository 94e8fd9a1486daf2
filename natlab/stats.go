package natlab

import (
	"fmt"
	"strings"
)

// A DropReason says why the lab discarded a datagram.
type DropReason uint8

const (
	// DropLoss: the link's random loss (Link.Loss) took it.
	DropLoss DropReason = iota
	// DropQueueFull: the link's drop-tail queue (Link.QueueBytes) was full.
	DropQueueFull
	// DropMTU: the datagram (payload + 28 header bytes) exceeded Link.MTU.
	// IPv4 with DF set, as UDP transports send, drops such packets.
	DropMTU
	// DropNoRoute: no host or gateway on the network owns the destination,
	// or the destination host has moved away.
	DropNoRoute
	// DropFiltered: a NAT's filtering refused an inbound datagram, or no
	// live mapping exists for its port (never created, expired, rebound).
	DropFiltered
	// DropNoHairpin: an inside host sent to its own NAT's public address and
	// the NAT does not hairpin.
	DropNoHairpin
	// DropFirewall: a NAT with BlockUDP set dropped it.
	DropFirewall
	// DropSocketBuffer: the receiving Conn's queue was full (the kernel's
	// SO_RCVBUF overflow).
	DropSocketBuffer
	// DropNoListener: no Conn is bound to the destination port (where a
	// kernel would answer with ICMP port unreachable; the lab stays silent).
	DropNoListener

	numDropReasons
)

var dropNames = [numDropReasons]string{
	DropLoss:         "loss",
	DropQueueFull:    "queue-full",
	DropMTU:          "mtu",
	DropNoRoute:      "no-route",
	DropFiltered:     "filtered",
	DropNoHairpin:    "no-hairpin",
	DropFirewall:     "firewall",
	DropSocketBuffer: "socket-buffer",
	DropNoListener:   "no-listener",
}

func (r DropReason) String() string {
	if r < numDropReasons {
		return dropNames[r]
	}
	return fmt.Sprintf("DropReason(%d)", uint8(r))
}

// Counters count what one component (a link direction, a network, a host's
// sockets, a NAT's translation) passed on and what it dropped.
type Counters struct {
	Packets uint64 // datagrams passed on (for a host: delivered to sockets)
	Bytes   uint64 // their UDP payload bytes
	// Dropped counts datagrams discarded here, indexed by DropReason.
	Dropped [numDropReasons]uint64
}

// Drops returns the number of datagrams dropped here for any reason.
func (c Counters) Drops() uint64 {
	var n uint64
	for _, d := range c.Dropped {
		n += d
	}
	return n
}

// Add adds o's counts to c.
func (c *Counters) Add(o Counters) {
	c.Packets += o.Packets
	c.Bytes += o.Bytes
	for i, d := range o.Dropped {
		c.Dropped[i] += d
	}
}

func (c Counters) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%d pkts %d bytes", c.Packets, c.Bytes)
	for r, d := range c.Dropped {
		if d != 0 {
			fmt.Fprintf(&b, " %s=%d", DropReason(r), d)
		}
	}
	return b.String()
}

func (c *Counters) pass(p *packet) {
	c.Packets++
	c.Bytes += uint64(len(p.b))
}

// LinkStats counts the two directions of an attachment to a network.
type LinkStats struct {
	Up   Counters // from the node to the network
	Down Counters // from the network to the node
}

// HostStats is a snapshot of one host's counters.
type HostStats struct {
	Link    LinkStats
	Sockets Counters // delivered to Conns, and drops at the host
}

// NATStats is a snapshot of one NAT's counters.
type NATStats struct {
	Inside  LinkStats // attachment to the inside network (an ideal link)
	Outside LinkStats // attachment to the outside network (NATConfig.Link)
	NAT     Counters  // datagrams translated either way, and drops by the NAT
	// Mappings is the number of mappings in the table, counting expired
	// ones not yet swept.
	Mappings int
}

// Stats is a snapshot of every counter in a World, keyed by name.
type Stats struct {
	Hosts    map[string]HostStats
	NATs     map[string]NATStats
	Networks map[string]Counters // routed datagrams and DropNoRoute
}

// Total returns the sum of all drops in the World by reason, with Packets
// and Bytes counting the datagrams delivered to sockets.
func (s Stats) Total() Counters {
	var t Counters
	for _, h := range s.Hosts {
		t.Add(h.Sockets)
		for i, d := range h.Link.Up.Dropped {
			t.Dropped[i] += d + h.Link.Down.Dropped[i]
		}
	}
	for _, n := range s.NATs {
		for i := range t.Dropped {
			t.Dropped[i] += n.NAT.Dropped[i] +
				n.Inside.Up.Dropped[i] + n.Inside.Down.Dropped[i] +
				n.Outside.Up.Dropped[i] + n.Outside.Down.Dropped[i]
		}
	}
	for _, c := range s.Networks {
		for i, d := range c.Dropped {
			t.Dropped[i] += d
		}
	}
	return t
}
