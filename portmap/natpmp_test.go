package portmap

import (
	"bytes"
	"encoding/hex"
	"net/netip"
	"os"
	"strings"
	"testing"
)

// golden reads testdata/NAME.hex: a request and the answer miniupnpd 2.3.1
// gave to it in the lab, one hex line each.
func golden(t testing.TB, name string) (req, resp []byte) {
	t.Helper()
	b, err := os.ReadFile("testdata/" + name + ".hex")
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Fields(string(b))
	if len(lines) != 2 {
		t.Fatalf("%s: want 2 hex lines, got %d", name, len(lines))
	}
	if req, err = hex.DecodeString(lines[0]); err != nil {
		t.Fatal(err)
	}
	if resp, err = hex.DecodeString(lines[1]); err != nil {
		t.Fatal(err)
	}
	return req, resp
}

func TestPMPRequests(t *testing.T) {
	for _, tc := range []struct {
		name string
		got  []byte
	}{
		{"natpmp-addr", appendPMPAddrRequest(nil)},
		{"natpmp-map", appendPMPMapRequest(nil, 5100, 5100, 7200)},
		{"natpmp-delete", appendPMPMapRequest(nil, 5100, 0, 0)},
	} {
		want, _ := golden(t, tc.name)
		if !bytes.Equal(tc.got, want) {
			t.Errorf("%s: request %x, want %x", tc.name, tc.got, want)
		}
	}
	// Appending keeps what was there.
	if b := appendPMPAddrRequest([]byte{9}); !bytes.Equal(b, []byte{9, 0, 0}) {
		t.Errorf("append to a prefix: %x", b)
	}
}

func TestParsePMPResponse(t *testing.T) {
	for _, tc := range []struct {
		name string
		want pmpResponse
	}{
		{"natpmp-addr", pmpResponse{Op: 128, External: netip.MustParseAddr("203.0.113.10")}},
		{"natpmp-map", pmpResponse{Op: 129, InternalPort: 5100, ExternalPort: 5100, Lifetime: 7200}},
		{"natpmp-delete", pmpResponse{Op: 129, InternalPort: 5100}},
	} {
		_, resp := golden(t, tc.name)
		got, err := parsePMPResponse(resp)
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		if got != tc.want {
			t.Errorf("%s: %+v, want %+v", tc.name, got, tc.want)
		}
		// Every truncation of a success response is an error, never a
		// panic or a half-filled answer.
		for n := range len(resp) {
			if _, err := parsePMPResponse(resp[:n]); err == nil {
				t.Errorf("%s: %d of %d bytes parsed without error", tc.name, n, len(resp))
			}
		}
	}
}

func TestParsePMPResponseErrors(t *testing.T) {
	// RFC 6886 §3.5: an error response may stop after the epoch.
	r, err := parsePMPResponse([]byte{0, 129, 0, 2, 0, 0, 0, 9})
	if err != nil || r.Result != pmpNotAuthorized || r.Epoch != 9 {
		t.Errorf("8-byte NOT_AUTHORIZED: %+v, %v", r, err)
	}
	if r.Result.String() != "NOT_AUTHORIZED" || pmpResult(77).String() != "result 77" {
		t.Errorf("result names: %v, %v", r.Result, pmpResult(77))
	}
	for _, b := range [][]byte{
		{2, 129, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0}, // PCP version
		{0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0},               // a request
		{0, 130, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0}, // TCP mapping: not asked
	} {
		if _, err := parsePMPResponse(b); err == nil {
			t.Errorf("%x: parsed without error", b)
		}
	}
}

func FuzzParsePMPResponse(f *testing.F) {
	for _, name := range []string{"natpmp-addr", "natpmp-map", "natpmp-delete"} {
		_, resp := golden(f, name)
		f.Add(resp)
	}
	f.Add([]byte{0, 129, 0, 1})
	f.Fuzz(func(t *testing.T, b []byte) {
		r, err := parsePMPResponse(b)
		if err != nil || r.Result != pmpSuccess {
			return
		}
		switch r.Op {
		case pmpOpReply | pmpOpAddr:
			if !r.External.Is4() {
				t.Fatalf("address response without an address: %+v", r)
			}
		case pmpOpReply | pmpOpMapUDP:
			if len(b) < pmpMapResponseLen {
				t.Fatalf("mapping parsed from %d bytes", len(b))
			}
		default:
			t.Fatalf("unexpected opcode accepted: %+v", r)
		}
	})
}
