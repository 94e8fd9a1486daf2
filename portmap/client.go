package portmap

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"sync"
	"time"
)

// Protocol is a port-mapping protocol.
type Protocol string

const (
	PCP    Protocol = "pcp"     // Port Control Protocol, RFC 6887
	NATPMP Protocol = "nat-pmp" // NAT Port Mapping Protocol, RFC 6886
	UPnP   Protocol = "upnp"    // UPnP Internet Gateway Device, WANIPConnection
)

// DefaultProtocols is the order in which a Client tries the protocols
// when Config.Protocols is nil: PCP supersedes NAT-PMP, and both are one
// UDP round trip where UPnP takes discovery, an XML fetch and SOAP calls.
var DefaultProtocols = []Protocol{PCP, NATPMP, UPnP}

// DefaultLifetime is the mapping lifetime a Client asks for when
// Config.Lifetime is zero: the two hours RFC 6886 §3.3 recommends.
const DefaultLifetime = 2 * time.Hour

// upnpDescription labels the client's UPnP mappings in the router's list.
const upnpDescription = "parley"

// Timing. The gateway is one hop away on the LAN: it answers within
// milliseconds or not at all, so waits are short (as Tailscale's
// portmapper's 250 ms) and double on each resend (RFC 6886 §3.1).
var (
	// probeWaits are the waits after each send of a PCP or NAT-PMP probe.
	probeWaits = []time.Duration{250 * time.Millisecond, 500 * time.Millisecond}
	// requestWaits are the waits after each send of a mapping request.
	requestWaits = []time.Duration{250 * time.Millisecond, 500 * time.Millisecond, time.Second}
	// ssdpResend and ssdpWait: an M-SEARCH is sent again after
	// ssdpResend, and discovery gives up after ssdpWait, which covers
	// the random delay of up to MX (1 s) that devices put before answering.
	ssdpResend = 250 * time.Millisecond
	ssdpWait   = 1100 * time.Millisecond
	// httpTimeout bounds each UPnP HTTP request.
	httpTimeout = 2 * time.Second
)

var (
	// ErrNoService means that the gateway answered none of the
	// port-mapping protocols tried.
	ErrNoService = errors.New("portmap: no port-mapping service")
	// ErrClosed is returned by a Client's methods after Close.
	ErrClosed = errors.New("portmap: client closed")
	// ErrNoMapping is returned by Renew when there is no mapping to renew.
	ErrNoMapping = errors.New("portmap: no mapping")
)

// RefusedError is a gateway's refusal of a request: a PCP or NAT-PMP
// result code other than success, or a UPnP error in a SOAP fault.
type RefusedError struct {
	Protocol Protocol
	Code     int    // the result code, or the UPnP error code
	Reason   string // the code's name in the RFC, or the router's errorDescription
}

func (e *RefusedError) Error() string {
	return fmt.Sprintf("%s: refused: %s (%d)", e.Protocol, e.Reason, e.Code)
}

// Config configures a Client. The zero value works.
type Config struct {
	// Gateway is the router to ask for mappings. Zero means the IPv4
	// default gateway (DefaultGateway), looked up again on every Map and
	// Renew so that a change of network is noticed. An IPv6 gateway is
	// asked with PCP only, the one protocol of the three that speaks
	// IPv6, for a mapping of the IPv6 address this machine sends to it
	// from: on a router without IPv6 NAT, a firewall pinhole.
	Gateway netip.Addr

	// Protocols are the protocols to try, in order of preference. Nil
	// means DefaultProtocols. A single protocol forces it.
	Protocols []Protocol

	// Lifetime is the mapping lifetime to ask for; the gateway may grant
	// less or more. Zero means DefaultLifetime.
	Lifetime time.Duration

	// ListenPacket opens the unconnected UDP socket for UPnP discovery.
	// Nil means net.ListenConfig's.
	ListenPacket func(ctx context.Context, network, address string) (net.PacketConn, error)

	// Dial opens the UDP sockets, connected to the gateway, for PCP and
	// NAT-PMP, and the TCP connections for UPnP's HTTP. Nil means
	// net.Dialer's.
	Dial func(ctx context.Context, network, address string) (net.Conn, error)

	// ListenMulticast opens the socket on which the client hears the
	// gateway announce that it restarted or changed its address: UDP port
	// 5350, joined to group (224.0.0.1, or ff02::1 for an IPv6 gateway)
	// on ifi, the interface with the client's address on the gateway's
	// LAN, or nil if that was not found. Nil means net.ListenMulticastUDP,
	// which shares the port with other programs (SO_REUSEADDR). If it
	// fails, a restart is noticed at the next renewal.
	ListenMulticast func(network string, ifi *net.Interface, group *net.UDPAddr) (net.PacketConn, error)

	// Logger receives debug logs of probes and requests and info logs of
	// mappings made and deleted. Nil means no logs.
	Logger *slog.Logger
}

