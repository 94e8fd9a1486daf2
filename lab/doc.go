// Package lab builds real-kernel NAT labs on one Linux machine: network
// namespaces joined by veth pairs, with nftables NAT routers and the
// kernel's own connection tracking, to run real processes (the parley
// daemon, and until it exists the tiny prober in lab/cmd/labpeer) behind
// real NATs. It complements natlab, the in-process emulated network: natlab
// is fast, deterministic and models delay and loss; lab shows what Linux
// actually does.
//
// # Building a lab
//
//	l, err := lab.New(ctx, lab.Config{Name: "t1"}) // or lab.NewTest(t, cfg)
//	defer l.Close()
//	srv, err := l.AddPublicHost("server")      // 203.0.113.10
//	a, err := l.AddNATHost("alice", lab.EIM)    // 10.0.1.2 behind 203.0.113.11
//	b, err := l.AddNATHost("bob", lab.Symmetric)
//	cmd := a.Command(ctx, "/path/to/parley", "up") // runs inside alice's namespace
//	conn, err := srv.ListenPacket("udp4", ":3478") // an in-process socket in a namespace
//	err = a.Run(func() error { ... })              // Go code on a thread in the namespace
//	flows, err := a.Router().Conntrack(ctx)        // the NAT's mappings
//
// Every call that creates something returns an error; nothing is created
// outside the lab's namespaces, and every address (203.0.113.0/24, a
// documentation prefix, and 10.0.N.0/24) exists only inside them.
//
// # Topology
//
// The "internet" is a router namespace, not a bridge: it holds 203.0.113.1
// on every link and a /32 route to each public address, so a packet between
// two public addresses crosses one routed hop and has its TTL decremented,
// as on the real internet. That hop is what lets a TTL-limited "opener"
// probe (see below) leave its own NAT and die before the far one. Each
// public host or NAT router has one /32 address on its link, a link route
// to 203.0.113.1 and a default route through it. Each NAT host has its own
// LAN, 10.0.N.0/24, with its router at .1 and itself at .2. Addresses are
// handed out in the order of the Add calls.
//
//	             namespace plab-NAME-PID-inet: the internet router, ip_forward=1
//	     p0: 203.0.113.1/32      p1: 203.0.113.1/32      p2: 203.0.113.1/32
//	     route .10/32 dev p0     route .11/32 dev p1     route .12/32 dev p2
//	           │ veth                  │ veth                  │ veth
//	eth0: 203.0.113.10/32   wan0: 203.0.113.11/32   wan0: 203.0.113.12/32
//	┌────────────────────┐  ┌────────────────────┐  ┌────────────────────┐
//	│ server             │  │ alice-r            │  │ bob-r              │
//	│ public host        │  │ NAT router, EIM:   │  │ NAT router, Sym.:  │
//	│ default via .1     │  │ nft masquerade     │  │ masquerade         │
//	└────────────────────┘  │ ip_forward=1       │  │   fully-random     │
//	                        │ lan0: 10.0.1.1/24  │  │ lan0: 10.0.2.1/24  │
//	                        └─────────┬──────────┘  └─────────┬──────────┘
//	                                  │ veth                  │ veth
//	                        eth0: 10.0.1.2/24       eth0: 10.0.2.2/24
//	                        ┌────────────────────┐  ┌────────────────────┐
//	                        │ alice              │  │ bob                │
//	                        │ default via .1     │  │ default via .1     │
//	                        └────────────────────┘  └────────────────────┘
//
// Namespaces are named NamePrefix + Config.Name + "-" + pid + "-" + node
// ("plab-t1-4242-alice-r"); interface names are short (eth0, wan0, lan0,
// pN) and live inside the namespaces. Every veth pair is created inside the
// namespaces (`ip -n A link add wan0 type veth peer name p3 netns B`), so
// the root namespace is never touched. Loopback is up everywhere.
//
// # NAT kinds and their rulesets
//
// Each NAT router loads one nftables table with `nft -f`. EIM, as a bare
// router (RouterConfig.Firewall false, the default):
//
//	table ip lab {
//		counter dropped {
//		}
//		chain postrouting {
//			type nat hook postrouting priority srcnat; policy accept;
//			oifname "wan0" masquerade
//		}
//		chain forward {
//			type filter hook forward priority filter; policy drop;
//			ct state established,related accept
//			iifname "lan0" oifname "wan0" accept
//		}
//	}
//
// Symmetric: the same with `oifname "wan0" masquerade fully-random` (nft's
// name for iptables' --random-fully): a random public port per flow.
//
// UDPBlocked: the EIM table with, first in the forward chain,
//
//	meta l4proto udp counter name "dropped" drop
//
// FullCone: the EIM table plus a "DMZ host" rule and its forward accept
// (HOST is the LAN host's address):
//
//	chain prerouting {
//		type nat hook prerouting priority dstnat; policy accept;
//		iifname "wan0" meta l4proto udp dnat to HOST
//	}
//	... in chain forward:  ct status dnat accept
//
// Firewall (RouterConfig.Firewall, or Config.FirewalledRouters for all)
// adds an input chain that drops unsolicited packets to the router itself,
// as home routers do:
//
//	chain input {
//		type filter hook input priority filter; policy accept;
//		iifname "wan0" ct state established,related accept
//		iifname "wan0" counter name "dropped" drop
//	}
//
// Router.Ruleset returns the exact text loaded; Router.Dropped reads the
// "dropped" counter.
//
// Measured the RFC 5780 way (one socket, reflectors at two addresses and a
// second port; TestNATMapping): EIM and FullCone keep the host's port
// (10.0.1.2:4000 → 203.0.113.12:4000 towards all three); Symmetric gives a
// new random port per destination (e.g. :43404, :4978, :10169); UDPBlocked
// lets no UDP through while TCP is masqueraded. Linux filtering is
// address-and-port-dependent for every kind but FullCone: only packets that
// match a conntrack entry's reply tuple get in.
//
// # Running the tests
//
//	sudo go test ./lab/          # about 12 s; every test under 4 s
//	sudo LAB_EXPERIMENT=1 go test -run Experiment -v ./lab/   # about 1 min
//
// They need root, iproute2 and nftables (.ci/run installs the packages).
// Without them they skip with the reason, unless CI=true, where they fail:
// see NewTest and Require. TestMain builds lab/cmd/labpeer once into a
// temporary directory. All traffic stays inside the namespaces the tests
// create.
//
// # Cleanup
//
// Close deletes every namespace the lab created, in reverse order; deleting
// a namespace deletes its veths (and their peers), its nftables table and
// its conntrack table. Close works after a failed setup, since each
// namespace is recorded before it is created, and may be called twice.
// NewTest registers it with t.Cleanup. A process still running in a
// namespace keeps the namespace alive after Close, unnamed: wait for your
// processes first. If a run crashes, the next New with the same Name
// sweeps away the namespaces whose pid is no longer alive; Sweep(ctx,
// NamePrefix) removes every lab namespace unconditionally.
//
// # Hole punching on Linux NATs
//
// The punch tests run two `labpeer punch` processes bound to port 4000.
// Each learns its reflexive address from a reflector on a public host; the
// test passes it to the other side and then orders the first packets
// deterministically by waiting on conntrack tables and drop counters.
// Probes carry a shared nonce (standing for Parley's authenticated
// probes). "Strict" accepts packets only from the signalled address; "any"
// accepts a probe with the right nonce from any address, answers it where
// it came from and probes that address back.
//
// The clash. A bare Linux router (no input firewall) that receives a probe
// for its own address and port with no matching entry passes it to its own
// UDP stack, which answers ICMP port unreachable; conntrack nevertheless
// confirms an entry for it. Observed in TestPunchClash, alice
// (203.0.113.11:4000) probes bob (203.0.113.12:4000) first:
//
//	bob-r:   udp 203.0.113.11:4000→203.0.113.12:4000 reply 203.0.113.12:4000→203.0.113.11:4000 unreplied
//
// Bob then probes alice. Masquerade wants to keep port 4000, but the reply
// tuple 203.0.113.11:4000→203.0.113.12:4000 is taken by that entry, so
// nf_nat picks a random port:
//
//	bob-r:   udp 10.0.2.2:4000→203.0.113.11:4000 reply 203.0.113.11:4000→203.0.113.12:39099 unreplied
//	alice-r: udp 203.0.113.12:39099→203.0.113.11:4000 reply 203.0.113.11:4000→203.0.113.12:39099 unreplied
//
// Alice's router expects bob at :4000, not :39099, so bob's probe ends in
// alice's router's own stack, leaving an entry there too, and alice's
// further probes keep hitting the entry on bob's router. Nothing reaches
// either host, in strict or in any mode: both fail. The entries are
// refreshed by every probe (the unreplied UDP timeout is 30 s), so retrying
// does not help either. This is not a timing corner: when both sides start
// probing "at the same moment" (TestSimultaneousExperiment, 15 trials
// each), the first probes cross in microseconds and the clash happens
// almost always: bare routers connected 1/15 (strict) and 0/15 (any).
// In each failed trial one of the two routers remapped, whichever
// received the other's probe first.
//
// What works, all asserted by tests:
//
//   - Firewalled routers (TestPunchFirewalled). A router that drops
//     unsolicited packets in its input chain drops them before conntrack
//     confirms the entry (confirmation is the last step of the input hook),
//     so no entry, no clash. Alice's early probes are lost, bob's first
//     probe opens the path, and both connect, even strict. Simultaneous
//     start: 15/15 (strict and any).
//   - Opener first (TestPunchOpenFirst), for bare routers. Each side first
//     sends one probe with IP TTL 2: it passes its own NAT, creating the
//     mapping (conntrack confirms at postrouting), and dies at the
//     internet router (ICMP time exceeded comes back and is harmless). Only
//     when both have opened do they probe for real; then whatever the order
//     of the real probes, each finds the other's mapping in place: bob's
//     mapping stays 203.0.113.12:4000 and both connect, even strict. In the
//     lab the TTL is exact; on the internet the hop count to the far NAT is
//     unknown, so a daemon would use a small TTL (2 or 3) and still fall
//     back to the any-source rule and the relay.
//   - Any-source acceptance (TestPunchPublicFirst). When one side is public
//     (or full cone), the clash on the NATed side shows as probes arriving
//     from an unexpected port: the public host probes 203.0.113.12:4000
//     first, alice's router then maps alice towards it as
//     203.0.113.12:1342 (another run: :51542). Strict ignores those probes
//     and fails; any-source answers them where they came from and connects.
//
// Who punches first. With bare routers, a plain "one side first" rule does
// not help: any full-TTL probe that reaches the far router before the far
// host has sent creates the clash (TestPunchClash is exactly "alice
// first"). It helps only in the form above: the first side opens with a
// short TTL and the second starts after hearing (through signalling) that
// it did.
//
// Symmetric NATs (TestPunchSymmetric, TestPunchSymmetricBoth). A host
// behind Symmetric gets a new random port towards its peer, different from
// the one the reflector saw (reflexive 203.0.113.12:43437, towards alice
// 203.0.113.12:45206). Towards plain EIM (Linux masquerade, whose filtering
// is address-and-port-dependent) the probe is dropped at the EIM router
// and the pair cannot connect, even with openers and any-source acceptance.
// Towards FullCone the probe gets in; the EIM side learns the symmetric
// side's real mapping from it and, accepting from any source, answers
// there: both connect. Strict fails. Symmetric to Symmetric never connects
// directly with these strategies: the baseline that relaying must beat.
//
// EIM to Symmetric does connect with a port sweep (node/sweep.go, seen in
// TestMatrix): the symmetric side sends only TTL-2 packets (openers, then
// probes), which make its mapping towards the EIM side's public port and
// die before the EIM router; the EIM side then pings every port of the
// symmetric side's public address from its one socket. The ping that hits
// the mapping is the mapping's reply direction and gets in; its pong gets
// back through the entry the ping made. The short TTL matters: a full-TTL
// probe from the symmetric side reaching the bare EIM router first leaves
// an entry there, and the sweep's ping to that very port clashes with it
// and is sent from another port (seen: the sweep ran twice and missed).
// Each ping of a sweep costs its sender 17–80 µs here, since the sending
// core also runs both routers' conntrack and NAT for it: a sweep sent in
// bursts starves the host's other paths (their keepalives and probes wait
// behind it), which is why node/sweep.go paces it.
//
// For the daemon: accept authenticated probes from any address and answer
// them where they came from; treat the address a probe arrives from as a
// new candidate; open with a short-TTL probe and exchange "opened" through
// signalling before probing in earnest; sweep a Symmetric side's ports
// from an EIM one; keep the relay path for Symmetric on both sides. Use
// unconnected UDP sockets: bare routers answer early probes with ICMP port
// unreachable, which conntrack forwards to the host as RELATED and which a
// connected socket would report as ECONNREFUSED.
package lab
