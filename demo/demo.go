// Package demo runs the whole Parley system in one process, on the natlab
// emulated network, so that anyone can see it work with one command:
// `parley demo`.
//
// The scenario: a directory server, a public supernode, alice behind an
// endpoint-independent NAT, bob behind a symmetric NAT and carol behind a
// firewall that blocks UDP, on links with realistic delay and some loss.
// They register, become each other's contacts, chat, and alice sends bob a
// file. The demo prints, for each pair, the path (direct, or relayed via
// which supernode), the time to the first message and to a direct path, and
// the file's transfer rate.
//
// natlab models UDP only. The directory's HTTP API therefore runs on real
// loopback TCP (every daemon reaches it there, carol included), while all
// peer-to-peer and STUN traffic crosses the emulated network. Carol's UDP
// is blocked, so she can be reached only through a supernode's TCP
// fallback; until the daemon has one, her messages travel sealed through
// the directory's mailbox, and the demo says so.
package demo

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/parley-p2p/parley/apps/chat"
	"github.com/parley-p2p/parley/apps/files"
	"github.com/parley-p2p/parley/directory"
	"github.com/parley-p2p/parley/directory/store/sqlite"
	"github.com/parley-p2p/parley/natlab"
	"github.com/parley-p2p/parley/node"
	"github.com/parley-p2p/parley/stun"
)

// Options tune the demo. The zero value runs the default scenario.
type Options struct {
	RTT     time.Duration // round-trip time between two peers' access links; 0 means 40 ms
	Loss    float64       // random loss on each access link, each way; 0 means 0.5%
	RateBit int64         // access link rate in bit/s; 0 means 50 Mbit/s
	Bytes   int64         // size of the file alice sends bob; 0 means 8 MiB
	Seed    uint64
	// Logger receives the daemons' logs; nil discards them.
	Logger *slog.Logger
}

