package cli

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/parley-p2p/parley/node"
	"github.com/parley-p2p/parley/transport"
)

// This file is `parley debug`, hidden: tools for testing a daemon end to
// end (the lab's matrix test drives real daemons with it). The daemon
// serves them on a second Unix socket in its data directory, debug.sock,
// which the directory's mode 0700 keeps to its owner, and answers the
// "parley.debug.echo" stream service for its contacts.

const (
	debugSocket      = "debug.sock"
	debugEchoService = "parley.debug.echo"
	debugEchoMax     = 64 << 10
)

// DebugEcho is what `parley debug echo` prints, as JSON.
type DebugEcho struct {
	Echo string `json:"echo"`
	// Millis is the time from asking the daemon to the echo's end,
	// connecting first if there was no session.
	Millis float64 `json:"ms"`
	// Path is the contact's path after the echo: direct or relayed.
	Path  string `json:"path"`
	Why   string `json:"why,omitempty"`
	Relay string `json:"relay,omitempty"`
}

func newDebugCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "debug", Short: "Tools for testing daemons", Hidden: true, Args: cobra.NoArgs}
	var data string
	echo := &cobra.Command{
		Use:   "echo CONTACT TEXT",
		Short: "Send TEXT to the contact's daemon over the session and print its echo as JSON",
		Args:  cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			dir, err := node.DataDir(data)
			if err != nil {
				return err
			}
			hc := &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
				return (&net.Dialer{}).DialContext(ctx, "unix", filepath.Join(dir, debugSocket))
			}}}
			defer hc.CloseIdleConnections()
			req, err := http.NewRequestWithContext(cmd.Context(), http.MethodPost, "http://parley/echo?contact="+args[0], strings.NewReader(args[1]))
			if err != nil {
				return err
			}
			resp, err := hc.Do(req)
			if err != nil {
				return fmt.Errorf("no daemon answers for %s: start one with `parley up --data %s`", dir, dir)
			}
			defer resp.Body.Close()
			body, _ := io.ReadAll(io.LimitReader(resp.Body, 2*debugEchoMax))
			if resp.StatusCode != http.StatusOK {
				return errors.New(string(body))
			}
			_, err = cmd.OutOrStdout().Write(body)
			return err
		},
	}
	addDataFlag(echo, &data)
	cmd.AddCommand(echo)
	return cmd
}

// serveDebug serves the debug socket for n until ctx ends; the returned
// channel is closed when it has stopped.
func serveDebug(ctx context.Context, n *node.Node, log *slog.Logger) <-chan struct{} {
	done := make(chan struct{})
	n.Handle(debugEchoService, func(_ node.Peer, st *transport.Stream) {
		st.SetDeadline(time.Now().Add(30 * time.Second))
		io.Copy(st, io.LimitReader(st, debugEchoMax))
		st.Close()
	})
	path := filepath.Join(n.DataDir(), debugSocket)
	os.Remove(path)
	ln, err := net.Listen("unix", path)
	if err != nil {
		log.Warn("debug socket", "err", err)
		close(done)
		return done
	}
	mux := http.NewServeMux()
	mux.HandleFunc("POST /echo", func(w http.ResponseWriter, r *http.Request) {
		contact := r.URL.Query().Get("contact")
		text, _ := io.ReadAll(io.LimitReader(r.Body, debugEchoMax))
		start := time.Now()
		got, err := debugEcho(r.Context(), n, contact, text)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadGateway)
			return
		}
		out := DebugEcho{Echo: string(got), Millis: float64(time.Since(start).Microseconds()) / 1000}
		for _, c := range n.Status().Contacts {
			if c.Username == contact {
				out.Path, out.Why, out.Relay = c.Path, c.Why, c.Relay
			}
		}
		b, _ := json.Marshal(out)
		w.Write(append(b, '\n'))
	})
	hs := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go func() {
		defer close(done)
		errc := make(chan error, 1)
		go func() { errc <- hs.Serve(ln) }()
		select {
		case <-errc:
		case <-ctx.Done():
			sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			hs.Shutdown(sctx)
			cancel()
			<-errc
		}
		os.Remove(path)
	}()
	return done
}

// debugEcho sends text to contact's echo service and returns the echo.
func debugEcho(ctx context.Context, n *node.Node, contact string, text []byte) ([]byte, error) {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	st, err := n.OpenStream(ctx, contact, debugEchoService)
	if err != nil {
		return nil, err
	}
	defer st.Close()
	if d, ok := ctx.Deadline(); ok {
		st.SetDeadline(d)
	}
	if _, err := st.Write(text); err != nil {
		return nil, err
	}
	if err := st.CloseWrite(); err != nil {
		return nil, err
	}
	got, err := io.ReadAll(io.LimitReader(st, debugEchoMax))
	if err != nil {
		return nil, fmt.Errorf("read the echo: %w", err)
	}
	return got, nil
}
