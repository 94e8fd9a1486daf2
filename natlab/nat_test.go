package natlab

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"testing"
	"testing/synctest"
	"time"
)

// natLab is the topology of RFC 5780's behaviour tests: a client behind a
// NAT, and two servers S1 and S2 on the internet, each listening on two
// ports.
type natLab struct {
	w      *World
	inet   *Network
	lan    *Network
	nat    *NAT
	client *Host
	cc     *Conn       // the client's socket, port 4000
	s      [2][2]*Conn // s[server][port]
}

func newNATLab(t *testing.T, cfg NATConfig) *natLab {
	t.Helper()
	l := &natLab{w: New(Config{Seed: 1})}
	t.Cleanup(func() { l.w.Close() })
	l.inet = l.w.NewNetwork("internet", netip.MustParsePrefix("203.0.113.0/24"))
	l.lan = l.w.NewNetwork("lan", netip.MustParsePrefix("192.168.1.0/24"))
	cfg.Inside, cfg.Outside = l.lan, l.inet
	l.nat = l.w.NewNAT("nat", cfg)
	l.client = l.w.NewHost("client", l.lan, Link{Delay: time.Millisecond})
	l.cc = listen(t, l.client, ":4000")
	for i := range l.s {
		h := l.w.NewHost(fmt.Sprintf("s%d", i+1), l.inet, Link{Delay: 5 * time.Millisecond})
		l.s[i][0] = listen(t, h, ":3478")
		l.s[i][1] = listen(t, h, ":3479")
	}
	return l
}

// observe has the client send to server i's port j and returns the source
// address that server saw: the client's external endpoint for that
// destination.
func (l *natLab) observe(t *testing.T, i, j int) netip.AddrPort {
	t.Helper()
	send(t, l.cc, addrOf(l.s[i][j]), []byte("binding request"))
	_, from := recv(t, l.s[i][j], time.Minute)
	return from
}

// reaches reports whether a datagram from server i's port j to ext reaches
// the client.
func (l *natLab) reaches(t *testing.T, i, j int, ext netip.AddrPort) bool {
	t.Helper()
	send(t, l.s[i][j], ext, []byte("unsolicited"))
	_, _, err := tryRecv(l.cc, time.Second)
	if err != nil && !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatal(err)
	}
	return err == nil
}

func TestNATMapping(t *testing.T) {
	for _, tc := range []struct {
		mapping          Behavior
		sameIPOtherPort  bool // S1:3479 sees the same external port as S1:3478
		otherIPSamePort  bool // S2:3478 sees the same external port as S1:3478
		firstIsPreserved bool
	}{
		{EndpointIndependent, true, true, true},
		{AddressDependent, true, false, true},
		{AddressAndPortDependent, false, false, true},
	} {
		t.Run(tc.mapping.String(), func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				l := newNATLab(t, NATConfig{Mapping: tc.mapping})
				x1 := l.observe(t, 0, 0)
				x2 := l.observe(t, 0, 1)
				x3 := l.observe(t, 1, 0)
				for _, x := range []netip.AddrPort{x1, x2, x3} {
					if x.Addr() != l.nat.PublicAddr() {
						t.Fatalf("servers saw %v, %v, %v; want the NAT's address %v", x1, x2, x3, l.nat.PublicAddr())
					}
				}
				if (x1.Port() == 4000) != tc.firstIsPreserved {
					t.Errorf("first mapping %v: port preservation = %v, want %v", x1, x1.Port() == 4000, tc.firstIsPreserved)
				}
				if (x1 == x2) != tc.sameIPOtherPort {
					t.Errorf("S1:3478 saw %v, S1:3479 saw %v: same = %v, want %v", x1, x2, x1 == x2, tc.sameIPOtherPort)
				}
				if (x1 == x3) != tc.otherIPSamePort {
					t.Errorf("S1 saw %v, S2 saw %v: same = %v, want %v", x1, x3, x1 == x3, tc.otherIPSamePort)
				}
				// Sending again reuses the mappings.
				if again := l.observe(t, 1, 0); again != x3 {
					t.Errorf("second datagram to S2 mapped to %v, first to %v", again, x3)
				}
			})
		})
	}
}

