package transportbench

import (
	"fmt"
	"io"
	"strings"
	"time"
)

// WriteMarkdown prints r as the Markdown tables of docs/benchmarks.md, so
// that a new run can replace the old figures without retyping them.
func (r *Report) WriteMarkdown(w io.Writer) {
	m := r.Meta
	fmt.Fprintf(w, "Run of %s on Parley commit %s, %s, quic-go %s, %d CPUs.\n",
		m.Start.Format("2006-01-02 15:04 MST"), m.ParleyCommit, m.GoVersion, m.QUICGoVersion, m.CPUs)
	fmt.Fprintf(w, "Load average (1, 5, 15 min) %s at the start, %s at the end", m.LoadBefore, m.LoadAfter)
	for _, l := range m.Loads {
		fmt.Fprintf(w, "; %s at the start of %s", strings.Fields(l.Load)[0], l.Section)
	}
	fmt.Fprint(w, ".\n\n")

	if len(r.Bulk) > 0 {
		fmt.Fprintf(w, "**Loopback bulk**, one stream, 64 KiB writes, %v after %v of warm-up:\n\n", m.Options.Duration, m.Options.Warmup)
		fmt.Fprintln(w, "| transport | goodput | CPU s per GB (both ends) | TCP send MSS |")
		fmt.Fprintln(w, "|---|---:|---:|---:|")
		for _, b := range r.Bulk {
			mss := "—"
			if b.MSS > 0 {
				mss = thousands(b.MSS)
			}
			fmt.Fprintf(w, "| %s | %s Mbit/s | %.2f | %s |\n", b.Transport, thousands(int(b.Mbps+0.5)), b.CPUSecondsPerGB, mss)
		}
		fmt.Fprintln(w)
	}
	if len(r.RR) > 0 {
		fmt.Fprintf(w, "**Request/response latency** over loopback, one stream, back to back, %v:\n\n", m.Options.Duration)
		fmt.Fprintln(w, "| transport | 64 B p50 | 64 B p99 | 4 KiB p50 | 4 KiB p99 |")
		fmt.Fprintln(w, "|---|---:|---:|---:|---:|")
		for _, x := range r.RR {
			if x.Size != 64 {
				continue
			}
			row := fmt.Sprintf("| %s | %.1f µs | %.1f µs", x.Transport, x.P50us, x.P99us)
			if y := r.rr(x.Transport, 4<<10); y != nil {
				row += fmt.Sprintf(" | %.1f µs | %.1f µs |", y.P50us, y.P99us)
			} else {
				row += " | — | — |"
			}
			fmt.Fprintln(w, row)
		}
		fmt.Fprintln(w)
	}
	if len(r.Handshakes) > 0 {
		fmt.Fprintf(w, "**Mutually authenticated handshakes** per second over loopback, %d concurrent dialers, %v:\n\n", r.Handshakes[0].Concurrency, m.Options.Duration)
		fmt.Fprintln(w, "| transport | all dials from one socket | each dial from its own address |")
		fmt.Fprintln(w, "|---|---:|---:|")
		var names []string
		for _, h := range r.Handshakes {
			if !contains(names, h.Transport) {
				names = append(names, h.Transport)
			}
		}
		for _, n := range names {
			cell := func(many bool) string {
				for _, h := range r.Handshakes {
					if h.Transport == n && h.ManySources == many {
						s := thousands(int(h.PerSecond + 0.5))
						var notes []string
						if h.Failed > 0 {
							notes = append(notes, fmt.Sprintf("%d dials timed out", h.Failed))
						}
						if h.CookiesSent > 0 {
							notes = append(notes, thousands(int(h.CookiesSent))+" cookie replies")
						}
						if len(notes) > 0 {
							s += " (" + strings.Join(notes, "; ") + ")"
						}
						return s
					}
				}
				return "—"
			}
			fmt.Fprintf(w, "| %s | %s | %s |\n", n, cell(false), cell(true))
		}
		fmt.Fprintln(w)
	}
	if len(r.TTFB) > 0 {
		fmt.Fprintf(w, "**Time to first byte** of a new authenticated connection at %.0f ms RTT (median of %d):\n\n", r.TTFB[0].RTTms, r.TTFB[0].Trials)
		fmt.Fprintln(w, "| transport | server speaks first | client request, server answer | path |")
		fmt.Fprintln(w, "|---|---:|---:|---|")
		for _, t := range r.TTFB {
			fmt.Fprintf(w, "| %s | %.1f ms = %.2f RTT | %.1f ms = %.2f RTT | %s |\n", t.Transport, t.ServerFirstMs, t.ServerFirstRTTs, t.RequestMs, t.RequestRTTs, t.Path)
		}
		fmt.Fprintln(w)
	}
	if len(r.Grid) > 0 {
		fmt.Fprintf(w, "**natlab links**: goodput as a share of the link rate (%%), one stream, %v of virtual time after %v of warm-up, random loss on each direction:\n\n", m.Options.GridDuration, m.Options.GridWarmup)
		fmt.Fprintln(w, "| link | transport | 0 % | 0.1 % | 1 % | 2 % | 5 % |")
		fmt.Fprintln(w, "|---|---|---:|---:|---:|---:|---:|")
		var names []string
		for _, g := range r.Grid {
			if !contains(names, g.Transport) {
				names = append(names, g.Transport)
			}
		}
		for _, rate := range []int{100, 1000} {
			for _, rtt := range []time.Duration{10 * time.Millisecond, 50 * time.Millisecond} {
				for i, n := range names {
					link := ""
					if i == 0 {
						link = fmt.Sprintf("%s, %v", rateName(rate), rtt)
					}
					fmt.Fprintf(w, "| %s | %s |", link, n)
					for _, l := range gridLosses {
						if g := r.grid(n, rate, rtt, l); g != nil {
							fmt.Fprintf(w, " %.1f |", g.Share*100)
						} else {
							fmt.Fprint(w, " — |")
						}
					}
					fmt.Fprintln(w)
				}
			}
		}
		fmt.Fprintln(w)
	}
	if len(r.Targets) > 0 {
		fmt.Fprintln(w, "| target | this run | goal | result |")
		fmt.Fprintln(w, "|---|---:|---:|---|")
		for _, t := range r.Targets {
			fmt.Fprintf(w, "| %s | %.2f | %s | %s |\n", t.label(), t.Value, t.Goal, t.result())
		}
		fmt.Fprintln(w)
	}
	if len(r.Errors) > 0 {
		fmt.Fprintln(w, "Not measured:")
		fmt.Fprintln(w)
		for _, e := range r.Errors {
			fmt.Fprintf(w, "- %s\n", e)
		}
		fmt.Fprintln(w)
	}
}

func contains(s []string, x string) bool {
	for _, y := range s {
		if y == x {
			return true
		}
	}
	return false
}

func rateName(mbps int) string {
	if mbps%1000 == 0 {
		return fmt.Sprintf("%d Gbit/s", mbps/1000)
	}
	return fmt.Sprintf("%d Mbit/s", mbps)
}

// thousands formats n with commas between groups of three digits.
func thousands(n int) string {
	s := fmt.Sprint(n)
	if n < 0 {
		return "-" + thousands(-n)
	}
	var b strings.Builder
	for i, c := range s {
		if i > 0 && (len(s)-i)%3 == 0 {
			b.WriteByte(',')
		}
		b.WriteRune(c)
	}
	return b.String()
}
