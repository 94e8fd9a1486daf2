package cli

import (
	"fmt"
	"path/filepath"

	"github.com/spf13/cobra"
)

func newSendCmd() *cobra.Command {
	var (
		data   string
		noWait bool
	)
	cmd := &cobra.Command{
		Use:   "send CONTACT FILE",
		Short: "Offer a file to a contact and show the transfer's progress",
		Long: `Offer a file to a contact. The contact accepts it (parley files accept ID),
or their daemon does at once if they chose to accept your files; the bytes
then move directly between the devices, verified by SHA-256 at the end, and
an interrupted transfer resumes where it stopped. This command shows a
progress bar until the file has arrived; stopping it leaves the offer open
(the daemon sends the file), as does --no-wait.`,
		Args: cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, dir, err := daemonClient(data)
			if err != nil {
				return err
			}
			defer c.Close()
			path, err := filepath.Abs(args[1])
			if err != nil {
				return err
			}
			ctx := cmd.Context()
			t, err := c.SendFile(ctx, args[0], path)
			if err != nil {
				return daemonErr(err, dir)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "offered %s (%s) to %s: transfer %s\n", t.Name, bytesIEC(t.Size), t.Peer, t.ID.String()[:8])
			if noWait {
				return nil
			}
			t, err = watchTransfer(ctx, c, t.ID.String(), cmd.ErrOrStderr())
			if err != nil {
				return daemonErr(err, dir)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "%s received %s, SHA-256 verified\n", t.Peer, t.Name)
			return nil
		},
	}
	cmd.Flags().BoolVar(&noWait, "no-wait", false, "offer the file and return")
	addDataFlag(cmd, &data)
	return cmd
}
