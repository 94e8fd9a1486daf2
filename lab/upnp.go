package lab

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// A router with RouterConfig.UPnP can run miniupnpd (Debian's
// miniupnpd-nftables, 2.3), the port-mapping daemon of many home routers:
// UPnP IGD over SSDP and HTTP, NAT-PMP and PCP, all on the LAN interface.
// A mapping it grants is a destination NAT rule in its own nftables table,
// which RouterConfig.UPnP adds to the router's ruleset:
//
//	table inet miniupnpd {
//		counter dropped6 { }
//		chain forward {
//			type filter hook forward priority filter; policy accept; jump miniupnpd
//			meta nfproto ipv6 ct state established,related accept
//			meta nfproto ipv6 iifname "wan0" counter name "dropped6" drop
//		}
//		chain miniupnpd { }                 its accepts for mapped ports and IPv6 pinholes
//		chain prerouting { type nat hook prerouting priority dstnat; policy accept; jump prerouting_miniupnpd }
//		chain postrouting { type nat hook postrouting priority srcnat; policy accept; jump postrouting_miniupnpd }
//		chain prerouting_miniupnpd { }      its DNAT rules: iif "wan0" udp dport E dnat to HOST:P
//		chain postrouting_miniupnpd { }
//	}
//
// plus `ct status dnat accept` in the lab table's forward chain, whose drop
// policy would otherwise stop the mapped packets. The lab's own table is
// IPv4 only; for a router given IPv6 addresses (UPnPConfig.IPv6), the
// last two rules of the forward chain make it a stateful IPv6 firewall,
// as home routers are, that lets in from the internet only what a PCP MAP
// over IPv6 opened: a pinhole, an accept in chain miniupnpd. Deleting a mapping
// removes its rule; a flow already in conntrack carries on until it times
// out, as on any Linux router. The daemon leaves its rules behind when it
// exits; UPnPDaemon.Stop flushes them, as Debian's service does when it
// stops (nft_removeall.sh), so that a daemon stopped and started again has
// lost its mappings as a rebooted router has.
//
// The public addresses. miniupnpd refuses to map when its WAN address is a
// reserved one, and 203.0.113.0/24 (TEST-NET-3) is. Given
// ext_perform_stun, it instead asks a STUN server for its public address
// and maps if four requests (with CHANGE-REQUEST flags) come back with its
// own address and ports, which it takes for "no upstream NAT or
// filtering". StartUPnP runs such a responder on the internet router,
// 203.0.113.1, that answers every Binding request from where it came, so
// the daemon learns its real WAN address and maps.
const upnpTable = `table inet miniupnpd {
	counter dropped6 {
	}
	chain forward {
		type filter hook forward priority filter; policy accept;
		jump miniupnpd
		meta nfproto ipv6 ct state established,related accept
		meta nfproto ipv6 iifname "wan0" counter name "dropped6" drop
	}
	chain miniupnpd {
	}
	chain prerouting {
		type nat hook prerouting priority dstnat; policy accept;
		jump prerouting_miniupnpd
	}
	chain postrouting {
		type nat hook postrouting priority srcnat; policy accept;
		jump postrouting_miniupnpd
	}
	chain prerouting_miniupnpd {
	}
	chain postrouting_miniupnpd {
	}
}
`

// MiniUPnPd is where Debian's miniupnpd-nftables installs the daemon.
const MiniUPnPd = "/usr/sbin/miniupnpd"

// upnpStartTimeout bounds StartUPnP's wait for the daemon: its STUN check
// takes milliseconds when answered, but 3 s per unanswered round.
const upnpStartTimeout = 15 * time.Second

// UPnPConfig configures the miniupnpd that StartUPnP runs. The zero value
// offers UPnP IGD (as IGDv2), NAT-PMP and PCP.
type UPnPConfig struct {
	// NoIGD turns UPnP IGD off (no SSDP, no HTTP): enable_upnp=no.
	NoIGD bool
	// NoNATPMP turns NAT-PMP and PCP off, which miniupnpd switches
	// together: enable_natpmp=no.
	NoNATPMP bool
	// IGDv1 describes the device as an InternetGatewayDevice:1 with a
	// WANIPConnection:1 service (force_igd_desc_v1=yes): no
	// AddAnyPortMapping.
	IGDv1 bool
	// IPv6 serves PCP over IPv6 too (ipv6_disable=no), whose MAP opens a
	// firewall pinhole to the LAN host's IPv6 address. The lab gives its
	// routers no IPv6 addresses: the caller adds them to lan0 (which the
	// daemon needs to enable IPv6) and wan0 before StartUPnP. The daemon
	// sends its IPv6 ANNOUNCE to ff02::1 without choosing an interface,
	// so it goes where the kernel routes ff00::/8 first, not always the
	// LAN.
	IPv6 bool
}

