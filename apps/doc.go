// Package apps holds Parley's application protocols, each a library the peer
// daemon wires to its sessions and to the CLI:
//
//   - appmux: the one-byte header that routes each stream of a session to
//     its application;
//   - chat: messages with delivery and read receipts, an SQLite history and
//     outbox, and sealed blobs for the directory's offline mailbox;
//   - files: file offers, resumable transfers verified by SHA-256;
//   - tunnel: TCP ports a device chose to expose, reached over a stream.
//
// Every application rides on the one transport session between two
// devices; docs/protocol.md §7 specifies their wire formats.
package apps
