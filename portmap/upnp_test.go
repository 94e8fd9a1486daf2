package portmap

import (
	"errors"
	"net/url"
	"os"
	"strings"
	"testing"
)

func readFile(t testing.TB, name string) []byte {
	t.Helper()
	b, err := os.ReadFile("testdata/" + name)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestSSDPSearch(t *testing.T) {
	want := "M-SEARCH * HTTP/1.1\r\n" +
		"HOST: 239.255.255.250:1900\r\n" +
		"MAN: \"ssdp:discover\"\r\n" +
		"MX: 1\r\n" +
		"ST: urn:schemas-upnp-org:device:InternetGatewayDevice:1\r\n\r\n"
	if got := string(appendSSDPSearch(nil, 1)); got != want {
		t.Errorf("multicast M-SEARCH:\n%q\nwant\n%q", got, want)
	}
	if got := string(appendSSDPSearch(nil, 0)); got != strings.Replace(want, "MX: 1\r\n", "", 1) {
		t.Errorf("unicast M-SEARCH has MX: %q", got)
	}
}

// The answers of miniupnpd 2.3.1 in the lab, as an IGDv2 and as an IGDv1.
func TestParseSSDPResponse(t *testing.T) {
	for name, loc := range map[string]string{
		"ssdp-igdv2.txt": "http://10.0.1.1:45921/rootDesc.xml",
		"ssdp-igdv1.txt": "http://10.0.2.1:33235/rootDesc.xml",
	} {
		r, err := parseSSDPResponse(readFile(t, name))
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if r.Location != loc || r.ST != ssdpSearchTarget || !strings.Contains(r.Server, "MiniUPnPd/2.3.1") {
			t.Errorf("%s: %+v", name, r)
		}
	}
	for _, b := range []string{
		"",
		"NOTIFY * HTTP/1.1\r\nHOST: 239.255.255.250:1900\r\n\r\n",
		"HTTP/1.1 200 OK\r\nST: x\r\n\r\n",
		"HTTP/1.1 404 Not Found\r\nLOCATION: http://10.0.0.1/\r\n\r\n",
	} {
		if _, err := parseSSDPResponse([]byte(b)); err == nil {
			t.Errorf("%q parsed without error", b)
		}
	}
}

func TestParseUPnPDescription(t *testing.T) {
	for _, tc := range []struct {
		name, loc, typ, control string
	}{
		{"rootdesc-igdv2.xml", "http://10.0.1.1:45921/rootDesc.xml", upnpWANIP2, "http://10.0.1.1:45921/ctl/IPConn"},
		{"rootdesc-igdv1.xml", "http://10.0.2.1:33235/rootDesc.xml", upnpWANIP1, "http://10.0.2.1:33235/ctl/IPConn"},
	} {
		loc, _ := url.Parse(tc.loc)
		svc, err := parseUPnPDescription(readFile(t, tc.name), loc)
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		if svc.Type != tc.typ || svc.ControlURL.String() != tc.control {
			t.Errorf("%s: %s at %v, want %s at %s", tc.name, svc.Type, svc.ControlURL, tc.typ, tc.control)
		}
	}
}

func TestParseUPnPDescriptionVariants(t *testing.T) {
	loc, _ := url.Parse("http://192.168.1.1:5000/desc/root.xml")
	svc := func(typ, ctl string) string {
		return "<service><serviceType>" + typ + "</serviceType><controlURL>" + ctl + "</controlURL></service>"
	}
	doc := func(head, services string) []byte {
		return []byte(`<?xml version="1.0" encoding="ISO-8859-1"?>` + "\n" +
			`<root xmlns="urn:schemas-upnp-org:device-1-0">` + head +
			`<device><deviceType>urn:schemas-upnp-org:device:InternetGatewayDevice:1</deviceType>` +
			`<deviceList><device><deviceList><device><serviceList>` + services +
			`</serviceList></device></deviceList></device></deviceList></device></root>`)
	}
	for _, tc := range []struct {
		name    string
		body    []byte
		typ     string
		control string // "" for an error
	}{
		{"relative to the location's directory", doc("", svc(upnpWANIP1, "ctl")), upnpWANIP1, "http://192.168.1.1:5000/desc/ctl"},
		{"URLBase", doc("<URLBase>http://192.168.1.1:49000/</URLBase>", svc(upnpWANPPP1, "/upnp/control/WANPPPConn1")), upnpWANPPP1, "http://192.168.1.1:49000/upnp/control/WANPPPConn1"},
		{"IP before PPP", doc("", svc(upnpWANPPP1, "/ppp")+svc(upnpWANIP1, "/ip")), upnpWANIP1, "http://192.168.1.1:5000/ip"},
		{"v2 before v1", doc("", svc(upnpWANIP1, "/v1")+svc(upnpWANIP2, "/v2")), upnpWANIP2, "http://192.168.1.1:5000/v2"},
		{"whitespace", doc("", svc(" "+upnpWANIP1+"\n", "\n /ctl \n")), upnpWANIP1, "http://192.168.1.1:5000/ctl"},
		{"no WAN connection service", doc("", svc("urn:schemas-upnp-org:service:Layer3Forwarding:1", "/l3f")), "", ""},
		{"empty control URL", doc("", svc(upnpWANIP1, "")), "", ""},
		{"not http", doc("", svc(upnpWANIP1, "file:///etc/passwd")), "", ""},
		{"not XML", []byte("HTTP/1.1 200 OK"), "", ""},
		{"unclosed", []byte(`<root><device><serviceList><service>`), "", ""},
	} {
		got, err := parseUPnPDescription(tc.body, loc)
		if tc.control == "" {
			if err == nil {
				t.Errorf("%s: %v, want an error", tc.name, got)
			}
			continue
		}
		if err != nil {
			t.Errorf("%s: %v", tc.name, err)
			continue
		}
		if got.Type != tc.typ || got.ControlURL.String() != tc.control {
			t.Errorf("%s: %s at %v, want %s at %s", tc.name, got.Type, got.ControlURL, tc.typ, tc.control)
		}
	}
}

func TestSOAPRequest(t *testing.T) {
	got := string(appendSOAPRequest(nil, upnpWANIP1, "DeletePortMapping", []soapArg{
		{"NewRemoteHost", ""}, {"NewExternalPort", "4000"}, {"NewProtocol", "UDP"},
	}))
	want := `<?xml version="1.0"?>` + "\r\n" +
		`<s:Envelope xmlns:s="http://schemas.xmlsoap.org/soap/envelope/" s:encodingStyle="http://schemas.xmlsoap.org/soap/encoding/">` +
		`<s:Body><u:DeletePortMapping xmlns:u="urn:schemas-upnp-org:service:WANIPConnection:1">` +
		`<NewRemoteHost></NewRemoteHost><NewExternalPort>4000</NewExternalPort><NewProtocol>UDP</NewProtocol>` +
		`</u:DeletePortMapping></s:Body></s:Envelope>` + "\r\n"
	if got != want {
		t.Errorf("request:\n%s\nwant\n%s", got, want)
	}
	// Values are escaped.
	got = string(appendSOAPRequest(nil, upnpWANIP1, "AddPortMapping", []soapArg{{"NewPortMappingDescription", "<a&b>"}}))
	if !strings.Contains(got, "<NewPortMappingDescription>&lt;a&amp;b&gt;</NewPortMappingDescription>") {
		t.Errorf("value not escaped: %s", got)
	}
}

// The answers of miniupnpd 2.3.1 in the lab.
func TestParseSOAPResponse(t *testing.T) {
	for _, tc := range []struct {
		file, action, arg, want string
	}{
		{"soap-addany-igdv2.xml", "AddAnyPortMapping", "NewReservedPort", "5000"},
		{"soap-extip-igdv2.xml", "GetExternalIPAddress", "NewExternalIPAddress", "203.0.113.10"},
		{"soap-delete-igdv2.xml", "DeletePortMapping", "", ""},
	} {
		out, err := parseSOAPResponse(readFile(t, tc.file), tc.action)
		if err != nil {
			t.Fatalf("%s: %v", tc.file, err)
		}
		if tc.arg != "" && out[tc.arg] != tc.want {
			t.Errorf("%s: %s = %q, want %q (all: %v)", tc.file, tc.arg, out[tc.arg], tc.want, out)
		}
	}
	// The answer to another action is no answer.
	if _, err := parseSOAPResponse(readFile(t, "soap-extip-igdv2.xml"), "AddPortMapping"); err == nil {
		t.Error("GetExternalIPAddressResponse taken for AddPortMappingResponse")
	}

	_, err := parseSOAPResponse(readFile(t, "soap-fault-igdv2.xml"), "AddPortMapping")
	var r *RefusedError
	if !errors.As(err, &r) || r.Protocol != UPnP || r.Code != upnpConflict || r.Reason != "ConflictInMappingEntry" {
		t.Fatalf("fault: %v, want a RefusedError 718 ConflictInMappingEntry", err)
	}
	if got := err.Error(); got != "upnp: refused: ConflictInMappingEntry (718)" {
		t.Errorf("fault message %q", got)
	}
	for _, b := range []string{
		"",
		"<s:Envelope><s:Body><s:Fault><faultstring>x</faultstring></s:Fault></s:Body></s:Envelope>",
		"<s:Envelope><s:Body><u:AddPortMappingResponse>",
	} {
		if _, err := parseSOAPResponse([]byte(b), "AddPortMapping"); err == nil {
			t.Errorf("%q parsed without error", b)
		}
	}
}

func FuzzParseUPnPDescription(f *testing.F) {
	f.Add(readFile(f, "rootdesc-igdv2.xml"))
	f.Add(readFile(f, "rootdesc-igdv1.xml"))
	f.Add([]byte(`<root><URLBase>http://h/</URLBase><device><serviceList><service><serviceType>` + upnpWANIP1 + `</serviceType><controlURL>c</controlURL></service></serviceList></device></root>`))
	loc, _ := url.Parse("http://10.0.0.1:5000/rootDesc.xml")
	f.Fuzz(func(t *testing.T, b []byte) {
		svc, err := parseUPnPDescription(b, loc)
		if err != nil {
			return
		}
		if upnpServiceRank(svc.Type) < 0 || svc.ControlURL == nil || svc.ControlURL.Scheme != "http" || svc.ControlURL.Host == "" {
			t.Fatalf("unusable service accepted: %+v", svc)
		}
	})
}

func FuzzParseSOAPResponse(f *testing.F) {
	for _, name := range []string{"soap-addany-igdv2.xml", "soap-extip-igdv2.xml", "soap-delete-igdv2.xml", "soap-fault-igdv2.xml"} {
		f.Add(readFile(f, name))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		for _, action := range []string{"AddAnyPortMapping", "GetExternalIPAddress"} {
			out, err := parseSOAPResponse(b, action)
			if err == nil && out == nil {
				t.Fatal("nil answer without error")
			}
		}
	})
}

func FuzzParseSSDPResponse(f *testing.F) {
	f.Add(readFile(f, "ssdp-igdv2.txt"))
	f.Fuzz(func(t *testing.T, b []byte) {
		r, err := parseSSDPResponse(b)
		if err == nil && r.Location == "" {
			t.Fatal("response without LOCATION accepted")
		}
	})
}