func TestNATFiltering(t *testing.T) {
	for _, tc := range []struct {
		filtering      Behavior
		fromOtherPort  bool // S1:3479 may send to the mapping made for S1:3478
		fromOtherIP    bool // S2 may send to it
		fromSameTarget bool
	}{
		{EndpointIndependent, true, true, true},
		{AddressDependent, true, false, true},
		{AddressAndPortDependent, false, false, true},
	} {
		t.Run(tc.filtering.String(), func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				l := newNATLab(t, NATConfig{Filtering: tc.filtering})
				ext := l.observe(t, 0, 0)
				if got := l.reaches(t, 1, 0, ext); got != tc.fromOtherIP {
					t.Errorf("S2:3478 → client passes = %v, want %v", got, tc.fromOtherIP)
				}
				if got := l.reaches(t, 0, 1, ext); got != tc.fromOtherPort {
					t.Errorf("S1:3479 → client passes = %v, want %v", got, tc.fromOtherPort)
				}
				if got := l.reaches(t, 0, 0, ext); got != tc.fromSameTarget {
					t.Errorf("S1:3478 → client passes = %v, want %v", got, tc.fromSameTarget)
				}
				// An unmapped port is always filtered.
				other := netip.AddrPortFrom(ext.Addr(), ext.Port()+1)
				if l.reaches(t, 0, 0, other) {
					t.Error("datagram to an unmapped port passed")
				}
				var filtered uint64
				if !tc.fromOtherIP {
					filtered++
				}
				if !tc.fromOtherPort {
					filtered++
				}
				if got := l.nat.Stats().NAT.Dropped[DropFiltered]; got != filtered+1 {
					t.Errorf("filtered drops = %d, want %d", got, filtered+1)
				}
			})
		})
	}
}

func TestNATMappingTimeout(t *testing.T) {
	for _, inboundRefresh := range []bool{false, true} {
		t.Run(fmt.Sprintf("InboundRefresh=%v", inboundRefresh), func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				l := newNATLab(t, NATConfig{MappingTimeout: 30 * time.Second, InboundRefresh: inboundRefresh})
				start := time.Now()
				at := func(d time.Duration) { time.Sleep(time.Until(start.Add(d))) }

				ext := l.observe(t, 0, 0) // mapping refreshed at ~6 ms
				at(20 * time.Second)
				if !l.reaches(t, 0, 0, ext) { // arrives at ~20 s
					t.Fatal("filtered before the timeout")
				}
				at(32 * time.Second)
				// 32 s after the last outbound datagram: alive only if
				// the inbound one at 20 s refreshed it.
				if got := l.reaches(t, 0, 0, ext); got != inboundRefresh {
					t.Fatalf("at 32s inbound passes = %v, want %v", got, inboundRefresh)
				}
				if inboundRefresh {
					at(70 * time.Second)
					if l.reaches(t, 0, 0, ext) {
						t.Fatal("mapping outlived its timeout")
					}
				}
				if n := l.nat.Mappings(); n != 0 {
					t.Fatalf("%d live mappings after expiry, want 0", n)
				}

				// Outbound traffic refreshes: a mapping kept alive every
				// 20 s lasts as long as that goes on.
				ext = l.observe(t, 0, 0)
				for range 5 {
					time.Sleep(20 * time.Second)
					if got := l.observe(t, 0, 0); got != ext {
						t.Fatalf("refreshed mapping changed from %v to %v", ext, got)
					}
				}
				if !l.reaches(t, 0, 0, ext) {
					t.Fatal("refreshed mapping expired")
				}
			})
		})
	}
}

