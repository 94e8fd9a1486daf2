package portmap

import (
	"context"
	"encoding/binary"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// These tests run the client against fake gateways on loopback. The real
// thing, miniupnpd behind a Linux NAT, is in lab_test.go.

var (
	loopback   = netip.MustParseAddr("127.0.0.1")
	fakePublic = netip.MustParseAddr("198.51.100.7")
)

// fakeUDP is a PCP/NAT-PMP server on loopback: handle returns the
// datagrams to answer each request with.
type fakeUDP struct {
	pc     net.PacketConn
	handle func(req []byte) [][]byte

	mu   sync.Mutex // protects reqs
	reqs [][]byte
}

func newFakeUDP(t *testing.T, handle func(req []byte) [][]byte) *fakeUDP {
	return newFakeUDPOn(t, "udp4", handle)
}

// newFakeUDPOn is newFakeUDP on IPv4 or IPv6 (network "udp6") loopback.
func newFakeUDPOn(t *testing.T, network string, handle func(req []byte) [][]byte) *fakeUDP {
	addr := "127.0.0.1:0"
	if network == "udp6" {
		addr = "[::1]:0"
	}
	pc, err := net.ListenPacket(network, addr)
	if err != nil {
		t.Fatal(err)
	}
	f := &fakeUDP{pc: pc, handle: handle}
	done := make(chan struct{})
	go func() {
		defer close(done)
		buf := make([]byte, 1500)
		for {
			n, from, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			req := append([]byte(nil), buf[:n]...)
			f.mu.Lock()
			f.reqs = append(f.reqs, req)
			f.mu.Unlock()
			for _, resp := range handle(req) {
				pc.WriteTo(resp, from)
			}
		}
	}()
	t.Cleanup(func() { pc.Close(); <-done })
	return f
}

func (f *fakeUDP) port() uint16 { return uint16(f.pc.LocalAddr().(*net.UDPAddr).Port) }

// requests returns the requests received so far.
func (f *fakeUDP) requests() [][]byte {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([][]byte(nil), f.reqs...)
}

// natpmpOnly answers as a NAT-PMP server that knows nothing of PCP.
func natpmpOnly(req []byte) [][]byte {
	if len(req) < 2 {
		return nil
	}
	if req[0] != 0 { // RFC 6886 §3.5: unsupported version
		return [][]byte{{0, 0x80 | req[1], 0, 1, 0, 0, 0, 42}}
	}
	switch {
	case req[1] == 0 && len(req) == 2:
		a := fakePublic.As4()
		return [][]byte{append([]byte{0, 0x80, 0, 0, 0, 0, 0, 42}, a[:]...)}
	case req[1] == 1 && len(req) == 12:
		resp := []byte{0, 0x81, 0, 0, 0, 0, 0, 42}
		resp = append(resp, req[4:6]...) // internal port
		ext := req[6:8]
		if binary.BigEndian.Uint32(req[8:12]) != 0 && binary.BigEndian.Uint16(ext) == 0 {
			ext = req[4:6]
		}
		resp = append(resp, ext...)
		return [][]byte{append(resp, req[8:12]...)}
	}
	return nil
}

// pcpServer answers ANNOUNCE and MAP as a PCP server that grants every
// mapping on the port suggested, or the internal one.
func pcpServer(req []byte) [][]byte {
	if len(req) < pcpHeaderLen || req[0] != pcpVersion {
		return nil
	}
	hdr := func(op byte, result pcpResult, lifetime []byte) []byte {
		h := []byte{pcpVersion, 0x80 | op, 0, byte(result)}
		h = append(h, lifetime...)
		return append(h, make([]byte, 16)...) // epoch and reserved
	}
	switch req[1] {
	case pcpOpAnnounce:
		return [][]byte{hdr(pcpOpAnnounce, pcpSuccess, []byte{0, 0, 0, 0})}
	case pcpOpMap:
		if len(req) != pcpHeaderLen+pcpMapLen {
			return [][]byte{hdr(pcpOpMap, pcpMalformedRequest, []byte{0, 0, 0, 0})}
		}
		body := append([]byte(nil), req[pcpHeaderLen:]...)
		if binary.BigEndian.Uint16(body[18:20]) == 0 {
			copy(body[18:20], body[16:18])
		}
		a := pcpAddr(fakePublic, fakePublic)
		copy(body[20:], a[:])
		return [][]byte{append(hdr(pcpOpMap, pcpSuccess, req[4:8]), body...)}
	}
	return [][]byte{hdr(req[1], pcpUnsuppOpcode, []byte{0, 0, 0, 0})}
}

// closedPort returns a loopback UDP port nothing listens on.
func closedPort(t *testing.T) uint16 {
	pc, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	return uint16(pc.LocalAddr().(*net.UDPAddr).Port)
}

// newTestClient returns a client of a gateway on loopback (127.0.0.1
// unless cfg says) whose PCP and NAT-PMP server is on pmpPort and SSDP
// responder on ssdpPort, with multicast off so that nothing leaves
// loopback: it hears announcements on a loopback socket unless cfg says
// otherwise (hearOnLoopback), and maps again after one without delay.
func newTestClient(t *testing.T, cfg Config, pmpPort, ssdpPort uint16) *Client {
	if !cfg.Gateway.IsValid() {
		cfg.Gateway = loopback
	}
	if cfg.ListenMulticast == nil {
		hearOnLoopback(&cfg)
	}
	cfg.Logger = slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelDebug}))
	c := New(cfg)
	c.pmpPort = pmpPort
	c.ssdpPort = ssdpPort
	c.ssdpGroup = netip.AddrPort{}
	c.announceJitter = 0
	return c
}

