package lab_test

import (
	"net/netip"
	"strings"
	"testing"

	"github.com/parley-p2p/parley/lab"
)

// TestNATMapping measures each NAT kind the RFC 5780 §4.3 way: from one
// socket behind the NAT, ask reflectors at two addresses (and at a second
// port of the same address) which address they see.
func TestNATMapping(t *testing.T) {
	l := lab.NewTest(t, lab.Config{Name: "mapping"})
	host := must[*lab.Host](t)
	s1 := host(l.AddPublicHost("stun1"))
	s2 := host(l.AddPublicHost("stun2"))
	a1 := serve(t, s1)
	a2 := serve(t, s2)
	p2 := start(t, s2, "serve", "-udp", ":3479")
	p2.wait("READY")
	a3 := netip.AddrPortFrom(s2.Addr(), 3479)
	to := strings.Join([]string{a1.String(), a2.String(), a3.String()}, ",")

	// mapped returns the three mappings, or fails on a timeout.
	mapped := func(t *testing.T, h *lab.Host) [3]netip.AddrPort {
		t.Helper()
		p := start(t, h, "map", "-bind", ":4000", "-to", to, "-timeout", "3s")
		var m [3]netip.AddrPort
		for i, s := range []netip.AddrPort{a1, a2, a3} {
			line := p.wait("MAPPED "+s.String(), "TIMEOUT "+s.String())
			if strings.HasPrefix(line, "TIMEOUT") {
				t.Fatalf("%s: %s", h.Name(), line)
			}
			m[i] = addrField(t, line, 2)
		}
		t.Logf("%s behind %v: %v", h.Name(), h.Router().Config().Kind, m)
		return m
	}

	t.Run("EIM", func(t *testing.T) {
		h := must[*lab.Host](t)(l.AddNATHost("eim", lab.EIM))
		m := mapped(t, h)
		// Linux masquerade keeps a free source port.
		want := netip.AddrPortFrom(h.Router().PublicAddr(), 4000)
		if m != [3]netip.AddrPort{want, want, want} {
			t.Errorf("mappings %v, want %v towards every destination", m, want)
		}
	})
	t.Run("FullCone", func(t *testing.T) {
		h := must[*lab.Host](t)(l.AddNATHost("cone", lab.FullCone))
		m := mapped(t, h)
		want := netip.AddrPortFrom(h.Router().PublicAddr(), 4000)
		if m != [3]netip.AddrPort{want, want, want} {
			t.Errorf("mappings %v, want %v towards every destination", m, want)
		}
	})
	t.Run("Symmetric", func(t *testing.T) {
		h := must[*lab.Host](t)(l.AddNATHost("sym", lab.Symmetric))
		m := mapped(t, h)
		for _, ap := range m {
			if ap.Addr() != h.Router().PublicAddr() {
				t.Errorf("mapping %v not on the router's address %v", ap, h.Router().PublicAddr())
			}
		}
		// A new port per destination address and per destination port.
		if m[0].Port() == m[1].Port() || m[1].Port() == m[2].Port() || m[0].Port() == m[2].Port() {
			t.Errorf("mappings %v: want a different port per destination", m)
		}
	})
	t.Run("UDPBlocked", func(t *testing.T) {
		h := must[*lab.Host](t)(l.AddNATHost("blocked", lab.UDPBlocked))
		p := start(t, h, "map", "-bind", ":4000", "-to", a1.String(), "-timeout", "500ms")
		if line := p.wait("MAPPED", "TIMEOUT"); !strings.HasPrefix(line, "TIMEOUT") {
			t.Errorf("UDP got through: %s", line)
		}
		dropped, err := h.Router().Dropped(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		if dropped == 0 {
			t.Error("router counted no dropped UDP")
		}
		tcp := start(t, h, "tcp", "-to", a1.String())
		line := tcp.wait("SEEN", "TIMEOUT")
		if got := addrField(t, line, 1); got.Addr() != h.Router().PublicAddr() {
			t.Errorf("TCP: %s, want it masqueraded to %v", line, h.Router().PublicAddr())
		}
	})
}
