package lab_test

import (
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/parley-p2p/parley/lab"
)

// The hole-punching tests run two `labpeer punch` processes that learn
// their reflexive addresses from a reflector on a public host, get each
// other's through the test (the signalling server), and probe. Every test
// orders the two sides' first packets deterministically, waiting on the
// routers' conntrack tables and drop counters, never on sleeps. What they
// found is written up in the package comment, "Hole punching on Linux NATs".

// puncher is one side of a punch.
type puncher struct {
	*proc
	host   *lab.Host
	mapped netip.AddrPort // as the reflector saw it
}

// punchers starts labpeer punch on a and b, bound to port 4000, and tells
// each the other's reflexive address. flags go to both.
func punchers(t *testing.T, stun netip.AddrPort, a, b *lab.Host, flags ...string) (pa, pb *puncher) {
	t.Helper()
	run := func(h *lab.Host) *puncher {
		args := append([]string{"punch", "-bind", ":4000", "-stun", stun.String(),
			"-nonce", "s3cr3t", "-timeout", "1500ms"}, flags...)
		p := start(t, h, args...)
		return &puncher{proc: p, host: h, mapped: addrField(t, p.wait("MAPPED"), 1)}
	}
	pa, pb = run(a), run(b)
	pa.send("PEER " + pb.mapped.String())
	pb.send("PEER " + pa.mapped.String())
	t.Logf("reflexive: %s %v, %s %v", a.Name(), pa.mapped, b.Name(), pb.mapped)
	return pa, pb
}

// outcome waits for the side to connect or give up, and returns the line.
func (p *puncher) outcome() string {
	return p.wait("CONNECTED", "FAILED")
}

// wantOutcome checks that both sides end with want ("CONNECTED" or
// "FAILED").
func wantOutcome(t *testing.T, want string, ps ...*puncher) {
	t.Helper()
	for _, p := range ps {
		got := p.outcome()
		t.Logf("%s: %s (output: %s)", p.host.Name(), got, p.output())
		if !strings.HasPrefix(got, want) {
			t.Errorf("%s: %s, want %s", p.host.Name(), got, want)
		}
	}
}

