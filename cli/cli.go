// Package cli implements the parley command line: one file per subcommand.
//
// The CLI uses cobra rather than the standard library's flag package because
// parley has many nested subcommands (contacts add, files accept, bench
// transport, ...) and cobra gives every one of them consistent help text,
// usage errors and shell completion without hand-written dispatch.
package cli

import (
	"context"
	"errors"
	"fmt"
	"io"

	"github.com/spf13/cobra"
)

// Run runs the parley command line with args (without the program name) and
// returns the process exit code. Errors are printed to stderr as one sentence.
func Run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	root := newRootCmd()
	root.SetArgs(args)
	root.SetOut(stdout)
	root.SetErr(stderr)
	if err := root.ExecuteContext(ctx); err != nil {
		var ue usageError
		if errors.As(err, &ue) {
			fmt.Fprintf(stderr, "parley: %v\n", err)
			return 2
		}
		fmt.Fprintf(stderr, "parley: %v\n", err)
		return 1
	}
	return 0
}

// usageError marks an error caused by how the command was invoked.
type usageError struct{ error }

func newRootCmd() *cobra.Command {
	root := &cobra.Command{
		Use:           "parley",
		Short:         "Parley: hybrid peer-to-peer chat, files and tunnels",
		Long:          "Parley connects your devices and contacts directly over an encrypted UDP transport,\npunching through NATs, and relays through volunteer supernodes when no direct path exists.",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return usageError{err} })
	root.AddCommand(newDemoCmd())
	root.AddCommand(newServerCmd())
	root.AddCommand(newUpCmd())
	root.AddCommand(newRegisterCmd())
	root.AddCommand(newLoginCmd())
	root.AddCommand(newLogoutCmd())
	root.AddCommand(newContactsCmd())
	root.AddCommand(newStatusCmd())
	root.AddCommand(newMsgCmd())
	root.AddCommand(newChatCmd())
	root.AddCommand(newHistoryCmd())
	root.AddCommand(newSendCmd())
	root.AddCommand(newFilesCmd())
	root.AddCommand(newConnectCmd())
	root.AddCommand(newForwardCmd())
	root.AddCommand(newExposeCmd())
	root.AddCommand(newDebugCmd())
	bench := &cobra.Command{Use: "bench", Short: "Measure Parley's components", Args: cobra.NoArgs}
	bench.AddCommand(newBenchServerCmd())
	bench.AddCommand(newBenchTransportCmd())
	root.AddCommand(bench)
	return root
}