// CheckUPnP reports why this machine cannot run miniupnpd in a lab: the
// lab's own prerequisites (Check) or the daemon missing.
func CheckUPnP() error {
	if err := Check(); err != nil {
		return err
	}
	if _, err := os.Stat(MiniUPnPd); err != nil {
		return fmt.Errorf("lab: missing %s (apt-get install miniupnpd-nftables)", MiniUPnPd)
	}
	return nil
}

// RequireUPnP is Require for tests that run miniupnpd: it skips t, or
// fails it when CI=true, unless CheckUPnP passes.
func RequireUPnP(t testing.TB) {
	t.Helper()
	if err := CheckUPnP(); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("%v (CI=true: real-kernel lab tests must run)", err)
		}
		t.Skipf("%v; skipping port-mapping lab test", err)
	}
}

// UPnPDaemon is a miniupnpd running in a router's namespace. Stop it
// before closing the lab.
type UPnPDaemon struct {
	router *Router
	cmd    *exec.Cmd
	dir    string         // its configuration and pid file
	stun   net.PacketConn // the STUN responder on the internet router
	log    *lineLog       // its output (it logs to stderr with -d)
	exited chan struct{}  // closed when the process has been waited for
	err    error          // the process's exit, once exited is closed

	stopOnce sync.Once
	stopErr  error
}

// StartUPnP runs miniupnpd on r, which must have been made with
// RouterConfig.UPnP, and returns once the daemon listens on every
// protocol cfg enables and has enabled port forwarding. It only hands
// out mappings on the LAN's ports 1024–65535 to the LAN host itself
// (secure_mode). Stop the daemon before closing the lab.
func (r *Router) StartUPnP(ctx context.Context, cfg UPnPConfig) (_ *UPnPDaemon, err error) {
	if !r.config.UPnP {
		return nil, fmt.Errorf("lab: router %s: start miniupnpd: the router was not made with RouterConfig.UPnP", r.name)
	}
	if !r.lan.IsValid() {
		return nil, fmt.Errorf("lab: router %s is not a NAT router", r.name)
	}
	if err := CheckUPnP(); err != nil {
		return nil, err
	}
	d := &UPnPDaemon{router: r, log: newLineLog(), exited: make(chan struct{})}
	defer func() {
		if err != nil {
			d.Stop()
			err = fmt.Errorf("lab: router %s: start miniupnpd: %w", r.name, err)
		}
	}()

	d.stun, err = r.lab.internet.ListenPacket("udp4", netip.AddrPortFrom(internetGateway, 0).String())
	if err != nil {
		return d, err
	}
	go serveSTUN(d.stun)

	if d.dir, err = os.MkdirTemp("", "lab-miniupnpd-"); err != nil {
		return d, err
	}
	conf := filepath.Join(d.dir, "miniupnpd.conf")
	stunPort := d.stun.LocalAddr().(*net.UDPAddr).Port
	if err := os.WriteFile(conf, []byte(r.upnpConfig(cfg, stunPort)), 0o600); err != nil {
		return d, err
	}
	d.cmd = r.Command(context.Background(), MiniUPnPd, "-d", "-f", conf, "-P", filepath.Join(d.dir, "miniupnpd.pid"))
	d.cmd.Stdout = d.log
	d.cmd.Stderr = d.log
	if err := d.cmd.Start(); err != nil {
		return d, err
	}
	go func() {
		d.err = d.cmd.Wait()
		close(d.exited)
	}()

	ctx, cancel := context.WithTimeout(ctx, upnpStartTimeout)
	defer cancel()
	// The STUN check comes first; it decides whether it maps at all.
	if err := d.waitLog(ctx, "Port forwarding is now enabled"); err != nil {
		return d, err
	}
	var ports []uint16
	if !cfg.NoIGD {
		ports = append(ports, 1900) // SSDP, opened after HTTP
	}
	if !cfg.NoNATPMP {
		ports = append(ports, 5351)
	}
	return d, d.waitSockets(ctx, ports)
}

