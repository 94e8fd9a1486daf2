//go:build !linux

package transport

import "net"

func newOffloadIO(c *net.UDPConn) (batchReader, batchWriter, bool) { return nil, nil, false }
