package node

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/parley-p2p/parley/directory/client"
	"github.com/parley-p2p/parley/transport"
)

// This file is the node's side of the directory server: the account, the
// contact list and the event stream that carries presence and offers.

// Register creates an account on the directory server and logs this device
// in to it.
func (n *Node) Register(ctx context.Context, username, password string) error {
	server, err := n.serverURL()
	if err != nil {
		return err
	}
	if _, err := client.New(server, n.hc).Register(ctx, username, password); err != nil {
		return n.dirErr(err, username)
	}
	return n.Login(ctx, username, password)
}

// Login logs this device in as username, registering its public key.
func (n *Node) Login(ctx context.Context, username, password string) error {
	server, err := n.serverURL()
	if err != nil {
		return err
	}
	dc := client.New(server, n.hc)
	name := n.cfg.DeviceName
	if name == "" {
		name, _ = os.Hostname()
		if name == "" {
			name = "parley"
		}
	}
	if _, err := dc.Login(ctx, username, password, name, client.Key(n.pub)); err != nil {
		return n.dirErr(err, username)
	}
	if err := n.st.setSetting(ctx, settingToken, dc.Token); err != nil {
		return fmt.Errorf("save login: %w", err)
	}
	if err := n.st.setSetting(ctx, settingUsername, username); err != nil {
		return fmt.Errorf("save login: %w", err)
	}
	n.mu.Lock()
	changed := n.username != username
	n.dc, n.username = dc, username
	stop := n.streamStop
	n.mu.Unlock()
	if changed {
		n.st.replaceContacts(ctx, nil)
		n.mu.Lock()
		n.setContactsLocked(nil)
		n.mu.Unlock()
	}
	if stop != nil {
		stop() // reconnect the event stream with the new token
	}
	n.wakeEvents()
	n.log.Info("logged in", "user", username)
	return nil
}

// Logout revokes the device's token, ends its sessions and forgets the
// contact cache.
func (n *Node) Logout(ctx context.Context) error {
	n.mu.Lock()
	dc := n.dc
	n.dc, n.username = nil, ""
	stop := n.streamStop
	peers := n.peersLocked()
	n.setContactsLocked(nil)
	n.mu.Unlock()
	if dc == nil {
		return ErrNotLoggedIn
	}
	if stop != nil {
		stop()
	}
	for _, p := range peers {
		p.closeSessions("logged out")
	}
	n.st.setSetting(ctx, settingToken, "")
	n.st.setSetting(ctx, settingUsername, "")
	n.st.replaceContacts(ctx, nil)
	n.wakeEvents()
	// Revoke last: the local logout holds even if the server is down.
	if err := dc.Logout(ctx); err != nil && client.StatusOf(err) != http.StatusUnauthorized {
		return fmt.Errorf("logged out locally, but the server did not revoke the token: %w", n.dirErr(err, ""))
	}
	return nil
}

func (n *Node) serverURL() (string, error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.server == "" {
		return "", ErrNoServer
	}
	return n.server, nil
}

func (n *Node) dirClient() (*client.Client, error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.dc == nil {
		return nil, ErrNotLoggedIn
	}
	return n.dc, nil
}

// dirErr turns a directory client error into one sentence a user can act
// on.
func (n *Node) dirErr(err error, username string) error {
	var ae *client.Error
	if !errors.As(err, &ae) {
		if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
			return err
		}
		server, _ := n.serverURL()
		return fmt.Errorf("cannot reach the directory server at %s (%v): check that it runs and the URL is right", server, unwrapNetErr(err))
	}
	switch ae.Code {
	case "unauthorized":
		return errors.New("the directory server no longer accepts this device's login: run `parley login`")
	case "bad_credentials":
		return errors.New("wrong username or password")
	case "username_taken":
		return fmt.Errorf("the username %q is taken: pick another", username)
	case "invalid_username":
		return errors.New("usernames are 3 to 32 characters from a-z, 0-9, '.', '_' and '-', starting with a letter")
	case "weak_password":
		return fmt.Errorf("the password is too weak: %s", ae.Message)
	case "not_found":
		if username != "" {
			return fmt.Errorf("no user %q (or no request from them): check the name", username)
		}
	case "already_contacts":
		return fmt.Errorf("%s is already a contact (or already asked)", username)
	case "blocked":
		return fmt.Errorf("you block %s: run `parley contacts unblock %s` first", username, username)
	case "rate_limited":
		return errors.New("the directory server is rate limiting this device: wait a little and try again")
	case "device_key_taken":
		return errors.New("this device's key is registered to another account: use another data directory")
	}
	return fmt.Errorf("directory server: %s", ae.Message)
}

