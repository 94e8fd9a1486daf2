// Package relay is Parley's supernode relay and its client.
//
// When two peers cannot reach each other directly, each binds one side of a
// channel on a supernode (an ordinary peer with a public address) by
// presenting a relay ticket that the directory server signed for the pair
// (package directory/ticket). The supernode then forwards whatever one side
// sends to the other, blindly: the packets are Parley packets sealed end to
// end, and the relay has no keys. It enforces the ticket's expiry, byte
// budget and rate, and answers nothing per forwarded packet, so it cannot be
// used to amplify traffic.
//
// Nor can a ticket holder who forges source addresses point a side at a
// third party: a UDP side's address is unvalidated when an ALLOCATE binds
// it, and the relay sends it at most 3 times what it has received from it
// (AmplificationFactor), holding the rest, until a CONFIRM from there
// echoes the token of an ALLOCATED, as QUIC validates a client's address
// (validate.go). A client confirms every ALLOCATED, and pads its ALLOCATEs
// (PaddedAllocateSize) so that what the other side sent first is delivered
// right behind its ALLOCATED, without waiting for the CONFIRM. A TCP side
// is validated by the TCP handshake.
//
// A channel's ID is derived from its ticket (ChannelID), so a peer knows it
// before the relay answers, and a side may send right behind its ALLOCATE:
// the relay handles one peer's packets in order, so the SENDs find the
// side bound, and until the other side binds, the relay holds a few packets
// for it (hold.go). A dialling peer's handshake thus waits neither for its
// own ALLOCATED nor for the other side (AllocateEarly). The ID is no secret,
// and need not be: the relay takes a SEND only from a bound side's address
// or TCP connection.
//
// Relay packets share a peer's single UDP socket with Parley packets (first
// byte 0xC1) and STUN (0x00, 0x01): they start with 0xD1. The layouts are in
// wire.go and docs/protocol.md §6. A peer whose UDP is blocked binds its side
// over TCP instead (2-byte length framing of the same packets); a TCP side
// and a UDP side can be paired.
//
// The pieces:
//
//   - Server is the supernode side. It does not read the socket: the
//     supernode's demultiplexer hands it every 0xD1 packet (HandlePacket),
//     and it writes on the shared socket. ServeTCP serves the TCP fallback.
//   - Client allocates channels (Allocate, AllocateTCP, which wait for the
//     relay's answer; AllocateEarly, AllocateTCPEarly, which do not),
//     confirms them, measures RTTs to supernodes (Ping) and sends on
//     channels (Channel.Send).
//   - Mux is the net.PacketConn the transport runs on. It reads the real
//     socket, hands relay and STUN packets to their handlers, and presents
//     each relay channel as a virtual address (in fd00:7061:726c::/48), so
//     the transport's own path migration moves a session between a relay
//     and a direct path without knowing relays exist.
package relay
