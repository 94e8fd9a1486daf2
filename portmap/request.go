package portmap

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/http"
	"net/netip"
	"strconv"
	"time"
)

// mapPCP sends a PCP MAP request for port (RFC 6887 §11). Renewing prev,
// it reuses its nonce and asks for its external address and port;
// otherwise it asks for the same port as the internal one. The answer's
// epoch time tells whether the gateway lost its state since its last
// answer (§8.5): a renewal then has created the mapping anew, which the
// gateway does for a nonce it does not know.
func (c *Client) mapPCP(ctx context.Context, gw netip.Addr, port uint16, prev *mapState) (*mapState, error) {
	conn, local, err := c.dialGateway(ctx, gw, c.pmpPort)
	if err != nil {
		return nil, fmt.Errorf("pcp: %w", err)
	}
	defer conn.Close()
	nonce := newNonce()
	suggest := netip.AddrPortFrom(netip.Addr{}, port)
	if prev != nil {
		nonce, suggest = prev.nonce, prev.External
	}
	req := appendPCPMap(nil, nonce, local.Addr(), port, suggest, c.lifetime())
	var (
		resp pcpResponse
		at   time.Time
	)
	err = exchange(ctx, conn, req, requestWaits, func(b []byte) (bool, error) {
		r, err := parsePCPResponse(b)
		if errors.Is(err, errPCPSpeaksNATPMP) {
			return true, err
		}
		if err != nil || r.Op != pcpOpReply|pcpOpMap {
			return false, nil
		}
		if r.Result != pcpSuccess {
			return true, &RefusedError{Protocol: PCP, Code: int(r.Result), Reason: r.Result.String()}
		}
		if r.Nonce != nonce || r.Protocol != pcpProtoUDP || r.InternalPort != port {
			return false, nil // the answer to some other request
		}
		resp, at = r, time.Now()
		return true, nil
	})
	if err != nil {
		return nil, pcpError(gw, c.pmpPort, err)
	}
	if resp.Lifetime == 0 {
		return nil, errors.New("pcp: gateway granted a zero lifetime")
	}
	if err := checkExternal(PCP, resp.External); err != nil {
		return nil, err
	}
	st := newState(PCP, gw, netip.AddrPortFrom(local.Addr(), port), resp.External, resp.Lifetime)
	st.nonce = nonce
	st.lost = c.observeEpochLocked(PCP, resp.Epoch, at)
	return st, nil
}

// releasePCP deletes st with a MAP request of lifetime 0 and the same
// nonce (RFC 6887 §15).
func (c *Client) releasePCP(ctx context.Context, st *mapState) error {
	conn, local, err := c.dialGateway(ctx, st.Gateway, c.pmpPort)
	if err != nil {
		return fmt.Errorf("pcp: %w", err)
	}
	defer conn.Close()
	port := st.Internal.Port()
	req := appendPCPMap(nil, st.nonce, local.Addr(), port, st.External, 0)
	err = exchange(ctx, conn, req, requestWaits, func(b []byte) (bool, error) {
		r, err := parsePCPResponse(b)
		if err != nil || r.Op != pcpOpReply|pcpOpMap {
			return false, nil
		}
		if r.Result != pcpSuccess {
			return true, &RefusedError{Protocol: PCP, Code: int(r.Result), Reason: r.Result.String()}
		}
		return r.Nonce == st.nonce && r.InternalPort == port, nil
	})
	if err != nil {
		return pcpError(st.Gateway, c.pmpPort, err)
	}
	return nil
}

func pcpError(gw netip.Addr, port uint16, err error) error {
	var refused *RefusedError
	if errors.As(err, &refused) || errors.Is(err, errPCPSpeaksNATPMP) {
		return err
	}
	return fmt.Errorf("pcp: %v:%d: %w", gw, port, err)
}

// mapPMP sends a NAT-PMP UDP mapping request for port (RFC 6886 §3.3),
// after an external address request if the probe did not learn it.
// Renewing prev, it asks for the same external port. When the answer's
// epoch time shows that the gateway lost its state (§3.6), it asks for
// the external address again, which may have changed with it.
func (c *Client) mapPMP(ctx context.Context, gw netip.Addr, port uint16, prev *mapState) (*mapState, error) {
	conn, local, err := c.dialGateway(ctx, gw, c.pmpPort)
	if err != nil {
		return nil, fmt.Errorf("nat-pmp: %w", err)
	}
	defer conn.Close()
	learn := func() error {
		a, err := c.pmpExternalAddr(ctx, conn, requestWaits)
		if err != nil {
			return pmpError(gw, c.pmpPort, err)
		}
		c.known.pmpExternal = a.addr
		c.observeEpochLocked(NATPMP, a.epoch, a.at)
		return nil
	}
	if !c.known.pmpExternal.IsValid() {
		if err := learn(); err != nil {
			return nil, err
		}
	}
	suggest := port
	if prev != nil {
		suggest = prev.External.Port()
	}
	var (
		resp pmpResponse
		at   time.Time
	)
	err = exchange(ctx, conn, appendPMPMapRequest(nil, port, suggest, c.lifetime()), requestWaits, func(b []byte) (bool, error) {
		r, err := parsePMPResponse(b)
		if err != nil || r.Op != pmpOpReply|pmpOpMapUDP {
			return false, nil
		}
		if r.Result != pmpSuccess {
			return true, &RefusedError{Protocol: NATPMP, Code: int(r.Result), Reason: r.Result.String()}
		}
		if r.InternalPort != port {
			return false, nil
		}
		resp, at = r, time.Now()
		return true, nil
	})
	if err != nil {
		return nil, pmpError(gw, c.pmpPort, err)
	}
	if resp.Lifetime == 0 {
		return nil, errors.New("nat-pmp: gateway granted a zero lifetime")
	}
	lost := c.observeEpochLocked(NATPMP, resp.Epoch, at)
	if lost {
		if err := learn(); err != nil {
			return nil, err
		}
	}
	external := netip.AddrPortFrom(c.known.pmpExternal, resp.ExternalPort)
	if err := checkExternal(NATPMP, external); err != nil {
		return nil, err
	}
	st := newState(NATPMP, gw, netip.AddrPortFrom(local.Addr(), port), external, resp.Lifetime)
	st.lost = lost
	return st, nil
}