// unwrapNetErr shortens a net/http error to its cause.
func unwrapNetErr(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		err = ue.Err
	}
	var oe *net.OpError
	if errors.As(err, &oe) {
		return oe.Err
	}
	return err
}

// Contact is a row of the contact list as the CLI shows it.
type Contact struct {
	Username string   `json:"username"`
	State    string   `json:"state"` // outgoing, incoming, mutual, blocked
	Online   bool     `json:"online"`
	Devices  []string `json:"devices,omitempty"` // device keys
}

// contactOp runs one contact operation on the server and refreshes the
// contact list.
func (n *Node) contactOp(ctx context.Context, username string, op func(*client.Client) error) error {
	dc, err := n.dirClient()
	if err != nil {
		return err
	}
	if err := op(dc); err != nil {
		return n.dirErr(err, username)
	}
	if err := n.refreshContacts(ctx); err != nil {
		n.log.Warn("refresh contacts", "err", err)
	}
	return nil
}

// AddContact asks username to be a contact. It returns "outgoing", or
// "mutual" if they had asked already.
func (n *Node) AddContact(ctx context.Context, username string) (string, error) {
	var st string
	err := n.contactOp(ctx, username, func(dc *client.Client) (err error) {
		st, err = dc.RequestContact(ctx, username)
		return err
	})
	return st, err
}

// AcceptContact accepts username's request.
func (n *Node) AcceptContact(ctx context.Context, username string) error {
	return n.contactOp(ctx, username, func(dc *client.Client) error { return dc.AcceptContact(ctx, username) })
}

// DeclineContact declines username's request.
func (n *Node) DeclineContact(ctx context.Context, username string) error {
	return n.contactOp(ctx, username, func(dc *client.Client) error { return dc.DeclineContact(ctx, username) })
}

// RemoveContact ends a contact or cancels a request, and closes its
// sessions.
func (n *Node) RemoveContact(ctx context.Context, username string) error {
	return n.contactOp(ctx, username, func(dc *client.Client) error { return dc.RemoveContact(ctx, username) })
}

// BlockContact blocks username.
func (n *Node) BlockContact(ctx context.Context, username string) error {
	return n.contactOp(ctx, username, func(dc *client.Client) error { return dc.BlockContact(ctx, username) })
}

// UnblockContact lifts a block.
func (n *Node) UnblockContact(ctx context.Context, username string) error {
	return n.contactOp(ctx, username, func(dc *client.Client) error { return dc.UnblockContact(ctx, username) })
}

