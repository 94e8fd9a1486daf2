package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/parley-p2p/parley/apps/files"
	"github.com/parley-p2p/parley/localapi"
	"github.com/parley-p2p/parley/node"
)

func newFilesCmd() *cobra.Command {
	var data string
	cmd := &cobra.Command{
		Use:   "files",
		Short: "List file transfers; accept or decline offered files",
		Long: `List the file transfers both ways with their progress. Files offered to
you wait until you accept them (parley files accept ID, where ID may be
the first digits shown), or arrive at once from contacts you chose with
parley files auto-accept NAME. They are saved in DATA/downloads.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, dir, err := daemonClient(data)
			if err != nil {
				return err
			}
			defer c.Close()
			r, err := c.Files(cmd.Context())
			if err != nil {
				return daemonErr(err, dir)
			}
			w := cmd.OutOrStdout()
			if len(r.Transfers) == 0 {
				fmt.Fprintln(w, "no file transfers")
			}
			for _, t := range r.Transfers {
				fmt.Fprintln(w, transferLine(t))
			}
			if len(r.AutoAccept) > 0 {
				fmt.Fprintf(w, "files from %s are accepted without asking\n", strings.Join(r.AutoAccept, ", "))
			}
			return nil
		},
	}
	addDataFlag(cmd, &data)
	cmd.AddCommand(newFilesAcceptCmd(), newFilesDeclineCmd(), newFilesAutoAcceptCmd())
	return cmd
}

// transferLine describes a transfer on one line.
func transferLine(t node.TransferStatus) string {
	dir := "to"
	if t.Direction == files.Incoming {
		dir = "from"
	}
	s := fmt.Sprintf("%s  %s %s %s  %s  %s", t.ID.String()[:8], t.Name, dir, t.Peer, bytesIEC(t.Size), t.State)
	switch {
	case t.Active:
		s += "  " + progressText(t)
	case t.State == files.Offered && t.Direction == files.Incoming:
		s += fmt.Sprintf("  (parley files accept %s)", t.ID.String()[:8])
	case t.State == files.Done && t.Direction == files.Incoming:
		s += "  " + t.Path
	}
	if t.Error != "" && t.State != files.Done {
		s += "  error: " + t.Error
	}
	return s
}

// resolveTransfer finds the transfer whose ID starts with prefix.
func resolveTransfer(ctx context.Context, c *localapi.Client, prefix string) (node.TransferStatus, error) {
	r, err := c.Files(ctx)
	if err != nil {
		return node.TransferStatus{}, err
	}
	var found []node.TransferStatus
	for _, t := range r.Transfers {
		if strings.HasPrefix(t.ID.String(), strings.ToLower(prefix)) {
			found = append(found, t)
		}
	}
	switch {
	case len(found) == 0 || prefix == "":
		return node.TransferStatus{}, fmt.Errorf("no transfer %q: see `parley files`", prefix)
	case len(found) > 1:
		return node.TransferStatus{}, fmt.Errorf("%q names %d transfers: give more digits", prefix, len(found))
	}
	return found[0], nil
}

func newFilesAcceptCmd() *cobra.Command {
	var (
		data   string
		noWait bool
	)
	cmd := &cobra.Command{
		Use:   "accept ID",
		Short: "Download an offered file (resuming an interrupted download)",
		Long: `Download an offered file into DATA/downloads. The daemon downloads it: this
command shows a progress bar until the file is complete and its SHA-256
verified, but stopping it (or --no-wait) leaves the download running. An
interrupted download resumes where it stopped when accepted again.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, dir, err := daemonClient(data)
			if err != nil {
				return err
			}
			defer c.Close()
			ctx := cmd.Context()
			t, err := resolveTransfer(ctx, c, args[0])
			if err != nil {
				return daemonErr(err, dir)
			}
			if t.Direction != files.Incoming {
				return fmt.Errorf("transfer %s is one you offered: %s accepts it", t.ID.String()[:8], t.Peer)
			}
			if err := c.FileOp(ctx, "accept", t.ID.String()); err != nil {
				return daemonErr(err, dir)
			}
			if noWait {
				fmt.Fprintf(cmd.OutOrStdout(), "downloading %s from %s in the daemon: see `parley files`\n", t.Name, t.Peer)
				return nil
			}
			t, err = watchTransfer(ctx, c, t.ID.String(), cmd.ErrOrStderr())
			if err != nil {
				return daemonErr(err, dir)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "received %s (%s, SHA-256 verified): %s\n", t.Name, bytesIEC(t.Size), t.Path)
			return nil
		},
	}
	cmd.Flags().BoolVar(&noWait, "no-wait", false, "start the download and return")
	addDataFlag(cmd, &data)
	return cmd
}

