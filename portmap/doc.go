// Package portmap asks the home router in front of this machine to
// forward a UDP port from its public address: a port mapping, which gives
// a peer behind a NAT an address that anyone on the internet can reach
// unsolicited. Parley offers it as a candidate beside the host addresses
// and the STUN reflexive address (docs/protocol.md, "Port mappings").
//
// Three protocols are spoken, each as its RFC or specification says, in
// this order of preference:
//
//   - PCP, the Port Control Protocol (RFC 6887): a MAP request with a
//     random nonce that identifies the mapping across renewals and its
//     deletion.
//   - NAT-PMP (RFC 6886), PCP's predecessor, on the same UDP port 5351.
//     A NAT-PMP-only router answers a PCP request with "unsupported
//     version", and the client falls back to NAT-PMP (RFC 6887 §9).
//   - UPnP IGD: an SSDP search (multicast, and unicast to the gateway),
//     the device description, and SOAP actions on its WANIPConnection:2,
//     WANIPConnection:1 or WANPPPConnection:1 service.
//
// # Use
//
//	c := portmap.New(portmap.Config{Logger: log})
//	m, err := c.Map(ctx, localPort) // m.External: the public address to announce
//	...
//	m, err = c.Renew(ctx)           // at m.RenewAt; External may change
//	...
//	<-c.Changed()                   // the router restarted; c mapped again
//	m, ok := c.Current()            // External may have changed
//	...
//	err = c.Close(ctx)              // deletes the mapping
//
// Map probes the gateway for all the protocols at once, without creating
// anything on it (a PCP ANNOUNCE, a NAT-PMP external address request, an
// SSDP search), and maps with the first in order of preference that
// answered. The gateway is one hop away, so the waits are short: a
// gateway that offers nothing is known within about a second (at once
// for PCP and NAT-PMP when it answers ICMP port unreachable). The
// protocol that worked is remembered, so a renewal is a single request.
//
// A mapping lives for the lifetime the gateway grants (two hours asked by
// default) and should be renewed at half of it, Mapping.RenewAt; a
// renewal asks for the same external port (PCP: with the same nonce).
// Close deletes it: PCP and NAT-PMP with a lifetime of 0, UPnP with
// DeletePortMapping. UPnP does not say what lease it granted, so the
// client takes the one it asked for; a router that takes only permanent
// UPnP leases gets one, renewed and deleted the same way.
//
// The client speaks to its gateway only: answers from elsewhere are
// ignored, and a UPnP device that names another host in its URLs is
// asked at the gateway's address anyway. Every parser takes any input
// without panicking; each has a fuzz target.
//
// # Router restarts
//
// A router that restarts loses its mappings, and one whose public address
// changes has them on an address that is no longer its own. PCP and
// NAT-PMP servers put in every answer the seconds since they last lost
// their mappings (for PCP, or changed address), the epoch time; the client
// checks each against the one before (RFC 6887 §8.5, RFC 6886 §3.6) and
// takes a count that has fallen behind its own clock for a loss. It also listens on UDP port 5350 for
// what such a server multicasts when it starts or changes its address: a
// PCP ANNOUNCE (RFC 6887 §14.1.3) or a NAT-PMP address announcement (RFC
// 6886 §3.2.1), from the gateway only. On a loss told by an announcement
// the client maps again by itself, after a random wait of up to 2 s, and
// says so on Changed; on one told by the answer to Renew, that renewal has
// mapped again, and Changed says so too. Without the socket (port 5350
// taken and not shared, no multicast) a restart is found at the next
// renewal. The RFCs' rules leave a few seconds of slack, so a router that
// restarts within seconds of its previous start may go unnoticed until
// the renewal, which maps again in any case (a renewal asks for the
// mapping whether or not the router still has it). UPnP mappings are
// found lost at the renewal only: the client does not watch the SSDP
// announcements (BOOTID.UPNP.ORG) of a restarted IGD.
//
// # IPv6
//
// PCP also runs over IPv6, when Config.Gateway is an IPv6 address: the
// client asks for a mapping of the IPv6 address it sends from, which on a
// router without IPv6 NAT is a firewall pinhole (External is then that
// address and port), and hears announcements on ff02::1 port 5350, from
// the gateway or any link-local address (routers multicast from theirs).
// NAT-PMP and UPnP IGD (whose IPv6 pinholes are a separate service) are
// IPv4 only, and DefaultGateway finds the IPv4 default gateway only.
//
// The tests run the client against miniupnpd, the daemon of many home
// routers, on a real Linux NAT router built by package lab, and check
// that a host on the lab's internet reaches the mapped port unsolicited,
// and no longer after Close; that after miniupnpd restarts the client maps
// again, from its ANNOUNCE or at the next renewal; and the same over IPv6,
// where the mapping is a pinhole in the router's IPv6 firewall.
package portmap
