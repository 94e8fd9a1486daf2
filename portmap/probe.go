package portmap

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"os"
	"sync"
	"syscall"
	"time"
)

// probeResult says whether a gateway offers a protocol.
type probeResult struct {
	present bool  // something answered in the protocol
	ok      bool  // and it looks usable
	err     error // why not ok

	pmpExternal netip.Addr  // NAT-PMP: the external address
	upnp        upnpService // UPnP: the service to use

	// PCP and NAT-PMP: the epoch time in the answer, and when it came.
	epoch   uint32
	epochAt time.Time
}

// prober runs one probe per protocol at once. Each probe ends by itself
// within its timeouts (about a second), or when stop cancels it.
type prober struct {
	cancel  context.CancelFunc
	wg      sync.WaitGroup
	results map[Protocol]chan probeResult
}

// startProbe starts probing gw for protos.
func (c *Client) startProbe(ctx context.Context, gw netip.Addr, protos []Protocol) *prober {
	ctx, cancel := context.WithCancel(ctx)
	pr := &prober{cancel: cancel, results: make(map[Protocol]chan probeResult, len(protos))}
	for _, p := range protos {
		ch := make(chan probeResult, 1)
		pr.results[p] = ch
		pr.wg.Go(func() { ch <- c.probe(ctx, p, gw) })
	}
	return pr
}

// result waits for the probe of p.
func (pr *prober) result(p Protocol) probeResult { return <-pr.results[p] }

// stop cancels the probes still running and waits for them to end.
func (pr *prober) stop() {
	pr.cancel()
	pr.wg.Wait()
}

// probe finds out whether gw offers p, without creating any state on it:
// a PCP ANNOUNCE, a NAT-PMP external address request, or an SSDP search
// and the fetch of the device description.
func (c *Client) probe(ctx context.Context, p Protocol, gw netip.Addr) probeResult {
	switch p {
	case PCP:
		return c.probePCP(ctx, gw)
	case NATPMP:
		return c.probePMP(ctx, gw)
	case UPnP:
		return c.probeUPnP(ctx, gw)
	}
	return probeResult{err: fmt.Errorf("unknown protocol %q", p)}
}

func (c *Client) probePCP(ctx context.Context, gw netip.Addr) probeResult {
	conn, local, err := c.dialGateway(ctx, gw, c.pmpPort)
	if err != nil {
		return probeResult{err: fmt.Errorf("pcp: %w", err)}
	}
	defer conn.Close()
	var res probeResult
	err = exchange(ctx, conn, appendPCPAnnounce(nil, local.Addr()), probeWaits, func(b []byte) (bool, error) {
		r, err := parsePCPResponse(b)
		if errors.Is(err, errPCPSpeaksNATPMP) {
			return true, err
		}
		// Any ANNOUNCE answer, even an error code, shows a PCP server.
		if err != nil || r.Op != pcpOpReply|pcpOpAnnounce {
			return false, nil
		}
		res.epoch, res.epochAt = r.Epoch, time.Now()
		return true, nil
	})
	if err != nil {
		return probeResult{err: fmt.Errorf("pcp: %v:%d: %w", gw, c.pmpPort, err)}
	}
	res.present, res.ok = true, true
	return res
}

func (c *Client) probePMP(ctx context.Context, gw netip.Addr) probeResult {
	conn, _, err := c.dialGateway(ctx, gw, c.pmpPort)
	if err != nil {
		return probeResult{err: fmt.Errorf("nat-pmp: %w", err)}
	}
	defer conn.Close()
	ext, err := c.pmpExternalAddr(ctx, conn, probeWaits)
	var refused *RefusedError
	switch {
	case errors.As(err, &refused):
		return probeResult{present: true, err: err}
	case err != nil:
		return probeResult{err: fmt.Errorf("nat-pmp: %v:%d: %w", gw, c.pmpPort, err)}
	}
	return probeResult{present: true, ok: true, pmpExternal: ext.addr, epoch: ext.epoch, epochAt: ext.at}
}

// pmpAddress is a NAT-PMP server's answer to an external address
// request: the address, and the epoch time with when it came.
type pmpAddress struct {
	addr  netip.Addr
	epoch uint32
	at    time.Time
}

