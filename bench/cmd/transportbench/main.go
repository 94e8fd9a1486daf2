// Command transportbench runs Parley's transport side by side with quic-go,
// TCP + TLS 1.3 and TCP, and prints the figures as tables or JSON. See
// docs/benchmarks.md for what it measures and how.
//
//	cd bench && go run ./cmd/transportbench [--quick] [--json] [--plot FILE]
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"regexp"
	"testing"

	"github.com/parley-p2p/parley/bench/transportbench"
)

// gridEnv, when set in the environment, makes this process the grid child:
// it runs the natlab grid inside testing/synctest bubbles, which need a
// *testing.T, through testing.Main, and writes the results as JSON to the
// file the variable names. gridOptsEnv carries the Options.
const (
	gridEnv     = "TRANSPORTBENCH_GRID_OUT"
	gridOptsEnv = "TRANSPORTBENCH_GRID_OPTIONS"
)

func main() {
	if out := os.Getenv(gridEnv); out != "" {
		gridChild(out)
		return
	}
	os.Exit(run())
}

func run() int {
	quick := flag.Bool("quick", false, "smoke test: short figures (1 s, 2 s of virtual time per natlab point) and CRC-checked bytes")
	asJSON := flag.Bool("json", false, "print the report as JSON instead of tables")
	markdown := flag.Bool("markdown", false, "print the report as the Markdown tables of docs/benchmarks.md")
	plot := flag.String("plot", "", "write a PNG plot of natlab goodput against loss to this file")
	loopback := flag.Bool("loopback", true, "run the loopback and time-to-first-byte sections")
	grid := flag.Bool("grid", true, "run the natlab grid")
	dur := flag.Duration("duration", 0, "length of each loopback figure (default 10s, 1s with --quick)")
	from := flag.String("report", "", "measure nothing: print (and plot) the JSON report in this file")
	flag.Parse()

	if *from != "" {
		return replay(*from, *asJSON, *markdown, *plot)
	}

	o := transportbench.DefaultOptions()
	if *quick {
		o = transportbench.QuickOptions()
	}
	if *dur > 0 {
		o.Duration = *dur
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	log := os.Stderr

	r := &transportbench.Report{Meta: transportbench.Meta{LoadBefore: transportbench.LoadAverage(), Options: o}}
	if *loopback {
		var err error
		if r, err = transportbench.RunLoopback(ctx, o, log); err != nil {
			fmt.Fprintf(os.Stderr, "transportbench: %v\n", err)
			return 1
		}
	}
	if *grid {
		r.NoteLoad("natlab grid")
		g, err := runGridChild(o)
		if err != nil {
			r.Errors = append(r.Errors, fmt.Sprintf("natlab grid: %v", err))
		}
		for _, p := range g {
			if p.Error != "" {
				r.Errors = append(r.Errors, fmt.Sprintf("natlab %v %s: %s", p.Point, p.Transport, p.Error))
			}
		}
		r.Grid = g
		r.Meta.GridTime = "virtual (testing/synctest)"
		r.Meta.LoadAfter = transportbench.LoadAverage()
	}
	r.Evaluate()
	if *plot != "" && len(r.Grid) > 0 {
		if err := transportbench.PlotGrid(r.Grid, *plot); err != nil {
			fmt.Fprintf(os.Stderr, "transportbench: plot: %v\n", err)
			return 1
		}
	}
	if *asJSON {
		e := json.NewEncoder(os.Stdout)
		e.SetIndent("", "  ")
		if err := e.Encode(r); err != nil {
			return 1
		}
	} else if *markdown {
		r.WriteMarkdown(os.Stdout)
	} else {
		r.WriteText(os.Stdout)
	}
	if len(r.Errors) > 0 {
		return 1
	}
	return 0
}

// runGridChild runs this program again as the grid child and reads back its
// results.
func runGridChild(o transportbench.Options) ([]transportbench.GridResult, error) {
	exe, err := os.Executable()
	if err != nil {
		return nil, err
	}
	f, err := os.CreateTemp("", "transportbench-grid-*.json")
	if err != nil {
		return nil, err
	}
	f.Close()
	defer os.Remove(f.Name())
	opts, _ := json.Marshal(o)
	cmd := exec.Command(exe, "-test.run=^TestGrid$", "-test.timeout=0")
	cmd.Env = append(os.Environ(), gridEnv+"="+f.Name(), gridOptsEnv+"="+string(opts))
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if err := cmd.Run(); err != nil {
		return nil, err
	}
	b, err := os.ReadFile(f.Name())
	if err != nil {
		return nil, err
	}
	var g []transportbench.GridResult
	return g, json.Unmarshal(b, &g)
}

func gridChild(out string) {
	var o transportbench.Options
	if err := json.Unmarshal([]byte(os.Getenv(gridOptsEnv)), &o); err != nil {
		fmt.Fprintf(os.Stderr, "transportbench: grid options: %v\n", err)
		os.Exit(2)
	}
	test := func(t *testing.T) {
		g := transportbench.RunGrid(t, o, transportbench.Grid(), transportbench.GridTransports(), os.Stderr)
		b, err := json.Marshal(g)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(out, b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	testing.Main(regexp.MatchString, []testing.InternalTest{{Name: "TestGrid", F: test}}, nil, nil)
}

// replay prints and plots a report saved with --json.
func replay(path string, asJSON, markdown bool, plot string) int {
	b, err := os.ReadFile(path)
	if err != nil {
		fmt.Fprintf(os.Stderr, "transportbench: %v\n", err)
		return 1
	}
	var r transportbench.Report
	if err := json.Unmarshal(b, &r); err != nil {
		fmt.Fprintf(os.Stderr, "transportbench: %s: %v\n", path, err)
		return 1
	}
	r.Evaluate()
	if plot != "" {
		if err := transportbench.PlotGrid(r.Grid, plot); err != nil {
			fmt.Fprintf(os.Stderr, "transportbench: plot: %v\n", err)
			return 1
		}
	}
	switch {
	case asJSON:
		e := json.NewEncoder(os.Stdout)
		e.SetIndent("", "  ")
		e.Encode(&r)
	case markdown:
		r.WriteMarkdown(os.Stdout)
	default:
		r.WriteText(os.Stdout)
	}
	return 0
}
