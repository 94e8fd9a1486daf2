package node

// Openers. A bare Linux NAT router that receives a probe for its own
// public address and port before its host has sent towards the prober
// creates a conntrack entry for it, and then maps its host's own probe to
// a new random port: the punch fails on both sides (package lab, "the
// clash"). So before probing in earnest each NATed side sends "openers":
// probes with a small IP TTL that pass its own NAT, creating the mapping,
// and die in the network before they reach the far NAT. Once both sides
// have opened, real probes find each other's mappings in place.
//
// The order (docs in doc.go, "Connecting"): the side answering an offer
// opens first, with TTL 2 only, then sends its answer; the offerer, on the
// answer, opens with TTL 2 and 3 (the far side has opened, so a TTL-3
// opener reaching the far NAT finds the mapping and does no harm), tells
// the answerer "opened" and probes; the answerer probes once it hears
// "opened" or the first probe, or after openerWait. A side with a public
// address has no NAT to open and sends no openers: its opener would reach
// the far NAT and cause the clash it is meant to avoid.
const (
	openerTTLFirst  = 2
	openerTTLSecond = 3
)