// pmpExternalAddr asks the NAT-PMP server at the other end of conn for
// the external address.
func (c *Client) pmpExternalAddr(ctx context.Context, conn net.Conn, waits []time.Duration) (pmpAddress, error) {
	var ext pmpAddress
	err := exchange(ctx, conn, appendPMPAddrRequest(nil), waits, func(b []byte) (bool, error) {
		r, err := parsePMPResponse(b)
		if err != nil || r.Op != pmpOpReply|pmpOpAddr {
			return false, nil
		}
		if r.Result != pmpSuccess {
			return true, &RefusedError{Protocol: NATPMP, Code: int(r.Result), Reason: r.Result.String()}
		}
		ext = pmpAddress{addr: r.External, epoch: r.Epoch, at: time.Now()}
		return true, nil
	})
	if err != nil {
		return pmpAddress{}, err
	}
	if err := checkExternal(NATPMP, netip.AddrPortFrom(ext.addr, 1)); err != nil {
		return pmpAddress{}, err
	}
	return ext, nil
}

func (c *Client) probeUPnP(ctx context.Context, gw netip.Addr) probeResult {
	loc, err := c.searchSSDP(ctx, gw)
	if err != nil {
		return probeResult{err: fmt.Errorf("upnp: %w", err)}
	}
	svc, err := c.fetchDescription(ctx, gw, loc)
	if err != nil {
		return probeResult{present: true, err: err}
	}
	return probeResult{present: true, ok: true, upnp: svc}
}

// searchSSDP sends M-SEARCH for an IGD to the SSDP group and to gw itself
// (some routers answer only one of them), and returns the LOCATION of the
// first answer from gw.
func (c *Client) searchSSDP(ctx context.Context, gw netip.Addr) (string, error) {
	pc, err := c.listenPacket(ctx, "udp4", ":0")
	if err != nil {
		return "", err
	}
	defer pc.Close()
	stop := context.AfterFunc(ctx, func() { pc.SetReadDeadline(time.Unix(1, 0)) })
	defer stop()

	unicast := net.UDPAddrFromAddrPort(netip.AddrPortFrom(gw, c.ssdpPort))
	send := func() {
		// Errors are not fatal: the other destination may still answer,
		// and a lost send is resent.
		pc.WriteTo(appendSSDPSearch(nil, 0), unicast)
		if c.ssdpGroup.IsValid() {
			pc.WriteTo(appendSSDPSearch(nil, 1), net.UDPAddrFromAddrPort(c.ssdpGroup))
		}
	}
	send()
	start := time.Now()
	resent := false
	buf := make([]byte, 2048)
	for {
		next := start.Add(ssdpWait)
		if !resent {
			next = start.Add(ssdpResend)
		}
		pc.SetReadDeadline(next)
		if err := ctx.Err(); err != nil {
			return "", err
		}
		n, from, err := pc.ReadFrom(buf)
		if err != nil {
			if ctx.Err() != nil {
				return "", ctx.Err()
			}
			if !errors.Is(err, os.ErrDeadlineExceeded) {
				return "", err
			}
			if resent {
				return "", fmt.Errorf("no SSDP answer from %v", gw)
			}
			resent = true
			send()
			continue
		}
		src, ok := from.(*net.UDPAddr)
		if !ok || src.AddrPort().Addr().Unmap() != gw {
			continue // another device on the LAN: we map on the gateway only
		}
		r, err := parseSSDPResponse(buf[:n])
		if err != nil {
			c.log.Debug("portmap: bad SSDP answer", "from", src, "err", err)
			continue
		}
		return r.Location, nil
	}
}

