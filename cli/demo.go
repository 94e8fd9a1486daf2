package cli

import (
	"time"

	"github.com/spf13/cobra"

	"github.com/parley-p2p/parley/demo"
)

func newDemoCmd() *cobra.Command {
	var o demo.Options
	cmd := &cobra.Command{
		Use:   "demo",
		Short: "Run the whole Parley system in one process on an emulated network",
		Long: "demo runs a directory server, a supernode and three users in this process on\n" +
			"natlab, Parley's emulated network: alice behind an endpoint-independent NAT,\n" +
			"bob behind a symmetric NAT, carol behind a firewall that blocks UDP, on links\n" +
			"with delay and loss. They register, become contacts, chat, and alice sends bob\n" +
			"a file. It prints each pair's path, the time to the first message and to a\n" +
			"direct path, and the transfer rate. It needs no set-up and no network access.",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			_, err := demo.Run(cmd.Context(), cmd.OutOrStdout(), o)
			return err
		},
	}
	f := cmd.Flags()
	f.DurationVar(&o.RTT, "rtt", 40*time.Millisecond, "round-trip time between two peers")
	f.Float64Var(&o.Loss, "loss", 0.005, "random loss on each access link, each way (0.005 = 0.5%)")
	f.Int64Var(&o.RateBit, "rate", 50e6, "access link rate in bit/s")
	f.Int64Var(&o.Bytes, "bytes", 8<<20, "size of the file alice sends bob")
	return cmd
}