func TestPCP(t *testing.T) {
	gw := newFakeUDP(t, pcpServer)
	c := newTestClient(t, Config{Protocols: []Protocol{PCP}, Lifetime: time.Hour}, gw.port(), closedPort(t))
	ctx := t.Context()
	m, err := c.Map(ctx, 4000)
	if err != nil {
		t.Fatal(err)
	}
	want := Mapping{Protocol: PCP, Gateway: loopback, Internal: netip.MustParseAddrPort("127.0.0.1:4000"),
		External: netip.AddrPortFrom(fakePublic, 4000), Lifetime: time.Hour}
	if m.Protocol != want.Protocol || m.Gateway != want.Gateway || m.Internal != want.Internal ||
		m.External != want.External || m.Lifetime != want.Lifetime {
		t.Fatalf("Map = %v, want %v", m, want)
	}
	if d := time.Until(m.RenewAt); d < 29*time.Minute || d > 30*time.Minute {
		t.Errorf("RenewAt in %v, want half the lifetime", d)
	}
	if cur, ok := c.Current(); !ok || cur != m {
		t.Errorf("Current = %v, %v", cur, ok)
	}

	if _, err := c.Renew(ctx); err != nil {
		t.Fatal(err)
	}
	if err := c.Close(ctx); err != nil {
		t.Fatal(err)
	}
	reqs := gw.requests()
	if len(reqs) != 4 || reqs[0][1] != pcpOpAnnounce {
		t.Fatalf("requests %x, want ANNOUNCE, MAP, MAP (renew), MAP (delete)", reqs)
	}
	mp, renew, del := reqs[1], reqs[2], reqs[3]
	client := pcpAddr(loopback, loopback)
	if string(mp[8:24]) != string(client[:]) {
		t.Errorf("client address %x, want %x", mp[8:24], client)
	}
	if lt := binary.BigEndian.Uint32(mp[4:8]); lt != 3600 {
		t.Errorf("requested lifetime %d, want 3600", lt)
	}
	nonce := mp[pcpHeaderLen : pcpHeaderLen+pcpNonceLen]
	for name, r := range map[string][]byte{"renewal": renew, "deletion": del} {
		if string(r[pcpHeaderLen:pcpHeaderLen+pcpNonceLen]) != string(nonce) {
			t.Errorf("%s with another nonce", name)
		}
		if ext := netip.AddrPortFrom(netip.AddrFrom16([16]byte(r[pcpHeaderLen+20:])).Unmap(), binary.BigEndian.Uint16(r[pcpHeaderLen+18:])); ext != m.External {
			t.Errorf("%s suggests %v, want the mapping %v", name, ext, m.External)
		}
	}
	if lt := binary.BigEndian.Uint32(del[4:8]); lt != 0 {
		t.Errorf("deletion with lifetime %d", lt)
	}

	if _, err := c.Map(ctx, 4000); !errors.Is(err, ErrClosed) {
		t.Errorf("Map after Close: %v", err)
	}
	if err := c.Close(ctx); err != nil {
		t.Errorf("second Close: %v", err)
	}
}

