package portmap_test

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/parley-p2p/parley/lab"
	"github.com/parley-p2p/parley/portmap"
)

// These tests run the client in a namespace host behind a real Linux NAT
// router that runs miniupnpd (lab.StartUPnP), and check what a user
// would: the mapping's external address is the router's public one, a
// host on the lab's internet reaches it unsolicited (which the router's
// address-and-port-dependent filtering would otherwise drop), and after
// Close it no longer does.
//
// Every Config sets Gateway: the default would be looked up in the test
// process's own namespace, outside the lab.

// labEnv is one lab: a public host and NAT hosts behind routers that run
// miniupnpd in different configurations, or none.
type labEnv struct {
	pub     *lab.Host
	full    *lab.Host // IGDv2, NAT-PMP and PCP
	igdOnly *lab.Host // UPnP IGDv2 only
	igdV1   *lab.Host // UPnP as IGDv1 only
	bare    *lab.Host // no daemon
}

func newLabEnv(t *testing.T, name string) *labEnv {
	lab.RequireUPnP(t)
	l := lab.NewTest(t, lab.Config{Name: name})
	var env labEnv
	var err error
	if env.pub, err = l.AddPublicHost("pub"); err != nil {
		t.Fatal(err)
	}
	for _, h := range []struct {
		name string
		host **lab.Host
		cfg  *lab.UPnPConfig // nil: no daemon
	}{
		{"full", &env.full, &lab.UPnPConfig{}},
		{"igdonly", &env.igdOnly, &lab.UPnPConfig{NoNATPMP: true}},
		{"igdv1", &env.igdV1, &lab.UPnPConfig{NoNATPMP: true, IGDv1: true}},
		{"bare", &env.bare, nil},
	} {
		*h.host, err = l.AddNATHostConfig(h.name, lab.RouterConfig{Kind: lab.EIM, UPnP: h.cfg != nil})
		if err != nil {
			t.Fatal(err)
		}
		if h.cfg == nil {
			continue
		}
		d, err := (*h.host).Router().StartUPnP(t.Context(), *h.cfg)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { // before the lab's Close, registered earlier
			if t.Failed() {
				t.Logf("miniupnpd on %s:\n%s", h.name, d.Log())
			}
			if err := d.Stop(); err != nil {
				t.Error(err)
			}
		})
	}
	return &env
}

// clientConfig returns cfg with the client's sockets opened in h's
// namespace, its gateway h's router, and its logs in the test's output.
// The socket for the router's announcements joins the group on h's eth0
// unless cfg has its own ListenMulticast.
func clientConfig(t *testing.T, h *lab.Host, cfg portmap.Config) portmap.Config {
	cfg.Gateway = h.Router().LANAddr()
	cfg.ListenPacket = func(_ context.Context, network, address string) (net.PacketConn, error) {
		return h.ListenPacket(network, address)
	}
	if cfg.ListenMulticast == nil {
		cfg.ListenMulticast = func(network string, _ *net.Interface, group *net.UDPAddr) (pc net.PacketConn, err error) {
			err = h.Run(func() error {
				ifi, err := net.InterfaceByName("eth0")
				if err != nil {
					return err
				}
				uc, err := net.ListenMulticastUDP(network, ifi, group)
				if err != nil {
					return err
				}
				pc = uc
				return nil
			})
			return pc, err
		}
	}
	cfg.Dial = func(ctx context.Context, network, address string) (c net.Conn, err error) {
		err = h.Run(func() error {
			var d net.Dialer
			c, err = d.DialContext(ctx, network, address)
			return err
		})
		return c, err
	}
	cfg.Logger = slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelDebug}))
	return cfg
}

