//go:build !linux

package relay

import "net"

// Without recvmmsg and sendmmsg, the Mux and the Server use one system call
// per datagram.

func newMmsgReader(pc net.PacketConn, size int) batchReader { return nil }

func newMmsgWriter(pc net.PacketConn) batchWriter { return nil }

type txScratch struct{}