func (o *Options) defaults() {
	if o.RTT == 0 {
		o.RTT = 40 * time.Millisecond
	}
	if o.Loss == 0 {
		o.Loss = 0.005
	}
	if o.RateBit == 0 {
		o.RateBit = 50e6
	}
	if o.Bytes == 0 {
		o.Bytes = 8 << 20
	}
	if o.Seed == 0 {
		o.Seed = 1
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
}

// Pair is what the demo measured between two peers.
type Pair struct {
	A, B string
	// Path is "direct", "relayed" or "none" as A's daemon sees it at the
	// end; Relay is the supernode's address when relayed.
	Path, Relay string
	// Why explains a relayed path or a missing one.
	Why string
	// FirstMessage is the time from A sending its first message to B
	// having it stored (over a session or from the mailbox).
	FirstMessage time.Duration
	// ViaMailbox says the messages went through the directory's mailbox.
	ViaMailbox bool
	// Direct is the time from the first message until the session was
	// direct; 0 if it never was.
	Direct time.Duration
	// Exchanged is true when messages arrived both ways.
	Exchanged bool
}

// Result is what the demo measured.
type Result struct {
	Pairs []Pair
	// File is alice's file to bob: its size, the time from offer to
	// verified arrival, and the rate.
	FileBytes    int64
	FileElapsed  time.Duration
	FileRate     float64 // bytes per second
	FileVerified bool
}

// peer is one user's daemon in the demo.
type peer struct {
	name string
	n    *node.Node
	apps *node.Apps
	done chan error
}

// Run runs the demo, writing a human-readable account to out. It returns
// an error unless every pair exchanged messages and the file arrived
// verified.
func Run(ctx context.Context, out io.Writer, o Options) (Result, error) {
	o.defaults()
	var res Result
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	tmp, err := os.MkdirTemp("", "parley-demo-")
	if err != nil {
		return res, err
	}
	defer os.RemoveAll(tmp)

	// The emulated internet, with a STUN server and the directory's
	// dial-back host on it.
	w := natlab.New(natlab.Config{Seed: o.Seed})
	defer w.Close()
	inet := w.NewNetwork("internet", netip.MustParsePrefix("203.0.113.0/24"))
	access := natlab.Link{Delay: o.RTT / 4, Jitter: o.RTT / 40, Rate: o.RateBit, Loss: o.Loss}
	sh := w.NewHost("stun", inet, natlab.Link{Delay: o.RTT / 8})
	stunA, err := sh.ListenPacket(ctx, "udp4", ":3478")
	if err != nil {
		return res, err
	}
	stunB, err := sh.ListenPacket(ctx, "udp4", ":3479")
	if err != nil {
		return res, err
	}
	var bg sync.WaitGroup
	defer bg.Wait()
	defer stunA.Close()
	defer stunB.Close()
	bg.Go(func() { (&stun.Server{Primary: stunA, Alt: stunB}).Serve(ctx) })

	st, err := sqlite.Open(ctx, filepath.Join(tmp, "directory.db"))
	if err != nil {
		return res, err
	}
	defer st.Close()
	dir, err := directory.New(directory.Config{
		Store: st,
		// A demo's throwaway accounts need no costly password hashing.
		Argon2:                 directory.Argon2Params{Time: 1, MemoryKiB: 64, Threads: 1},
		NoRateLimits:           true,
		STUN:                   netip.AddrPortFrom(sh.Addr(), 3478).String(),
		STUNAlt:                netip.AddrPortFrom(sh.Addr(), 3479).String(),
		AllowPrivateSupernodes: true,
		DialbackListener:       w.NewHost("directory", inet, natlab.Link{Delay: o.RTT / 8}),
	})
	if err != nil {
		return res, err
	}
	defer dir.Close()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return res, err
	}
	hs := &http.Server{Handler: dir, ReadHeaderTimeout: 10 * time.Second}
	bg.Go(func() { hs.Serve(ln) })
	defer hs.Close()
	server := "http://" + ln.Addr().String()

	fmt.Fprintf(out, "Parley demo: the whole system in one process on natlab, an emulated internet\n")
	fmt.Fprintf(out, "  directory server   HTTP on %s (real loopback TCP: natlab models UDP only), STUN at %v\n", ln.Addr(), sh.Addr())
	fmt.Fprintf(out, "  access links       %v RTT between peers, %.1f%% loss each way, %d Mbit/s\n", o.RTT, o.Loss*100, o.RateBit/1_000_000)

	hc := &http.Client{Transport: &http.Transport{}}
	defer hc.CloseIdleConnections()
	// natlab carries no TCP, so the supernode's relay-over-TCP listener (for
	// peers whose UDP is blocked) is on real loopback, and their TCP dials to
	// the supernode's emulated address land there.
	relayTCP, err := freeLoopbackPort()
	if err != nil {
		return res, err
	}
	dialRelayTCP := func(ctx context.Context, network, addr string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, network, relayTCP)
	}
	start := func(name string, l *natlab.Host, role string) (*peer, error) {
		n, err := node.New(node.Config{
			Server: server, DataDir: filepath.Join(tmp, name), Listener: l, HTTPClient: hc,
			DeviceName: name + "-laptop", Supernode: role, PunchTimeout: 3 * time.Second,
			BudgetRate:      64 << 20, // the default 1 MiB/s would throttle the demo's relayed pairs
			RefreshInterval: time.Hour, Logger: o.Logger.With("node", name),
			RelayTCP: relayTCP, DialTCP: dialRelayTCP,
		})
		if err != nil {
			return nil, err
		}
		a, err := n.EnableApps(node.AppsConfig{MailboxPoll: 300 * time.Millisecond, RetryInterval: 500 * time.Millisecond})
		if err != nil {
			n.Close()
			return nil, err
		}
		p := &peer{name: name, n: n, apps: a, done: make(chan error, 1)}
		go func() { p.done <- n.Run(ctx) }()
		return p, nil
	}
	var peers []*peer
	defer func() {
		cancel()
		for _, p := range peers {
			<-p.done
		}
	}()

	// The supernode: a public peer that volunteers as a relay.
	relayHost := w.NewHost("relay", inet, natlab.Link{Delay: o.RTT / 8, Rate: 4 * o.RateBit})
	sn, err := start("relay", relayHost, "on")
	if err != nil {
		return res, err
	}
	peers = append(peers, sn)
	if err := sn.n.Register(ctx, "relay", "demo password 1234"); err != nil {
		return res, fmt.Errorf("register the supernode: %w", err)
	}
	if err := waitUntil(ctx, 20*time.Second, func() bool { return sn.n.Status().Supernode }); err != nil {
		return res, fmt.Errorf("the supernode was not verified by the directory: %w", err)
	}
	fmt.Fprintf(out, "  supernode relay    public at %v, verified by dial-back\n", relayHost.Addr())

	natHost := func(name string, i int, cfg natlab.NATConfig) *natlab.Host {
		lan := w.NewNetwork(name+"-lan", netip.MustParsePrefix(fmt.Sprintf("192.168.%d.0/24", i)))
		cfg.Inside, cfg.Outside, cfg.Link = lan, inet, access
		nat := w.NewNAT(name+"-nat", cfg)
		fmt.Fprintf(out, "  %-18s behind %s at %v\n", name, describeNAT(cfg), nat.PublicAddr())
		return w.NewHost(name, lan, natlab.Link{})
	}
	hosts := map[string]*natlab.Host{
		"alice": natHost("alice", 1, natlab.NATConfig{Mapping: natlab.EndpointIndependent, Filtering: natlab.AddressDependent}),
		"bob":   natHost("bob", 2, natlab.NATConfig{Mapping: natlab.AddressAndPortDependent, Filtering: natlab.AddressAndPortDependent}),
		"carol": natHost("carol", 3, natlab.NATConfig{BlockUDP: true}),
	}
	users := map[string]*peer{}
	for _, name := range []string{"alice", "bob", "carol"} {
		p, err := start(name, hosts[name], "off")
		if err != nil {
			return res, err
		}
		peers = append(peers, p)
		users[name] = p
		if err := p.n.Register(ctx, name, "demo password 1234"); err != nil {
			return res, fmt.Errorf("register %s: %w", name, err)
		}
	}
	alice, bob, carol := users["alice"], users["bob"], users["carol"]

	// Contacts: each pair asks and accepts.
	pairs := [][2]*peer{{alice, bob}, {alice, carol}, {bob, carol}}
	for _, pr := range pairs {
		if _, err := pr[0].n.AddContact(ctx, pr[1].name); err != nil {
			return res, fmt.Errorf("%s adds %s: %w", pr[0].name, pr[1].name, err)
		}
		if err := pr[1].n.AcceptContact(ctx, pr[0].name); err != nil {
			return res, fmt.Errorf("%s accepts %s: %w", pr[1].name, pr[0].name, err)
		}
	}
	for _, p := range []*peer{alice, bob, carol} {
		if err := waitUntil(ctx, 15*time.Second, func() bool {
			s := p.n.Status()
			on := 0
			for _, c := range s.Contacts {
				if c.State == "mutual" && c.Online {
					on++
				}
			}
			return s.ServerUp && on == 2 && len(s.Candidates) > 0
		}); err != nil {
			return res, fmt.Errorf("%s does not see both contacts online: %w", p.name, err)
		}
	}
	fmt.Fprintf(out, "registered alice, bob and carol; each pair are contacts; everyone online\n\n")

	// Chat: every pair at once. The first message of a pair sets up its
	// session (or goes to the mailbox); the answer comes back the same way.
	bob.apps.SetAutoAccept(ctx, "alice", true)
	res.Pairs = make([]Pair, len(pairs))
	var wg sync.WaitGroup
	for i, pr := range pairs {
		wg.Go(func() { res.Pairs[i] = chatPair(ctx, pr[0], pr[1]) })
	}
	wg.Wait()

	// The file: alice to bob, accepted automatically, verified by SHA-256.
	fileErr := sendFile(ctx, tmp, alice, bob, o.Bytes, &res)

	fmt.Fprintf(out, "%-13s  %-40s  %-17s  %s\n", "pair", "path", "first message", "to direct")
	ok := fileErr == nil
	for _, p := range res.Pairs {
		path := p.Path
		switch p.Path {
		case "relayed":
			path = "relayed via supernode " + p.Relay
		case "none":
			path = "no path"
		}
		first := "none"
		if p.Exchanged {
			first = p.FirstMessage.Round(time.Millisecond).String()
			if p.ViaMailbox {
				first += " (mailbox)"
			}
		}
		direct := "never"
		if p.Direct > 0 {
			direct = p.Direct.Round(time.Millisecond).String()
		}
		fmt.Fprintf(out, "%-13s  %-40s  %-17s  %s\n", p.A+" ↔ "+p.B, path, first, direct)
		if p.Why != "" && p.Path != "direct" {
			fmt.Fprintf(out, "%13s  why: %s\n", "", p.Why)
		}
		ok = ok && p.Exchanged
	}
	if fileErr != nil {
		fmt.Fprintf(out, "\nfile alice → bob: FAILED: %v\n", fileErr)
	} else {
		fmt.Fprintf(out, "\nfile alice → bob: %.1f MiB in %v = %.1f Mbit/s, SHA-256 verified\n",
			float64(res.FileBytes)/(1<<20), res.FileElapsed.Round(time.Millisecond), res.FileRate*8/1e6)
	}
	for _, p := range res.Pairs {
		if p.B == "carol" && p.Path == "relayed" {
			fmt.Fprintf(out, "carol: her firewall blocks UDP, so her leg to the supernode is relay-over-TCP (on real\n"+
				"loopback: natlab models UDP only); her peers reach the same supernode over UDP.\n")
			break
		}
	}
	if !ok {
		return res, errors.New("demo: not every pair exchanged messages, or the file did not arrive verified")
	}
	return res, nil
}

