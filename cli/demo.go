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
		Short: "Run Parley end to end in one process on an emulated network",
		Long: "demo runs peers in this process on natlab, Parley's emulated network, with\n" +
			"realistic delay and loss, and reports what happened: handshake round trips,\n" +
			"goodput, and every byte verified. It needs no set-up and no network access.",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			_, err := demo.Run(cmd.Context(), cmd.OutOrStdout(), o)
			return err
		},
	}
	f := cmd.Flags()
	f.DurationVar(&o.RTT, "rtt", 60*time.Millisecond, "round-trip time of the emulated link")
	f.Float64Var(&o.Loss, "loss", 0.01, "random loss on the link, each way (0.01 = 1%)")
	f.Int64Var(&o.RateBit, "rate", 50e6, "link rate in bit/s")
	f.Int64Var(&o.Bytes, "bytes", 16<<20, "bytes to transfer")
	f.IntVar(&o.Streams, "streams", 4, "concurrent streams")
	return cmd
}