// Mapping is a UDP port mapping on a gateway: packets sent to External
// from anywhere on the internet are forwarded to Internal.
type Mapping struct {
	Protocol Protocol
	Gateway  netip.Addr
	Internal netip.AddrPort // this machine's address on the gateway's LAN, and the mapped port
	External netip.AddrPort // the public address and port

	// Lifetime is what the gateway granted (for UPnP, which does not
	// say, what was asked), Expires when it runs out, and RenewAt half
	// of it, when Renew should be called.
	Lifetime time.Duration
	Expires  time.Time
	RenewAt  time.Time
}

func (m Mapping) String() string {
	return fmt.Sprintf("%s %v→%v via %v for %v", m.Protocol, m.External, m.Internal, m.Gateway, m.Lifetime)
}

// Client maps one UDP port on the gateway with PCP, NAT-PMP or UPnP IGD,
// renews the mapping and deletes it. It remembers which protocol worked,
// so a renewal is one round trip. With PCP and NAT-PMP it also listens
// for the gateway's announcements, and maps again by itself when the
// gateway restarts (see Changed). Its methods are safe for concurrent
// use; Map, Renew and Close run one at a time.
type Client struct {
	cfg     Config
	log     *slog.Logger
	http    *http.Client
	changed chan struct{} // Changed; buffered, holds at most one

	// Where the gateway is asked; tests move them to run fake gateways on
	// loopback, and turn multicast off so nothing leaves it.
	pmpPort   uint16         // PCP and NAT-PMP
	ssdpPort  uint16         // unicast M-SEARCH to the gateway
	ssdpGroup netip.AddrPort // multicast M-SEARCH; zero for none
	// announceJitter bounds the random wait before mapping again after
	// an announcement; tests set 0.
	announceJitter time.Duration

	// op serializes Map, Renew, Close and the remapping after an
	// announcement, and is held across their round trips (each bounded by
	// the timeouts above). It protects known. Lock order: op, then mu.
	op    sync.Mutex
	known gatewayInfo

	// lwg counts the listener goroutines, which Close waits for. A
	// listener goroutine takes op, so nothing that holds op waits for it.
	lwg sync.WaitGroup

	mu     sync.Mutex // protects the fields below
	closed bool
	cur    *mapState // the current mapping, or nil
	lis    *listener // hears the current gateway's announcements, or nil
}

// gatewayInfo is what the client learned about one gateway.
type gatewayInfo struct {
	gw          netip.Addr
	proto       Protocol    // the protocol that last worked, or ""
	pmpExternal netip.Addr  // NAT-PMP: the external address
	upnp        upnpService // UPnP: the service found

	// The epoch times the gateway's servers last answered with, which
	// tell when it has lost its mappings (epoch.observe).
	pcpEpoch, pmpEpoch epoch
}

// mapState is a mapping with what it takes to renew and delete it.
type mapState struct {
	Mapping
	nonce pcpNonce    // PCP
	upnp  upnpService // UPnP

	// lost: the epoch of the answer that granted it showed that the
	// gateway had lost its state since the answer before (PCP, NAT-PMP).
	lost bool
}