// releasePMP deletes st with a mapping request of lifetime 0 and
// suggested external port 0 (RFC 6886 §3.4).
func (c *Client) releasePMP(ctx context.Context, st *mapState) error {
	conn, _, err := c.dialGateway(ctx, st.Gateway, c.pmpPort)
	if err != nil {
		return fmt.Errorf("nat-pmp: %w", err)
	}
	defer conn.Close()
	port := st.Internal.Port()
	err = exchange(ctx, conn, appendPMPMapRequest(nil, port, 0, 0), requestWaits, func(b []byte) (bool, error) {
		r, err := parsePMPResponse(b)
		if err != nil || r.Op != pmpOpReply|pmpOpMapUDP {
			return false, nil
		}
		if r.Result != pmpSuccess {
			return true, &RefusedError{Protocol: NATPMP, Code: int(r.Result), Reason: r.Result.String()}
		}
		return r.InternalPort == port, nil
	})
	if err != nil {
		return pmpError(st.Gateway, c.pmpPort, err)
	}
	return nil
}

func pmpError(gw netip.Addr, port uint16, err error) error {
	var refused *RefusedError
	if errors.As(err, &refused) {
		return err
	}
	return fmt.Errorf("nat-pmp: %v:%d: %w", gw, port, err)
}

// mapUPnP adds a UDP port mapping with the IGD's WAN connection service
// and asks for the external address. Renewing prev, it re-adds the same
// mapping, which the IGD takes as an update of its lease
// (WANIPConnection:2 §2.5.16); a new mapping asks for the internal port
// as the external one, letting a WANIPConnection:2 pick another
// (AddAnyPortMapping) or trying random ones on a conflict.
func (c *Client) mapUPnP(ctx context.Context, gw netip.Addr, port uint16, prev *mapState) (*mapState, error) {
	svc := c.known.upnp
	if prev != nil {
		svc = prev.upnp
	}
	if svc.ControlURL == nil {
		loc, err := c.searchSSDP(ctx, gw)
		if err != nil {
			return nil, fmt.Errorf("upnp: %w", err)
		}
		if svc, err = c.fetchDescription(ctx, gw, loc); err != nil {
			return nil, err
		}
		c.known.upnp = svc
	}
	// The internal client is the address the gateway sees us at; a
	// connected UDP socket tells it without sending anything.
	conn, local, err := c.dialGateway(ctx, gw, c.ssdpPort)
	if err != nil {
		return nil, fmt.Errorf("upnp: %w", err)
	}
	conn.Close()
	internal := netip.AddrPortFrom(local.Addr(), port)

	var ext uint16
	if prev != nil {
		ext = prev.External.Port()
		if err := c.addPortMapping(ctx, svc, ext, internal); err != nil {
			if !isUPnPCode(err, upnpConflict) {
				return nil, err
			}
			ext = 0 // taken by someone else meanwhile: map anew
		}
	}
	if ext == 0 {
		if ext, err = c.addAnyPortMapping(ctx, svc, internal); err != nil {
			return nil, err
		}
	}
	out, err := c.soap(ctx, svc, "GetExternalIPAddress", nil)
	if err != nil {
		return nil, err
	}
	ip, err := netip.ParseAddr(out["NewExternalIPAddress"])
	if err != nil {
		return nil, fmt.Errorf("upnp: GetExternalIPAddress: %q is not an address", out["NewExternalIPAddress"])
	}
	external := netip.AddrPortFrom(ip.Unmap(), ext)
	if err := checkExternal(UPnP, external); err != nil {
		return nil, err
	}
	st := newState(UPnP, gw, internal, external, c.lifetime())
	st.upnp = svc
	return st, nil
}

