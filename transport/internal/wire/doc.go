// Package wire encodes and decodes Parley's packets and frames: the byte
// layouts of docs/protocol.md §1 (packets) and §2 (frames), nothing more.
//
// The package follows quic-go's internal/wire: one file per packet or frame
// type, each with a Parse function that returns an error (and never panics)
// on any input, an Append method that appends the encoding to a caller's
// buffer without allocating when the buffer has room, and a Length method
// that returns the exact encoded size so the packetizer can fill packets to
// the byte.
//
// Parsers are strict about what the specification fixes (lengths, form byte,
// reserved bits, frame-level invariants such as ACK ranges) and lenient where
// it says receivers must be (varints in any form). Semantic checks that need
// session state — flow-control limits, stream ID ownership, whether a CID
// belongs to a session — are the transport's job, not this package's.
//
// Slices returned by parsers (stream and datagram data, handshake Noise
// messages) alias the input buffer: a caller that keeps them past the life of
// the packet buffer must copy them.
//
// Errors are sentinels (ErrTruncated, ErrUnknownFrame, ...) so the receive
// path can branch on them with errors.Is and never allocates to report one.
package wire