func TestNATPortCollision(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		l := newNATLab(t, NATConfig{})
		other := l.w.NewHost("other", l.lan, Link{})
		oc := listen(t, other, ":4000")
		x1 := l.observe(t, 0, 0)
		send(t, oc, addrOf(l.s[0][0]), []byte("hi"))
		_, x2 := recv(t, l.s[0][0], time.Minute)
		if x1.Port() != 4000 || x2.Port() == 4000 || x2.Port() < natPortLow {
			t.Fatalf("two inside endpoints on port 4000 mapped to %v and %v; want 4000 preserved once, then a random port", x1, x2)
		}
		// Each reply reaches the right host.
		send(t, l.s[0][0], x2, []byte("to other"))
		if got, _ := recv(t, oc, time.Minute); string(got) != "to other" {
			t.Fatalf("other got %q", got)
		}
	})
}

func TestNATRebind(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		l := newNATLab(t, NATConfig{})
		x1 := l.observe(t, 0, 0)
		l.nat.Rebind()
		if l.reaches(t, 0, 0, x1) {
			t.Fatal("old mapping still passes after Rebind")
		}
		x2 := l.observe(t, 0, 0)
		if x2 == x1 || x2.Addr() != x1.Addr() {
			t.Fatalf("after Rebind the mapping is %v, was %v; want a new port", x2, x1)
		}
		if !l.reaches(t, 0, 0, x2) {
			t.Fatal("new mapping does not pass")
		}
	})
}

func TestNATHairpin(t *testing.T) {
	for _, hairpin := range []bool{false, true} {
		t.Run(fmt.Sprintf("Hairpin=%v", hairpin), func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				l := newNATLab(t, NATConfig{Hairpin: hairpin})
				peer := l.w.NewHost("peer", l.lan, Link{})
				pc := listen(t, peer, ":5000")
				clientExt := l.observe(t, 0, 0)
				send(t, pc, addrOf(l.s[0][0]), []byte("learn"))
				_, peerExt := recv(t, l.s[0][0], time.Minute)

				send(t, pc, clientExt, []byte("via hairpin"))
				got, from, err := tryRecv(l.cc, time.Second)
				if !hairpin {
					if err == nil {
						t.Fatalf("without hairpinning the client got %q", got)
					}
					if d := l.nat.Stats().NAT.Dropped[DropNoHairpin]; d != 1 {
						t.Fatalf("no-hairpin drops = %d, want 1", d)
					}
					return
				}
				if err != nil {
					t.Fatal(err)
				}
				// RFC 4787 REQ-9: the source is the sender's external endpoint.
				if from != peerExt {
					t.Fatalf("hairpinned datagram came from %v, want the peer's external %v", from, peerExt)
				}
			})
		})
	}
}

func TestFirewallBlocksUDP(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		l := newNATLab(t, NATConfig{BlockUDP: true})
		send(t, l.cc, addrOf(l.s[0][0]), []byte("out"))
		if _, _, err := tryRecv(l.s[0][0], time.Second); err == nil {
			t.Fatal("UDP passed the firewall outward")
		}
		if l.reaches(t, 0, 0, netip.AddrPortFrom(l.nat.PublicAddr(), 4000)) {
			t.Fatal("UDP passed the firewall inward")
		}
		if d := l.nat.Stats().NAT.Dropped[DropFirewall]; d != 2 {
			t.Fatalf("firewall drops = %d, want 2", d)
		}
	})
}

