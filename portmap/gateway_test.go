package portmap

import (
	"encoding/binary"
	"fmt"
	"net/netip"
	"testing"
)

// routeHex formats a as /proc/net/route does on this machine.
func routeHex(a string) string {
	b := netip.MustParseAddr(a).As4()
	return fmt.Sprintf("%08X", binary.NativeEndian.Uint32(b[:]))
}

func TestParseDefaultRoute(t *testing.T) {
	const header = "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n"
	line := func(iface, dst, gw, flags string, metric int, mask string) string {
		return fmt.Sprintf("%s\t%s\t%s\t%s\t0\t0\t%d\t%s\t0\t0\t0\n", iface, dst, gw, flags, metric, mask)
	}
	zero := routeHex("0.0.0.0")
	text := header +
		line("eth0", routeHex("10.0.1.0"), zero, "0001", 0, routeHex("255.255.255.0")) +
		line("wlan0", zero, routeHex("192.168.1.254"), "0003", 600, zero) +
		line("eth0", zero, routeHex("10.0.1.1"), "0003", 100, zero) +
		line("tun0", zero, routeHex("10.9.9.9"), "0002", 1, zero) + // not up
		"garbage line\n"
	gw, ok := parseDefaultRoute(text)
	if !ok || gw != netip.MustParseAddr("10.0.1.1") {
		t.Errorf("default gateway %v, %v; want 10.0.1.1, the lowest metric", gw, ok)
	}
	if gw, ok := parseDefaultRoute(header + line("eth0", routeHex("10.0.1.0"), zero, "0001", 0, routeHex("255.255.255.0"))); ok {
		t.Errorf("no default route: got %v", gw)
	}
	if _, ok := parseDefaultRoute(""); ok {
		t.Error("empty table: got a gateway")
	}
}

func FuzzParseDefaultRoute(f *testing.F) {
	f.Add("Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\neth0\t00000000\t0101000A\t0003\t0\t0\t0\t00000000\t0\t0\t0\n")
	f.Fuzz(func(t *testing.T, text string) {
		if gw, ok := parseDefaultRoute(text); ok && (!gw.Is4() || gw.IsUnspecified()) {
			t.Fatalf("gateway %v", gw)
		}
	})
}