func newFilesDeclineCmd() *cobra.Command {
	var data string
	cmd := &cobra.Command{
		Use:   "decline ID",
		Short: "Decline an offered file",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, dir, err := daemonClient(data)
			if err != nil {
				return err
			}
			defer c.Close()
			t, err := resolveTransfer(cmd.Context(), c, args[0])
			if err != nil {
				return daemonErr(err, dir)
			}
			if err := c.FileOp(cmd.Context(), "decline", t.ID.String()); err != nil {
				return daemonErr(err, dir)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "declined %s from %s\n", t.Name, t.Peer)
			return nil
		},
	}
	addDataFlag(cmd, &data)
	return cmd
}

func newFilesAutoAcceptCmd() *cobra.Command {
	var (
		data string
		off  bool
	)
	cmd := &cobra.Command{
		Use:   "auto-accept CONTACT",
		Short: "Accept files from a contact without asking (--off to stop)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, dir, err := daemonClient(data)
			if err != nil {
				return err
			}
			defer c.Close()
			if err := c.SetAutoAccept(cmd.Context(), args[0], !off); err != nil {
				return daemonErr(err, dir)
			}
			if off {
				fmt.Fprintf(cmd.OutOrStdout(), "files from %s now wait for `parley files accept`\n", args[0])
			} else {
				fmt.Fprintf(cmd.OutOrStdout(), "files from %s are now accepted without asking\n", args[0])
			}
			return nil
		},
	}
	cmd.Flags().BoolVar(&off, "off", false, "ask again for files from this contact")
	addDataFlag(cmd, &data)
	return cmd
}

// watchTransfer shows a transfer's progress on w until it ends, and returns
// it done, or an error saying why it did not finish.
func watchTransfer(ctx context.Context, c *localapi.Client, id string, w io.Writer) (node.TransferStatus, error) {
	bar := newProgressBar(w)
	defer bar.end()
	tick := time.NewTicker(200 * time.Millisecond)
	defer tick.Stop()
	for {
		t, err := c.File(ctx, id)
		if err != nil {
			return t, err
		}
		bar.show(t)
		switch t.State {
		case files.Done:
			return t, nil
		case files.Declined:
			return t, fmt.Errorf("%s declined %s", t.Peer, t.Name)
		case files.Failed:
			return t, fmt.Errorf("the transfer of %s failed: %s", t.Name, t.Error)
		}
		if t.Direction == files.Incoming && t.Error != "" {
			return t, fmt.Errorf("the download of %s stopped: %s (accept it again to resume)", t.Name, t.Error)
		}
		select {
		case <-ctx.Done():
			return t, errors.New("stopped watching; the transfer carries on in the daemon (see `parley files`)")
		case <-tick.C:
		}
	}
}

// progressBar draws a transfer's progress on one terminal line, or on a
// plain writer a line now and then.
type progressBar struct {
	w       io.Writer
	tty     bool
	last    time.Time
	drawn   bool
	waiting bool
}

func newProgressBar(w io.Writer) *progressBar {
	b := &progressBar{w: w}
	if f, ok := w.(*os.File); ok {
		if fi, err := f.Stat(); err == nil && fi.Mode()&os.ModeCharDevice != 0 {
			b.tty = true
		}
	}
	return b
}

func (b *progressBar) show(t node.TransferStatus) {
	if t.State == files.Offered && t.Direction == files.Outgoing {
		if !b.waiting {
			b.waiting = true
			fmt.Fprintf(b.w, "waiting for %s to accept %s (stopping this leaves the offer open)\n", t.Peer, t.Name)
		}
		return
	}
	line := progressText(t)
	if b.tty {
		fmt.Fprintf(b.w, "\r\033[K%s", line)
		b.drawn = true
		return
	}
	if time.Since(b.last) >= 2*time.Second || t.State == files.Done {
		b.last = time.Now()
		fmt.Fprintln(b.w, line)
	}
}

func (b *progressBar) end() {
	if b.drawn {
		fmt.Fprintln(b.w)
	}
}

// progressText is "[=====>    ]  45%  12.3 MiB / 27.0 MiB  3.2 MiB/s  4s left".
func progressText(t node.TransferStatus) string {
	const width = 30
	frac := 1.0
	if t.Size > 0 {
		frac = float64(t.Done) / float64(t.Size)
	}
	n := int(frac * width)
	bar := strings.Repeat("=", n)
	if n < width {
		bar += ">" + strings.Repeat(" ", width-n-1)
	}
	s := fmt.Sprintf("[%s] %3.0f%%  %s / %s", bar, 100*frac, bytesIEC(t.Done), bytesIEC(t.Size))
	if t.Rate > 0 && t.State != files.Done {
		s += fmt.Sprintf("  %s/s", bytesIEC(int64(t.Rate)))
		if t.ETA > 0 {
			s += fmt.Sprintf("  %v left", t.ETA.Round(time.Second))
		}
	}
	return s
}

// bytesIEC renders n bytes as "12.3 MiB".
func bytesIEC(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}