// waitFlow polls r's conntrack table until a flow satisfies match.
func waitFlow(t *testing.T, r *lab.Router, what string, match func(lab.Flow) bool) lab.Flow {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		flows, err := r.Conntrack(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		for _, f := range flows {
			if match(f) {
				t.Logf("%s conntrack: %v", r.Name(), f)
				return f
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: no conntrack entry for %s within 10s; table: %v", r.Name(), what, flows)
		}
		time.Sleep(5 * time.Millisecond) // polling interval, not a wait for an event
	}
}

// waitDropped polls r's drop counter until it is positive.
func waitDropped(t *testing.T, r *lab.Router) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		n, err := r.Dropped(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		if n > 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s dropped nothing within 10s", r.Name())
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// inbound matches the entry a router keeps for an unsolicited packet from
// `from` to its own address `to`.
func inbound(from, to netip.AddrPort) func(lab.Flow) bool {
	return func(f lab.Flow) bool {
		return f.Proto == "udp" && f.Orig.Src == from && f.Orig.Dst == to
	}
}

// outbound matches the router's mapping for host's UDP flow towards to.
func outbound(host netip.Addr, to netip.AddrPort) func(lab.Flow) bool {
	return func(f lab.Flow) bool {
		return f.Proto == "udp" && f.Orig.Src.Addr() == host && f.Orig.Dst == to
	}
}

// topology builds a lab with a reflector and two hosts behind the given
// routers.
func topology(t *testing.T, name string, ka, kb lab.RouterConfig) (stun netip.AddrPort, a, b *lab.Host) {
	l := lab.NewTest(t, lab.Config{Name: name})
	host := must[*lab.Host](t)
	stun = serve(t, host(l.AddPublicHost("stun")))
	return stun, host(l.AddNATHostConfig("alice", ka)), host(l.AddNATHostConfig("bob", kb))
}

var (
	bareEIM       = lab.RouterConfig{Kind: lab.EIM}
	firewalledEIM = lab.RouterConfig{Kind: lab.EIM, Firewall: true}
)

// TestPunchClash reproduces the clash between two bare Linux masquerade
// routers: alice's probe reaches bob's router before bob has sent anything,
// the router keeps a conntrack entry for it, and bob's own probe towards
// alice, clashing with that entry, is mapped to a new random port. No probe
// then reaches either host, however they filter.
func TestPunchClash(t *testing.T) {
	for _, mode := range []string{"strict", "any"} {
		t.Run(mode, func(t *testing.T) {
			var flags []string
			if mode == "strict" {
				flags = []string{"-strict"}
			}
			stun, a, b := topology(t, "clash"+mode, bareEIM, bareEIM)
			pa, pb := punchers(t, stun, a, b, flags...)
			pa.send("GO")
			waitFlow(t, b.Router(), "alice's probe", inbound(pa.mapped, pb.mapped))
			pb.send("GO")
			f := waitFlow(t, b.Router(), "bob's probe", outbound(b.Addr(), pa.mapped))
			if m, _ := f.Mapped(); m == pb.mapped {
				t.Errorf("bob's probe kept mapping %v; want a new port (the clash)", m)
			}
			waitFlow(t, a.Router(), "bob's probe at alice's router", func(g lab.Flow) bool {
				m, _ := f.Mapped()
				return inbound(m, pa.mapped)(g)
			})
			wantOutcome(t, "FAILED", pa, pb)
		})
	}
}

// TestPunchOpenFirst shows the strategy that copes with bare routers: each
// side first sends one probe with IP TTL 2, which passes its own NAT (so
// the mapping exists) but dies at the internet router before it can leave
// an entry on the far router; only after both have opened do they probe
// for real. Then the order of the real probes does not matter: here
// alice's arrive first, as in TestPunchClash, and both connect even with
// strict filtering.
func TestPunchOpenFirst(t *testing.T) {
	stun, a, b := topology(t, "open", bareEIM, bareEIM)
	pa, pb := punchers(t, stun, a, b, "-strict", "-ttl", "2")
	pa.send("OPEN")
	pb.send("OPEN")
	pa.wait("OPENED")
	pb.wait("OPENED")
	waitFlow(t, b.Router(), "bob's opener", outbound(b.Addr(), pa.mapped))
	pa.send("GO")
	pb.wait("PROBE " + pa.mapped.String()) // alice's probe got all the way to bob
	pb.send("GO")
	wantOutcome(t, "CONNECTED", pa, pb)
	f := waitFlow(t, b.Router(), "bob's mapping", outbound(b.Addr(), pa.mapped))
	if m, _ := f.Mapped(); m != pb.mapped {
		t.Errorf("bob's mapping towards alice %v, want the reflexive %v", m, pb.mapped)
	}
}

// TestPunchFirewalled: routers that drop unsolicited packets to themselves
// before conntrack confirms them (as home routers do) leave no entry
// behind, so there is no clash: alice's early probes are dropped, and bob's
// first probe opens the path.
func TestPunchFirewalled(t *testing.T) {
	stun, a, b := topology(t, "firewall", firewalledEIM, firewalledEIM)
	pa, pb := punchers(t, stun, a, b, "-strict")
	pa.send("GO")
	waitDropped(t, b.Router())
	pb.send("GO")
	wantOutcome(t, "CONNECTED", pa, pb)
}

// TestPunchPublicFirst: a public host probes a host behind a bare EIM
// router first. The router's entry for that probe makes the host's own
// mapping towards the public host clash, so the host's probes come from a
// new port. Accepting an authenticated probe from any address and answering
// it where it came from connects; strict filtering on the signalled address
// does not.
func TestPunchPublicFirst(t *testing.T) {
	for _, mode := range []string{"strict", "any"} {
		t.Run(mode, func(t *testing.T) {
			var flags []string
			if mode == "strict" {
				flags = []string{"-strict"}
			}
			l := lab.NewTest(t, lab.Config{Name: "public" + mode})
			host := must[*lab.Host](t)
			stun := serve(t, host(l.AddPublicHost("stun")))
			pub := host(l.AddPublicHost("pub"))
			a := host(l.AddNATHost("alice", lab.EIM))
			pp, pa := punchers(t, stun, pub, a, flags...)
			pp.send("GO")
			waitFlow(t, a.Router(), "the public probe", inbound(pp.mapped, pa.mapped))
			pa.send("GO")
			f := waitFlow(t, a.Router(), "alice's probe", outbound(a.Addr(), pp.mapped))
			m, _ := f.Mapped()
			if m == pa.mapped {
				t.Fatalf("alice's probe kept mapping %v; want a new port (the clash)", m)
			}
			if mode == "strict" {
				pp.wait("IGNORED " + m.String())
				wantOutcome(t, "FAILED", pp, pa)
				return
			}
			pp.wait("PROBE " + m.String())
			wantOutcome(t, "CONNECTED", pp, pa)
		})
	}
}

// TestPunchSymmetric: a host behind a symmetric NAT gets a new port towards
// its peer, unknown to the peer. Behind Linux masquerade (EIM mapping but
// address-and-port-dependent filtering) the peer's router drops it, so
// they cannot connect. Behind a full-cone router the probe gets in, the
// peer learns the symmetric side's mapping from it, answers there, and
// they connect, provided the peer accepts probes from any address.
func TestPunchSymmetric(t *testing.T) {
	sym := lab.RouterConfig{Kind: lab.Symmetric}
	t.Run("EIM", func(t *testing.T) {
		stun, a, b := topology(t, "symeim", bareEIM, sym)
		pa, pb := punchers(t, stun, a, b, "-ttl", "2")
		pa.send("OPEN")
		pb.send("OPEN")
		pa.wait("OPENED")
		pb.wait("OPENED")
		pa.send("GO")
		pb.send("GO")
		wantOutcome(t, "FAILED", pa, pb)
	})
	for _, mode := range []string{"strict", "any"} {
		t.Run("FullCone/"+mode, func(t *testing.T) {
			var flags []string
			if mode == "strict" {
				flags = []string{"-strict"}
			}
			stun, a, b := topology(t, "cone"+mode, lab.RouterConfig{Kind: lab.FullCone}, sym)
			pa, pb := punchers(t, stun, a, b, flags...)
			pb.send("GO")
			f := waitFlow(t, b.Router(), "bob's probe", outbound(b.Addr(), pa.mapped))
			m, _ := f.Mapped()
			if m == pb.mapped {
				t.Fatalf("symmetric NAT reused the reflexive mapping %v towards alice", m)
			}
			if mode == "strict" {
				pa.wait("IGNORED " + m.String())
				pa.send("GO")
				wantOutcome(t, "FAILED", pa, pb)
				return
			}
			pa.wait("PROBE " + m.String())
			pa.send("GO")
			wantOutcome(t, "CONNECTED", pa, pb)
		})
	}
}

// TestPunchSymmetricBoth is the baseline for relaying: two symmetric NATs,
// best simple strategy (TTL-2 openers, any-source acceptance), no direct
// path.
func TestPunchSymmetricBoth(t *testing.T) {
	sym := lab.RouterConfig{Kind: lab.Symmetric}
	stun, a, b := topology(t, "symsym", sym, sym)
	pa, pb := punchers(t, stun, a, b, "-ttl", "2")
	pa.send("OPEN")
	pb.send("OPEN")
	pa.wait("OPENED")
	pb.wait("OPENED")
	pa.send("GO")
	pb.send("GO")
	wantOutcome(t, "FAILED", pa, pb)
}
