package portmap

import (
	"bufio"
	"bytes"
	"encoding/xml"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
)

// UPnP Internet Gateway Device: SSDP discovery (UPnP Device Architecture
// 1.1 §1.3), the device description (§2), and SOAP control (§3) of the
// WANIPConnection:2, WANIPConnection:1 or WANPPPConnection:1 service.
//
// Discovery is an HTTP request over UDP, to the multicast group and to the
// gateway itself:
//
//	M-SEARCH * HTTP/1.1
//	HOST: 239.255.255.250:1900
//	MAN: "ssdp:discover"
//	MX: 1
//	ST: urn:schemas-upnp-org:device:InternetGatewayDevice:1
//
// A device answers with an HTTP response over UDP whose LOCATION header is
// the URL of its description, an XML document:
//
//	<root xmlns="urn:schemas-upnp-org:device-1-0">
//	  <URLBase>...</URLBase>                       (optional, UDA 1.0)
//	  <device>
//	    <deviceType>urn:...:InternetGatewayDevice:1</deviceType>
//	    <deviceList><device> WANDevice
//	      <deviceList><device> WANConnectionDevice
//	        <serviceList><service>
//	          <serviceType>urn:schemas-upnp-org:service:WANIPConnection:1</serviceType>
//	          <controlURL>/ctl/IPConn</controlURL>
//	...
//
// Actions are SOAP 1.1 POSTs to the service's control URL; a refusal is an
// HTTP 500 carrying a SOAP fault with a UPnPError code (WANIPConnection:2
// §2.5).
const (
	ssdpPort = 1900

	// ssdpMulticast is the SSDP group, with its port, as HOST says it.
	ssdpMulticast = "239.255.255.250:1900"

	ssdpSearchTarget = "urn:schemas-upnp-org:device:InternetGatewayDevice:1"

	upnpWANIP2  = "urn:schemas-upnp-org:service:WANIPConnection:2"
	upnpWANIP1  = "urn:schemas-upnp-org:service:WANIPConnection:1"
	upnpWANPPP1 = "urn:schemas-upnp-org:service:WANPPPConnection:1"

	// maxDescriptionLen and maxSOAPLen bound what the client reads from
	// a gateway: a root description is a few KiB, a SOAP answer less.
	maxDescriptionLen = 64 << 10
	maxSOAPLen        = 16 << 10
)

// UPnP error codes the client acts on (WANIPConnection:2 §2.5, UDA §3.2.2).
const (
	upnpInvalidAction        = 401
	upnpActionNotImplemented = 602
	upnpNoSuchEntry          = 714
	upnpConflict             = 718
	upnpSamePortRequired     = 724
	upnpOnlyPermanentLeases  = 725
)

// appendSSDPSearch appends an M-SEARCH request for an IGD to b. mx is the
// MX header in seconds: how long devices may wait before answering a
// multicast search; 0 omits it, as a unicast search must (UDA 1.1 §1.3.2).
func appendSSDPSearch(b []byte, mx int) []byte {
	b = append(b, "M-SEARCH * HTTP/1.1\r\nHOST: "+ssdpMulticast+"\r\nMAN: \"ssdp:discover\"\r\n"...)
	if mx > 0 {
		b = append(b, "MX: "...)
		b = strconv.AppendInt(b, int64(mx), 10)
		b = append(b, "\r\n"...)
	}
	return append(b, "ST: "+ssdpSearchTarget+"\r\n\r\n"...)
}

// ssdpResponse is the part of an SSDP search response the client uses.
type ssdpResponse struct {
	Location string // URL of the root device description
	ST       string // the search target it answers
	Server   string // e.g. "Debian/12 UPnP/1.1 MiniUPnPd/2.3.1"
}

// parseSSDPResponse parses an SSDP search response: an HTTP/1.1 200
// response with a LOCATION header. It never panics.
func parseSSDPResponse(b []byte) (ssdpResponse, error) {
	res, err := http.ReadResponse(bufio.NewReader(bytes.NewReader(b)), nil)
	if err != nil {
		return ssdpResponse{}, fmt.Errorf("upnp: ssdp response: %w", err)
	}
	res.Body.Close()
	if res.StatusCode != http.StatusOK {
		return ssdpResponse{}, fmt.Errorf("upnp: ssdp response: status %d", res.StatusCode)
	}
	r := ssdpResponse{
		Location: res.Header.Get("Location"),
		ST:       res.Header.Get("St"),
		Server:   res.Header.Get("Server"),
	}
	if r.Location == "" {
		return ssdpResponse{}, errors.New("upnp: ssdp response without LOCATION")
	}
	return r, nil
}

// upnpService is a WAN connection service of an IGD: where to send its
// SOAP actions.
type upnpService struct {
	Type       string // upnpWANIP2, upnpWANIP1 or upnpWANPPP1
	ControlURL *url.URL
}

// upnpServiceRank orders the services the client can use, best first:
// WANIPConnection:2 has AddAnyPortMapping, and IP before PPP because a
// device that lists both usually routes through the IP one.
func upnpServiceRank(typ string) int {
	switch typ {
	case upnpWANIP2:
		return 0
	case upnpWANIP1:
		return 1
	case upnpWANPPP1:
		return 2
	}
	return -1
}

// The device description, as much of it as the client reads. Field tags
// have no namespace, so they match the UPnP device namespace or none.
type xmlRoot struct {
	URLBase string    `xml:"URLBase"`
	Device  xmlDevice `xml:"device"`
}

