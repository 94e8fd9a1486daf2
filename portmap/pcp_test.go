package portmap

import (
	"bytes"
	"errors"
	"net/netip"
	"testing"
)

var testNonce = pcpNonce([]byte("parley-nonce"))

func TestPCPRequests(t *testing.T) {
	client := netip.MustParseAddr("10.0.1.2")
	for _, tc := range []struct {
		name string
		got  []byte
	}{
		{"pcp-announce", appendPCPAnnounce(nil, client)},
		{"pcp-map", appendPCPMap(nil, testNonce, client, 5200, netip.AddrPortFrom(netip.Addr{}, 5200), 7200)},
		{"pcp-delete", appendPCPMap(nil, testNonce, client, 5200, netip.MustParseAddrPort("203.0.113.10:5200"), 0)},
	} {
		want, _ := golden(t, tc.name)
		if !bytes.Equal(tc.got, want) {
			t.Errorf("%s: request\n %x, want\n %x", tc.name, tc.got, want)
		}
	}
	// No preference is the IPv4 all-zeros address ::ffff:0.0.0.0, not ::,
	// which would ask for an IPv6 mapping (RFC 6887 §11.1).
	req := appendPCPMap(nil, testNonce, client, 1, netip.AddrPort{}, 1)
	if got := req[pcpHeaderLen+20:]; !bytes.Equal(got, []byte{0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 0, 0, 0, 0}) {
		t.Errorf("suggested external address %x, want ::ffff:0.0.0.0", got)
	}
}

// PCP over IPv6. pcp-map-ipv6.hex is built by hand from the layouts of
// RFC 6887 §7.1, §7.2 and §11.1, not captured: the lab's miniupnpd runs
// IPv4 only. The client's address is a plain IPv6 address, no preference
// for the external address is ::, and the answer of a gateway without
// IPv6 NAT (a pinhole) names the client's own address.
func TestPCPIPv6(t *testing.T) {
	client := netip.MustParseAddr("2001:db8::2")
	wantReq, resp := golden(t, "pcp-map-ipv6")
	if got := appendPCPMap(nil, testNonce, client, 5200, netip.AddrPortFrom(netip.Addr{}, 5200), 7200); !bytes.Equal(got, wantReq) {
		t.Errorf("request\n %x, want\n %x", got, wantReq)
	}
	got, err := parsePCPResponse(resp)
	if err != nil {
		t.Fatal(err)
	}
	want := pcpResponse{Op: 0x81, Lifetime: 7200, Epoch: 3600, Nonce: testNonce, Protocol: 17, InternalPort: 5200,
		External: netip.AddrPortFrom(client, 5200)}
	if got != want {
		t.Errorf("response\n %+v, want\n %+v", got, want)
	}
	// A renewal suggests the address it was given, as it is.
	renew := appendPCPMap(nil, testNonce, client, 5200, want.External, 7200)
	if got := netip.AddrFrom16([16]byte(renew[pcpHeaderLen+20:])); got != client {
		t.Errorf("renewal suggests %v, want %v", got, client)
	}
	// An IPv4-mapped client is an IPv4 one.
	v4 := appendPCPMap(nil, testNonce, netip.MustParseAddr("::ffff:10.0.1.2"), 1, netip.AddrPort{}, 1)
	if got := v4[pcpHeaderLen+20:]; !bytes.Equal(got, []byte{0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 0, 0, 0, 0}) {
		t.Errorf("IPv4-mapped client: suggested external address %x, want ::ffff:0.0.0.0", got)
	}
}

func TestParsePCPResponse(t *testing.T) {
	for _, tc := range []struct {
		name string
		want pcpResponse
	}{
		{"pcp-announce", pcpResponse{Op: 0x80}},
		{"pcp-map", pcpResponse{Op: 0x81, Lifetime: 7200, Nonce: testNonce, Protocol: 17, InternalPort: 5200,
			External: netip.MustParseAddrPort("203.0.113.10:5200")}},
		{"pcp-delete", pcpResponse{Op: 0x81, Epoch: 1, Nonce: testNonce, Protocol: 17, InternalPort: 5200,
			External: netip.MustParseAddrPort("203.0.113.10:5200")}},
		// miniupnpd refuses port 80: the header alone is read.
		{"pcp-map-unauthorized", pcpResponse{Op: 0x81, Result: pcpNotAuthorized, Epoch: 62}},
	} {
		_, resp := golden(t, tc.name)
		got, err := parsePCPResponse(resp)
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		if got != tc.want {
			t.Errorf("%s:\n %+v, want\n %+v", tc.name, got, tc.want)
		}
		if tc.want.Result != pcpSuccess {
			continue
		}
		for n := range len(resp) {
			if _, err := parsePCPResponse(resp[:n]); err == nil {
				t.Errorf("%s: %d of %d bytes parsed without error", tc.name, n, len(resp))
			}
		}
	}
	if pcpNotAuthorized.String() != "NOT_AUTHORIZED" || pcpResult(200).String() != "result 200" {
		t.Errorf("result names: %v, %v", pcpNotAuthorized, pcpResult(200))
	}
}

// A NAT-PMP-only server answers a PCP request with its own "unsupported
// version" (RFC 6886 §3.5, RFC 6887 §9): the client must tell that from
// garbage to fall back.
func TestParsePCPResponseFromNATPMPServer(t *testing.T) {
	for _, b := range [][]byte{
		{0, 0x81, 0, 1, 0, 0, 0x01, 0x2c},                   // RFC 6886 layout: version 0, result 1, epoch
		{0, 0x81, 0, 1, 0, 0, 0x01, 0x2c, 0, 0, 0, 0, 0, 0}, // with trailing bytes
		{0, 0x80, 0, 1},
	} {
		if _, err := parsePCPResponse(b); !errors.Is(err, errPCPSpeaksNATPMP) {
			t.Errorf("%x: %v, want errPCPSpeaksNATPMP", b, err)
		}
	}
	// A NAT-PMP answer with any other result is not the fallback signal.
	if _, err := parsePCPResponse([]byte{0, 0x81, 0, 0, 0, 0, 0, 0}); err == nil || errors.Is(err, errPCPSpeaksNATPMP) {
		t.Errorf("NAT-PMP success to a PCP request: %v", err)
	}
}

func FuzzParsePCPResponse(f *testing.F) {
	for _, name := range []string{"pcp-announce", "pcp-map", "pcp-delete", "pcp-map-unauthorized", "pcp-map-ipv6"} {
		_, resp := golden(f, name)
		f.Add(resp)
	}
	f.Add([]byte{0, 0x81, 0, 1})
	f.Fuzz(func(t *testing.T, b []byte) {
		r, err := parsePCPResponse(b)
		if err != nil {
			return
		}
		if r.Op&pcpOpReply == 0 {
			t.Fatalf("request opcode accepted: %+v", r)
		}
		if r.Op == pcpOpReply|pcpOpMap && r.Result == pcpSuccess && len(b) < pcpHeaderLen+pcpMapLen {
			t.Fatalf("MAP success parsed from %d bytes", len(b))
		}
	})
}