// upnpConfig returns the miniupnpd.conf for r.
func (r *Router) upnpConfig(cfg UPnPConfig, stunPort int) string {
	yes := func(b bool) string {
		if b {
			return "yes"
		}
		return "no"
	}
	var uuid [16]byte
	rand.Read(uuid[:])
	lan := netip.PrefixFrom(r.lan, 24).Masked()
	return fmt.Sprintf(`ext_ifname=wan0
listening_ip=lan0
http_port=0
enable_upnp=%s
enable_natpmp=%s
force_igd_desc_v1=%s
ipv6_disable=%s
secure_mode=yes
system_uptime=no
ext_perform_stun=yes
ext_stun_host=%v
ext_stun_port=%d
upnp_table_name=miniupnpd
upnp_nat_table_name=miniupnpd
upnp_forward_chain=miniupnpd
upnp_nat_chain=prerouting_miniupnpd
upnp_nat_postrouting_chain=postrouting_miniupnpd
friendly_name=lab router %s
uuid=%x-%x-%x-%x-%x
allow 1024-65535 %v 1024-65535
deny 0-65535 0.0.0.0/0 0-65535
`, yes(!cfg.NoIGD), yes(!cfg.NoNATPMP), yes(cfg.IGDv1), yes(!cfg.IPv6),
		internetGateway, stunPort, r.name,
		uuid[0:4], uuid[4:6], uuid[6:8], uuid[8:10], uuid[10:16], lan)
}

// waitLog waits until the daemon has logged a line containing s, and
// fails if it exits or says port forwarding is impossible first.
func (d *UPnPDaemon) waitLog(ctx context.Context, s string) error {
	for {
		text, changed := d.log.snapshot()
		if strings.Contains(text, s) {
			return nil
		}
		if strings.Contains(text, "Port forwarding is impossible") || strings.Contains(text, "does not support port forwarding") {
			return fmt.Errorf("miniupnpd will not map:\n%s", text)
		}
		select {
		case <-changed:
		case <-d.exited:
			text, _ := d.log.snapshot()
			return fmt.Errorf("miniupnpd exited (%v):\n%s", d.err, text)
		case <-ctx.Done():
			return fmt.Errorf("%w waiting for %q:\n%s", ctx.Err(), s, text)
		}
	}
}

// waitSockets waits until the router's namespace has UDP sockets bound to
// each of ports, polling /proc/net/udp: miniupnpd logs no line once it
// has opened its SSDP socket.
func (d *UPnPDaemon) waitSockets(ctx context.Context, ports []uint16) error {
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for {
		var text []byte
		if err := d.router.Run(func() (err error) {
			text, err = os.ReadFile("/proc/thread-self/net/udp")
			return err
		}); err != nil {
			return err
		}
		missing := false
		for _, p := range ports {
			// "  12: 00000000:076C 00000000:0000 07 ..." local address:port in hex
			if !bytes.Contains(text, fmt.Appendf(nil, ":%04X 00000000:0000", p)) {
				missing = true
			}
		}
		if !missing {
			return nil
		}
		select {
		case <-tick.C:
		case <-d.exited:
			text, _ := d.log.snapshot()
			return fmt.Errorf("miniupnpd exited (%v):\n%s", d.err, text)
		case <-ctx.Done():
			return fmt.Errorf("%w waiting for miniupnpd to listen on UDP %v", ctx.Err(), ports)
		}
	}
}

// WaitEpoch waits until the daemon's PCP server, asked from host h on its
// LAN, answers with an epoch time of at least min seconds (RFC 6887
// §8.5). A client tells that the daemon restarted from its epoch going
// back; a restart within a second or two of the last start cannot be told
// apart, so tests of restarts let the count grow first.
func (d *UPnPDaemon) WaitEpoch(ctx context.Context, h *Host, min uint32) error {
	var conn net.Conn
	err := h.Run(func() (err error) {
		conn, err = net.Dial("udp4", netip.AddrPortFrom(d.router.lan, 5351).String())
		return err
	})
	if err != nil {
		return err
	}
	defer conn.Close()
	// An ANNOUNCE request (RFC 6887 §7.1): version 2, opcode 0, lifetime
	// 0, the client's address IPv4-mapped.
	req := make([]byte, 24)
	req[0] = 2
	a := h.Addr().As16()
	copy(req[8:], a[:])
	buf := make([]byte, 1100)
	var epoch uint32
	tick := time.NewTicker(250 * time.Millisecond)
	defer tick.Stop()
	for {
		conn.Write(req)
		conn.SetReadDeadline(time.Now().Add(250 * time.Millisecond))
		// The answer: version 2, opcode 128, reserved, result 0, lifetime,
		// epoch time.
		if n, err := conn.Read(buf); err == nil && n >= 12 && buf[0] == 2 && buf[1] == 0x80 && buf[3] == 0 {
			if epoch = binary.BigEndian.Uint32(buf[8:12]); epoch >= min {
				return nil
			}
		}
		select {
		case <-tick.C:
		case <-d.exited:
			return fmt.Errorf("lab: miniupnpd exited (%v)", d.err)
		case <-ctx.Done():
			return fmt.Errorf("lab: router %s: PCP epoch %d, want %d: %w", d.router.name, epoch, min, ctx.Err())
		}
	}
}

