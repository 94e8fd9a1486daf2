package cli

import (
	"fmt"
	"strconv"
	"strings"

	"github.com/spf13/cobra"
)

func newExposeCmd() *cobra.Command {
	var (
		data string
		off  bool
	)
	cmd := &cobra.Command{
		Use:   "expose [PORT...]",
		Short: "Let contacts tunnel to TCP ports on this machine",
		Long: `Let contacts reach TCP ports of this machine's loopback through Parley
(parley connect, parley forward). Every other port is refused, and the
caller is told so. The choice is kept in the data directory. Without
ports, list the exposed ones; with --off, stop exposing the ports given.`,
		RunE: func(cmd *cobra.Command, args []string) error {
			c, dir, err := daemonClient(data)
			if err != nil {
				return err
			}
			defer c.Close()
			ctx := cmd.Context()
			for _, a := range args {
				p, err := strconv.ParseUint(a, 10, 16)
				if err != nil || p == 0 {
					return usageError{fmt.Errorf("%q is not a port number (1 to 65535)", a)}
				}
				if err := c.Expose(ctx, uint16(p), !off); err != nil {
					return daemonErr(err, dir)
				}
			}
			ports, err := c.Exposed(ctx)
			if err != nil {
				return daemonErr(err, dir)
			}
			if len(ports) == 0 {
				fmt.Fprintln(cmd.OutOrStdout(), "no ports exposed: contacts cannot tunnel to this machine")
				return nil
			}
			l := make([]string, len(ports))
			for i, p := range ports {
				l[i] = strconv.Itoa(int(p))
			}
			fmt.Fprintf(cmd.OutOrStdout(), "exposed to contacts: %s (on 127.0.0.1)\n", strings.Join(l, ", "))
			return nil
		},
	}
	cmd.Flags().BoolVar(&off, "off", false, "stop exposing the ports given")
	addDataFlag(cmd, &data)
	return cmd
}
