package transportbench

import (
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"runtime"
	"runtime/debug"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/parley-p2p/parley/natlab"
)

// Options sets how long and how thoroughly Run measures.
type Options struct {
	Warmup   time.Duration // before each loopback figure
	Duration time.Duration // of each loopback figure
	// GridWarmup and GridDuration are virtual time per natlab point.
	GridWarmup, GridDuration time.Duration
	TTFBTrials               int
	HandshakeConcurrency     int
	// Checksum makes the bulk tests hash every byte at both ends.
	Checksum bool
	Quick    bool
}

// DefaultOptions are a full run's: 10 s per figure after 2 s of warm-up.
func DefaultOptions() Options {
	return Options{
		Warmup: 2 * time.Second, Duration: 10 * time.Second,
		GridWarmup: 2 * time.Second, GridDuration: 10 * time.Second,
		TTFBTrials: 15, HandshakeConcurrency: 4,
	}
}

// QuickOptions are a smoke test's (--quick): 1 s per loopback figure, 2 s of
// virtual time per natlab point, and every byte checked by CRC.
func QuickOptions() Options {
	return Options{
		Warmup: 300 * time.Millisecond, Duration: time.Second,
		GridWarmup: 500 * time.Millisecond, GridDuration: 2 * time.Second,
		TTFBTrials: 3, HandshakeConcurrency: 4, Checksum: true, Quick: true,
	}
}

// Report is everything one run measured.
type Report struct {
	Meta       Meta              `json:"meta"`
	Bulk       []BulkResult      `json:"bulk"`
	TTFB       []TTFBResult      `json:"ttfb"`
	Handshakes []HandshakeResult `json:"handshakes"`
	RR         []RRResult        `json:"request_response"`
	Grid       []GridResult      `json:"natlab_grid"`
	Targets    []Target          `json:"targets"`
	// Errors are figures that could not be measured.
	Errors []string `json:"errors,omitempty"`
}

// Meta describes the run.
type Meta struct {
	Start           time.Time `json:"start"`
	GoVersion       string    `json:"go_version"`
	QUICGoVersion   string    `json:"quic_go_version"`
	CPUs            int       `json:"cpus"`
	LoadBefore      string    `json:"load_average_before"`
	LoadAfter       string    `json:"load_average_after"`
	Options         Options   `json:"options"`
	IdleCPU         float64   `json:"idle_cpu_per_second"`
	LoopbackPacket  int       `json:"parley_loopback_packet_size"`
	NatlabPacket    int       `json:"natlab_packet_size"`
	ClampedMSS      int       `json:"tcp_clamped_maxseg"`
	ParleyPerPacket float64   `json:"parley_payload_per_packet"`
	GridTime        string    `json:"grid_time"`
	ParleyCommit    string    `json:"parley_commit"`
	// Loads is the load average at the start of each section.
	Loads []SectionLoad `json:"loads,omitempty"`
}

// SectionLoad is the load average when a section started.
type SectionLoad struct {
	Section string `json:"section"`
	Load    string `json:"load"`
}

// NoteLoad records the load average as section starts.
func (r *Report) NoteLoad(section string) {
	r.Meta.Loads = append(r.Meta.Loads, SectionLoad{section, LoadAverage()})
}

// ParleyCommit names the checked-out commit of the repository in the
// current directory, with "+dirty" when transport/ has uncommitted changes:
// the transport is being tuned, and figures belong to a version.
func ParleyCommit() string {
	out, err := exec.Command("git", "rev-parse", "--short", "HEAD").Output()
	if err != nil {
		return "unknown"
	}
	c := strings.TrimSpace(string(out))
	top, err := exec.Command("git", "rev-parse", "--show-toplevel").Output()
	if err == nil {
		if exec.Command("git", "-C", strings.TrimSpace(string(top)), "diff", "--quiet", "HEAD", "--", "transport").Run() != nil {
			c += "+dirty"
		}
	}
	return c
}

// LoadAverage returns /proc/loadavg's three averages, or "unknown".
func LoadAverage() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "unknown"
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "unknown"
	}
	return strings.Join(f[:3], " ")
}

func moduleVersion(path string) string {
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return "unknown"
	}
	for _, d := range bi.Deps {
		if d.Path == path {
			return d.Version
		}
	}
	return "unknown"
}