// DroppedIPv6 returns how many IPv6 packets from the internet the
// router's firewall has dropped because no pinhole let them in (see
// UPnPConfig.IPv6). Tests wait on it to know a packet arrived.
func (r *Router) DroppedIPv6(ctx context.Context) (uint64, error) {
	if !r.config.UPnP {
		return 0, nil
	}
	return r.nftPackets(ctx, "inet", "miniupnpd", "dropped6")
}

// Log returns what the daemon has logged so far.
func (d *UPnPDaemon) Log() string {
	text, _ := d.log.snapshot()
	return text
}

// Stop stops the daemon (SIGTERM; SIGKILL if it has not exited within
// 5 s), deletes the rules of its mappings, which it leaves behind, and
// stops its STUN responder and removes its files. It may be called more
// than once. StartUPnP on the same router then starts a daemon that knows
// of no mapping, and whose PCP and NAT-PMP epoch starts again from 0.
//
// SIGTERM is sent again every 100 ms: the daemon checks the flag its
// handler sets before it calls select(2), so a signal that lands between
// the two is missed until select times out (30 s, its SSDP interval),
// which the lab saw happen more often than not.
func (d *UPnPDaemon) Stop() error {
	d.stopOnce.Do(func() {
		if d.cmd != nil && d.cmd.Process != nil {
			d.cmd.Process.Signal(syscall.SIGTERM)
			tick := time.NewTicker(100 * time.Millisecond)
			deadline := time.NewTimer(5 * time.Second)
		wait:
			for {
				select {
				case <-d.exited:
					break wait
				case <-tick.C:
					d.cmd.Process.Signal(syscall.SIGTERM)
				case <-deadline.C:
					d.cmd.Process.Kill()
					<-d.exited
					d.stopErr = errors.New("lab: miniupnpd did not stop on SIGTERM")
					break wait
				}
			}
			tick.Stop()
			deadline.Stop()
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			flush := "flush chain inet miniupnpd miniupnpd\n" +
				"flush chain inet miniupnpd prerouting_miniupnpd\n" +
				"flush chain inet miniupnpd postrouting_miniupnpd\n"
			if _, err := execIn(ctx, d.router.ns, flush, "nft", "-f", "-"); err != nil {
				d.stopErr = errors.Join(d.stopErr, fmt.Errorf("lab: delete miniupnpd's rules: %w", err))
			}
			cancel()
		}
		if d.stun != nil {
			d.stun.Close()
		}
		if d.dir != "" {
			os.RemoveAll(d.dir)
		}
	})
	return d.stopErr
}

// serveSTUN answers every STUN Binding request on pc with a success
// response carrying the request's source as XOR-MAPPED-ADDRESS (RFC 8489
// §14.2), from pc itself, whatever CHANGE-REQUEST says: all that
// miniupnpd's check needs. It returns when pc is closed.
func serveSTUN(pc net.PacketConn) {
	const magic = 0x2112A442
	buf := make([]byte, 1500)
	for {
		n, from, err := pc.ReadFrom(buf)
		if err != nil {
			return
		}
		src, ok := from.(*net.UDPAddr)
		if !ok || n < 20 || binary.BigEndian.Uint16(buf) != 0x0001 || binary.BigEndian.Uint32(buf[4:]) != magic {
			continue
		}
		ap := src.AddrPort()
		a4 := ap.Addr().Unmap()
		if !a4.Is4() {
			continue
		}
		resp := binary.BigEndian.AppendUint16(nil, 0x0101) // Binding success
		resp = binary.BigEndian.AppendUint16(resp, 12)     // one 12-byte attribute
		resp = append(resp, buf[4:20]...)                  // magic cookie and transaction ID
		resp = binary.BigEndian.AppendUint16(resp, 0x0020) // XOR-MAPPED-ADDRESS
		resp = binary.BigEndian.AppendUint16(resp, 8)
		resp = append(resp, 0, 1) // IPv4
		resp = binary.BigEndian.AppendUint16(resp, ap.Port()^uint16(magic>>16))
		ip := a4.As4()
		resp = binary.BigEndian.AppendUint32(resp, binary.BigEndian.Uint32(ip[:])^magic)
		pc.WriteTo(resp, from)
	}
}

// lineLog collects a process's output and signals each write.
type lineLog struct {
	mu      sync.Mutex // protects the fields below
	buf     bytes.Buffer
	changed chan struct{} // closed and replaced on each write
}

func newLineLog() *lineLog { return &lineLog{changed: make(chan struct{})} }

func (l *lineLog) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.buf.Len() < 1<<20 { // a runaway daemon does not eat the memory
		l.buf.Write(p)
	}
	close(l.changed)
	l.changed = make(chan struct{})
	return len(p), nil
}

// snapshot returns the output so far and a channel closed at the next
// write.
func (l *lineLog) snapshot() (string, <-chan struct{}) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.String(), l.changed
}