type xmlDevice struct {
	DeviceType string       `xml:"deviceType"`
	Services   []xmlService `xml:"serviceList>service"`
	Devices    []xmlDevice  `xml:"deviceList>device"`
}

type xmlService struct {
	ServiceType string `xml:"serviceType"`
	ControlURL  string `xml:"controlURL"`
}

// parseUPnPDescription parses a root device description fetched from
// location and returns its best WAN connection service, with the control
// URL resolved against URLBase or, without one, location. It never
// panics.
func parseUPnPDescription(body []byte, location *url.URL) (upnpService, error) {
	var root xmlRoot
	d := xml.NewDecoder(bytes.NewReader(body))
	d.CharsetReader = anyCharset
	if err := d.Decode(&root); err != nil {
		return upnpService{}, fmt.Errorf("upnp: device description: %w", err)
	}
	var best *xmlService
	var walk func(dev *xmlDevice)
	walk = func(dev *xmlDevice) {
		for i := range dev.Services {
			s := &dev.Services[i]
			s.ServiceType = strings.TrimSpace(s.ServiceType)
			r := upnpServiceRank(s.ServiceType)
			if r >= 0 && strings.TrimSpace(s.ControlURL) != "" &&
				(best == nil || r < upnpServiceRank(best.ServiceType)) {
				best = s
			}
		}
		for i := range dev.Devices {
			walk(&dev.Devices[i])
		}
	}
	walk(&root.Device)
	if best == nil {
		return upnpService{}, errors.New("upnp: the device has no WANIPConnection or WANPPPConnection service")
	}
	base := location
	if s := strings.TrimSpace(root.URLBase); s != "" {
		if u, err := url.Parse(s); err == nil && u.Scheme == "http" && u.Host != "" {
			base = u
		}
	}
	ref, err := url.Parse(strings.TrimSpace(best.ControlURL))
	if err != nil {
		return upnpService{}, fmt.Errorf("upnp: control URL: %w", err)
	}
	u := base.ResolveReference(ref)
	if u.Scheme != "http" || u.Host == "" {
		return upnpService{}, fmt.Errorf("upnp: control URL %q is not an http URL", u)
	}
	return upnpService{Type: best.ServiceType, ControlURL: u}, nil
}

// anyCharset lets the XML decoder read documents that declare a charset
// other than UTF-8 (routers say ISO-8859-1 or US-ASCII): everything the
// client reads is ASCII, so the bytes are taken as they are.
func anyCharset(_ string, r io.Reader) (io.Reader, error) { return r, nil }

// soapArg is one argument of a SOAP action, in the order the service's
// description lists them (some routers insist on it).
type soapArg struct{ Name, Value string }

// appendSOAPRequest appends the SOAP envelope that calls action of
// service type typ with args to b.
func appendSOAPRequest(b []byte, typ, action string, args []soapArg) []byte {
	var w bytes.Buffer
	w.WriteString(`<?xml version="1.0"?>` + "\r\n" +
		`<s:Envelope xmlns:s="http://schemas.xmlsoap.org/soap/envelope/" s:encodingStyle="http://schemas.xmlsoap.org/soap/encoding/">` +
		`<s:Body><u:`)
	w.WriteString(action)
	w.WriteString(` xmlns:u="`)
	xml.EscapeText(&w, []byte(typ))
	w.WriteString(`">`)
	for _, a := range args {
		w.WriteString("<" + a.Name + ">")
		xml.EscapeText(&w, []byte(a.Value))
		w.WriteString("</" + a.Name + ">")
	}
	w.WriteString("</u:" + action + "></s:Body></s:Envelope>\r\n")
	return append(b, w.Bytes()...)
}

// parseSOAPResponse parses the answer to action: the child elements of
// its <actionResponse> element by local name, or for a SOAP fault a
// *RefusedError with the UPnPError code. It never panics.
func parseSOAPResponse(body []byte, action string) (map[string]string, error) {
	d := xml.NewDecoder(bytes.NewReader(body))
	d.CharsetReader = anyCharset
	var (
		stack      []string // local names of the open elements
		text       strings.Builder
		out        map[string]string
		fault      bool
		code, desc string
	)
	for {
		tok, err := d.Token()
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("upnp: %s response: %w", action, err)
		}
		switch t := tok.(type) {
		case xml.StartElement:
			stack = append(stack, t.Name.Local)
			text.Reset()
			switch t.Name.Local {
			case action + "Response":
				out = make(map[string]string)
			case "Fault":
				fault = true
			}
		case xml.CharData:
			text.Write(t)
		case xml.EndElement:
			if len(stack) >= 2 {
				v := strings.TrimSpace(text.String())
				switch stack[len(stack)-2] {
				case action + "Response":
					if out != nil {
						out[t.Name.Local] = v
					}
				case "UPnPError":
					switch t.Name.Local {
					case "errorCode":
						code = v
					case "errorDescription":
						desc = v
					}
				}
			}
			if len(stack) > 0 {
				stack = stack[:len(stack)-1]
			}
			text.Reset()
		}
	}
	if fault {
		n, err := strconv.Atoi(code)
		if err != nil {
			return nil, fmt.Errorf("upnp: %s: SOAP fault without a UPnP error code", action)
		}
		if desc == "" {
			desc = "UPnP error"
		}
		return nil, &RefusedError{Protocol: UPnP, Code: n, Reason: desc}
	}
	if out == nil {
		return nil, fmt.Errorf("upnp: %s: no %sResponse in the answer", action, action)
	}
	return out, nil
}