// A NAT-PMP-only gateway answers PCP with "unsupported version": the
// client maps with NAT-PMP, and renews with it without asking PCP again.
func TestNATPMPFallback(t *testing.T) {
	gw := newFakeUDP(t, natpmpOnly)
	c := newTestClient(t, Config{}, gw.port(), closedPort(t))
	ctx := t.Context()
	start := time.Now()
	m, err := c.Map(ctx, 4000)
	if err != nil {
		t.Fatal(err)
	}
	if m.Protocol != NATPMP || m.External != netip.AddrPortFrom(fakePublic, 4000) || m.Lifetime != DefaultLifetime {
		t.Fatalf("Map = %v, want nat-pmp %v:4000 for %v", m, fakePublic, DefaultLifetime)
	}
	// Without waiting for the UPnP probe, which nothing answers.
	if took := time.Since(start); took > ssdpWait/2 {
		t.Errorf("Map took %v", took)
	}
	before := len(gw.requests())
	if _, err := c.Renew(ctx); err != nil {
		t.Fatal(err)
	}
	if err := c.Close(ctx); err != nil {
		t.Fatal(err)
	}
	reqs := gw.requests()
	sawPCP := false
	for _, r := range reqs[:before] {
		sawPCP = sawPCP || r[0] == pcpVersion
	}
	if !sawPCP {
		t.Error("PCP was not tried first")
	}
	after := reqs[before:]
	if len(after) != 2 {
		t.Fatalf("renew and close sent %x, want a mapping request and a deletion", after)
	}
	for _, r := range after {
		if r[0] != 0 || r[1] != pmpOpMapUDP {
			t.Errorf("request %x after the fallback is not a NAT-PMP mapping request", r)
		}
	}
	if suggest := binary.BigEndian.Uint16(after[0][6:8]); suggest != m.External.Port() {
		t.Errorf("renewal suggests port %d, want %d", suggest, m.External.Port())
	}
	if del := after[1]; binary.BigEndian.Uint32(del[8:12]) != 0 || binary.BigEndian.Uint16(del[6:8]) != 0 {
		t.Errorf("deletion %x: want lifetime 0 and suggested port 0", del)
	}
}

func TestRefused(t *testing.T) {
	gw := newFakeUDP(t, func(req []byte) [][]byte {
		resp := pcpServer(req)
		if req[1] == pcpOpMap {
			resp[0][3] = byte(pcpNotAuthorized)
		}
		return resp
	})
	c := newTestClient(t, Config{Protocols: []Protocol{PCP}}, gw.port(), closedPort(t))
	_, err := c.Map(t.Context(), 4000)
	var r *RefusedError
	if !errors.As(err, &r) || r.Protocol != PCP || r.Code != int(pcpNotAuthorized) {
		t.Fatalf("Map: %v, want a PCP NOT_AUTHORIZED refusal", err)
	}
	if errors.Is(err, ErrNoService) {
		t.Error("a refusal is reported as no service")
	}
	if want := "portmap: gateway 127.0.0.1: pcp: refused: NOT_AUTHORIZED (2)"; err.Error() != want {
		t.Errorf("error %q, want %q", err, want)
	}
}

