package cli

import (
	"bufio"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/spf13/cobra"

	"github.com/parley-p2p/parley/directory"
	"github.com/parley-p2p/parley/directory/client"
	"github.com/parley-p2p/parley/directory/store"
	"github.com/parley-p2p/parley/directory/store/sqlite"
)

type benchServerOptions struct {
	devices    int
	contacts   int
	duration   time.Duration
	workers    int
	fanouts    int
	inProcess  bool
	keepData   string
	loginUsers int
}

func newBenchServerCmd() *cobra.Command {
	var o benchServerOptions
	cmd := &cobra.Command{
		Use:   "server",
		Short: "Benchmark the directory server",
		Long: `Benchmark the directory server on SQLite: logins per second (argon2id at the
default cost), authenticated contact-list reads per second, memory per
connected event stream, and how fast a presence change reaches every online
contact.

The server runs as a separate 'parley server' process, so that its memory is
measured alone; the database is seeded directly through the store.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runBenchServer(cmd.Context(), o, cmd.OutOrStdout())
		},
	}
	f := cmd.Flags()
	f.IntVar(&o.devices, "devices", 10000, "accounts, each with one device holding an event stream")
	f.IntVar(&o.contacts, "contacts", 20, "mutual contacts per account (neighbours on a ring)")
	f.DurationVar(&o.duration, "duration", 5*time.Second, "how long each throughput test runs")
	f.IntVar(&o.workers, "workers", 64, "concurrent clients for the contact-list test")
	f.IntVar(&o.fanouts, "fanouts", 200, "presence changes to time")
	f.IntVar(&o.loginUsers, "login-users", 200, "accounts used by the login test")
	f.BoolVar(&o.inProcess, "in-process", false, "run the server in this process (memory figures then include the clients)")
	f.StringVar(&o.keepData, "data", "", "data directory to use (default: a temporary one, removed afterwards)")
	return cmd
}

// benchUser is a seeded account.
type benchUser struct {
	name  string
	key   client.Key
	token string
}

func benchToken() (string, [32]byte) {
	var b [32]byte
	rand.Read(b[:])
	tok := base64.RawURLEncoding.EncodeToString(b[:])
	return tok, sha256.Sum256([]byte(tok))
}

const benchPassword = "bench password 0123"

// seed fills the database: n accounts with one device and one token each,
// every account a mutual contact of its k nearest neighbours on a ring.
func seed(ctx context.Context, path string, n, k int, out io.Writer) ([]benchUser, error) {
	st, err := sqlite.Open(ctx, path)
	if err != nil {
		return nil, err
	}
	defer st.Close()
	// One real argon2id hash shared by all accounts: hashing 10,000
	// passwords would take minutes and measure nothing.
	hash, err := directory.HashPassword(benchPassword, directory.DefaultArgon2)
	if err != nil {
		return nil, err
	}
	now := time.Now()
	users := make([]benchUser, n)
	ids := make([]int64, n)
	start := time.Now()
	for i := range users {
		u := &users[i]
		u.name = fmt.Sprintf("user%05d", i)
		rand.Read(u.key[:])
		su, err := st.CreateUser(ctx, u.name, hash, now)
		if err != nil {
			return nil, err
		}
		ids[i] = su.ID
		d, err := st.UpsertDevice(ctx, su.ID, store.Key(u.key), "bench", now)
		if err != nil {
			return nil, err
		}
		tok, h := benchToken()
		u.token = tok
		if err := st.CreateToken(ctx, store.Token{Hash: h, UserID: su.ID, DeviceID: d.ID, CreatedAt: now, ExpiresAt: now.Add(24 * time.Hour)}); err != nil {
			return nil, err
		}
	}
	for i := range n {
		for j := 1; j <= k/2; j++ {
			other := (i + j) % n
			if other == i {
				continue
			}
			if _, err := st.RequestContact(ctx, ids[i], ids[other], now); err != nil && !errors.Is(err, store.ErrConflict) {
				return nil, err
			}
			if err := st.AcceptContact(ctx, ids[other], ids[i], now); err != nil && !errors.Is(err, store.ErrNotFound) {
				return nil, err
			}
		}
	}
	fmt.Fprintf(out, "seeded %d accounts with %d contacts each in %v\n", n, k, time.Since(start).Round(time.Millisecond))
	return users, nil
}

// benchTarget is the server under test.
type benchTarget struct {
	url  string
	pid  int // 0 when in process
	stop func() error
}

func startBenchServer(ctx context.Context, dir string, inProcess bool) (*benchTarget, error) {
	args := []string{"server", "--listen", "127.0.0.1:0", "--stun", "", "--data", dir, "--no-rate-limits", "--log-level", "error"}
	bannerRE := regexp.MustCompile(`API on (\S+?),`)
	if inProcess {
		sctx, cancel := context.WithCancel(ctx)
		pr, pw := io.Pipe()
		done := make(chan int, 1)
		go func() { done <- Run(sctx, args, pw, io.Discard); pw.Close() }()
		line, err := bufio.NewReader(pr).ReadString('\n')
		go io.Copy(io.Discard, pr)
		m := bannerRE.FindStringSubmatch(line)
		if err != nil || m == nil {
			cancel()
			return nil, fmt.Errorf("server did not start: %q %v", line, err)
		}
		return &benchTarget{url: m[1], stop: func() error { cancel(); <-done; return nil }}, nil
	}
	exe, err := os.Executable()
	if err != nil {
		return nil, err
	}
	cmd := exec.CommandContext(ctx, exe, args...)
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	line, err := bufio.NewReader(stdout).ReadString('\n')
	go io.Copy(io.Discard, stdout)
	m := bannerRE.FindStringSubmatch(line)
	if err != nil || m == nil {
		cmd.Process.Kill()
		cmd.Wait()
		return nil, fmt.Errorf("server did not start: %q %v", line, err)
	}
	return &benchTarget{url: m[1], pid: cmd.Process.Pid, stop: func() error {
		cmd.Process.Signal(os.Interrupt)
		return cmd.Wait()
	}}, nil
}

// rss returns the server process's resident set size in bytes.
func (t *benchTarget) rss() (int64, error) {
	if t.pid == 0 {
		return 0, errors.New("in process")
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", t.pid))
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		if f, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(f), " kB"), 10, 64)
			return kb << 10, err
		}
	}
	return 0, errors.New("no VmRSS")
}

func percentile(d []time.Duration, p float64) time.Duration {
	if len(d) == 0 {
		return 0
	}
	slices.Sort(d)
	i := int(float64(len(d)-1) * p)
	return d[i]
}

func runBenchServer(ctx context.Context, o benchServerOptions, out io.Writer) error {
	dir := o.keepData
	if dir == "" {
		d, err := os.MkdirTemp("", "parley-bench")
		if err != nil {
			return err
		}
		defer os.RemoveAll(d)
		dir = d
	}
	users, err := seed(ctx, filepath.Join(dir, "directory.db"), o.devices, o.contacts, out)
	if err != nil {
		return fmt.Errorf("seed: %w", err)
	}
	srv, err := startBenchServer(ctx, dir, o.inProcess)
	if err != nil {
		return err
	}
	defer srv.stop()
	tr := &http.Transport{MaxIdleConns: 4096, MaxIdleConnsPerHost: 4096, IdleConnTimeout: time.Minute}
	defer tr.CloseIdleConnections()
	hc := &http.Client{Transport: tr, Timeout: 30 * time.Second}
	base := client.New(srv.url, hc)

	// 1. Logins per second, at the default argon2id cost.
	var logins atomic.Int64
	var loginErr atomic.Value
	deadline := time.Now().Add(o.duration)
	var wg sync.WaitGroup
	for w := range 4 {
		wg.Go(func() {
			for i := w; time.Now().Before(deadline); i += 4 {
				u := users[i%min(o.loginUsers, len(users))]
				c := client.New(srv.url, hc)
				if _, err := c.Login(ctx, u.name, benchPassword, "bench", u.key); err != nil {
					loginErr.Store(err)
					return
				}
				logins.Add(1)
			}
		})
	}
	wg.Wait()
	if err, ok := loginErr.Load().(error); ok {
		return fmt.Errorf("login: %w", err)
	}
	loginRate := float64(logins.Load()) / o.duration.Seconds()
	fmt.Fprintf(out, "logins: %.0f/s (%d in %v, 4 clients, argon2id m=%d KiB t=%d)\n", loginRate, logins.Load(), o.duration,
		directory.DefaultArgon2.MemoryKiB, directory.DefaultArgon2.Time)

	// 2. Authenticated contact-list reads per second.
	var reads atomic.Int64
	var readErr atomic.Value
	// Warm up: one read per user fills the server's caches, as a running
	// server's would be.
	for i := 0; i < len(users); i += max(1, len(users)/2000) {
		if _, _, _, err := base.WithToken(users[i].token).Contacts(ctx, ""); err != nil {
			return fmt.Errorf("contacts: %w", err)
		}
	}
	// The load generator shares the machine with the server, so it is kept
	// light: prepared requests, bodies counted but not decoded (the
	// warm-up above checked them).
	deadline = time.Now().Add(o.duration)
	for w := range o.workers {
		wg.Go(func() {
			buf := make([]byte, 64<<10)
			reqs := make([]*http.Request, 0, 64)
			for i := w; len(reqs) < cap(reqs); i += o.workers {
				r, _ := http.NewRequestWithContext(ctx, "GET", srv.url+"/v1/contacts", nil)
				r.Header.Set("Authorization", "Bearer "+users[(i*7919)%len(users)].token)
				reqs = append(reqs, r)
			}
			for i := 0; time.Now().Before(deadline); i++ {
				resp, err := tr.RoundTrip(reqs[i%len(reqs)])
				if err != nil {
					readErr.Store(err)
					return
				}
				n, _ := io.ReadFull(resp.Body, buf)
				resp.Body.Close()
				if resp.StatusCode != 200 || n < 100 {
					readErr.Store(fmt.Errorf("contacts: status %d, %d bytes", resp.StatusCode, n))
					return
				}
				reads.Add(1)
			}
		})
	}
	wg.Wait()
	if err, ok := readErr.Load().(error); ok {
		return err
	}
	readRate := float64(reads.Load()) / o.duration.Seconds()
	fmt.Fprintf(out, "contact-list reads: %.0f/s (%d clients, %d contacts per list)\n", readRate, o.workers, o.contacts)

	// 3. Connect every device's event stream; memory per stream.
	tr.CloseIdleConnections()
	rss0, rssErr := srv.rss()
	streams := make([]*client.EventStream, len(users))
	// pending maps "username/online" to when that presence change began.
	var pmu sync.Mutex
	pending := map[string]time.Time{}
	var lat []time.Duration
	var latMu sync.Mutex
	var readers sync.WaitGroup
	readCtx, stopReaders := context.WithCancel(context.Background())
	defer func() {
		stopReaders()
		for _, es := range streams {
			if es != nil {
				es.CloseNow()
			}
		}
		readers.Wait()
	}()
	reader := func(es *client.EventStream) {
		defer readers.Done()
		for {
			ev, err := es.Next(readCtx)
			if err != nil {
				return
			}
			if ev.Type != "presence" {
				continue
			}
			pmu.Lock()
			t0, ok := pending[ev.Username+"/"+strconv.FormatBool(ev.Online)]
			pmu.Unlock()
			if ok {
				d := time.Since(t0)
				latMu.Lock()
				lat = append(lat, d)
				latMu.Unlock()
			}
		}
	}
	wsClient := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 1}}
	connect := func(i int) error {
		es, err := client.New(srv.url, wsClient).WithToken(users[i].token).Events(ctx)
		if err != nil {
			return err
		}
		streams[i] = es
		readers.Add(1)
		go reader(es)
		return nil
	}
	start := time.Now()
	sem := make(chan struct{}, 32)
	var connErr atomic.Value
	for i := range users {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			if err := connect(i); err != nil {
				connErr.Store(err)
			}
		})
	}
	wg.Wait()
	if err, ok := connErr.Load().(error); ok {
		return fmt.Errorf("event stream: %w", err)
	}
	fmt.Fprintf(out, "connected %d event streams in %v\n", len(users), time.Since(start).Round(time.Millisecond))
	// Let the connection storm's presence events drain.
	if err := waitOnline(ctx, base, len(users)); err != nil {
		return err
	}
	latMu.Lock()
	lat = lat[:0]
	latMu.Unlock()
	if rssErr == nil {
		rss1, err := srv.rss()
		if err == nil {
			per := float64(rss1-rss0) / float64(len(users))
			fmt.Fprintf(out, "server memory: %.1f MiB before, %.1f MiB with %d streams: %.1f KB per connected device\n",
				float64(rss0)/(1<<20), float64(rss1)/(1<<20), len(users), per/1000)
		}
	}

	// 4. Presence fan-out: a device goes offline, then online again; time
	// until each of its online contacts hears of it.
	step := max(1, len(users)/o.fanouts)
	expected := 0
	for n := 0; n < o.fanouts && n*step < len(users); n++ {
		i := n * step
		u := users[i]
		pmu.Lock()
		pending[u.name+"/false"] = time.Now()
		pmu.Unlock()
		streams[i].Close()
		expected += min(o.contacts, len(users)-1)
		if err := waitLatencies(&latMu, &lat, expected); err != nil {
			return fmt.Errorf("offline fan-out of %s: %w", u.name, err)
		}
		pmu.Lock()
		pending[u.name+"/true"] = time.Now()
		pmu.Unlock()
		if err := connect(i); err != nil {
			return err
		}
		expected += min(o.contacts, len(users)-1)
		if err := waitLatencies(&latMu, &lat, expected); err != nil {
			return fmt.Errorf("online fan-out of %s: %w", u.name, err)
		}
	}
	latMu.Lock()
	ds := slices.Clone(lat)
	latMu.Unlock()
	fmt.Fprintf(out, "presence fan-out with %d streams: %d deliveries, p50 %v, p99 %v, max %v\n", len(users), len(ds),
		percentile(ds, 0.5).Round(10*time.Microsecond), percentile(ds, 0.99).Round(10*time.Microsecond), percentile(ds, 1).Round(10*time.Microsecond))
	return nil
}

// waitOnline waits until the server counts n devices online.
func waitOnline(ctx context.Context, c *client.Client, n int) error {
	deadline := time.Now().Add(time.Minute)
	for time.Now().Before(deadline) {
		st, err := c.Status(ctx)
		if err == nil && st.OnlineDevices == n {
			return nil
		}
		time.Sleep(50 * time.Millisecond)
	}
	return fmt.Errorf("server never counted %d devices online", n)
}

func waitLatencies(mu *sync.Mutex, lat *[]time.Duration, n int) error {
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		mu.Lock()
		got := len(*lat)
		mu.Unlock()
		if got >= n {
			return nil
		}
		time.Sleep(200 * time.Microsecond)
	}
	mu.Lock()
	defer mu.Unlock()
	return fmt.Errorf("%d of %d presence events arrived", len(*lat), n)
}
