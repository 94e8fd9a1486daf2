package cli

import (
	"encoding/json"
	"fmt"

	"github.com/spf13/cobra"
)

func newStatusCmd() *cobra.Command {
	var data string
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "status",
		Short: "Show the daemon's state and how each contact is reached",
		Long: `Show the daemon's state and, for each contact, its path: direct (to which
address) or relayed (via which supernode), the round-trip time, both sides'
NAT types, and why a path is relayed or missing.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, dir, err := daemonClient(data)
			if err != nil {
				return err
			}
			defer c.Close()
			st, err := c.Status(cmd.Context())
			if err != nil {
				return daemonErr(err, dir)
			}
			out := cmd.OutOrStdout()
			if asJSON {
				enc := json.NewEncoder(out)
				enc.SetIndent("", "  ")
				return enc.Encode(st)
			}
			user := st.Username
			if user == "" {
				user = "(not logged in)"
			}
			fmt.Fprintf(out, "user %s, device %s\n", user, st.Device)
			server := "up"
			if !st.ServerUp {
				server = "unreachable"
				if st.ServerError != "" {
					server += ": " + st.ServerError
				}
			}
			fmt.Fprintf(out, "server %s: %s\n", st.Server, server)
			fmt.Fprintf(out, "UDP %s, reflexive %s, NAT %s\n", st.LocalAddr, orNone(st.Reflexive), st.NAT)
			for _, ct := range st.Contacts {
				fmt.Fprintln(out, "  "+ct.String())
			}
			return nil
		},
	}
	addDataFlag(cmd, &data)
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the status as JSON")
	return cmd
}

func orNone(s string) string {
	if s == "" {
		return "none"
	}
	return s
}