// New returns a Client configured by cfg. It sends nothing until Map.
func New(cfg Config) *Client {
	c := &Client{
		cfg:            cfg,
		log:            cfg.Logger,
		changed:        make(chan struct{}, 1),
		pmpPort:        pmpPort,
		ssdpPort:       ssdpPort,
		ssdpGroup:      netip.MustParseAddrPort(ssdpMulticast),
		announceJitter: announceJitter,
	}
	if c.log == nil {
		c.log = slog.New(slog.DiscardHandler)
	}
	c.http = &http.Client{
		Transport: &http.Transport{
			Proxy:                  nil, // the gateway is on the LAN: never through a proxy
			DialContext:            c.dial,
			DisableKeepAlives:      true, // small routers close after each answer
			MaxResponseHeaderBytes: 16 << 10,
		},
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
	return c
}

// Map asks the gateway to forward UDP packets sent to a public address and
// port to internalPort on this machine, and returns the mapping. It tries
// the protocol that worked last on this gateway first; otherwise it probes
// for all of Config.Protocols at once and uses the first in order that
// answers. A gateway offering none of them gives an error wrapping
// ErrNoService within about a second.
//
// The Client holds one mapping: Map with another port deletes the
// previous mapping, and Map with the same port renews it.
func (c *Client) Map(ctx context.Context, internalPort uint16) (Mapping, error) {
	if internalPort == 0 {
		return Mapping{}, errors.New("portmap: internal port 0")
	}
	c.op.Lock()
	defer c.op.Unlock()
	if c.isClosed() {
		return Mapping{}, ErrClosed
	}
	return c.mapLocked(ctx, internalPort)
}

// Renew renews the current mapping, at best before its RenewAt, and
// returns it. If the gateway has changed, or lost the mapping, or no
// longer speaks its protocol, it maps the port anew, which may change
// External: a caller that announces External must compare.
func (c *Client) Renew(ctx context.Context) (Mapping, error) {
	c.op.Lock()
	defer c.op.Unlock()
	if c.isClosed() {
		return Mapping{}, ErrClosed
	}
	cur := c.current()
	if cur == nil {
		return Mapping{}, ErrNoMapping
	}
	return c.mapLocked(ctx, cur.Internal.Port())
}

// Changed returns a channel that receives a value after the client has
// found that the gateway lost the mapping, and has mapped again: because
// the gateway announced that it restarted or changed its external address
// (PCP ANNOUNCE, NAT-PMP address announcement), or because the epoch time
// in an answer to Renew showed a restart. Current then tells the mapping,
// whose External may have changed; if mapping again failed, there is
// none, and Map should be called later. Values do not queue: one stands
// for any number of changes since the last receive.
func (c *Client) Changed() <-chan struct{} { return c.changed }

// notify sends on Changed without blocking.
func (c *Client) notify() {
	select {
	case c.changed <- struct{}{}:
	default:
	}
}

// Current returns the current mapping, if there is one. It may have
// expired if Renew has not been called.
func (c *Client) Current() (Mapping, bool) {
	cur := c.current()
	if cur == nil {
		return Mapping{}, false
	}
	return cur.Mapping, true
}

// Close deletes the current mapping from the gateway and makes every
// later call fail with ErrClosed. It returns an error if the gateway did
// not confirm the deletion; the mapping then lasts until it expires.
// Closing twice is a no-op.
func (c *Client) Close(ctx context.Context) error {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return nil
	}
	c.closed = true
	lis := c.lis
	c.lis = nil
	c.mu.Unlock()
	// Before taking op: a listener goroutine may be waiting for it.
	if lis != nil {
		lis.stop()
	}
	c.lwg.Wait()

	c.op.Lock()
	defer c.op.Unlock()
	c.mu.Lock()
	cur := c.cur
	c.cur = nil
	c.mu.Unlock()
	defer c.http.CloseIdleConnections()
	if cur == nil {
		return nil
	}
	if err := c.release(ctx, cur); err != nil {
		return fmt.Errorf("portmap: delete mapping %v: %w", cur.External, err)
	}
	c.log.Info("portmap: mapping deleted", "protocol", cur.Protocol, "external", cur.External, "gateway", cur.Gateway)
	return nil
}

func (c *Client) isClosed() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.closed
}

func (c *Client) current() *mapState {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.cur
}

func (c *Client) setCurrent(st *mapState) {
	c.mu.Lock()
	c.cur = st
	c.mu.Unlock()
}

// protocols returns the protocols to try, in order.
func (c *Client) protocols() ([]Protocol, error) {
	if c.cfg.Protocols == nil {
		return DefaultProtocols, nil
	}
	if len(c.cfg.Protocols) == 0 {
		return nil, errors.New("portmap: no protocols configured")
	}
	for _, p := range c.cfg.Protocols {
		switch p {
		case PCP, NATPMP, UPnP:
		default:
			return nil, fmt.Errorf("portmap: unknown protocol %q", p)
		}
	}
	return c.cfg.Protocols, nil
}

