// Command proxycmd is the tunnel tests' ssh ProxyCommand: it dials a
// transport session to a test's listener on loopback and bridges standard
// input and output through a tunnel to a port on the far side, as `parley
// connect` does.
//
//	proxycmd ADDR PUBKEY PORT
package main

import (
	"context"
	"fmt"
	"net"
	"os"
	"strconv"
	"time"

	"github.com/parley-p2p/parley/apps/tunnel"
	"github.com/parley-p2p/parley/transport"
)

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "proxycmd:", err)
		os.Exit(1)
	}
}

func run(args []string) error {
	if len(args) != 3 {
		return fmt.Errorf("usage: proxycmd ADDR PUBKEY PORT")
	}
	addr, err := net.ResolveUDPAddr("udp", args[0])
	if err != nil {
		return err
	}
	pub, err := transport.ParsePublicKey(args[1])
	if err != nil {
		return err
	}
	port, err := strconv.ParseUint(args[2], 10, 16)
	if err != nil {
		return err
	}
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	defer pc.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	sess, err := transport.Dial(ctx, pc, addr, pub, nil)
	if err != nil {
		return err
	}
	defer sess.Close()
	conn, err := tunnel.Connect(ctx, sess, uint16(port))
	if err != nil {
		return err
	}
	return tunnel.Pipe(conn, os.Stdin, os.Stdout)
}
