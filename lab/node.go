package lab

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"os/exec"
	"runtime"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// node is one network namespace of a lab.
type node struct {
	lab  *Lab
	name string // as given to Add*, e.g. "alice" or "alice-r"
	ns   string // the namespace's full name
}

// Name returns the node's name within its lab.
func (n *node) Name() string { return n.name }

// Namespace returns the name of the node's network namespace, as
// `ip netns list` shows it.
func (n *node) Namespace() string { return n.ns }

// Command returns a command that runs name with args inside the node's
// namespace, through `ip netns exec`, which execs the program in place: the
// command's process is the program itself, so signals and ctx's
// cancellation reach it directly. The caller owns the process and must wait
// for it before closing the lab.
func (n *node) Command(ctx context.Context, name string, args ...string) *exec.Cmd {
	return exec.CommandContext(ctx, "ip", append([]string{"netns", "exec", n.ns, name}, args...)...)
}

// Run calls f on an OS thread that has joined the node's namespace, and
// returns f's error. Sockets f opens stay in the namespace after Run
// returns and may be used from any goroutine; goroutines f starts do not
// run in the namespace.
func (n *node) Run(f func() error) error {
	errc := make(chan error, 1)
	go func() {
		// The thread stays locked, and so dies with this goroutine, unless
		// it is back in its own namespace.
		runtime.LockOSThread()
		errc <- n.runLocked(f)
	}()
	return <-errc
}

// runLocked is Run's body, on a locked thread.
func (n *node) runLocked(f func() error) error {
	self, err := unix.Open("/proc/thread-self/ns/net", unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("lab: open own namespace: %w", err)
	}
	defer unix.Close(self)
	target, err := unix.Open(netnsDir+n.ns, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("lab: open namespace %s: %w", n.ns, err)
	}
	defer unix.Close(target)
	if err := unix.Setns(target, unix.CLONE_NEWNET); err != nil {
		return fmt.Errorf("lab: enter namespace %s: %w", n.ns, err)
	}
	ferr := f()
	if err := unix.Setns(self, unix.CLONE_NEWNET); err == nil {
		runtime.UnlockOSThread()
	}
	return ferr
}

// ListenPacket is net.ListenPacket inside the node's namespace.
func (n *node) ListenPacket(network, address string) (net.PacketConn, error) {
	var c net.PacketConn
	err := n.Run(func() (err error) {
		c, err = net.ListenPacket(network, address)
		return err
	})
	return c, err
}

// Host is a namespace with one interface, eth0, and a default route: on the
// internet for a public host, or on a private LAN behind its Router.
type Host struct {
	node
	addr   netip.Addr
	router *Router
}

// Addr returns the host's address on eth0: public, or private behind a NAT.
func (h *Host) Addr() netip.Addr { return h.addr }

// Router returns the NAT router in front of the host, or nil for a public
// host.
func (h *Host) Router() *Router { return h.router }

// Router is a namespace that forwards packets: a NAT router between a LAN
// (lan0) and the internet (wan0), or the internet router itself.
type Router struct {
	node
	public  netip.Addr
	lan     netip.Addr
	config  RouterConfig
	ruleset string
}

// PublicAddr returns the router's address on the internet.
func (r *Router) PublicAddr() netip.Addr { return r.public }

// LANAddr returns the router's address on its LAN, the hosts' gateway. It is
// the zero Addr for the internet router.
func (r *Router) LANAddr() netip.Addr { return r.lan }

// Config returns the router's configuration.
func (r *Router) Config() RouterConfig { return r.config }

// Ruleset returns the nftables ruleset loaded into the router, as given to
// `nft -f`. It is empty for the internet router, which has none.
func (r *Router) Ruleset() string { return r.ruleset }

// Conntrack returns the router's connection tracking table: one Flow per
// entry, with the NAT mapping it holds.
func (r *Router) Conntrack(ctx context.Context) ([]Flow, error) {
	out, err := execIn(ctx, r.ns, "", "cat", "/proc/net/nf_conntrack")
	if err != nil {
		return nil, err
	}
	return ParseConntrack(string(out)), nil
}

// Dropped returns how many packets the router's firewall has dropped: UDP
// it refused to forward (UDPBlocked), and unsolicited packets to itself
// (RouterConfig.Firewall). Tests wait on it to know a packet arrived.
func (r *Router) Dropped(ctx context.Context) (uint64, error) {
	if r.ruleset == "" {
		return 0, nil
	}
	return r.nftPackets(ctx, "ip", "lab", "dropped")
}

// nftPackets reads the packet count of the named nftables counter in the
// router's namespace.
func (r *Router) nftPackets(ctx context.Context, family, table, counter string) (uint64, error) {
	out, err := execIn(ctx, r.ns, "", "nft", "list", "counter", family, table, counter)
	if err != nil {
		return 0, err
	}
	// "... counter dropped { packets 3 bytes 126 } ..."
	f := strings.Fields(string(out))
	for i := 0; i+1 < len(f); i++ {
		if f[i] == "packets" {
			return strconv.ParseUint(f[i+1], 10, 64)
		}
	}
	return 0, fmt.Errorf("lab: no packet count in %q", out)
}
