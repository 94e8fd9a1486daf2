package cli

import (
	"fmt"
	"io"
	"strings"

	"github.com/spf13/cobra"

	"github.com/parley-p2p/parley/localapi"
)

func newMsgCmd() *cobra.Command {
	var data string
	cmd := &cobra.Command{
		Use:   "msg CONTACT TEXT...",
		Short: "Send one chat message",
		Long: `Send one chat message to a contact.

The message is stored in the daemon's outbox before anything is sent and
stays there until the contact's device acknowledges it, so a crash loses
nothing. A contact who is offline gets it end-to-end encrypted through the
directory server's mailbox, which cannot read it.`,
		Args: cobra.MinimumNArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, dir, err := daemonClient(data)
			if err != nil {
				return err
			}
			defer c.Close()
			m, err := c.SendMessage(cmd.Context(), args[0], strings.Join(args[1:], " "))
			if err != nil {
				return daemonErr(err, dir)
			}
			printSent(cmd.OutOrStdout(), m)
			return nil
		},
	}
	addDataFlag(cmd, &data)
	return cmd
}

// printSent says where a message just sent stands.
func printSent(w io.Writer, m localapi.Message) {
	switch m.State {
	case "delivered", "read":
		fmt.Fprintf(w, "delivered to %s\n", m.Peer)
	case "sent":
		fmt.Fprintf(w, "sent to %s: they cannot be reached now, so it waits for them sealed in the server's mailbox\n", m.Peer)
	default:
		fmt.Fprintf(w, "queued for %s: it is kept in the outbox and sent when they can be reached\n", m.Peer)
	}
}