// Contestants' names, as the tables show them.
const (
	NameParley     = "Parley"
	NameQUIC       = "quic-go"
	NameTLS        = "TCP+TLS"
	NameTLSClamped = "TCP+TLS (clamped MSS)"
	NameTCP        = "TCP"
	NameTCPClamped = "TCP (clamped MSS)"

	NameParleyGrid     = "Parley 1280 B"
	NameParleyGrid1452 = "Parley 1452 B"
)

// LoopbackTransports are the loopback contestants; mss is the clamp.
func LoopbackTransports(mss int) []Transport {
	return []Transport{
		{Name: NameParley, Kind: "parley"},
		{Name: NameQUIC, Kind: "quic"},
		{Name: NameTLS, Kind: "tls"},
		{Name: NameTLSClamped, Kind: "tls", MSS: mss},
		{Name: NameTCP, Kind: "tcp"},
		{Name: NameTCPClamped, Kind: "tcp", MSS: mss},
	}
}

// GridTransports are the natlab contestants: Parley at quic-go's packet
// size (the fair comparison), and Parley at the largest size an Ethernet
// path carries in IPv6 (the absolute figures' best case).
func GridTransports() []Transport {
	return []Transport{
		{Name: NameParleyGrid, Kind: "parley"},
		{Name: NameParleyGrid1452, Kind: "parley", PacketSize: LoopbackPacketSize},
		{Name: NameQUIC, Kind: "quic"},
	}
}

// defaultClamp is TCP_MAXSEG when Parley's bulk figure, which sets it, is
// missing: 1,452-byte packets carry about 1,408 bytes of stream data.
const defaultClamp = 1408 + tcpTimestamps

func (r *Report) fail(log io.Writer, err error) {
	fmt.Fprintf(log, "  error: %v\n", err)
	r.Errors = append(r.Errors, err.Error())
}

// tcpTimestamps is what Linux's TCP timestamps option takes from each
// segment's MSS: TCP_MAXSEG is set 12 bytes above the payload wanted.
const tcpTimestamps = 12

