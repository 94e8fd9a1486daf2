package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"time"

	"github.com/spf13/cobra"

	"github.com/parley-p2p/parley/localapi"
	"github.com/parley-p2p/parley/node"
	"github.com/parley-p2p/parley/web"
)

type upOptions struct {
	server, data, listen, logLevel string
	web                            string
	supernode                      string
	portmap                        string
	relayTCP                       string
	budgetRate, budgetBytes        int64
	sweepRate                      int
}

func newUpCmd() *cobra.Command {
	var o upOptions
	cmd := &cobra.Command{
		Use:   "up",
		Short: "Run the peer daemon",
		Long: `Run the Parley peer daemon for one device.

On first run it creates the device's identity key in the data directory
(--data, $PARLEY_DATA, or the user's data directory) and keeps its state
there. Other parley commands find the daemon through the same data
directory, so several daemons can run side by side with different --data.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runUp(cmd.Context(), o, cmd.OutOrStdout(), cmd.ErrOrStderr())
		},
	}
	f := cmd.Flags()
	f.StringVar(&o.server, "server", "", "directory server URL (remembered in the data directory)")
	addDataFlag(cmd, &o.data)
	f.StringVar(&o.listen, "listen", "", "UDP address to bind (default: the port used last time, or any)")
	f.StringVar(&o.supernode, "supernode", "auto", "relay for others: auto, on or off")
	f.StringVar(&o.portmap, "portmap", "on", "ask the router for a port mapping (PCP, NAT-PMP, UPnP): on or off")
	f.StringVar(&o.relayTCP, "relay-tcp", ":443", `TCP address of the relay for peers whose UDP is blocked (supernodes serve it; all dial its port on supernodes); "" for none`)
	f.IntVar(&o.sweepRate, "sweep-rate", 32768, "pings/s of the port sweep that reaches peers behind symmetric NATs (docs/protocol.md §8.4); 0 turns it off")
	f.Int64Var(&o.budgetRate, "budget-rate", 1<<20, "supernode: bytes per second relayed across sessions")
	f.Int64Var(&o.budgetBytes, "budget-bytes", 1<<30, "supernode: bytes relayed per pair of peers")
	f.StringVar(&o.logLevel, "log-level", "info", "log level: debug, info, warn or error")
	f.StringVar(&o.web, "web", "127.0.0.1:0", `local web UI address, on loopback only ("off" to disable)`)
	return cmd
}

func runUp(ctx context.Context, o upOptions, stdout, stderr io.Writer) error {
	level, err := parseLevel(o.logLevel)
	if err != nil {
		return usageError{fmt.Errorf("bad --log-level %q", o.logLevel)}
	}
	if o.portmap != "on" && o.portmap != "off" {
		return usageError{fmt.Errorf("--portmap must be on or off, not %q", o.portmap)}
	}
	sweepRate, err := sweepRateConfig(o.sweepRate)
	if err != nil {
		return usageError{err}
	}
	switch o.supernode {
	case "auto", "on", "off":
	default:
		return usageError{fmt.Errorf("--supernode must be auto, on or off, not %q", o.supernode)}
	}
	dir, err := node.DataDir(o.data)
	if err != nil {
		return err
	}
	// A daemon already serving this directory answers on its socket.
	c := localapi.NewClient(dir)
	sctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	_, err = c.Status(sctx)
	cancel()
	c.Close()
	if err == nil {
		return fmt.Errorf("a daemon is already running for %s: stop it first, or give another --data directory", dir)
	}
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: level}))
	n, err := node.New(node.Config{
		Server: o.server, DataDir: dir, ListenAddr: o.listen, Logger: log,
		Supernode: o.supernode, PortMap: o.portmap, BudgetRate: o.budgetRate, BudgetBytes: o.budgetBytes, RelayTCP: o.relayTCP,
		SweepRate: sweepRate,
	})
	if err != nil {
		return err
	}
	apps, err := n.EnableApps(node.AppsConfig{})
	if err != nil {
		n.Close()
		return err
	}
	ln, err := localapi.Listen(dir)
	if err != nil {
		n.Close()
		return err
	}
	var webLn net.Listener
	var token string
	if o.web != "off" {
		if token, err = web.LoadToken(dir); err == nil {
			webLn, err = web.Listen(o.web)
		}
		if err != nil {
			ln.Close()
			n.Close()
			return err
		}
	}
	fmt.Fprintf(stdout, "parley daemon up: device %s, UDP %s, data %s\n", n.PublicKey(), n.LocalAddr(), dir)
	if webLn != nil {
		fmt.Fprintf(stdout, "web UI: %s\n", web.URL(webLn, token))
	}
	if n.Status().Username == "" {
		fmt.Fprintf(stdout, "not logged in yet: run `parley login NAME` or `parley register NAME` (with --data %s)\n", dir)
	}
	ctx, stop := context.WithCancel(ctx)
	defer stop()
	apiDone := make(chan error, 1)
	go func() { apiDone <- (&localapi.Server{Node: n, Apps: apps, Logger: log}).Serve(ctx, ln) }()
	webDone := make(chan error, 1)
	if webLn != nil {
		go func() { webDone <- (&web.Server{Node: n, Apps: apps, Token: token, Logger: log}).Serve(ctx, webLn) }()
	} else {
		webDone <- nil
	}
	debugDone := serveDebug(ctx, n, log)
	err = n.Run(ctx)
	stop()
	<-debugDone
	if aerr := <-apiDone; err == nil && aerr != nil && !errors.Is(aerr, context.Canceled) {
		err = aerr
	}
	<-webDone
	return err
}

// sweepRateConfig turns --sweep-rate (0: off) into node.Config.SweepRate
// (0: the default, negative: off).
func sweepRateConfig(rate int) (int, error) {
	switch {
	case rate < 0:
		return 0, fmt.Errorf("--sweep-rate must be 0 (off) or a number of pings per second, not %d", rate)
	case rate == 0:
		return -1, nil
	}
	return rate, nil
}

// addDataFlag adds --data, the data directory every daemon command shares.
func addDataFlag(cmd *cobra.Command, p *string) {
	cmd.Flags().StringVar(p, "data", "", "the daemon's data directory (default: $PARLEY_DATA or the user's data directory)")
}

// daemonClient returns a client for the daemon of the data directory.
func daemonClient(data string) (*localapi.Client, string, error) {
	dir, err := node.DataDir(data)
	if err != nil {
		return nil, "", err
	}
	return localapi.NewClient(dir), dir, nil
}

// daemonErr turns a local API error into the sentence a user sees.
func daemonErr(err error, dir string) error {
	if err == nil {
		return nil
	}
	if errors.Is(err, localapi.ErrNoDaemon) {
		return fmt.Errorf("no daemon running for %s: start one with `parley up --server URL`", dir)
	}
	var de *localapi.DaemonError
	if errors.As(err, &de) {
		return errors.New(de.Msg)
	}
	return fmt.Errorf("talking to the daemon for %s: %v", dir, err)
}