// Contacts returns the contact list: fresh from the server when it answers,
// else the cached one (cached is then true).
func (n *Node) Contacts(ctx context.Context) (list []Contact, cached bool, err error) {
	if _, err := n.dirClient(); err != nil {
		return nil, false, err
	}
	if err := n.refreshContacts(ctx); err != nil {
		cached = true
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	for _, c := range n.contacts {
		row := Contact{Username: c.Username, State: c.State}
		for _, d := range c.Devices {
			row.Devices = append(row.Devices, d.Key.String())
			if p := n.peers[d.Key]; p != nil && p.online {
				row.Online = true
			}
		}
		list = append(list, row)
	}
	return list, cached, nil
}

// refreshContacts reads the contact list from the server into the cache.
func (n *Node) refreshContacts(ctx context.Context) error {
	// One refresh at a time, so that a list read earlier never overwrites
	// one read later.
	select {
	case n.refreshing <- struct{}{}:
	case <-ctx.Done():
		return ctx.Err()
	}
	defer func() { <-n.refreshing }()
	dc, err := n.dirClient()
	if err != nil {
		return err
	}
	list, _, _, err := dc.Contacts(ctx, "")
	if err != nil {
		return n.dirErr(err, "")
	}
	var cache []cachedContact
	online := map[transport.PublicKey]bool{}
	for _, c := range list {
		cc := cachedContact{Username: c.Username, State: c.State}
		for _, d := range c.Devices {
			cc.Devices = append(cc.Devices, cachedDevice{Key: transport.PublicKey(d.Key), Name: d.Name, Endpoints: d.Endpoints})
			online[transport.PublicKey(d.Key)] = d.Online
		}
		cache = append(cache, cc)
	}
	if err := n.st.replaceContacts(ctx, cache); err != nil {
		return fmt.Errorf("save contacts: %w", err)
	}
	// Re-read so that cached last-direct addresses come along.
	if cache, err = n.st.contacts(ctx); err != nil {
		return err
	}
	n.mu.Lock()
	n.setContactsLocked(cache)
	for k, on := range online {
		if p := n.peers[k]; p != nil {
			p.online = on
		}
	}
	n.mu.Unlock()
	return nil
}

// setContactsLocked installs list as the contact list, creating a peer for
// each device of a mutual contact and keeping existing peers' sessions.
func (n *Node) setContactsLocked(list []cachedContact) {
	n.contacts = list
	seen := map[transport.PublicKey]bool{}
	for _, c := range list {
		if c.State != "mutual" {
			continue
		}
		for _, d := range c.Devices {
			seen[d.Key] = true
			p := n.peers[d.Key]
			if p == nil {
				key, id, ok := pairKeys(n.key, d.Key)
				if !ok {
					continue
				}
				p = newPeer(n, d.Key, key, id)
				n.peers[d.Key] = p
				n.pairs[id] = p
			}
			p.username = c.Username
			p.name = d.Name
			p.endpoints = d.Endpoints
			if d.LastDirect != "" {
				p.lastDirect = d.LastDirect
			}
			p.mutual = true
		}
	}
	for k, p := range n.peers {
		if !seen[k] {
			p.mutual = false
			go p.closeSessions("no longer a contact")
		}
	}
}

func (n *Node) peersLocked() []*peer {
	var ps []*peer
	for _, p := range n.peers {
		ps = append(ps, p)
	}
	return ps
}

func (n *Node) wakeEvents() {
	select {
	case n.loginC <- struct{}{}:
	default:
	}
}

// askRediscover asks the refresh loop to gather and report our candidates
// now.
func (n *Node) askRediscover() {
	select {
	case n.regather <- struct{}{}:
	default:
	}
}

func (n *Node) askRefresh() {
	select {
	case n.refresh <- struct{}{}:
	default:
	}
}

// contactRefresher refreshes the contact list when an event asks for it,
// off the event loop so that reading events never waits for it.
func (n *Node) contactRefresher(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-n.refresh:
			if err := n.refreshContacts(ctx); err != nil && ctx.Err() == nil {
				n.log.Debug("refresh contacts", "err", err)
			}
		}
	}
}

