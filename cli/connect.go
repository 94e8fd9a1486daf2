package cli

import (
	"fmt"
	"net"
	"strconv"

	"github.com/spf13/cobra"

	"github.com/parley-p2p/parley/apps/tunnel"
)

func newConnectCmd() *cobra.Command {
	var data string
	cmd := &cobra.Command{
		Use:   "connect CONTACT:PORT",
		Short: "Bridge standard input and output to a port on a contact's machine",
		Long: `Bridge standard input and output to a TCP port on a contact's machine,
through the daemon's session with them. The contact must expose the port
(parley expose PORT); other ports are refused. Made for ssh:

  ssh -o ProxyCommand='parley connect %h:22' bob`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			peer, port, err := splitTarget(args[0])
			if err != nil {
				return usageError{err}
			}
			c, dir, err := daemonClient(data)
			if err != nil {
				return err
			}
			defer c.Close()
			conn, err := c.Connect(cmd.Context(), peer, port)
			if err != nil {
				return daemonErr(err, dir)
			}
			return tunnel.Pipe(conn, cmd.InOrStdin(), cmd.OutOrStdout())
		},
	}
	addDataFlag(cmd, &data)
	return cmd
}

// splitTarget splits "bob:22".
func splitTarget(s string) (string, uint16, error) {
	host, ps, err := net.SplitHostPort(s)
	if err != nil || host == "" {
		return "", 0, fmt.Errorf("%q is not CONTACT:PORT", s)
	}
	p, err := strconv.ParseUint(ps, 10, 16)
	if err != nil || p == 0 {
		return "", 0, fmt.Errorf("%q is not a port number (1 to 65535)", ps)
	}
	return host, uint16(p), nil
}