// RunLoopback measures the loopback sections and time to first byte,
// logging progress to log.
func RunLoopback(ctx context.Context, o Options, log io.Writer) (*Report, error) {
	r := &Report{Meta: Meta{
		Start:          time.Now().UTC(),
		GoVersion:      runtime.Version(),
		QUICGoVersion:  moduleVersion("github.com/quic-go/quic-go"),
		CPUs:           runtime.NumCPU(),
		LoadBefore:     LoadAverage(),
		ParleyCommit:   ParleyCommit(),
		Options:        o,
		LoopbackPacket: LoopbackPacketSize,
		NatlabPacket:   NatlabPacketSize,
	}}
	r.Meta.IdleCPU = IdleCPU(time.Second / 2)

	// Parley first: its payload per packet sets TCP's clamp.
	r.NoteLoad("bulk")
	fmt.Fprintln(log, "bulk: Parley")
	r.Meta.ClampedMSS = defaultClamp
	pb, err := Bulk(ctx, Transport{Name: NameParley, Kind: "parley"}, o.Warmup, o.Duration, o.Checksum, r.Meta.IdleCPU)
	if err != nil {
		r.fail(log, err)
	} else {
		r.Bulk = append(r.Bulk, pb)
		r.Meta.ParleyPerPacket = pb.PayloadPerPacket
		r.Meta.ClampedMSS = int(pb.PayloadPerPacket+0.5) + tcpTimestamps
	}
	transports := LoopbackTransports(r.Meta.ClampedMSS)
	for _, t := range transports[1:] {
		fmt.Fprintf(log, "bulk: %s\n", t.Name)
		b, err := Bulk(ctx, t, o.Warmup, o.Duration, o.Checksum, r.Meta.IdleCPU)
		if err != nil {
			r.fail(log, err)
			continue
		}
		r.Bulk = append(r.Bulk, b)
	}
	r.NoteLoad("request/response")
	for _, size := range []int{64, 4 << 10} {
		for _, t := range transports {
			fmt.Fprintf(log, "request/response %d B: %s\n", size, t.Name)
			rr, err := RequestResponse(ctx, t, size, o.Warmup/2, o.Duration)
			if err != nil {
				r.fail(log, err)
				continue
			}
			r.RR = append(r.RR, rr)
		}
	}
	hsRuns := []struct {
		t    Transport
		many bool
	}{
		{Transport{Name: NameParley, Kind: "parley"}, false},
		{Transport{Name: NameQUIC, Kind: "quic"}, false},
		{Transport{Name: NameTLS, Kind: "tls"}, false},
		{Transport{Name: NameParley, Kind: "parley"}, true},
		{Transport{Name: NameQUIC, Kind: "quic"}, true},
		{Transport{Name: NameTLS, Kind: "tls"}, true},
		{Transport{Name: NameQUIC + " (X25519 only)", Kind: "quic", X25519Only: true}, true},
		{Transport{Name: NameTLS + " (X25519 only)", Kind: "tls", X25519Only: true}, true},
	}
	r.NoteLoad("handshakes")
	for _, hr := range hsRuns {
		fmt.Fprintf(log, "handshakes: %s (many sources %v)\n", hr.t.Name, hr.many)
		h, err := Handshakes(ctx, hr.t, o.HandshakeConcurrency, hr.many, o.Warmup/2, o.Duration)
		if err != nil {
			r.fail(log, err)
			continue
		}
		r.Handshakes = append(r.Handshakes, h)
	}
	r.NoteLoad("time to first byte")
	const rtt = 50 * time.Millisecond
	for _, t := range []Transport{
		{Name: NameParley, Kind: "parley"},
		{Name: NameQUIC, Kind: "quic"},
		{Name: NameQUIC + " (ListenEarly)", Kind: "quic", Early: true},
		{Name: NameTLS, Kind: "tls"},
		{Name: NameTCP, Kind: "tcp"},
	} {
		fmt.Fprintf(log, "time to first byte: %s\n", t.Name)
		var res TTFBResult
		if t.Kind == "parley" || t.Kind == "quic" {
			w, a, b := natlab.NewPair(natlab.Config{}, natlab.Link{Delay: rtt / 2})
			listen := func(h *natlab.Host) func() (net.PacketConn, error) {
				return func() (net.PacketConn, error) { return h.ListenPacket(ctx, "udp4", ":0") }
			}
			n := &Net{ServerPacket: listen(b), ClientPacket: listen(a), PacketSize: NatlabPacketSize}
			res, err = TTFB(ctx, t, n, "natlab, real time", rtt, o.TTFBTrials)
			w.Close()
		} else {
			res, err = TTFB(ctx, t, &Net{TCPDelay: rtt / 2}, "loopback TCP, delayed in process", rtt, o.TTFBTrials)
		}
		if err != nil {
			r.fail(log, err)
			continue
		}
		r.TTFB = append(r.TTFB, res)
	}
	r.Meta.LoadAfter = LoadAverage()
	return r, nil
}

// A Target is one of the goals and whether this run met it.
type Target struct {
	Name  string  `json:"name"`
	Value float64 `json:"value"`
	Goal  string  `json:"goal"`
	Pass  bool    `json:"pass"`
	Note  string  `json:"note,omitempty"`
}

// label is the target's name with its note, as the reports print it.
func (t Target) label() string {
	if t.Note != "" {
		return t.Name + " (" + t.Note + ")"
	}
	return t.Name
}

// result is PASS or MISS.
func (t Target) result() string {
	if t.Pass {
		return "PASS"
	}
	return "MISS"
}

func (r *Report) bulk(name string) *BulkResult {
	for i := range r.Bulk {
		if r.Bulk[i].Transport == name {
			return &r.Bulk[i]
		}
	}
	return nil
}

func (r *Report) rr(name string, size int) *RRResult {
	for i := range r.RR {
		if r.RR[i].Transport == name && r.RR[i].Size == size {
			return &r.RR[i]
		}
	}
	return nil
}

func (r *Report) ttfb(name string) *TTFBResult {
	for i := range r.TTFB {
		if r.TTFB[i].Transport == name {
			return &r.TTFB[i]
		}
	}
	return nil
}

func (r *Report) grid(name string, rate int, rtt time.Duration, loss float64) *GridResult {
	for i := range r.Grid {
		g := &r.Grid[i]
		if g.Transport == name && g.Point.RateMbps == rate && g.Point.RTT == rtt && g.Point.Loss == loss && g.Error == "" {
			return g
		}
	}
	return nil
}

