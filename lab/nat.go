package lab

import (
	"fmt"
	"net/netip"
	"strconv"
	"strings"
)

// NATKind is the behaviour of a NAT router, in RFC 4787 terms as Linux
// conntrack gives it.
type NATKind int

const (
	// EIM is plain nftables masquerade. Linux keeps the host's source port
	// when it is free, so a socket has the same public port towards every
	// destination: endpoint-independent mapping. Filtering is
	// address-and-port-dependent: only replies to a conntrack entry get in.
	EIM NATKind = iota + 1

	// Symmetric is masquerade fully-random: every new flow, that is every
	// new destination address and port, gets a random public port
	// (address-and-port-dependent mapping).
	Symmetric

	// UDPBlocked forwards TCP (masqueraded) and drops every forwarded UDP
	// packet, in both directions.
	UDPBlocked

	// FullCone is EIM plus a "DMZ host" rule: unsolicited UDP to the
	// router's public address goes to the same port on the host, so any
	// source may reach a mapping (endpoint-independent filtering), as on
	// home routers with a DMZ host or a UPnP port mapping.
	FullCone
)

func (k NATKind) String() string {
	switch k {
	case EIM:
		return "EIM"
	case Symmetric:
		return "Symmetric"
	case UDPBlocked:
		return "UDPBlocked"
	case FullCone:
		return "FullCone"
	}
	return fmt.Sprintf("NATKind(%d)", int(k))
}

// RouterConfig configures a NAT router. The zero Kind is invalid.
type RouterConfig struct {
	Kind NATKind

	// Firewall makes the router drop unsolicited packets addressed to
	// itself from the internet (those that belong to no conntrack entry),
	// as home routers do. Without it the router is a bare Linux box: the
	// kernel answers such UDP packets with ICMP port unreachable, and
	// conntrack keeps an entry for each, which can clash with the host's
	// own later mapping (see the package comment, "The NAT clash").
	Firewall bool

	// UPnP prepares the router for a port-mapping daemon: the ruleset
	// gets the nftables table and chains miniupnpd fills with its
	// forwards (upnpTable), and the forward chain accepts what they
	// destination-NAT. Nothing runs until Router.StartUPnP starts
	// miniupnpd, which speaks UPnP IGD, NAT-PMP and PCP on the LAN.
	UPnP bool
}

// ruleset returns the nftables chains specific to k, with HOST standing for
// the host's address; ok is false for an unknown kind.
func (k NATKind) ruleset() (nat string, ok bool) {
	switch k {
	case EIM, UDPBlocked:
		return `	chain postrouting {
		type nat hook postrouting priority srcnat; policy accept;
		oifname "wan0" masquerade
	}
`, true
	case Symmetric:
		return `	chain postrouting {
		type nat hook postrouting priority srcnat; policy accept;
		oifname "wan0" masquerade fully-random
	}
`, true
	case FullCone:
		return `	chain prerouting {
		type nat hook prerouting priority dstnat; policy accept;
		iifname "wan0" meta l4proto udp dnat to HOST
	}
	chain postrouting {
		type nat hook postrouting priority srcnat; policy accept;
		oifname "wan0" masquerade
	}
`, true
	}
	return "", false
}

// rulesetFor returns the whole nftables ruleset of a router whose LAN host
// is host.
func (rc RouterConfig) rulesetFor(host netip.Addr) string {
	nat, _ := rc.Kind.ruleset()
	var b strings.Builder
	b.WriteString("table ip lab {\n\tcounter dropped {\n\t}\n")
	b.WriteString(strings.ReplaceAll(nat, "HOST", host.String()))
	b.WriteString(`	chain forward {
		type filter hook forward priority filter; policy drop;
`)
	if rc.Kind == UDPBlocked {
		b.WriteString("\t\tmeta l4proto udp counter name \"dropped\" drop\n")
	}
	b.WriteString("\t\tct state established,related accept\n")
	if rc.Kind == FullCone || rc.UPnP {
		// The only destination NAT is the DMZ rule or a port mapping.
		b.WriteString("\t\tct status dnat accept\n")
	}
	b.WriteString(`		iifname "lan0" oifname "wan0" accept
	}
`)
	if rc.Firewall {
		// Dropped before conntrack confirms the entry (that happens at the
		// end of the input hook), so no state is left behind.
		b.WriteString(`	chain input {
		type filter hook input priority filter; policy accept;
		iifname "wan0" ct state established,related accept
		iifname "wan0" counter name "dropped" drop
	}
`)
	}
	b.WriteString("}\n")
	if rc.UPnP {
		b.WriteString(upnpTable)
	}
	return b.String()
}

