package portmap

import (
	"encoding/binary"
	"encoding/hex"
	"errors"
	"net"
	"net/netip"
	"os"
	"strings"
	"sync"
	"testing"
	"time"
)

// goldenOne returns the datagram in testdata/name.hex, one hex line.
func goldenOne(t testing.TB, name string) []byte {
	t.Helper()
	text, err := os.ReadFile("testdata/" + name + ".hex")
	if err != nil {
		t.Fatal(err)
	}
	b, err := hex.DecodeString(strings.TrimSpace(string(text)))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestParseAnnouncement(t *testing.T) {
	// announce-pcp.hex is what miniupnpd 2.3.1 multicast to 224.0.0.1:5350
	// when it started in the lab; announce-natpmp.hex is built by hand
	// from RFC 6886 §3.2: epoch 3600, address 203.0.113.11.
	for _, tc := range []struct {
		name string
		want announcement
	}{
		{"announce-pcp", announcement{Protocol: PCP}},
		{"announce-natpmp", announcement{Protocol: NATPMP, Epoch: 3600, External: netip.MustParseAddr("203.0.113.11")}},
	} {
		b := goldenOne(t, tc.name)
		got, err := parseAnnouncement(b)
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		if got != tc.want {
			t.Errorf("%s: %+v, want %+v", tc.name, got, tc.want)
		}
		for n := range len(b) {
			if a, err := parseAnnouncement(b[:n]); err == nil {
				t.Errorf("%s: %d of %d bytes parsed as %+v", tc.name, n, len(b), a)
			}
		}
	}

	_, mapResp := golden(t, "pcp-map")
	_, pmpMap := golden(t, "natpmp-map")
	for name, b := range map[string][]byte{
		"pcp MAP response":         mapResp,
		"pcp ANNOUNCE request":     {2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0},
		"pcp ANNOUNCE error":       {2, 0x80, 0, byte(pcpNetworkFailure), 0, 0, 0, 0, 0, 0, 0, 9, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0},
		"pcp version 1":            {1, 0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 9, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0},
		"nat-pmp mapping response": pmpMap,
		"nat-pmp address error":    {0, 0x80, 0, 3, 0, 0, 0, 9},
		"nat-pmp address 0.0.0.0":  {0, 0x80, 0, 0, 0, 0, 0, 9, 0, 0, 0, 0},
		"nat-pmp address request":  {0, 0},
		"empty":                    {},
		"ssdp":                     []byte("NOTIFY * HTTP/1.1\r\n"),
	} {
		if a, err := parseAnnouncement(b); err == nil {
			t.Errorf("%s parsed as %+v", name, a)
		}
	}
}

func TestFromGateway(t *testing.T) {
	for _, tc := range []struct {
		src, gw string
		want    bool
	}{
		{"10.0.1.1", "10.0.1.1", true},
		{"::ffff:10.0.1.1", "10.0.1.1", true},
		{"10.0.1.3", "10.0.1.1", false},
		{"169.254.1.1", "10.0.1.1", false},
		{"2001:db8:1::1", "2001:db8:1::1", true},
		{"fe80::1%eth0", "fe80::1", true},
		// Over IPv6 the router multicasts from its link-local address.
		{"fe80::d02e:17ff:fe7d:e052%eth0", "2001:db8:1::1", true},
		{"2001:db8:1::3", "2001:db8:1::1", false},
		{"fe80::1%eth0", "10.0.1.1", false},
	} {
		if got := fromGateway(netip.MustParseAddr(tc.src), netip.MustParseAddr(tc.gw)); got != tc.want {
			t.Errorf("fromGateway(%s, %s) = %v, want %v", tc.src, tc.gw, got, tc.want)
		}
	}
}

func FuzzParseAnnouncement(f *testing.F) {
	f.Add(goldenOne(f, "announce-pcp"))
	f.Add(goldenOne(f, "announce-natpmp"))
	_, resp := golden(f, "pcp-map")
	f.Add(resp)
	f.Fuzz(func(t *testing.T, b []byte) {
		a, err := parseAnnouncement(b)
		if err != nil {
			return
		}
		switch a.Protocol {
		case PCP:
			if len(b) < pcpHeaderLen || b[1] != pcpOpReply|pcpOpAnnounce || a.External.IsValid() {
				t.Fatalf("PCP announcement %+v from %x", a, b)
			}
		case NATPMP:
			if len(b) < pmpAddrResponseLen || b[1] != pmpOpReply|pmpOpAddr || !a.External.Is4() {
				t.Fatalf("NAT-PMP announcement %+v from %x", a, b)
			}
		default:
			t.Fatalf("announcement %+v of no protocol", a)
		}
	})
}

// fakeRouter is a PCP and NAT-PMP server on loopback with an epoch time
// and an external address the test sets. It can restart: forget its
// mappings, count from zero again, and announce it.
type fakeRouter struct {
	*fakeUDP
	pcp bool // answers PCP; otherwise NAT-PMP only

	mu       sync.Mutex // protects the fields below
	epoch    uint32
	external netip.Addr
	refuse   bool // refuse every mapping request
}

func newFakeRouter(t *testing.T, network string, pcp bool) *fakeRouter {
	r := &fakeRouter{pcp: pcp, epoch: 7200, external: fakePublic}
	r.fakeUDP = newFakeUDPOn(t, network, r.answer)
	return r
}

func (r *fakeRouter) answer(req []byte) [][]byte {
	r.mu.Lock()
	epoch, ext, refuse := r.epoch, r.external, r.refuse
	r.mu.Unlock()
	if len(req) < 2 {
		return nil
	}
	if req[0] == pcpVersion && r.pcp {
		resp := pcpServer(req)
		for _, b := range resp {
			binary.BigEndian.PutUint32(b[8:12], epoch)
			if b[1] == pcpOpReply|pcpOpMap && b[3] == byte(pcpSuccess) {
				if ext.Is6() {
					// No NAT: a pinhole to the client's own address.
					ext = netip.AddrFrom16([16]byte(req[8:24]))
					if ext.IsLoopback() {
						ext = fakePublic6
					}
				}
				a := pcpAddr(ext, ext)
				copy(b[pcpHeaderLen+20:], a[:])
				if refuse && binary.BigEndian.Uint32(req[4:8]) != 0 {
					b[3] = byte(pcpNoResources)
				}
			}
		}
		return resp
	}
	resp := natpmpOnly(req)
	for _, b := range resp {
		if len(b) >= 8 {
			binary.BigEndian.PutUint32(b[4:8], epoch)
		}
		if b[1] == pmpOpReply|pmpOpAddr && len(b) == pmpAddrResponseLen {
			a := ext.As4()
			copy(b[8:], a[:])
		}
		if b[1] == pmpOpReply|pmpOpMapUDP && refuse && binary.BigEndian.Uint32(req[8:12]) != 0 {
			b[3] = byte(pmpOutOfResources)
		}
	}
	return resp
}

// set changes the router's epoch time and external address.
func (r *fakeRouter) set(epoch uint32, ext netip.Addr) {
	r.mu.Lock()
	r.epoch, r.external = epoch, ext
	r.mu.Unlock()
}

func (r *fakeRouter) setRefuse(refuse bool) {
	r.mu.Lock()
	r.refuse = refuse
	r.mu.Unlock()
}

// announce sends the router's announcement to to, from its own socket.
func (r *fakeRouter) announce(t *testing.T, to net.Addr) {
	t.Helper()
	r.mu.Lock()
	epoch, ext := r.epoch, r.external
	r.mu.Unlock()
	var b []byte
	if r.pcp {
		b = []byte{pcpVersion, pcpOpReply | pcpOpAnnounce, 0, 0, 0, 0, 0, 0}
		b = binary.BigEndian.AppendUint32(b, epoch)
		b = append(b, make([]byte, 12)...)
	} else {
		b = []byte{pmpVersion, pmpOpReply | pmpOpAddr, 0, 0}
		b = binary.BigEndian.AppendUint32(b, epoch)
		a := ext.As4()
		b = append(b, a[:]...)
	}
	if _, err := r.pc.WriteTo(b, to); err != nil {
		t.Fatal(err)
	}
}

// mapRequests returns the PCP MAP and NAT-PMP mapping requests among reqs.
func mapRequests(reqs [][]byte) [][]byte {
	var out [][]byte
	for _, r := range reqs {
		if len(r) >= 2 && (r[0] == pcpVersion && r[1] == pcpOpMap || r[0] == pmpVersion && r[1] == pmpOpMapUDP) {
			out = append(out, r)
		}
	}
	return out
}

// hearOnLoopback makes cfg's client open its announcement sockets on
// loopback, standing in for the multicast group, and returns a channel
// that tells their addresses.
func hearOnLoopback(cfg *Config) <-chan net.Addr {
	opened := make(chan net.Addr, 8)
	cfg.ListenMulticast = func(network string, _ *net.Interface, _ *net.UDPAddr) (net.PacketConn, error) {
		addr := "127.0.0.1:0"
		if network == "udp6" {
			addr = "[::1]:0"
		}
		pc, err := net.ListenPacket(network, addr)
		if err == nil {
			opened <- pc.LocalAddr()
		}
		return pc, err
	}
	return opened
}

// opened returns the address of the announcement socket the client has
// opened, which it does before Map returns.
func opened(t *testing.T, ch <-chan net.Addr) net.Addr {
	t.Helper()
	select {
	case a := <-ch:
		return a
	default:
		t.Fatal("the client opened no socket for announcements")
		return nil
	}
}

// waitChanged waits for c to say that it changed the mapping by itself.
func waitChanged(t *testing.T, c *Client) {
	t.Helper()
	select {
	case <-c.Changed():
	case <-time.After(5 * time.Second):
		t.Fatal("Changed said nothing within 5s")
	}
}

// noChange checks that c has not said that it changed the mapping.
func noChange(t *testing.T, c *Client) {
	t.Helper()
	select {
	case <-c.Changed():
		t.Fatal("Changed said the mapping changed")
	default:
	}
}

var (
	fakePublic2 = netip.MustParseAddr("198.51.100.8")
	fakePublic6 = netip.MustParseAddr("2001:db8::2")
)

// A router that restarts announces it with its epoch time back at zero:
// the client maps again at once with the same nonce and port, takes the
// new external address, and says so on Changed. Announcements that are
// not news change nothing.
func TestAnnouncedRestart(t *testing.T) {
	r := newFakeRouter(t, "udp4", true)
	cfg := Config{Protocols: []Protocol{PCP}}
	heard := hearOnLoopback(&cfg)
	c := newTestClient(t, cfg, r.port(), closedPort(t))
	ctx := t.Context()
	m, err := c.Map(ctx, 4000)
	if err != nil {
		t.Fatal(err)
	}
	lis := opened(t, heard)
	before := len(r.requests())

	// Not news: from a host that is not the gateway, not an announcement,
	// and the gateway's own whose epoch follows the last answer's.
	other, err := net.ListenPacket("udp4", "127.0.0.2:0")
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	other.WriteTo([]byte{pcpVersion, pcpOpReply | pcpOpAnnounce, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0}, lis)
	r.pc.WriteTo([]byte("garbage"), lis)
	r.announce(t, lis)

	// News: the router restarts with another public address.
	r.set(0, fakePublic2)
	r.announce(t, lis)
	waitChanged(t, c)
	cur, ok := c.Current()
	if want := netip.AddrPortFrom(fakePublic2, 4000); !ok || cur.External != want {
		t.Fatalf("Current = %v, %v; want the mapping again on %v", cur, ok, want)
	}
	// The announcements came in order on one socket: only the last one
	// was acted on, with one MAP renewing the mapping.
	after := mapRequests(r.requests()[before:])
	if len(after) != 1 {
		t.Fatalf("%d MAP requests after the announcements, want 1", len(after))
	}
	first := mapRequests(r.requests()[:before])[0]
	if nonce := pcpHeaderLen + pcpNonceLen; string(after[0][pcpHeaderLen:nonce]) != string(first[pcpHeaderLen:nonce]) {
		t.Error("mapped again with another nonce")
	}
	if ext := netip.AddrPortFrom(netip.AddrFrom16([16]byte(after[0][pcpHeaderLen+20:])).Unmap(), binary.BigEndian.Uint16(after[0][pcpHeaderLen+18:])); ext != m.External {
		t.Errorf("mapped again suggesting %v, want the old mapping %v", ext, m.External)
	}
	noChange(t, c)

	if err := c.Close(ctx); err != nil {
		t.Fatal(err)
	}
	// Closed: the socket is gone, and announcements reach nobody.
	if pc, err := net.ListenPacket("udp4", lis.String()); err != nil {
		t.Errorf("the announcement socket %v is still open after Close: %v", lis, err)
	} else {
		pc.Close()
	}
}

// A NAT-PMP gateway announces a new external address with an epoch that
// goes on: the client maps again, on the new address.
func TestAnnouncedNewAddress(t *testing.T) {
	r := newFakeRouter(t, "udp4", false)
	cfg := Config{}
	heard := hearOnLoopback(&cfg)
	c := newTestClient(t, cfg, r.port(), closedPort(t))
	m, err := c.Map(t.Context(), 4000)
	if err != nil {
		t.Fatal(err)
	}
	if m.Protocol != NATPMP {
		t.Fatalf("mapped with %v, want nat-pmp", m.Protocol)
	}
	lis := opened(t, heard)
	r.set(7201, fakePublic2)
	r.announce(t, lis)
	waitChanged(t, c)
	if cur, ok := c.Current(); !ok || cur.External != netip.AddrPortFrom(fakePublic2, 4000) {
		t.Fatalf("Current = %v, %v; want the mapping on %v", cur, ok, fakePublic2)
	}
	if err := c.Close(t.Context()); err != nil {
		t.Fatal(err)
	}
}

// Without a socket for announcements, the epoch in the answer to a
// renewal tells of the restart: Renew has mapped again, asked NAT-PMP for
// the external address again, and says so on Changed too.
func TestRenewNoticesRestart(t *testing.T) {
	for _, p := range []Protocol{PCP, NATPMP} {
		t.Run(string(p), func(t *testing.T) {
			r := newFakeRouter(t, "udp4", p == PCP)
			cfg := Config{Protocols: []Protocol{p}}
			cfg.ListenMulticast = func(string, *net.Interface, *net.UDPAddr) (net.PacketConn, error) {
				return nil, errors.New("port 5350 is taken")
			}
			c := newTestClient(t, cfg, r.port(), closedPort(t))
			ctx := t.Context()
			if _, err := c.Map(ctx, 4000); err != nil {
				t.Fatal(err)
			}
			r.set(7201, fakePublic)
			if _, err := c.Renew(ctx); err != nil {
				t.Fatal(err)
			}
			noChange(t, c)

			r.set(2, fakePublic2)
			m, err := c.Renew(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if m.External != netip.AddrPortFrom(fakePublic2, 4000) {
				t.Errorf("Renew after the restart = %v, want the mapping on %v", m, fakePublic2)
			}
			waitChanged(t, c)
			if err := c.Close(ctx); err != nil {
				t.Fatal(err)
			}
		})
	}
}

// A gateway that comes back refusing to map: the client has no mapping
// any more, and says so.
func TestAnnouncedRestartRefused(t *testing.T) {
	r := newFakeRouter(t, "udp4", true)
	cfg := Config{Protocols: []Protocol{PCP}}
	heard := hearOnLoopback(&cfg)
	c := newTestClient(t, cfg, r.port(), closedPort(t))
	if _, err := c.Map(t.Context(), 4000); err != nil {
		t.Fatal(err)
	}
	lis := opened(t, heard)
	r.set(0, fakePublic)
	r.setRefuse(true)
	r.announce(t, lis)
	waitChanged(t, c)
	if cur, ok := c.Current(); ok {
		t.Errorf("Current = %v after the gateway refused to map again, want none", cur)
	}
	if _, err := c.Renew(t.Context()); !errors.Is(err, ErrNoMapping) {
		t.Errorf("Renew: %v, want ErrNoMapping", err)
	}
	if err := c.Close(t.Context()); err != nil {
		t.Fatal(err)
	}
}

// Close does not wait out the random delay before mapping again.
func TestCloseDuringAnnouncedRestart(t *testing.T) {
	r := newFakeRouter(t, "udp4", true)
	cfg := Config{Protocols: []Protocol{PCP}}
	heard := hearOnLoopback(&cfg)
	c := newTestClient(t, cfg, r.port(), closedPort(t))
	c.announceJitter = time.Hour
	if _, err := c.Map(t.Context(), 4000); err != nil {
		t.Fatal(err)
	}
	lis := opened(t, heard)
	before := len(r.requests())
	r.set(0, fakePublic)
	r.announce(t, lis)
	start := time.Now()
	if err := c.Close(t.Context()); err != nil {
		t.Fatal(err)
	}
	if took := time.Since(start); took > 2*time.Second {
		t.Errorf("Close took %v", took)
	}
	for _, req := range mapRequests(r.requests()[before:]) {
		if binary.BigEndian.Uint32(req[4:8]) != 0 {
			t.Errorf("mapped again after Close: %x", req)
		}
	}
}

// PCP over IPv6: the client speaks to an IPv6 gateway with PCP alone,
// asks for a mapping of its IPv6 address (no preference is ::), takes the
// pinhole the gateway grants, and hears its announcements over IPv6.
func TestPCPOverIPv6(t *testing.T) {
	r := newFakeRouter(t, "udp6", true)
	r.set(7200, fakePublic6)
	cfg := Config{Gateway: netip.IPv6Loopback()}
	heard := hearOnLoopback(&cfg)
	ssdp := newFakeUDP(t, func([]byte) [][]byte { return nil })
	c := newTestClient(t, cfg, r.port(), ssdp.port())
	ctx := t.Context()
	m, err := c.Map(ctx, 4000)
	if err != nil {
		t.Fatal(err)
	}
	want := Mapping{Protocol: PCP, Gateway: netip.IPv6Loopback(), Internal: netip.MustParseAddrPort("[::1]:4000"),
		External: netip.AddrPortFrom(fakePublic6, 4000)}
	if m.Protocol != want.Protocol || m.Gateway != want.Gateway || m.Internal != want.Internal || m.External != want.External {
		t.Fatalf("Map = %v, want %v", m, want)
	}
	if n := len(ssdp.requests()); n != 0 {
		t.Errorf("%d SSDP searches for an IPv6 gateway, want none", n)
	}
	mp := mapRequests(r.requests())[0]
	if got := netip.AddrFrom16([16]byte(mp[8:24])); got != netip.IPv6Loopback() {
		t.Errorf("client address %v, want ::1", got)
	}
	if got := netip.AddrFrom16([16]byte(mp[pcpHeaderLen+20:])); got != netip.IPv6Unspecified() {
		t.Errorf("suggested external address %v, want ::", got)
	}
	lis := opened(t, heard)
	if lis.(*net.UDPAddr).IP.To4() != nil {
		t.Errorf("announcements heard on %v, want IPv6", lis)
	}
	r.set(0, fakePublic6)
	r.announce(t, lis)
	waitChanged(t, c)
	if err := c.Close(ctx); err != nil {
		t.Fatal(err)
	}
	del := mapRequests(r.requests())
	if last := del[len(del)-1]; binary.BigEndian.Uint32(last[4:8]) != 0 {
		t.Errorf("last request %x is not a deletion", last)
	}
}