// fetchDescription fetches the device description at loc from gw and
// returns its best WAN connection service. Whatever host loc and the
// description name, requests go to gw: the client maps on its gateway
// and nowhere else (as Tailscale's, it repoints a device that announces
// another address).
func (c *Client) fetchDescription(ctx context.Context, gw netip.Addr, loc string) (upnpService, error) {
	u, err := url.Parse(loc)
	if err != nil || u.Scheme != "http" || u.Host == "" {
		return upnpService{}, fmt.Errorf("upnp: bad description location %q", loc)
	}
	u.Host = gatewayHost(gw, u)
	ctx, cancel := context.WithTimeout(ctx, httpTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return upnpService{}, fmt.Errorf("upnp: %w", err)
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return upnpService{}, fmt.Errorf("upnp: device description: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return upnpService{}, fmt.Errorf("upnp: device description %v: HTTP %s", u, resp.Status)
	}
	body, err := readAtMost(resp.Body, maxDescriptionLen)
	if err != nil {
		return upnpService{}, fmt.Errorf("upnp: device description %v: %w", u, err)
	}
	svc, err := parseUPnPDescription(body, u)
	if err != nil {
		return upnpService{}, err
	}
	svc.ControlURL.Host = gatewayHost(gw, svc.ControlURL)
	return svc, nil
}

// gatewayHost returns u's host with its address replaced by gw.
func gatewayHost(gw netip.Addr, u *url.URL) string {
	port := u.Port()
	if port == "" {
		port = "80"
	}
	return net.JoinHostPort(gw.String(), port)
}

// readAtMost reads r to the end, failing if it holds more than n bytes.
func readAtMost(r io.Reader, n int64) ([]byte, error) {
	b, err := io.ReadAll(io.LimitReader(r, n+1))
	if err != nil {
		return nil, err
	}
	if int64(len(b)) > n {
		return nil, fmt.Errorf("longer than %d bytes", n)
	}
	return b, nil
}

var (
	// errNoAnswer: the requests went out and nothing came back.
	errNoAnswer = errors.New("no answer")
	// errUnreachable: the gateway answered ICMP port unreachable.
	errUnreachable = errors.New("nothing listens there (port unreachable)")
)

// exchange sends req on conn, a UDP socket connected to the gateway, and
// passes each datagram that comes back to handle until handle says it is
// done, returning handle's error. It resends req after each of waits and
// returns errNoAnswer after the last. An ICMP port unreachable, which the
// kernel reports on a connected socket, ends it with errUnreachable.
func exchange(ctx context.Context, conn net.Conn, req []byte, waits []time.Duration, handle func(b []byte) (done bool, err error)) error {
	stop := context.AfterFunc(ctx, func() { conn.SetReadDeadline(time.Unix(1, 0)) })
	defer stop()
	buf := make([]byte, 1100) // PCP's largest message (RFC 6887 §7)
	for _, wait := range waits {
		if _, err := conn.Write(req); err != nil {
			return udpError(err)
		}
		conn.SetReadDeadline(time.Now().Add(wait))
		// After setting the deadline, so a cancellation that came just
		// before is not overwritten by it.
		if err := ctx.Err(); err != nil {
			return err
		}
		for {
			n, err := conn.Read(buf)
			if err != nil {
				if ctx.Err() != nil {
					return ctx.Err()
				}
				if errors.Is(err, os.ErrDeadlineExceeded) {
					break // resend
				}
				return udpError(err)
			}
			if done, err := handle(buf[:n]); done {
				return err
			}
		}
	}
	return errNoAnswer
}

// udpError turns the kernel's report of an ICMP port unreachable into
// errUnreachable.
func udpError(err error) error {
	if errors.Is(err, syscall.ECONNREFUSED) {
		return errUnreachable
	}
	return err
}

// dialGateway opens a UDP socket connected to port on gw and returns it
// with its local address: the address the gateway sees requests come
// from, which PCP carries in its header and UPnP names as the internal
// client.
func (c *Client) dialGateway(ctx context.Context, gw netip.Addr, port uint16) (net.Conn, netip.AddrPort, error) {
	network := "udp4"
	if gw.Is6() {
		network = "udp6"
	}
	conn, err := c.dial(ctx, network, netip.AddrPortFrom(gw, port).String())
	if err != nil {
		return nil, netip.AddrPort{}, err
	}
	ua, ok := conn.LocalAddr().(*net.UDPAddr)
	if !ok {
		conn.Close()
		return nil, netip.AddrPort{}, fmt.Errorf("local address %v is not UDP", conn.LocalAddr())
	}
	ap := ua.AddrPort()
	return conn, netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port()), nil
}

func (c *Client) dial(ctx context.Context, network, address string) (net.Conn, error) {
	if c.cfg.Dial != nil {
		return c.cfg.Dial(ctx, network, address)
	}
	var d net.Dialer
	return d.DialContext(ctx, network, address)
}

func (c *Client) listenPacket(ctx context.Context, network, address string) (net.PacketConn, error) {
	if c.cfg.ListenPacket != nil {
		return c.cfg.ListenPacket(ctx, network, address)
	}
	var lc net.ListenConfig
	return lc.ListenPacket(ctx, network, address)
}