// eventLoop holds the device's event stream while logged in, reconnecting
// with backoff (1 s doubling to 30 s) when the server goes away.
func (n *Node) eventLoop(ctx context.Context) {
	backoff := time.Second
	for ctx.Err() == nil {
		dc, err := n.dirClient()
		if err != nil {
			n.setServer(false, "")
			select {
			case <-ctx.Done():
				return
			case <-n.loginC:
				continue
			}
		}
		sctx, stop := context.WithCancel(ctx)
		n.mu.Lock()
		n.streamStop = stop
		n.mu.Unlock()
		connected, err := n.holdStream(sctx, dc)
		stop()
		if ctx.Err() != nil {
			return
		}
		if connected {
			backoff = time.Second
		}
		if err != nil {
			n.setServer(false, n.dirErr(err, "").Error())
			n.log.Info("event stream ended", "err", err, "retry", backoff)
			if client.StatusOf(err) == http.StatusUnauthorized {
				// Wait for a new login rather than hammer the server.
				select {
				case <-ctx.Done():
					return
				case <-n.loginC:
				}
				continue
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-n.loginC:
		case <-time.After(backoff):
			backoff = min(2*backoff, 30*time.Second)
		}
	}
}

func (n *Node) setServer(up bool, errText string) {
	n.mu.Lock()
	n.serverUp, n.serverErr = up, errText
	n.mu.Unlock()
}

// holdStream opens the event stream, brings the server up to date (our
// candidates, the contact list) and handles events until the stream ends.
func (n *Node) holdStream(ctx context.Context, dc *client.Client) (connected bool, err error) {
	es, err := dc.Events(ctx)
	if err != nil {
		return false, err
	}
	defer es.CloseNow()
	if _, err := es.Next(ctx); err != nil { // hello
		return false, err
	}
	n.setServer(true, "")
	n.log.Info("connected to the directory server")
	syncDone := make(chan struct{})
	go func() {
		defer close(syncDone)
		n.syncWithServer(ctx, dc)
	}()
	defer func() { <-syncDone }()
	for {
		ev, err := es.Next(ctx)
		if err != nil {
			return true, err
		}
		n.handleEvent(ctx, ev)
	}
}

// syncWithServer reports our candidates and reads the contact list after
// (re)connecting to the server.
func (n *Node) syncWithServer(ctx context.Context, dc *client.Client) {
	n.discover(ctx, dc)
	if err := n.refreshContacts(ctx); err != nil && ctx.Err() == nil {
		n.log.Warn("refresh contacts", "err", err)
	}
	select {
	case n.snWake <- struct{}{}:
	default:
	}
	n.measureSupernodes(ctx, dc)
}

func (n *Node) handleEvent(ctx context.Context, ev client.Event) {
	n.log.Debug("event", "type", ev.Type, "from", ev.Username+ev.From)
	switch ev.Type {
	case "presence":
		if ev.Device != nil {
			n.mu.Lock()
			if p := n.peers[transport.PublicKey(*ev.Device)]; p != nil {
				p.online = ev.Online
			}
			n.mu.Unlock()
		}
		n.askRefresh() // endpoints may have changed
	case "contact_request", "contact_accepted", "contact_removed", "device_revoked":
		n.askRefresh()
	case "offer":
		n.goroutine(func(nctx context.Context) { n.handleOffer(nctx, ev) })
	case "mailbox":
		n.handlersMu.RLock()
		f := n.onMailbox
		n.handlersMu.RUnlock()
		if f != nil {
			f()
		}
	case "closing":
		n.log.Info("server closing the event stream", "reason", ev.Reason)
	}
}

// serverConfig is GET /v1/config.
type serverConfig struct {
	STUN    string `json:"stun"`
	STUNAlt string `json:"stun_alt"`
}

// stunServers resolves the STUN addresses the directory announces in GET
// /v1/config (an unspecified host there means the server's own host);
// Config.STUN overrides the primary one.
func (n *Node) stunServers(ctx context.Context) (primary, alt netip.AddrPort) {
	n.mu.Lock()
	primary, alt = n.stunAddr, n.stunAlt
	server := n.server
	n.mu.Unlock()
	if primary.IsValid() {
		return primary, alt
	}
	var cfg serverConfig
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, strings.TrimSuffix(server, "/")+"/v1/config", nil)
	if err == nil {
		if resp, err := n.hc.Do(req); err == nil {
			json.NewDecoder(http.MaxBytesReader(nil, resp.Body, 4096)).Decode(&cfg)
			resp.Body.Close()
		}
	}
	if n.cfg.STUN != "" {
		cfg.STUN = n.cfg.STUN
	}
	u, _ := url.Parse(server)
	host := ""
	if u != nil {
		host = u.Hostname()
	}
	primary = resolveUDP(ctx, cfg.STUN, host)
	alt = resolveUDP(ctx, cfg.STUNAlt, host)
	if primary.IsValid() {
		n.mu.Lock()
		n.stunAddr, n.stunAlt = primary, alt
		n.mu.Unlock()
	}
	return primary, alt
}

func resolveUDP(ctx context.Context, addr, defaultHost string) netip.AddrPort {
	if addr == "" {
		return netip.AddrPort{}
	}
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return netip.AddrPort{}
	}
	if a, err := netip.ParseAddr(host); host == "" || (err == nil && a.IsUnspecified()) {
		host = defaultHost
	}
	ips, err := net.DefaultResolver.LookupNetIP(ctx, "ip4", host)
	if err != nil || len(ips) == 0 {
		return netip.AddrPort{}
	}
	ap, err := netip.ParseAddrPort(net.JoinHostPort(ips[0].Unmap().String(), port))
	if err != nil {
		return netip.AddrPort{}
	}
	return ap
}

