// Package node is Parley's peer daemon (`parley up`): one device's identity,
// its one UDP socket, its link to the directory server and its sessions with
// contacts — one session per pair of devices, whichever path carries it.
//
// # State
//
// The data directory (Config.DataDir, $PARLEY_DATA, or
// $XDG_DATA_HOME/parley; mode 0700) holds identity.key, the device's
// Curve25519 private key in base64 (0600; the daemon refuses a key others
// can read), and state.db, a SQLite database (0600) migrated by the
// numbered files in migrations/: the login token, the contact list with
// each device's last candidates and last working direct address, the
// supernodes seen, and the UDP port last bound. The cache is what lets a
// restarted daemon reach known contacts while the server is down.
//
// # Connecting
//
// To reach a contact's device the node sends an offer through the server
// (POST /v1/offers) with its candidates — host addresses and the STUN
// reflexive address — and gets an answer with the peer's. Both sides then
// probe each other's candidates at once with punch probes (probe.go):
// small packets authenticated by a key derived from the two devices'
// static keys, so only the peer can make or answer them. Sending a probe
// opens the sender's NAT mapping; an answered probe proves a path both
// ways. The offerer is the dialer. Beside its offer it sets up a relay
// channel (relay.go) and, right behind its ALLOCATE, sends the Noise
// handshake there with the first message as early data; the relay holds it
// until the peer has bound its side. When a probe is answered, the session
// moves onto that direct path (Session.UsePath); had the probe been
// answered first, the dialer would have dialled it directly. The other side
// accepts the session from wherever it comes.
//
// Linux NATs clash (see package lab): a probe arriving before the far side
// has sent creates a conntrack entry that makes the far router map the far
// side's own probe to a new, random port. So each NATed side first sends
// "openers" (opener.go), probes with IP TTL 2 or 3 that open its own NAT and
// die before the far one, and signalling orders the exchange:
//
//	offerer                        server                       answerer
//	offer(candidates) ───────────────▶──────────────────────────────▶
//	                                          openers, TTL 2 ──▶ (die)
//	◀────────────────────────────────◀──────────── answer(candidates)
//	openers, TTL 2 and 3 ──▶ (die)
//	"opened" (an answer to the answer) ──▶──────────────────────────▶
//	probes ────────────────────────────────────────▶ answered at once
//	       ◀──── probes, after "opened", the first probe, or 1 s
//
// A side with a public address sends no openers (it has no NAT to open, and
// its opener would reach the far NAT). Probes are still accepted from any
// address and answered there, the address a probe came from becomes a
// candidate to probe, and the path is whatever address answered — not
// necessarily any that was announced.
//
// When the server is down, Connect skips the offer and probes the cached
// candidates and last direct address; the side that connects dials.
//
// Each session's keepalives (the transport's PINGs) hold the NAT mappings.
// The node re-checks its reflexive address every Config.RefreshInterval;
// when the mapping changed (rebinding) it reports the new candidates and
// re-punches with every peer it has a session with, moving each session to
// the path that answers (Session.MovePath).
//
// # Paths
//
// A session carries on across path changes (path.go). A watcher per session
// checks it every second: a path is stalled after 2 s (or 8 RTT) of sending
// without hearing back, or when nothing at all arrived for the keepalive
// period plus 5 s; a Ping unanswered within a few RTTs confirms it dead.
// Then the side with the smaller key (the other after 3 s more) asks the
// server for a ticket to the best relay not known to be dead, tells the peer
// through an offer, and moves the session onto the channel with MovePath;
// streams continue. A dead direct path also makes the daemon learn its
// mapping again and re-punch (rebinding), and relayed sessions are
// re-punched every Config.RefreshInterval, so they return to a direct path
// when one answers. A stalled relay is re-bound once (Channel.Refresh)
// before it is given up for another. Channels are refreshed every 30 s, and
// a relayed session moves to a fresh channel 2 minutes before its ticket
// expires (the side that did not allocate it: 1 minute), so that relayed
// sessions outlive their tickets.
//
// When STUN gets no answer while the server answers over HTTP, UDP is taken
// for blocked (NAT type "udp-blocked"): the daemon keeps every listed
// supernode unmeasured and binds its side of relay channels over TCP to the
// supernode's Config.RelayTCP port (the directory lists supernodes by their
// UDP address only, so all supernodes are expected on the same TCP port, 443
// by default). Supernodes serve that port when Config.RelayTCP is set.
//
// # Streams
//
// Applications share the pair's session. Each stream starts with its
// service name (one length byte, then the name); Handle registers a
// service, OpenStream opens one. The node's own service "parley.info" tells
// the peer our NAT type, for `parley status`.
//
// # Concurrency
//
// Node.mu protects the node's and every peer's mutable fields; it is never
// held across network or database calls. A punch's mu and stunMu are leaf
// locks. Every goroutine the node starts is tracked by its WaitGroup and
// ends when Close cancels the node's context; Close returns after them.
package node
