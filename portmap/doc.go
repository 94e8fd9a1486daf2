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
// IPv4 only. The client does not listen for the announcements a router
// multicasts when it restarts or changes address (PCP ANNOUNCE, NAT-PMP
// address changes): a lost mapping is found at the next renewal.
//
// The tests run the client against miniupnpd, the daemon of many home
// routers, on a real Linux NAT router built by package lab, and check
// that a host on the lab's internet reaches the mapped port unsolicited,
// and no longer after Close.
package portmap