func TestLab(t *testing.T) {
	env := newLabEnv(t, "portmap")

	t.Run("DefaultGateway", func(t *testing.T) {
		var gw netip.Addr
		err := env.full.Run(func() (err error) {
			gw, err = portmap.DefaultGateway()
			return err
		})
		if err != nil {
			t.Fatal(err)
		}
		if want := env.full.Router().LANAddr(); gw != want {
			t.Fatalf("DefaultGateway in %s = %v, want its router %v", env.full.Name(), gw, want)
		}
	})

	// Each protocol, forced, on the router that offers all three.
	for i, p := range []portmap.Protocol{portmap.PCP, portmap.NATPMP, portmap.UPnP} {
		t.Run(string(p), func(t *testing.T) {
			checkMapping(t, env, env.full, uint16(4101+i), portmap.Config{Protocols: []portmap.Protocol{p}}, p)
		})
	}
	// AddPortMapping on a WANIPConnection:1, which lacks AddAnyPortMapping.
	t.Run("upnp-igdv1", func(t *testing.T) {
		checkMapping(t, env, env.igdV1, 4201, portmap.Config{Protocols: []portmap.Protocol{portmap.UPnP}}, portmap.UPnP)
	})
	// With the default order the client takes PCP where it is offered,
	// and falls back to UPnP where it is not.
	t.Run("auto-pcp", func(t *testing.T) {
		checkMapping(t, env, env.full, 4301, portmap.Config{}, portmap.PCP)
	})
	t.Run("auto-upnp", func(t *testing.T) {
		checkMapping(t, env, env.igdOnly, 4302, portmap.Config{}, portmap.UPnP)
	})

	t.Run("NoService", func(t *testing.T) {
		c := portmap.New(clientConfig(t, env.bare, portmap.Config{}))
		start := time.Now()
		_, err := c.Map(t.Context(), 4401)
		took := time.Since(start)
		if !errors.Is(err, portmap.ErrNoService) {
			t.Fatalf("Map on a router without a port-mapping service: %v, want ErrNoService", err)
		}
		t.Logf("%v after %v", err, took.Round(time.Millisecond))
		if want := fmt.Sprintf("on gateway %v", env.bare.Router().LANAddr()); !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not say %q", err, want)
		}
		if took > 3*time.Second {
			t.Errorf("Map took %v to find no service, want < 3s", took)
		}
		if err := c.Close(t.Context()); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
}

// checkMapping maps port for host h with cfg and checks the mapping the
// way a peer on the internet would see it.
func checkMapping(t *testing.T, env *labEnv, h *lab.Host, port uint16, cfg portmap.Config, want portmap.Protocol) {
	ctx := t.Context()
	sock, err := h.ListenPacket("udp4", fmt.Sprintf(":%d", port))
	if err != nil {
		t.Fatal(err)
	}
	defer sock.Close()
	router := h.Router()

	// Without a mapping the router filters: unsolicited packets to its
	// public address end in its own stack.
	notReaching(t, env.pub, netip.AddrPortFrom(router.PublicAddr(), port), sock)

	c := portmap.New(clientConfig(t, h, cfg))
	start := time.Now()
	m, err := c.Map(ctx, port)
	if err != nil {
		t.Fatalf("Map: %v", err)
	}
	t.Logf("mapped in %v: %v", time.Since(start).Round(time.Millisecond), m)
	if m.Protocol != want {
		t.Errorf("Protocol = %q, want %q", m.Protocol, want)
	}
	if m.External.Addr() != router.PublicAddr() || m.External.Port() == 0 {
		t.Errorf("External = %v, want the router's public address %v and a port", m.External, router.PublicAddr())
	}
	if wantIn := netip.AddrPortFrom(h.Addr(), port); m.Internal != wantIn {
		t.Errorf("Internal = %v, want %v", m.Internal, wantIn)
	}
	if m.Gateway != router.LANAddr() {
		t.Errorf("Gateway = %v, want %v", m.Gateway, router.LANAddr())
	}
	if m.Lifetime <= 0 || !m.Expires.After(time.Now()) || !m.RenewAt.Before(m.Expires) {
		t.Errorf("Lifetime %v, Expires %v, RenewAt %v: want a live mapping renewed before it expires", m.Lifetime, m.Expires, m.RenewAt)
	}

	reaching(t, env.pub, m.External, sock)

	m2, err := c.Renew(ctx)
	if err != nil {
		t.Fatalf("Renew: %v", err)
	}
	if m2.External != m.External || m2.Protocol != m.Protocol {
		t.Errorf("Renew gave %v, want the same mapping as %v", m2, m)
	}
	if !m2.Expires.After(m.Expires) && !m2.Expires.Equal(m.Expires) {
		t.Errorf("Renew moved Expires back: %v, was %v", m2.Expires, m.Expires)
	}
	reaching(t, env.pub, m.External, sock)

	if err := c.Close(ctx); err != nil {
		t.Fatalf("Close: %v", err)
	}
	notReaching(t, env.pub, m.External, sock)
	if _, err := c.Map(ctx, port); !errors.Is(err, portmap.ErrClosed) {
		t.Errorf("Map after Close: %v, want ErrClosed", err)
	}
}

// reaching sends a packet from a new socket on pub to ext, as a peer that
// learned ext would, and checks that it arrives at sock from pub.
func reaching(t *testing.T, pub *lab.Host, ext netip.AddrPort, sock net.PacketConn) {
	t.Helper()
	reachingFrom(t, pub, pub.Addr(), ext, sock)
}

// labNode is a lab host or router: something that runs code in its
// namespace.
type labNode interface{ Run(func() error) error }

// listenIn opens a UDP socket on address src (any port) in n's namespace.
func listenIn(t *testing.T, n labNode, src netip.Addr) net.PacketConn {
	t.Helper()
	var pc net.PacketConn
	err := n.Run(func() (err error) {
		pc, err = net.ListenPacket("udp", netip.AddrPortFrom(src, 0).String())
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return pc
}

// reachingFrom is reaching from address src of node n, a host or the
// internet router.
func reachingFrom(t *testing.T, n labNode, src netip.Addr, ext netip.AddrPort, sock net.PacketConn) {
	t.Helper()
	out := listenIn(t, n, src)
	defer out.Close()
	token := rand.Text()
	if _, err := out.WriteTo([]byte(token), net.UDPAddrFromAddrPort(ext)); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	sock.SetReadDeadline(deadline)
	buf := make([]byte, 1500)
	for {
		n, from, err := sock.ReadFrom(buf)
		if err != nil {
			t.Fatalf("packet from %v to the mapping %v did not arrive: %v", src, ext, err)
		}
		if string(buf[:n]) != token {
			continue // a late copy from an earlier check
		}
		if got := from.(*net.UDPAddr).AddrPort().Addr().Unmap(); got != src {
			t.Errorf("packet arrived from %v, want %v", got, src)
		}
		return
	}
}

// notReaching sends packets from a new socket on pub to ext until the
// router answers ICMP port unreachable, which proves that the packets
// ended in the router's own stack instead of being forwarded, and then
// checks that none reached sock.
func notReaching(t *testing.T, pub *lab.Host, ext netip.AddrPort, sock net.PacketConn) {
	t.Helper()
	var conn net.Conn
	err := pub.Run(func() (err error) {
		conn, err = net.DialUDP("udp4", nil, net.UDPAddrFromAddrPort(ext))
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	token := rand.Text()
	buf := make([]byte, 1500)
	refused := false
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline) && !refused; {
		conn.Write([]byte(token))
		conn.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
		_, err := conn.Read(buf)
		refused = errors.Is(err, syscall.ECONNREFUSED)
	}
	if !refused {
		t.Fatalf("router %v never refused packets to %v", ext.Addr(), ext)
	}
	// The refusal shows the router's own stack took the packets; as a
	// last check, none is queued at the host.
	sock.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
	for {
		n, _, err := sock.ReadFrom(buf)
		if err != nil {
			return
		}
		if string(buf[:n]) == token {
			t.Fatalf("a packet to %v reached the host without a mapping", ext)
		}
	}
}

// TestLabRestart restarts the router's miniupnpd under a mapping, which
// loses it: UPnPDaemon.Stop deletes its rules, as a router's service does
// when the daemon stops, and the daemon started again knows nothing of
// them. The client must notice, from the ANNOUNCE the
// daemon multicasts when it starts or, without a socket to hear it, from
// the epoch time in the answer to its next renewal, and map again, so
// that the internet reaches the port once more.
func TestLabRestart(t *testing.T) {
	lab.RequireUPnP(t)
	l := lab.NewTest(t, lab.Config{Name: "pmrestart"})
	pub, err := l.AddPublicHost("pub")
	if err != nil {
		t.Fatal(err)
	}
	h, err := l.AddNATHostConfig("alice", lab.RouterConfig{Kind: lab.EIM, UPnP: true})
	if err != nil {
		t.Fatal(err)
	}
	env := &labEnv{pub: pub}
	router := h.Router()
	d, err := router.StartUPnP(t.Context(), lab.UPnPConfig{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { // before the lab's Close, registered earlier
		if t.Failed() {
			t.Logf("miniupnpd:\n%s", d.Log())
		}
		if err := d.Stop(); err != nil {
			t.Error(err)
		}
	})
	// restart stops the daemon, checks that the mapping ext is gone, and
	// starts it again.
	restart := func(t *testing.T, ext netip.AddrPort, sock net.PacketConn) {
		t.Helper()
		if err := d.Stop(); err != nil {
			t.Fatal(err)
		}
		notReaching(t, env.pub, ext, sock)
		if d, err = router.StartUPnP(t.Context(), lab.UPnPConfig{}); err != nil {
			t.Fatal(err)
		}
	}
	noListen := func(string, *net.Interface, *net.UDPAddr) (net.PacketConn, error) {
		return nil, errors.New("no socket for announcements in this test")
	}

	for i, tc := range []struct {
		name  string
		proto portmap.Protocol
		hear  bool // the client can hear the daemon's ANNOUNCE
	}{
		{"announce", portmap.PCP, true},
		{"renew-pcp", portmap.PCP, false},
		{"renew-natpmp", portmap.NATPMP, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			port := uint16(4501 + i)
			sock, err := h.ListenPacket("udp4", fmt.Sprintf(":%d", port))
			if err != nil {
				t.Fatal(err)
			}
			defer sock.Close()
			cfg := portmap.Config{Protocols: []portmap.Protocol{tc.proto}}
			if !tc.hear {
				cfg.ListenMulticast = noListen
			}
			c := portmap.New(clientConfig(t, h, cfg))
			defer c.Close(context.Background())

			// A restart is told from the epoch going back, which it
			// does only once the daemon has counted a few seconds.
			ctx, cancel := context.WithTimeout(t.Context(), 15*time.Second)
			defer cancel()
			if err := d.WaitEpoch(ctx, h, 4); err != nil {
				t.Fatal(err)
			}
			m, err := c.Map(t.Context(), port)
			if err != nil {
				t.Fatalf("Map: %v", err)
			}
			reaching(t, env.pub, m.External, sock)
			restart(t, m.External, sock)
			start := time.Now()
			if tc.hear {
				select {
				case <-c.Changed():
				case <-time.After(15 * time.Second):
					t.Fatal("the client did not map again within 15s of the daemon's restart")
				}
			} else {
				if _, err := c.Renew(t.Context()); err != nil {
					t.Fatalf("Renew: %v", err)
				}
				select {
				case <-c.Changed():
				default:
					t.Fatal("Renew did not notice that the daemon had restarted")
				}
			}
			m2, ok := c.Current()
			if !ok {
				t.Fatal("no mapping after the restart")
			}
			t.Logf("mapped again %v after the restart: %v", time.Since(start).Round(time.Millisecond), m2)
			if m2.External.Addr() != router.PublicAddr() {
				t.Errorf("External = %v, want the router's public address %v", m2.External, router.PublicAddr())
			}
			reaching(t, env.pub, m2.External, sock)
			if err := c.Close(t.Context()); err != nil {
				t.Fatalf("Close: %v", err)
			}
			notReaching(t, env.pub, m2.External, sock)
		})
	}
}

// The IPv6 plan of TestLabIPv6: the LAN behind the router, and the link
// between the router and the internet router, the one IPv6 peer outside.
var (
	lanGateway6 = netip.MustParseAddr("2001:db8:1::1") // the router's lan0
	lanHost6    = netip.MustParseAddr("2001:db8:1::2") // the host's eth0
	wanRouter6  = netip.MustParseAddr("2001:db8:ff::11")
	outside6    = netip.MustParseAddr("2001:db8:ff::1") // the internet router
)

// TestLabIPv6 maps over IPv6 with PCP, which on a router without IPv6 NAT
// opens a firewall pinhole: the internet reaches the host's own IPv6
// address and port, unsolicited, only while the mapping lives. The
// router's miniupnpd restarts as in TestLabRestart, and the client hears
// its IPv6 ANNOUNCE, multicast from the router's link-local address, and
// maps again.
func TestLabIPv6(t *testing.T) {
	lab.RequireUPnP(t)
	l := lab.NewTest(t, lab.Config{Name: "pmipv6"})
	h, err := l.AddNATHostConfig("alice", lab.RouterConfig{Kind: lab.EIM, UPnP: true})
	if err != nil {
		t.Fatal(err)
	}
	router, inet := h.Router(), l.Internet()
	addIPv6(t, h, inet)
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	d, err := router.StartUPnP(ctx, lab.UPnPConfig{IPv6: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { // before the lab's Close, registered earlier
		if t.Failed() {
			t.Logf("miniupnpd:\n%s", d.Log())
		}
		if err := d.Stop(); err != nil {
			t.Error(err)
		}
	})

	const port = 4601
	sock, err := h.ListenPacket("udp6", fmt.Sprintf("[::]:%d", port))
	if err != nil {
		t.Fatal(err)
	}
	defer sock.Close()
	internal := netip.AddrPortFrom(lanHost6, port)
	notReachingIPv6(t, inet, router, internal, sock)

	cfg := clientConfig(t, h, portmap.Config{})
	cfg.Gateway = lanGateway6
	c := portmap.New(cfg)
	defer c.Close(context.Background())
	if err := d.WaitEpoch(ctx, h, 4); err != nil { // see TestLabRestart
		t.Fatal(err)
	}
	m, err := c.Map(ctx, port)
	if err != nil {
		t.Fatalf("Map: %v", err)
	}
	t.Logf("mapped: %v", m)
	if m.Protocol != portmap.PCP || m.External != internal || m.Internal != internal || m.Gateway != lanGateway6 {
		t.Errorf("Map = %v, want a PCP pinhole %v via %v", m, internal, lanGateway6)
	}
	reachingFrom(t, inet, outside6, m.External, sock)

	if err := d.Stop(); err != nil {
		t.Fatal(err)
	}
	notReachingIPv6(t, inet, router, internal, sock)
	if d, err = router.StartUPnP(ctx, lab.UPnPConfig{IPv6: true}); err != nil {
		t.Fatal(err)
	}
	select {
	case <-c.Changed():
	case <-time.After(15 * time.Second):
		t.Fatal("the client did not map again within 15s of the daemon's restart")
	}
	m2, ok := c.Current()
	if !ok || m2.External != internal {
		t.Fatalf("after the restart: %v, %v; want the pinhole %v", m2, ok, internal)
	}
	reachingFrom(t, inet, outside6, m2.External, sock)
	if err := c.Close(ctx); err != nil {
		t.Fatalf("Close: %v", err)
	}
	notReachingIPv6(t, inet, router, internal, sock)
}

// addIPv6 gives h's LAN, and the link between its router and inet, the
// IPv6 addresses and routes of the plan above (the lab itself is IPv4
// only), and has the router forward IPv6.
func addIPv6(t *testing.T, h *lab.Host, inet *lab.Router) {
	t.Helper()
	router := h.Router()
	run := func(n interface {
		Command(context.Context, string, ...string) *exec.Cmd
	}, args ...string) string {
		t.Helper()
		out, err := n.Command(t.Context(), args[0], args[1:]...).CombinedOutput()
		if err != nil {
			t.Fatalf("%s: %v: %s", strings.Join(args, " "), err, out)
		}
		return string(out)
	}
	// wan0's peer on the internet router: "7: wan0@if12: <...>" names
	// its interface index there.
	link := run(router, "ip", "-o", "link", "show", "wan0")
	_, peer, ok := strings.Cut(link, "wan0@if")
	peer, _, _ = strings.Cut(peer, ":")
	if !ok || peer == "" {
		t.Fatalf("no peer index in %q", link)
	}
	var port string
	for line := range strings.Lines(run(inet, "ip", "-o", "link")) {
		if idx, rest, _ := strings.Cut(line, ": "); idx == peer {
			port, _, _ = strings.Cut(rest, "@")
		}
	}
	if port == "" {
		t.Fatalf("no interface %s on the internet router", peer)
	}
	// nodad: the addresses are usable at once, not after duplicate
	// address detection.
	run(router, "sysctl", "-qw", "net.ipv6.conf.all.forwarding=1")
	run(router, "ip", "addr", "add", lanGateway6.String()+"/64", "dev", "lan0", "nodad")
	run(router, "ip", "addr", "add", wanRouter6.String()+"/64", "dev", "wan0", "nodad")
	run(h, "ip", "addr", "add", lanHost6.String()+"/64", "dev", "eth0", "nodad")
	run(h, "ip", "-6", "route", "add", "default", "via", lanGateway6.String())
	run(inet, "ip", "addr", "add", outside6.String()+"/64", "dev", port, "nodad")
	run(inet, "ip", "-6", "route", "add", "2001:db8:1::/64", "via", wanRouter6.String(), "dev", port)
	// miniupnpd sends its IPv6 ANNOUNCE to ff02::1 without choosing an
	// interface, and the kernel takes the first ff00::/8 route: wan0's,
	// which the lab made first. Moved behind lan0's, it reaches the LAN,
	// as on a router whose LAN interface came up first.
	run(router, "ip", "-6", "route", "del", "multicast", "ff00::/8", "dev", "wan0", "table", "local")
	run(router, "ip", "-6", "route", "add", "multicast", "ff00::/8", "dev", "wan0", "table", "local")
}

// notReachingIPv6 sends packets from the internet router to ext, the
// host's own IPv6 address and port, until h's router counts one more
// dropped by its IPv6 firewall, and then checks that none reached sock.
func notReachingIPv6(t *testing.T, inet *lab.Router, router *lab.Router, ext netip.AddrPort, sock net.PacketConn) {
	t.Helper()
	out := listenIn(t, inet, outside6)
	defer out.Close()
	before, err := router.DroppedIPv6(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	token := rand.Text()
	dropped := false
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline) && !dropped; {
		out.WriteTo([]byte(token), net.UDPAddrFromAddrPort(ext))
		n, err := router.DroppedIPv6(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		dropped = n > before
	}
	if !dropped {
		t.Fatalf("router never dropped packets from %v to %v", outside6, ext)
	}
	buf := make([]byte, 1500)
	sock.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
	for {
		n, _, err := sock.ReadFrom(buf)
		if err != nil {
			return
		}
		if string(buf[:n]) == token {
			t.Fatalf("a packet to %v reached the host without a pinhole", ext)
		}
	}
}
