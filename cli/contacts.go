package cli

import (
	"fmt"
	"text/tabwriter"

	"github.com/spf13/cobra"
)

func newContactsCmd() *cobra.Command {
	var data string
	cmd := &cobra.Command{
		Use:   "contacts",
		Short: "Manage contacts: add, accept, decline, remove, block, unblock, list",
		Args:  cobra.NoArgs,
	}
	ops := []struct{ name, short, done string }{
		{"add", "Ask NAME to be a contact", ""},
		{"accept", "Accept NAME's request", "%s is now a contact\n"},
		{"decline", "Decline NAME's request", "declined %s\n"},
		{"remove", "End the contact with NAME, or cancel a request", "removed %s\n"},
		{"block", "Block NAME", "blocked %s\n"},
		{"unblock", "Unblock NAME", "unblocked %s\n"},
	}
	for _, op := range ops {
		sub := &cobra.Command{
			Use:   op.name + " NAME",
			Short: op.short,
			Args:  cobra.ExactArgs(1),
			RunE: func(cmd *cobra.Command, args []string) error {
				c, dir, err := daemonClient(data)
				if err != nil {
					return err
				}
				defer c.Close()
				var state string
				if op.name == "remove" {
					err = c.RemoveContact(cmd.Context(), args[0])
				} else {
					state, err = c.ContactOp(cmd.Context(), op.name, args[0])
				}
				if err != nil {
					return daemonErr(err, dir)
				}
				out := cmd.OutOrStdout()
				switch {
				case op.name != "add":
					fmt.Fprintf(out, op.done, args[0])
				case state == "mutual":
					fmt.Fprintf(out, "%s had asked already: you are now contacts\n", args[0])
				default:
					fmt.Fprintf(out, "asked %s; they appear once they accept\n", args[0])
				}
				return nil
			},
		}
		addDataFlag(sub, &data)
		cmd.AddCommand(sub)
	}
	list := &cobra.Command{
		Use:   "list",
		Short: "List contacts and requests",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, dir, err := daemonClient(data)
			if err != nil {
				return err
			}
			defer c.Close()
			r, err := c.Contacts(cmd.Context())
			if err != nil {
				return daemonErr(err, dir)
			}
			out := cmd.OutOrStdout()
			if r.Cached {
				fmt.Fprintln(out, "(the directory server does not answer: this is the cached list)")
			}
			if len(r.Contacts) == 0 {
				fmt.Fprintln(out, "no contacts yet: add one with `parley contacts add NAME`")
				return nil
			}
			tw := tabwriter.NewWriter(out, 0, 8, 2, ' ', 0)
			fmt.Fprintln(tw, "NAME\tSTATE\tONLINE")
			for _, ct := range r.Contacts {
				on := "no"
				if ct.Online {
					on = "yes"
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\n", ct.Username, ct.State, on)
			}
			return tw.Flush()
		},
	}
	addDataFlag(list, &data)
	cmd.AddCommand(list)
	return cmd
}