// chatPair sends a message from a to b and an answer back, and measures the
// pair's path.
func chatPair(ctx context.Context, a, b *peer) Pair {
	p := Pair{A: a.name, B: b.name, Path: "none"}
	t0 := time.Now()
	m, err := a.apps.SendMessage(ctx, b.name, fmt.Sprintf("hello %s, this is %s", b.name, a.name))
	if err != nil {
		p.Why = err.Error()
		return p
	}
	arrived := func(s *peer, from string, id chat.ID) bool {
		_, err := s.apps.ChatStore().Message(ctx, from, false, id)
		return err == nil
	}
	// Watch for a direct path while the messages go.
	directC := make(chan time.Duration, 1)
	wctx, stop := context.WithCancel(ctx)
	go func() {
		err := waitUntil(wctx, 12*time.Second, func() bool { return contact(a, b.name).Path == "direct" })
		if err == nil {
			directC <- time.Since(t0)
		}
		close(directC)
	}()
	if waitUntil(ctx, 20*time.Second, func() bool { return arrived(b, a.name, m.ID) }) == nil {
		p.FirstMessage = time.Since(t0)
		r, err := b.apps.SendMessage(ctx, a.name, "hi "+a.name+", got it")
		if err == nil && waitUntil(ctx, 20*time.Second, func() bool { return arrived(a, b.name, r.ID) }) == nil {
			p.Exchanged = true
		}
	}
	if cur, err := a.apps.ChatStore().Message(ctx, b.name, true, m.ID); err == nil {
		p.ViaMailbox = cur.State < chat.Delivered
	}
	if p.ViaMailbox {
		stop() // no session: no direct path is coming
	}
	p.Direct = <-directC
	stop()
	cs := contact(a, b.name)
	p.Path, p.Relay, p.Why = cs.Path, cs.Relay, strings.ReplaceAll(cs.Why, "\n", "; ")
	return p
}