// Flow is one entry of a conntrack table: a connection as the router first
// saw it (Orig) and the packets it expects back (Reply). For a flow a NAT
// router masqueraded, Orig.Src is the host's address and port and
// Reply.Dst the public mapping it was given.
type Flow struct {
	Proto     string // "udp", "tcp", "icmp", ...
	Orig      Tuple
	Reply     Tuple
	Unreplied bool // no packet has been seen in the reply direction
}

// Tuple is one direction of a Flow. Ports are zero for protocols without
// them.
type Tuple struct {
	Src, Dst netip.AddrPort
}

// Mapped returns the public address and port the router gave the flow, and
// whether it translated the source at all.
func (f Flow) Mapped() (netip.AddrPort, bool) {
	return f.Reply.Dst, f.Reply.Dst != f.Orig.Src
}

func (f Flow) String() string {
	s := fmt.Sprintf("%s %v→%v reply %v→%v", f.Proto, f.Orig.Src, f.Orig.Dst, f.Reply.Src, f.Reply.Dst)
	if f.Unreplied {
		s += " unreplied"
	}
	return s
}

// ParseConntrack parses the text of /proc/net/nf_conntrack. It skips lines
// it does not understand and never panics.
func ParseConntrack(text string) []Flow {
	var flows []Flow
	for line := range strings.Lines(text) {
		if f, ok := parseFlow(line); ok {
			flows = append(flows, f)
		}
	}
	return flows
}

// parseFlow parses one line such as
//
//	ipv4 2 udp 17 29 src=203.0.113.10 dst=203.0.113.11 sport=4000 dport=4000 [UNREPLIED] src=203.0.113.11 dst=203.0.113.10 sport=4000 dport=4000 mark=0 zone=0 use=2
//
// where the first src/dst/sport/dport group is the original direction and
// the second the reply.
func parseFlow(line string) (Flow, bool) {
	fields := strings.Fields(line)
	if len(fields) < 3 || fields[0] != "ipv4" {
		return Flow{}, false
	}
	f := Flow{Proto: fields[2]}
	var addrs [4]netip.Addr // orig src, orig dst, reply src, reply dst
	var ports [4]uint16
	side := -1 // 0 for orig, 2 for reply
	for _, field := range fields[3:] {
		if field == "[UNREPLIED]" {
			f.Unreplied = true
			continue
		}
		key, val, ok := strings.Cut(field, "=")
		if !ok {
			continue
		}
		switch key {
		case "src":
			switch side {
			case -1:
				side = 0
			case 0:
				side = 2
			default:
				return Flow{}, false
			}
			a, err := netip.ParseAddr(val)
			if err != nil {
				return Flow{}, false
			}
			addrs[side] = a
		case "dst", "sport", "dport":
			if side < 0 {
				return Flow{}, false
			}
			switch key {
			case "dst":
				a, err := netip.ParseAddr(val)
				if err != nil {
					return Flow{}, false
				}
				addrs[side+1] = a
			case "sport", "dport":
				p, err := strconv.ParseUint(val, 10, 16)
				if err != nil {
					return Flow{}, false
				}
				i := side
				if key == "dport" {
					i++
				}
				ports[i] = uint16(p)
			}
		}
	}
	if side != 2 {
		return Flow{}, false
	}
	ap := func(i int) netip.AddrPort { return netip.AddrPortFrom(addrs[i], ports[i]) }
	f.Orig = Tuple{Src: ap(0), Dst: ap(1)}
	f.Reply = Tuple{Src: ap(2), Dst: ap(3)}
	return f, true
}
