package cli

import (
	"context"
	"fmt"
	"net"
	"sync"

	"github.com/spf13/cobra"

	"github.com/parley-p2p/parley/apps/tunnel"
	"github.com/parley-p2p/parley/localapi"
)

func newForwardCmd() *cobra.Command {
	var data string
	cmd := &cobra.Command{
		Use:   "forward LOCAL-ADDR CONTACT:PORT",
		Short: "Forward a local TCP port to a port on a contact's machine",
		Long: `Listen on LOCAL-ADDR and tunnel each connection to PORT on the contact's
machine, until stopped. The contact must expose the port (parley expose).

  parley forward 127.0.0.1:8080 bob:80`,
		Args: cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			peer, port, err := splitTarget(args[1])
			if err != nil {
				return usageError{err}
			}
			c, dir, err := daemonClient(data)
			if err != nil {
				return err
			}
			defer c.Close()
			ctx := cmd.Context()
			// Ask for the tunnel once first, so that a refusal shows now
			// rather than on the first connection.
			probe, err := c.Connect(ctx, peer, port)
			if err != nil {
				return daemonErr(err, dir)
			}
			probe.Close()
			ln, err := net.Listen("tcp", args[0])
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "forwarding %s to port %d on %s's machine (stop with ctrl-C)\n", ln.Addr(), port, peer)
			return forward(ctx, ln, c, peer, port, func(err error) {
				fmt.Fprintf(cmd.ErrOrStderr(), "parley: %v\n", daemonErr(err, dir))
			})
		},
	}
	addDataFlag(cmd, &data)
	return cmd
}

// forward tunnels every connection accepted on ln until ctx ends.
func forward(ctx context.Context, ln net.Listener, c *localapi.Client, peer string, port uint16, report func(error)) error {
	var wg sync.WaitGroup
	defer wg.Wait()
	stop := context.AfterFunc(ctx, func() { ln.Close() })
	defer stop()
	for {
		conn, err := ln.Accept()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return err
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			t, err := c.Connect(ctx, peer, port)
			if err != nil {
				conn.Close()
				report(err)
				return
			}
			done := context.AfterFunc(ctx, func() { conn.Close(); t.Close() })
			defer done()
			tunnel.Join(conn, t)
		}()
	}
}