// addAnyPortMapping maps internal on some external port and returns it.
func (c *Client) addAnyPortMapping(ctx context.Context, svc upnpService, internal netip.AddrPort) (uint16, error) {
	want := internal.Port()
	if want < 1024 {
		// Routers commonly refuse privileged external ports.
		want = randomPort()
	}
	if svc.Type == upnpWANIP2 {
		out, err := c.soap(ctx, svc, "AddAnyPortMapping", c.mappingArgs(want, internal, c.lifetime()))
		if err == nil {
			p, err := strconv.ParseUint(out["NewReservedPort"], 10, 16)
			if err != nil || p == 0 {
				return 0, fmt.Errorf("upnp: AddAnyPortMapping: reserved port %q", out["NewReservedPort"])
			}
			return uint16(p), nil
		}
		// A router that has the action but not for us, or wants a
		// permanent lease, gets AddPortMapping, which handles both.
		if !isUPnPCode(err, upnpInvalidAction, upnpActionNotImplemented, upnpOnlyPermanentLeases) {
			return 0, err
		}
	}
	var err error
	for range 4 {
		err = c.addPortMapping(ctx, svc, want, internal)
		switch {
		case err == nil:
			return want, nil
		case isUPnPCode(err, upnpConflict):
			want = randomPort()
		case isUPnPCode(err, upnpSamePortRequired) && want != internal.Port():
			want = internal.Port()
		default:
			return 0, err
		}
	}
	return 0, err
}

// addPortMapping adds (or renews) the mapping of external port ext to
// internal. A router that only takes permanent leases gets one; the
// client still renews it, and deletes it on Close.
func (c *Client) addPortMapping(ctx context.Context, svc upnpService, ext uint16, internal netip.AddrPort) error {
	_, err := c.soap(ctx, svc, "AddPortMapping", c.mappingArgs(ext, internal, c.lifetime()))
	if isUPnPCode(err, upnpOnlyPermanentLeases) {
		_, err = c.soap(ctx, svc, "AddPortMapping", c.mappingArgs(ext, internal, 0))
	}
	return err
}

// mappingArgs are the arguments of AddPortMapping and AddAnyPortMapping,
// which are the same, in order.
func (c *Client) mappingArgs(ext uint16, internal netip.AddrPort, lease uint32) []soapArg {
	return []soapArg{
		{"NewRemoteHost", ""},
		{"NewExternalPort", strconv.Itoa(int(ext))},
		{"NewProtocol", "UDP"}, // upper case: some routers refuse "udp"
		{"NewInternalPort", strconv.Itoa(int(internal.Port()))},
		{"NewInternalClient", internal.Addr().String()},
		{"NewEnabled", "1"},
		{"NewPortMappingDescription", upnpDescription},
		{"NewLeaseDuration", strconv.FormatUint(uint64(lease), 10)},
	}
}

// releaseUPnP deletes st's port mapping; one the IGD no longer has
// counts as deleted.
func (c *Client) releaseUPnP(ctx context.Context, st *mapState) error {
	_, err := c.soap(ctx, st.upnp, "DeletePortMapping", []soapArg{
		{"NewRemoteHost", ""},
		{"NewExternalPort", strconv.Itoa(int(st.External.Port()))},
		{"NewProtocol", "UDP"},
	})
	if isUPnPCode(err, upnpNoSuchEntry) {
		return nil
	}
	return err
}

// soap calls action on svc and returns the arguments of its answer.
func (c *Client) soap(ctx context.Context, svc upnpService, action string, args []soapArg) (map[string]string, error) {
	ctx, cancel := context.WithTimeout(ctx, httpTimeout)
	defer cancel()
	body := appendSOAPRequest(nil, svc.Type, action, args)
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, svc.ControlURL.String(), bytes.NewReader(body))
	if err != nil {
		return nil, fmt.Errorf("upnp: %s: %w", action, err)
	}
	req.Header.Set("Content-Type", `text/xml; charset="utf-8"`)
	// Set as written: the canonical "Soapaction" confuses some routers.
	req.Header["SOAPAction"] = []string{`"` + svc.Type + "#" + action + `"`}
	resp, err := c.http.Do(req)
	if err != nil {
		return nil, fmt.Errorf("upnp: %s: %w", action, err)
	}
	defer resp.Body.Close()
	b, err := readAtMost(resp.Body, maxSOAPLen)
	if err != nil {
		return nil, fmt.Errorf("upnp: %s: %w", action, err)
	}
	switch resp.StatusCode {
	case http.StatusOK:
		return parseSOAPResponse(b, action)
	case http.StatusInternalServerError: // a SOAP fault
		if _, err := parseSOAPResponse(b, action); err != nil {
			return nil, err
		}
	}
	return nil, fmt.Errorf("upnp: %s: HTTP %s", action, resp.Status)
}

// isUPnPCode reports whether err is a UPnP refusal with one of codes.
func isUPnPCode(err error, codes ...int) bool {
	var r *RefusedError
	if !errors.As(err, &r) || r.Protocol != UPnP {
		return false
	}
	for _, c := range codes {
		if r.Code == c {
			return true
		}
	}
	return false
}

// randomPort returns a random unprivileged port.
func randomPort() uint16 { return uint16(1024 + rand.N(65536-1024)) }
