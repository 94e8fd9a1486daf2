package cli

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"time"

	"github.com/spf13/cobra"
)

type benchTransportOptions struct {
	quick    bool
	json     bool
	plot     string
	duration time.Duration
	repo     string
}

// newBenchTransportCmd runs the side-by-side transport benchmark. The
// benchmark compares Parley with quic-go, which Parley itself must not
// depend on, so it lives in the repository's separate bench/ module and this
// command runs it there with the Go toolchain ("go run"), passing the flags
// on. It therefore needs a checkout of the repository and Go installed.
func newBenchTransportCmd() *cobra.Command {
	var o benchTransportOptions
	cmd := &cobra.Command{
		Use:   "transport",
		Short: "Benchmark Parley's transport against quic-go and TCP+TLS",
		Long: `Benchmark Parley's transport side by side with quic-go, Go's TCP + TLS 1.3 and
plain TCP in one run: loopback bulk goodput and CPU per GB, time to first
byte at 50 ms RTT, handshakes per second, request/response latency, and
goodput over emulated lossy links (natlab, in virtual time).

The benchmark lives in the bench/ module of the Parley repository, so that
quic-go never becomes a dependency of parley itself; this command runs it
there with 'go run'. A full run takes about ten minutes; --quick about one.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			dir, err := findBenchModule(o.repo)
			if err != nil {
				return err
			}
			args := []string{"run", "./cmd/transportbench"}
			if o.quick {
				args = append(args, "--quick")
			}
			if o.json {
				args = append(args, "--json")
			}
			if o.plot != "" {
				p, err := filepath.Abs(o.plot)
				if err != nil {
					return err
				}
				args = append(args, "--plot", p)
			}
			if o.duration > 0 {
				args = append(args, "--duration", o.duration.String())
			}
			run := exec.CommandContext(cmd.Context(), "go", args...)
			run.Dir = dir
			run.Stdout, run.Stderr = cmd.OutOrStdout(), cmd.ErrOrStderr()
			if err := run.Run(); err != nil {
				if errors.Is(err, exec.ErrNotFound) {
					return errors.New("the transport benchmark needs the Go toolchain ('go') on PATH")
				}
				return fmt.Errorf("transport benchmark: %w", err)
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.BoolVar(&o.quick, "quick", false, "smoke test: short figures and checksummed bytes")
	f.BoolVar(&o.json, "json", false, "print the results as JSON")
	f.StringVar(&o.plot, "plot", "", "write a PNG plot of goodput against loss to this file")
	f.DurationVar(&o.duration, "duration", 0, "length of each loopback figure (default 10s)")
	f.StringVar(&o.repo, "repo", "", "the Parley repository (default: the current directory or a parent)")
	return cmd
}

// findBenchModule returns the bench/ module's directory in the repository
// at repo, or in the current directory or one of its parents.
func findBenchModule(repo string) (string, error) {
	want := []byte("module github.com/parley-p2p/parley/bench")
	dirs := []string{repo}
	if repo == "" {
		wd, err := os.Getwd()
		if err != nil {
			return "", err
		}
		for d := wd; ; d = filepath.Dir(d) {
			dirs = append(dirs, d)
			if filepath.Dir(d) == d {
				break
			}
		}
		dirs = dirs[1:]
	}
	for _, d := range dirs {
		b, err := os.ReadFile(filepath.Join(d, "bench", "go.mod"))
		if err == nil && bytes.HasPrefix(b, want) {
			return filepath.Join(d, "bench"), nil
		}
	}
	return "", errors.New("cannot find the Parley repository's bench/ module: run this from a checkout of the repository, or pass --repo")
}