// Garbage, truncated answers and answers to other requests are skipped.
func TestIgnoresBadAnswers(t *testing.T) {
	gw := newFakeUDP(t, func(req []byte) [][]byte {
		good := pcpServer(req)
		if req[1] != pcpOpMap {
			return good
		}
		wrongNonce := append([]byte(nil), good[0]...)
		wrongNonce[pcpHeaderLen] ^= 0xff
		binary.BigEndian.PutUint16(wrongNonce[pcpHeaderLen+18:], 9999)
		return [][]byte{
			{},
			[]byte("\x02\x81garbage"),
			good[0][:pcpHeaderLen+10],
			wrongNonce,
			append([]byte{2, 1}, good[0][2:]...), // a request, not an answer
			good[0],
		}
	})
	c := newTestClient(t, Config{Protocols: []Protocol{PCP}}, gw.port(), closedPort(t))
	m, err := c.Map(t.Context(), 4000)
	if err != nil {
		t.Fatal(err)
	}
	if m.External.Port() != 4000 {
		t.Errorf("External %v: took an answer meant for another request", m.External)
	}
}

func TestNoService(t *testing.T) {
	silent := newFakeUDP(t, func([]byte) [][]byte { return nil })
	for name, port := range map[string]uint16{"silent": silent.port(), "closed": closedPort(t)} {
		t.Run(name, func(t *testing.T) {
			c := newTestClient(t, Config{Protocols: []Protocol{PCP, NATPMP}}, port, closedPort(t))
			start := time.Now()
			_, err := c.Map(t.Context(), 4000)
			if !errors.Is(err, ErrNoService) {
				t.Fatalf("Map: %v, want ErrNoService", err)
			}
			if want := "portmap: no port-mapping service on gateway 127.0.0.1 (tried pcp, nat-pmp)"; err.Error() != want {
				t.Errorf("error %q, want %q", err, want)
			}
			if took := time.Since(start); took > 2*time.Second {
				t.Errorf("took %v", took)
			}
		})
	}
	t.Run("canceled", func(t *testing.T) {
		c := newTestClient(t, Config{}, silent.port(), closedPort(t))
		ctx, cancel := context.WithTimeout(t.Context(), 50*time.Millisecond)
		defer cancel()
		start := time.Now()
		_, err := c.Map(ctx, 4000)
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("Map: %v, want the context's error", err)
		}
		if took := time.Since(start); took > time.Second {
			t.Errorf("took %v after the context ended", took)
		}
	})
}

func TestConfigErrors(t *testing.T) {
	c := newTestClient(t, Config{Protocols: []Protocol{"carrier-pigeon"}}, closedPort(t), closedPort(t))
	if _, err := c.Map(t.Context(), 4000); err == nil || !strings.Contains(err.Error(), "carrier-pigeon") {
		t.Errorf("unknown protocol: %v", err)
	}
	c = newTestClient(t, Config{}, closedPort(t), closedPort(t))
	if _, err := c.Map(t.Context(), 0); err == nil {
		t.Error("port 0 accepted")
	}
	if _, err := c.Renew(t.Context()); !errors.Is(err, ErrNoMapping) {
		t.Errorf("Renew without a mapping: %v", err)
	}
	c = New(Config{Gateway: netip.MustParseAddr("fe80::1"), Protocols: []Protocol{UPnP, NATPMP}})
	if _, err := c.Map(t.Context(), 4000); err == nil || !strings.Contains(err.Error(), "only PCP maps over IPv6") {
		t.Errorf("IPv6 gateway without PCP: %v", err)
	}
	c = New(Config{Gateway: netip.IPv4Unspecified()})
	if _, err := c.Map(t.Context(), 4000); err == nil {
		t.Error("gateway 0.0.0.0 accepted")
	}
}