// Evaluate fills r.Targets from the figures present.
func (r *Report) Evaluate() {
	r.Targets = nil
	add := func(name string, v float64, goal string, pass bool, note string) {
		r.Targets = append(r.Targets, Target{Name: name, Value: v, Goal: goal, Pass: pass, Note: note})
	}
	p, q, tc := r.bulk(NameParley), r.bulk(NameQUIC), r.bulk(NameTLSClamped)
	if p != nil && q != nil {
		v := p.Mbps / q.Mbps
		add("loopback goodput, Parley / quic-go", v, "≥ 1.5", v >= 1.5, "")
		c := p.CPUSecondsPerGB / q.CPUSecondsPerGB
		add("CPU per GB, Parley / quic-go", c, "≤ 0.6", c <= 0.6, "")
	}
	if p != nil && tc != nil {
		v := p.Mbps / tc.Mbps
		add("loopback goodput, Parley / TCP+TLS (clamped MSS)", v, "≥ 0.8", v >= 0.8, "")
	}
	if pt, tt := r.ttfb(NameParley), r.ttfb(NameTLS); pt != nil && tt != nil {
		add("time to first byte, Parley, round trips", pt.ServerFirstRTTs, "one (< 1.5)", pt.ServerFirstRTTs < 1.5, "server speaks first")
		v := pt.ServerFirstMs / tt.ServerFirstMs
		add("time to first byte, Parley / TCP+TLS at 50 ms RTT", v, "≤ 0.55", v <= 0.55, "server speaks first")
	}
	const rtt = 50 * time.Millisecond
	best := NameParleyGrid1452
	if g := r.grid(best, 100, rtt, 0); g != nil {
		add("natlab 100 Mbit/s 50 ms 0% loss, Parley share of link", g.Share, "≥ 0.95", g.Share >= 0.95, "1452-byte packets")
	}
	if g := r.grid(best, 100, rtt, 0.01); g != nil {
		add("natlab 100 Mbit/s 50 ms 1% loss, Parley share of link", g.Share, "≥ 0.80", g.Share >= 0.80, "1452-byte packets")
	}
	if g, gq := r.grid(NameParleyGrid, 100, rtt, 0.01), r.grid(NameQUIC, 100, rtt, 0.01); g != nil && gq != nil {
		v := g.Mbps / gq.Mbps
		add("natlab 100 Mbit/s 50 ms 1% loss, Parley / quic-go", v, "≥ 3", v >= 3, "both 1280-byte packets")
	}
	for _, size := range []int{64, 4 << 10} {
		if a, b := r.rr(NameParley, size), r.rr(NameQUIC, size); a != nil && b != nil {
			v := a.P99us / b.P99us
			add(fmt.Sprintf("request/response p99 %s, Parley / quic-go", sizeName(size)), v, "≤ 0.8", v <= 0.8, "")
		}
	}
}

func sizeName(n int) string {
	if n >= 1024 && n%1024 == 0 {
		return fmt.Sprintf("%d KiB", n/1024)
	}
	return fmt.Sprintf("%d B", n)
}