// lifetime returns the lifetime to ask for, in seconds.
func (c *Client) lifetime() uint32 {
	d := c.cfg.Lifetime
	if d <= 0 {
		d = DefaultLifetime
	}
	s := (d + time.Second - 1) / time.Second
	return uint32(min(s, 1<<32-1))
}

// gateway returns the gateway to ask.
func (c *Client) gateway() (netip.Addr, error) {
	gw := c.cfg.Gateway
	if !gw.IsValid() {
		var err error
		if gw, err = DefaultGateway(); err != nil {
			return netip.Addr{}, err
		}
	}
	gw = gw.Unmap()
	if gw.IsUnspecified() || gw.IsMulticast() {
		return netip.Addr{}, fmt.Errorf("portmap: gateway %v is not a router's address", gw)
	}
	return gw, nil
}

// observeEpochLocked records the epoch time server in an answer of p's
// server on the gateway, received at now, and reports whether it shows
// that the gateway has lost its state. c.op must be held.
func (c *Client) observeEpochLocked(p Protocol, server uint32, now time.Time) (lost bool) {
	e, other := &c.known.pcpEpoch, &c.known.pmpEpoch
	if p == NATPMP {
		e, other = other, e
	}
	if e.observe(p, server, now) {
		return false
	}
	// A server that speaks both protocols restarted both counts; the
	// other's next answer starts afresh rather than tell the same news.
	*other = epoch{}
	return true
}

// mapLocked maps internalPort, renewing the current mapping if it is for
// the same port on the same gateway. c.op must be held.
func (c *Client) mapLocked(ctx context.Context, port uint16) (Mapping, error) {
	protos, err := c.protocols()
	if err != nil {
		return Mapping{}, err
	}
	gw, err := c.gateway()
	if err != nil {
		return Mapping{}, err
	}
	if gw.Is6() {
		if !enabled(protos, PCP) {
			return Mapping{}, fmt.Errorf("portmap: gateway %v: only PCP maps over IPv6, and it is not among the protocols configured", gw)
		}
		protos = []Protocol{PCP}
	}
	prev := c.current()
	if prev != nil && (prev.Gateway != gw || prev.Internal.Port() != port) {
		// A mapping on a gateway we have left cannot be deleted: it
		// expires by itself.
		if prev.Gateway == gw {
			if err := c.release(ctx, prev); err != nil {
				c.log.Debug("portmap: delete previous mapping", "external", prev.External, "err", err)
			}
		}
		c.setCurrent(nil)
		prev = nil
	}
	if c.known.gw != gw {
		c.known = gatewayInfo{gw: gw}
	}

	var errs []error
	// What worked last needs no probing.
	if p := c.known.proto; p != "" && enabled(protos, p) {
		st, err := c.mapWith(ctx, p, gw, port, prev)
		if err == nil {
			return c.commit(st, prev), nil
		}
		if ctx.Err() != nil {
			return Mapping{}, fmt.Errorf("portmap: gateway %v: %w", gw, err)
		}
		c.log.Debug("portmap: known protocol failed; probing", "protocol", p, "gateway", gw, "err", err)
		c.known = gatewayInfo{gw: gw}
		errs = append(errs, err)
	}

	pr := c.startProbe(ctx, gw, protos)
	defer pr.stop()
	present := false
	for _, p := range protos {
		res := pr.result(p)
		if res.present {
			present = true
		}
		if !res.ok {
			c.log.Debug("portmap: probe", "protocol", p, "gateway", gw, "present", res.present, "err", res.err)
			if res.present {
				errs = append(errs, res.err)
			}
			continue
		}
		c.log.Debug("portmap: probe", "protocol", p, "gateway", gw, "present", true)
		switch p {
		case NATPMP:
			c.known.pmpExternal = res.pmpExternal
		case UPnP:
			c.known.upnp = res.upnp
		}
		lost := false
		if !res.epochAt.IsZero() {
			lost = c.observeEpochLocked(p, res.epoch, res.epochAt)
		}
		st, err := c.mapWith(ctx, p, gw, port, prev)
		if err == nil {
			c.known.proto = p
			st.lost = st.lost || lost
			return c.commit(st, prev), nil
		}
		c.log.Debug("portmap: map", "protocol", p, "gateway", gw, "err", err)
		errs = append(errs, err)
		if ctx.Err() != nil {
			break
		}
	}
	if err := ctx.Err(); err != nil {
		return Mapping{}, fmt.Errorf("portmap: gateway %v: %w", gw, err)
	}
	if !present && len(errs) == 0 {
		names := make([]string, len(protos))
		for i, p := range protos {
			names[i] = string(p)
		}
		return Mapping{}, fmt.Errorf("%w on gateway %v (tried %s)", ErrNoService, gw, strings.Join(names, ", "))
	}
	return Mapping{}, fmt.Errorf("portmap: gateway %v: %w", gw, joinErrors(errs))
}