// TestHolePunch has two peers behind port-restricted cone NATs learn their
// external endpoints from a server and punch through by sending to each
// other at once, as Parley's nodes do.
func TestHolePunch(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		w := New(Config{Seed: 9})
		defer w.Close()
		inet := w.NewNetwork("internet", netip.MustParsePrefix("203.0.113.0/24"))
		server := listen(t, w.NewHost("server", inet, Link{Delay: 10 * time.Millisecond}), ":3478")
		cfg := NATConfig{Filtering: AddressAndPortDependent, MappingTimeout: 30 * time.Second}
		var peers [2]*Conn
		var ext [2]netip.AddrPort
		for i := range peers {
			// Both LANs use the same prefix, as two homes would.
			lan := w.NewNetwork(fmt.Sprintf("lan%d", i), netip.MustParsePrefix("192.168.1.0/24"))
			cfg.Inside, cfg.Outside = lan, inet
			w.NewNAT(fmt.Sprintf("nat%d", i), cfg)
			peers[i] = listen(t, w.NewHost(fmt.Sprintf("peer%d", i), lan, Link{Delay: 20 * time.Millisecond}), ":0")
			send(t, peers[i], addrOf(server), []byte("who am i"))
			_, ext[i] = recv(t, server, time.Minute)
		}

		// peer0 alone cannot reach peer1: its NAT filters.
		send(t, peers[0], ext[1], []byte("early"))
		if _, _, err := tryRecv(peers[1], time.Second); err == nil {
			t.Fatal("unsolicited datagram passed an address-and-port-dependent filter")
		}
		// Now peer1 punches: its datagram opens its own NAT for peer0's
		// endpoint and passes peer0's NAT, which peer0 opened above.
		send(t, peers[1], ext[0], []byte("punch"))
		if got, from := recv(t, peers[0], time.Minute); string(got) != "punch" || from != ext[1] {
			t.Fatalf("peer0 got %q from %v", got, from)
		}
		send(t, peers[0], ext[1], []byte("through"))
		if got, _ := recv(t, peers[1], time.Minute); string(got) != "through" {
			t.Fatalf("peer1 got %q", got)
		}
	})
}

func TestNATPortsDeterministic(t *testing.T) {
	ports := func() []uint16 {
		var out []uint16
		synctest.Test(t, func(t *testing.T) {
			l := newNATLab(t, NATConfig{Mapping: AddressAndPortDependent})
			for i := range 2 {
				for j := range 2 {
					out = append(out, l.observe(t, i, j).Port())
				}
			}
		})
		return out
	}
	a, b := ports(), ports()
	for i := range a {
		if a[i] != b[i] {
			t.Fatalf("same seed gave ports %v then %v", a, b)
		}
	}
}

// TestDoubleNAT puts a home NAT behind a carrier-grade NAT: the server sees
// the outer NAT's address, and replies find their way back through both.
func TestDoubleNAT(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		w := New(Config{})
		defer w.Close()
		inet := w.NewNetwork("internet", netip.MustParsePrefix("203.0.113.0/24"))
		cgnNet := w.NewNetwork("cgn", netip.MustParsePrefix("100.64.0.0/24"))
		home := w.NewNetwork("home", netip.MustParsePrefix("192.168.1.0/24"))
		cgn := w.NewNAT("cgn", NATConfig{Inside: cgnNet, Outside: inet, Filtering: AddressAndPortDependent})
		router := w.NewNAT("router", NATConfig{Inside: home, Outside: cgnNet, Filtering: AddressDependent})
		if !cgnNet.Prefix().Contains(router.PublicAddr()) || router.InsideAddr() != netip.MustParseAddr("192.168.1.1") {
			t.Fatalf("router addresses: public %v, inside %v", router.PublicAddr(), router.InsideAddr())
		}
		hc := listen(t, w.NewHost("laptop", home, Link{}), ":0")
		sc := listen(t, w.NewHost("server", inet, Link{Delay: 20 * time.Millisecond}), ":443")

		send(t, hc, addrOf(sc), []byte("hello"))
		_, from := recv(t, sc, time.Minute)
		if from.Addr() != cgn.PublicAddr() {
			t.Fatalf("server saw %v, want the CGN's address %v", from, cgn.PublicAddr())
		}
		send(t, sc, from, []byte("back"))
		if got, src := recv(t, hc, time.Minute); string(got) != "back" || src != addrOf(sc) {
			t.Fatalf("laptop got %q from %v", got, src)
		}
	})
}