// fakeIGD is a UPnP IGD on loopback: an SSDP responder and an HTTP
// server with the description miniupnpd gave in the lab.
type fakeIGD struct {
	ssdp *fakeUDP
	http *httptest.Server

	mu      sync.Mutex // protects the fields below
	actions []string   // "Action port" of each SOAP call
	// soap answers an action with its arguments; nil means success with
	// out.
	soap func(action string, args map[string]string) (out map[string]string, code int)
}

func newFakeIGD(t *testing.T, description string) *fakeIGD {
	f := &fakeIGD{}
	desc := readFile(t, description)
	typ := upnpWANIP1
	if strings.Contains(string(desc), upnpWANIP2) {
		typ = upnpWANIP2
	}
	argRE := regexp.MustCompile(`<(New\w+)>([^<]*)</New\w+>`)
	f.http = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch {
		case r.Method == http.MethodGet && r.URL.Path == "/rootDesc.xml":
			w.Write(desc)
			return
		case r.Method != http.MethodPost || r.URL.Path != "/ctl/IPConn":
			http.NotFound(w, r)
			return
		}
		typAction, ok := strings.CutPrefix(strings.Trim(r.Header.Get("SOAPAction"), `"`), typ+"#")
		body, _ := io.ReadAll(r.Body)
		if !ok || r.Header.Get("Content-Type") != `text/xml; charset="utf-8"` {
			http.Error(w, "bad SOAP request", http.StatusBadRequest)
			return
		}
		args := make(map[string]string)
		for _, m := range argRE.FindAllStringSubmatch(string(body), -1) {
			args[m[1]] = m[2]
		}
		f.mu.Lock()
		f.actions = append(f.actions, strings.TrimSpace(typAction+" "+args["NewExternalPort"]))
		soap := f.soap
		f.mu.Unlock()
		out, code := soap(typAction, args)
		if code != 0 {
			w.WriteHeader(http.StatusInternalServerError)
			io.WriteString(w, `<?xml version="1.0"?><s:Envelope xmlns:s="http://schemas.xmlsoap.org/soap/envelope/"><s:Body><s:Fault><faultcode>s:Client</faultcode><faultstring>UPnPError</faultstring><detail><UPnPError xmlns="urn:schemas-upnp-org:control-1-0"><errorCode>`+
				strconv.Itoa(code)+`</errorCode><errorDescription>Error</errorDescription></UPnPError></detail></s:Fault></s:Body></s:Envelope>`)
			return
		}
		var b strings.Builder
		b.WriteString(`<?xml version="1.0"?><s:Envelope xmlns:s="http://schemas.xmlsoap.org/soap/envelope/"><s:Body><u:` + typAction + `Response xmlns:u="` + typ + `">`)
		for k, v := range out {
			b.WriteString("<" + k + ">" + v + "</" + k + ">")
		}
		b.WriteString(`</u:` + typAction + `Response></s:Body></s:Envelope>`)
		io.WriteString(w, b.String())
	}))
	t.Cleanup(f.http.Close)
	answer := strings.Replace(string(readFile(t, "ssdp-igdv2.txt")), "http://10.0.1.1:45921", f.http.URL, 1)
	f.ssdp = newFakeUDP(t, func(req []byte) [][]byte {
		if !strings.HasPrefix(string(req), "M-SEARCH * HTTP/1.1\r\n") {
			return nil
		}
		return [][]byte{[]byte(answer)}
	})
	return f
}

func (f *fakeIGD) setSOAP(soap func(action string, args map[string]string) (map[string]string, int)) {
	f.mu.Lock()
	f.soap = soap
	f.mu.Unlock()
}

func (f *fakeIGD) calls() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.actions...)
}

// igdGrant answers like a router that grants everything.
func igdGrant(action string, args map[string]string) (map[string]string, int) {
	switch action {
	case "AddAnyPortMapping":
		return map[string]string{"NewReservedPort": "31000"}, 0
	case "GetExternalIPAddress":
		return map[string]string{"NewExternalIPAddress": fakePublic.String()}, 0
	}
	return nil, 0
}

