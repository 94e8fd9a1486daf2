package cli

import (
	"fmt"
	"io"

	"github.com/spf13/cobra"

	"github.com/parley-p2p/parley/localapi"
)

func newHistoryCmd() *cobra.Command {
	var (
		data, search string
		limit        int
	)
	cmd := &cobra.Command{
		Use:   "history [CONTACT]",
		Short: "Show or search the chat history",
		Long: `Show the last messages with a contact, oldest first, with the delivery
state of each message sent. With --search, show the messages containing
every word given (with the contact, or with anyone), newest first; a word
ending in * matches as a prefix.`,
		Args: cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			peer := ""
			if len(args) == 1 {
				peer = args[0]
			}
			if peer == "" && search == "" {
				return usageError{fmt.Errorf("give a contact, or --search WORDS")}
			}
			c, dir, err := daemonClient(data)
			if err != nil {
				return err
			}
			defer c.Close()
			ms, err := c.History(cmd.Context(), peer, search, limit)
			if err != nil {
				return daemonErr(err, dir)
			}
			if len(ms) == 0 {
				if search != "" {
					fmt.Fprintln(cmd.OutOrStdout(), "no message matches")
				} else {
					fmt.Fprintf(cmd.OutOrStdout(), "no messages with %s yet\n", peer)
				}
			}
			for _, m := range ms {
				printMessage(cmd.OutOrStdout(), m)
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&search, "search", "", "show only messages containing these words")
	f.IntVarP(&limit, "limit", "n", 50, "how many messages to show at most")
	addDataFlag(cmd, &data)
	return cmd
}

// printMessage prints one message on one line.
func printMessage(w io.Writer, m localapi.Message) {
	when := m.Time.Local().Format("2006-01-02 15:04")
	if m.Outgoing {
		fmt.Fprintf(w, "%s  me → %s: %s  [%s]\n", when, m.Peer, m.Body, m.State)
		return
	}
	fmt.Fprintf(w, "%s  %s: %s\n", when, m.Peer, m.Body)
}

// stateMark is a message's delivery state in one character, for the chat
// screen: ✓ sent, ✓✓ delivered, ✓✓ read (with the word).
func stateMark(state string) string {
	switch state {
	case "pending":
		return "…"
	case "sent":
		return "✓"
	case "delivered":
		return "✓✓"
	case "read":
		return "✓✓ read"
	}
	return state
}