func contact(p *peer, name string) node.ContactStatus {
	for _, c := range p.n.Status().Contacts {
		if c.Username == name {
			return c
		}
	}
	return node.ContactStatus{Path: "none"}
}

// sendFile sends a file of size random bytes from a to b (who accepts
// automatically) and checks that it arrived intact.
func sendFile(ctx context.Context, tmp string, a, b *peer, size int64, res *Result) error {
	path := filepath.Join(tmp, "holiday-photos.tar")
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	h := sha256.New()
	var seed [32]byte
	seed[0] = 7
	if _, err := io.Copy(io.MultiWriter(f, h), io.LimitReader(rand.NewChaCha8(seed), size)); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	want := h.Sum(nil)
	t0 := time.Now()
	tr, err := a.apps.SendFile(ctx, b.name, path)
	if err != nil {
		return err
	}
	var got node.TransferStatus
	if err := waitUntil(ctx, 40*time.Second, func() bool {
		got, _ = b.apps.Transfer(tr.ID)
		return got.State == files.Done || got.State == files.Failed
	}); err != nil {
		return fmt.Errorf("the file did not arrive (%v; %s)", err, got.State)
	}
	res.FileElapsed = time.Since(t0)
	if got.State != files.Done {
		return fmt.Errorf("transfer failed: %s", got.Error)
	}
	g, err := os.Open(got.Path)
	if err != nil {
		return err
	}
	defer g.Close()
	h.Reset()
	if _, err := io.Copy(h, g); err != nil {
		return err
	}
	if string(h.Sum(nil)) != string(want) {
		return errors.New("the received file differs from the one sent")
	}
	res.FileBytes, res.FileVerified = size, true
	res.FileRate = float64(size) / res.FileElapsed.Seconds()
	return nil
}

func describeNAT(c natlab.NATConfig) string {
	switch {
	case c.BlockUDP:
		return "a firewall that blocks UDP"
	case c.Mapping == natlab.AddressAndPortDependent:
		return "a symmetric NAT"
	case c.Mapping == natlab.EndpointIndependent:
		return "an endpoint-independent NAT"
	}
	return "a NAT"
}

// waitUntil polls cond every 10 ms until it holds, ctx ends or timeout
// passes.
func waitUntil(ctx context.Context, timeout time.Duration, cond func() bool) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	t := time.NewTicker(10 * time.Millisecond)
	defer t.Stop()
	for !cond() {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
		}
	}
	return nil
}

// freeLoopbackPort returns a loopback TCP address that was free a moment ago.
func freeLoopbackPort() (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr, nil
}