// discover learns our reflexive address and NAT type by STUN, gathers the
// candidates and reports them to the server.
func (n *Node) discover(ctx context.Context, dc *client.Client) {
	primary, alt := n.stunServers(ctx)
	var refl, refl2 netip.AddrPort
	if primary.IsValid() {
		sctx, cancel := context.WithTimeout(ctx, 3*time.Second)
		var err error
		refl, err = n.stunBind(sctx, primary)
		if err != nil {
			n.log.Info("no reflexive address", "stun", primary, "err", err)
		}
		if err == nil && alt.IsValid() {
			refl2, _ = n.stunBind(sctx, alt)
		}
		cancel()
	}
	hosts := n.hostCandidates()
	nat := "unknown"
	// No STUN answer while the server answers over HTTP: UDP is blocked
	// on our way out (or the server's STUN is down, which looks the same
	// and is served as well by relaying over TCP).
	blocked := primary.IsValid() && !refl.IsValid() && ctx.Err() == nil && dc != nil
	switch {
	case blocked:
		nat = "udp-blocked"
	case !refl.IsValid():
	case slices.Contains(hosts, refl):
		nat = "public"
	case refl2.IsValid() && refl2 != refl:
		nat = "symmetric"
	case refl2.IsValid():
		nat = "endpoint-independent"
	}
	cands := hosts
	n.mu.Lock()
	mapped := n.mapped
	n.mu.Unlock()
	if mapped.IsValid() && !slices.Contains(cands, mapped) {
		cands = append([]netip.AddrPort{mapped}, cands...)
	}
	if refl.IsValid() && !slices.Contains(cands, refl) {
		cands = append([]netip.AddrPort{refl}, cands...)
	}
	n.mu.Lock()
	old := n.reflexive
	n.reflexive, n.nat, n.candidates = refl, nat, cands
	n.udpBlocked = blocked
	n.mu.Unlock()
	if old.IsValid() && refl.IsValid() && old != refl {
		n.log.Info("NAT mapping changed", "old", old, "new", refl)
		n.repunchAll()
	}
	eps := make([]string, 0, len(cands))
	n.mu.Lock()
	offered := n.offeredCandidatesLocked()
	n.mu.Unlock()
	for _, c := range offered {
		eps = append(eps, c.String())
	}
	if len(eps) > 16 {
		eps = eps[:16]
	}
	if dc != nil {
		if err := dc.SetEndpoints(ctx, eps); err != nil && ctx.Err() == nil {
			n.log.Warn("report endpoints", "err", err)
		}
	}
	n.log.Info("candidates", "reflexive", refl, "nat", nat, "candidates", eps)
}

// hostCandidates are the socket's own addresses: the one it is bound to,
// or every non-link-local interface address when bound to all.
func (n *Node) hostCandidates() []netip.AddrPort {
	la, err := netip.ParseAddrPort(n.pc.LocalAddr().String())
	if err != nil {
		return nil
	}
	if !la.Addr().IsUnspecified() {
		return []netip.AddrPort{netip.AddrPortFrom(la.Addr().Unmap(), la.Port())}
	}
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		return nil
	}
	var out, loop []netip.AddrPort
	for _, a := range addrs {
		pfx, err := netip.ParsePrefix(a.String())
		if err != nil {
			continue
		}
		ip := pfx.Addr().Unmap()
		if !ip.Is4() || ip.IsLinkLocalUnicast() || ip.IsMulticast() {
			continue
		}
		if ip.IsLoopback() {
			loop = append(loop, netip.AddrPortFrom(ip, la.Port()))
			continue
		}
		out = append(out, netip.AddrPortFrom(ip, la.Port()))
	}
	// Loopback last: it only helps two daemons on one machine.
	return append(out, loop...)
}

// refreshLoop re-checks the reflexive address (noticing NAT rebinding) and
// keeps the server's view of our candidates current.
func (n *Node) refreshLoop(ctx context.Context) {
	t := time.NewTicker(n.cfg.refreshInterval())
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-n.regather:
		}
		n.mu.Lock()
		up, dc := n.serverUp, n.dc
		n.mu.Unlock()
		if !up {
			dc = nil // STUN may still answer; the server will hear on reconnect
		}
		n.discover(ctx, dc)
		if dc != nil {
			n.measureSupernodes(ctx, dc)
			n.retryDirect()
		}
	}
}
