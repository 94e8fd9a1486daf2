// Package natlab is an in-process emulated IPv4 network for testing Parley:
// hosts with UDP sockets, lossy, delayed, rate-limited links, and RFC 4787
// NAT boxes between private networks and an "internet".
//
// Parley's code opens sockets only through a PacketListener, the one method
// of *net.ListenConfig. A *Host has that method too, so the transport, the
// peer daemon and whole-system demos run on natlab unchanged: they see
// net.PacketConns that behave like UDP sockets.
//
// # The model
//
// A World holds everything and owns the randomness and the one goroutine.
//
// A Network is an IPv4 segment with a prefix. Hosts and NATs attach to it
// with an address from the prefix (.1 is the gateway's, others are handed
// out from .2 up). It delivers each datagram to the attachment owning the
// destination address, or, for a destination outside its prefix, to its
// gateway. Networks are separate address spaces, so two LANs may both be
// 192.168.1.0/24.
//
// A Host has one address on one Network and opens Conns (UDP sockets) with
// ListenPacket. Its attachment has two Links: up (host → network) and down
// (network → host). A host can be renumbered (SetAddr) or moved to another
// network (MoveTo) while its Conns stay open.
//
// A Link is one direction of an attachment: MTU, a transmitter of a given
// Rate behind a drop-tail queue of QueueBytes, random Loss, propagation
// Delay with Jitter, Duplicate and Reorder probabilities. The zero Link is
// ideal. See Link for the exact order of these steps.
//
// A NAT joins an Inside network (where it is the gateway) to an Outside one
// (where it has its PublicAddr). It maps and filters per RFC 4787 with
// endpoint-independent, address-dependent or address-and-port-dependent
// behaviour, preserves ports when it can, expires idle mappings, and can
// hairpin. With BlockUDP it is a firewall that drops all UDP.
//
// A datagram from alice behind NAT a to a server on the internet goes:
//
//	alice Conn.WriteTo → alice up Link → lan (to its gateway) → NAT a
//	(new source: public address and mapped port) → NAT a's outside up Link
//	→ internet → server down Link → server Conn's receive queue → ReadFrom
//
// Every hop that drops a datagram counts it by DropReason; World.Stats,
// Host.Stats and NAT.Stats return snapshots.
//
// # Time
//
// natlab uses only the time package: time.Now, timers and time.AfterFunc.
// Outside a testing/synctest bubble that is real time. Inside one, with the
// World created in the bubble, it is the bubble's virtual clock: a 200 ms
// round trip completes at once and takes exactly 200 ms of virtual time.
//
// Datagrams waiting on a link (delay, serialization) sit in one heap ordered
// by arrival time; the World's goroutine sleeps on one timer set to the
// earliest and passes due datagrams on to their next hop. A datagram whose
// link adds no delay moves on at once on the sender's goroutine, so an
// ideal path costs no goroutine switch. Link timings are computed from each
// datagram's own arrival time, so under synctest they are exact to the
// nanosecond, and in real time a late timer does not add up along a path.
// In real time datagrams arrive late by the timer's slack, up to about a
// millisecond on an idle Linux machine, and a fast link's datagrams then
// arrive in bursts; tests that measure RTTs finely belong in synctest.
//
// # Determinism
//
// All randomness (loss, jitter, duplication, reordering, ephemeral and NAT
// ports) comes from one generator seeded by Config.Seed and guarded by the
// World's mutex. A test that drives the World from one goroutine gets the
// same drops and ports for the same seed every run. Several goroutines
// sending at once draw in the order the scheduler runs them.
//
// # Performance
//
// Datagrams live in pooled buffers, the heap stores values, queues are
// computed from the transmitter's busy time rather than kept as lists, and
// Conn.ReadFromUDPAddrPort and WriteToUDPAddrPort allocate nothing, so
// steady-state traffic allocates nothing. All state is guarded by one
// mutex per World (and one per Conn for its receive queue): simple and
// deterministic, at the cost of not scaling past one core per World.
package natlab
