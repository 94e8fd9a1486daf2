package lab

import (
	"net/netip"
	"testing"
)

func TestParseConntrack(t *testing.T) {
	text := `ipv4     2 udp      17 29 src=10.0.2.2 dst=203.0.113.11 sport=4000 dport=4000 [UNREPLIED] src=203.0.113.11 dst=203.0.113.12 sport=4000 dport=39099 mark=0 zone=0 use=2
ipv4     2 tcp      6 119 TIME_WAIT src=10.0.3.2 dst=203.0.113.10 sport=41000 dport=3478 src=203.0.113.10 dst=203.0.113.13 sport=3478 dport=41000 [ASSURED] mark=0 zone=0 use=2
ipv4     2 icmp     1 29 src=203.0.113.1 dst=203.0.113.11 type=11 code=0 id=0 src=203.0.113.11 dst=203.0.113.1 type=0 code=0 id=0 mark=0 use=1
garbage
ipv4 2 udp 17 29 src=1.2.3.4 dst=nope sport=1 dport=2 src=1.1.1.1
`
	flows := ParseConntrack(text)
	if len(flows) != 3 {
		t.Fatalf("parsed %d flows, want 3: %v", len(flows), flows)
	}
	f := flows[0]
	ap := netip.MustParseAddrPort
	if f.Proto != "udp" || !f.Unreplied ||
		f.Orig != (Tuple{ap("10.0.2.2:4000"), ap("203.0.113.11:4000")}) ||
		f.Reply != (Tuple{ap("203.0.113.11:4000"), ap("203.0.113.12:39099")}) {
		t.Errorf("flow 0: %v", f)
	}
	if m, nat := f.Mapped(); !nat || m != ap("203.0.113.12:39099") {
		t.Errorf("Mapped() = %v, %v", m, nat)
	}
	if g := flows[1]; g.Proto != "tcp" || g.Unreplied || g.Reply.Dst != ap("203.0.113.13:41000") {
		t.Errorf("flow 1: %v", g)
	}
	if g := flows[2]; g.Proto != "icmp" || g.Orig.Src.Port() != 0 {
		t.Errorf("flow 2: %v", g)
	}
	if _, nat := flows[2].Mapped(); nat {
		t.Error("icmp flow to the router itself reported as translated")
	}
}

func FuzzParseConntrack(f *testing.F) {
	f.Add("ipv4 2 udp 17 29 src=10.0.2.2 dst=203.0.113.11 sport=4000 dport=4000 [UNREPLIED] src=203.0.113.11 dst=203.0.113.12 sport=4000 dport=39099 mark=0\n")
	f.Add("ipv4 2 udp 17 src= src= src=\n")
	f.Fuzz(func(t *testing.T, text string) {
		for _, fl := range ParseConntrack(text) {
			_ = fl.String()
		}
	})
}
