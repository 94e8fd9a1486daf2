package portmap

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"strconv"
	"strings"
)

// Route flags of /proc/net/route (linux/route.h).
const (
	rtfUp      = 0x1
	rtfGateway = 0x2
)

// DefaultGateway returns the IPv4 default gateway of the calling thread's
// network namespace, from the kernel's routing table (Linux only): the
// router a port mapping is asked of. With several default routes it picks
// the one with the lowest metric.
func DefaultGateway() (netip.Addr, error) {
	// thread-self, not self: a Go program may run a goroutine on a thread
	// locked into another network namespace (as the lab does), and
	// /proc/self/net is the main thread's.
	b, err := os.ReadFile("/proc/thread-self/net/route")
	if errors.Is(err, os.ErrNotExist) {
		b, err = os.ReadFile("/proc/net/route")
	}
	if err != nil {
		return netip.Addr{}, fmt.Errorf("portmap: default gateway: %w", err)
	}
	gw, ok := parseDefaultRoute(string(b))
	if !ok {
		return netip.Addr{}, errors.New("portmap: no IPv4 default gateway")
	}
	return gw, nil
}

// parseDefaultRoute returns the gateway of the IPv4 default route with the
// lowest metric in the text of /proc/net/route:
//
//	Iface	Destination	Gateway 	Flags	RefCnt	Use	Metric	Mask		MTU	Window	IRTT
//	eth0	00000000	0101000A	0003	0	0	0	00000000	0	0	0
//
// Addresses are the raw network-order bytes printed as a host-order
// hexadecimal number, so 0101000A is 10.0.1.1 on a little-endian machine.
// It skips lines it cannot parse and never panics.
func parseDefaultRoute(text string) (netip.Addr, bool) {
	var (
		best   netip.Addr
		metric uint64
	)
	for line := range strings.Lines(text) {
		f := strings.Fields(line)
		if len(f) < 8 {
			continue
		}
		dst, err1 := strconv.ParseUint(f[1], 16, 32)
		gw, err2 := strconv.ParseUint(f[2], 16, 32)
		flags, err3 := strconv.ParseUint(f[3], 16, 16)
		m, err4 := strconv.ParseUint(f[6], 10, 32)
		mask, err5 := strconv.ParseUint(f[7], 16, 32)
		if err := errors.Join(err1, err2, err3, err4, err5); err != nil {
			continue // the header line, or garbage
		}
		if dst != 0 || mask != 0 || flags&(rtfUp|rtfGateway) != rtfUp|rtfGateway || gw == 0 {
			continue
		}
		var a [4]byte
		binary.NativeEndian.PutUint32(a[:], uint32(gw))
		if !best.IsValid() || m < metric {
			best, metric = netip.AddrFrom4(a), m
		}
	}
	return best, best.IsValid()
}