func enabled(protos []Protocol, p Protocol) bool {
	for _, q := range protos {
		if q == p {
			return true
		}
	}
	return false
}

// commit makes st the current mapping, logs it if it is new or changed,
// listens for the gateway's announcements, and says on Changed if the
// gateway had lost prev. c.op must be held.
func (c *Client) commit(st, prev *mapState) Mapping {
	c.setCurrent(st)
	switch {
	case prev != nil && st.lost:
		c.log.Info("portmap: the gateway had lost the mapping; mapped again", "protocol", st.Protocol, "external", st.External, "was", prev.External, "gateway", st.Gateway)
	case prev == nil || prev.External != st.External || prev.Protocol != st.Protocol:
		c.log.Info("portmap: mapped", "protocol", st.Protocol, "external", st.External, "internal", st.Internal, "gateway", st.Gateway, "lifetime", st.Lifetime)
	default:
		c.log.Debug("portmap: renewed", "protocol", st.Protocol, "external", st.External, "lifetime", st.Lifetime)
	}
	c.listenLocked(st)
	if prev != nil && st.lost {
		c.notify()
	}
	return st.Mapping
}

// mapWith maps port with protocol p. prev, if it is a mapping with p,
// is renewed: same PCP nonce, same external port asked for.
func (c *Client) mapWith(ctx context.Context, p Protocol, gw netip.Addr, port uint16, prev *mapState) (*mapState, error) {
	if prev != nil && prev.Protocol != p {
		prev = nil
	}
	switch p {
	case PCP:
		return c.mapPCP(ctx, gw, port, prev)
	case NATPMP:
		return c.mapPMP(ctx, gw, port, prev)
	case UPnP:
		return c.mapUPnP(ctx, gw, port, prev)
	}
	return nil, fmt.Errorf("portmap: unknown protocol %q", p)
}

// newState returns the state of a mapping granted now for lifetime
// seconds.
func newState(p Protocol, gw netip.Addr, internal, external netip.AddrPort, lifetime uint32) *mapState {
	now := time.Now()
	d := time.Duration(lifetime) * time.Second
	return &mapState{Mapping: Mapping{
		Protocol: p,
		Gateway:  gw,
		Internal: internal,
		External: external,
		Lifetime: d,
		Expires:  now.Add(d),
		RenewAt:  now.Add(d / 2),
	}}
}

// checkExternal reports whether a gateway's answer is a usable public
// address and port.
func checkExternal(p Protocol, ext netip.AddrPort) error {
	a := ext.Addr()
	if !a.IsValid() || a.IsUnspecified() || a.IsLoopback() || a.IsMulticast() || a.IsLinkLocalUnicast() || ext.Port() == 0 {
		return fmt.Errorf("%s: gateway answered an unusable external address %v", p, ext)
	}
	return nil
}

// release deletes st's mapping from its gateway.
func (c *Client) release(ctx context.Context, st *mapState) error {
	switch st.Protocol {
	case PCP:
		return c.releasePCP(ctx, st)
	case NATPMP:
		return c.releasePMP(ctx, st)
	case UPnP:
		return c.releaseUPnP(ctx, st)
	}
	return nil
}

// newNonce returns a random PCP mapping nonce.
func newNonce() pcpNonce {
	var n pcpNonce
	rand.Read(n[:])
	return n
}

// joinErrors joins errs into one error whose message is one line.
func joinErrors(errs []error) error {
	if len(errs) == 1 {
		return errs[0]
	}
	return multiError(errs)
}

type multiError []error

func (m multiError) Error() string {
	s := make([]string, len(m))
	for i, e := range m {
		s[i] = e.Error()
	}
	return strings.Join(s, "; ")
}

func (m multiError) Unwrap() []error { return m }