func TestUPnP(t *testing.T) {
	t.Run("igdv2", func(t *testing.T) {
		igd := newFakeIGD(t, "rootdesc-igdv2.xml")
		igd.setSOAP(func(action string, args map[string]string) (map[string]string, int) {
			if (action == "AddAnyPortMapping" || action == "AddPortMapping") &&
				(args["NewInternalClient"] != "127.0.0.1" || args["NewInternalPort"] != "4000" || args["NewProtocol"] != "UDP" || args["NewLeaseDuration"] != "7200") {
				return nil, 402 // Invalid Args
			}
			return igdGrant(action, args)
		})
		c := newTestClient(t, Config{}, closedPort(t), igd.ssdp.port())
		m, err := c.Map(t.Context(), 4000)
		if err != nil {
			t.Fatal(err)
		}
		if m.Protocol != UPnP || m.External != netip.AddrPortFrom(fakePublic, 31000) {
			t.Fatalf("Map = %v, want upnp %v:31000", m, fakePublic)
		}
		if _, err := c.Renew(t.Context()); err != nil {
			t.Fatal(err)
		}
		if err := c.Close(t.Context()); err != nil {
			t.Fatal(err)
		}
		want := []string{
			"AddAnyPortMapping 4000", "GetExternalIPAddress",
			"AddPortMapping 31000", "GetExternalIPAddress", // renewal: the same port, an update
			"DeletePortMapping 31000",
		}
		if got := igd.calls(); strings.Join(got, ", ") != strings.Join(want, ", ") {
			t.Errorf("SOAP calls %q, want %q", got, want)
		}
	})

	// An IGDv1 has no AddAnyPortMapping: on a conflict the client tries
	// another port; a router that takes only permanent leases gets one.
	t.Run("igdv1-conflict-permanent", func(t *testing.T) {
		igd := newFakeIGD(t, "rootdesc-igdv1.xml")
		igd.setSOAP(func(action string, args map[string]string) (map[string]string, int) {
			if action == "AddPortMapping" {
				switch {
				case args["NewExternalPort"] == "4000":
					return nil, upnpConflict
				case args["NewLeaseDuration"] != "0":
					return nil, upnpOnlyPermanentLeases
				}
			}
			return igdGrant(action, args)
		})
		c := newTestClient(t, Config{Protocols: []Protocol{UPnP}}, closedPort(t), igd.ssdp.port())
		m, err := c.Map(t.Context(), 4000)
		if err != nil {
			t.Fatal(err)
		}
		if m.External.Port() == 4000 || m.External.Port() < 1024 || m.External.Addr() != fakePublic {
			t.Fatalf("External %v: want another unprivileged port on %v", m.External, fakePublic)
		}
		calls := igd.calls()
		if len(calls) != 4 || calls[0] != "AddPortMapping 4000" || calls[1] != calls[2] || calls[3] != "GetExternalIPAddress" {
			t.Errorf("SOAP calls %q: want a conflict, then a port tried with a lease and without", calls)
		}
	})

	t.Run("refused", func(t *testing.T) {
		igd := newFakeIGD(t, "rootdesc-igdv2.xml")
		igd.setSOAP(func(action string, args map[string]string) (map[string]string, int) {
			if strings.HasPrefix(action, "Add") {
				return nil, 606 // Action not authorized
			}
			return igdGrant(action, args)
		})
		c := newTestClient(t, Config{Protocols: []Protocol{UPnP}}, closedPort(t), igd.ssdp.port())
		_, err := c.Map(t.Context(), 4000)
		var r *RefusedError
		if !errors.As(err, &r) || r.Protocol != UPnP || r.Code != 606 {
			t.Fatalf("Map: %v, want a UPnP 606 refusal", err)
		}
	})
}