// WriteText prints r as tables.
func (r *Report) WriteText(w io.Writer) {
	m := r.Meta
	fmt.Fprintf(w, "Transport benchmark, %s, Parley %s, %s, quic-go %s, %d CPUs, load average %s before, %s after\n",
		m.Start.Format(time.RFC3339), m.ParleyCommit, m.GoVersion, m.QUICGoVersion, m.CPUs, m.LoadBefore, m.LoadAfter)
	fmt.Fprintf(w, "loopback: %v warm-up + %v per figure; Parley packets %d B (%.0f B of stream data each); TCP_MAXSEG clamp %d\n",
		m.Options.Warmup, m.Options.Duration, m.LoopbackPacket, m.ParleyPerPacket, m.ClampedMSS)
	if len(m.Loads) > 0 {
		fmt.Fprint(w, "load average at the start of:")
		for i, l := range m.Loads {
			sep := ","
			if i == 0 {
				sep = ""
			}
			fmt.Fprintf(w, "%s %s %s", sep, l.Section, l.Load)
		}
		fmt.Fprintln(w)
	}
	fmt.Fprintln(w)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	if len(r.Bulk) > 0 {
		fmt.Fprintln(w, "Loopback bulk, one stream, 64 KiB writes")
		fmt.Fprintln(tw, "transport\tMbit/s\tCPU s/GB\tMSS\tverified\t")
		for _, b := range r.Bulk {
			mss := "-"
			if b.MSS > 0 {
				mss = fmt.Sprint(b.MSS)
			}
			v := fmt.Sprintf("%d B", b.BytesVerified)
			if b.Checksummed {
				v += " + CRC"
			}
			fmt.Fprintf(tw, "%s\t%.0f\t%.2f\t%s\t%s\t\n", b.Transport, b.Mbps, b.CPUSecondsPerGB, mss, v)
		}
		tw.Flush()
		fmt.Fprintln(w)
	}
	if len(r.RR) > 0 {
		fmt.Fprintln(w, "Loopback request/response, one stream, back to back")
		fmt.Fprintln(tw, "transport\tsize\tp50 µs\tp99 µs\texchanges/s\t")
		for _, x := range r.RR {
			fmt.Fprintf(tw, "%s\t%s\t%.1f\t%.1f\t%.0f\t\n", x.Transport, sizeName(x.Size), x.P50us, x.P99us, x.PerSecond)
		}
		tw.Flush()
		fmt.Fprintln(w)
	}
	if len(r.Handshakes) > 0 {
		fmt.Fprintln(w, "Mutually authenticated handshakes over loopback")
		fmt.Fprintln(tw, "transport\tclient sockets\tper second\tconcurrent dialers\tfailed dials\trefused\tcookies\t")
		for _, h := range r.Handshakes {
			src := "one"
			if h.ManySources {
				src = "one per dial"
			}
			fmt.Fprintf(tw, "%s\t%s\t%.0f\t%d\t%d\t%d\t%d\t\n", h.Transport, src, h.PerSecond, h.Concurrency, h.Failed, h.Refused, h.CookiesSent)
		}
		tw.Flush()
		fmt.Fprintln(w)
	}
	if len(r.TTFB) > 0 {
		fmt.Fprintln(w, "Time to first byte of a new authenticated connection, 50 ms RTT (median)")
		fmt.Fprintln(tw, "transport\tserver first ms\tRTTs\trequest ms\tRTTs\tpath\t")
		for _, t := range r.TTFB {
			fmt.Fprintf(tw, "%s\t%.1f\t%.2f\t%.1f\t%.2f\t%s\t\n", t.Transport, t.ServerFirstMs, t.ServerFirstRTTs, t.RequestMs, t.RequestRTTs, t.Path)
		}
		tw.Flush()
		fmt.Fprintln(w)
	}
	if len(r.Grid) > 0 {
		fmt.Fprintf(w, "natlab links, one stream, %v + %v of virtual time per point: goodput as %% of link rate\n", m.Options.GridWarmup, m.Options.GridDuration)
		r.writeGrid(tw)
		tw.Flush()
		fmt.Fprintln(w)
	}
	if len(r.Errors) > 0 {
		fmt.Fprintln(w, "Not measured")
		for _, e := range r.Errors {
			fmt.Fprintf(w, "  %s\n", e)
		}
		fmt.Fprintln(w)
	}
	if len(r.Targets) > 0 {
		fmt.Fprintln(w, "Targets")
		fmt.Fprintln(tw, "target\tvalue\tgoal\tresult\t")
		for _, t := range r.Targets {
			fmt.Fprintf(tw, "%s\t%.2f\t%s\t%s\t\n", t.label(), t.Value, t.Goal, t.result())
		}
		tw.Flush()
	}
}

// writeGrid prints one row per link and one column per loss rate for each
// transport.
func (r *Report) writeGrid(tw *tabwriter.Writer) {
	var names []string
	seen := map[string]bool{}
	for _, g := range r.Grid {
		if !seen[g.Transport] {
			seen[g.Transport] = true
			names = append(names, g.Transport)
		}
	}
	losses := []float64{0, 0.001, 0.01, 0.02, 0.05}
	fmt.Fprint(tw, "link\ttransport\t")
	for _, l := range losses {
		fmt.Fprintf(tw, "%g%%\t", l*100)
	}
	fmt.Fprintln(tw)
	for _, rate := range []int{100, 1000} {
		for _, rtt := range []time.Duration{10 * time.Millisecond, 50 * time.Millisecond} {
			for _, name := range names {
				fmt.Fprintf(tw, "%d Mbit/s %v\t%s\t", rate, rtt, name)
				for _, l := range losses {
					g := r.grid(name, rate, rtt, l)
					if g == nil {
						fmt.Fprint(tw, "-\t")
						continue
					}
					fmt.Fprintf(tw, "%.1f\t", g.Share*100)
				}
				fmt.Fprintln(tw)
			}
		}
	}
}
