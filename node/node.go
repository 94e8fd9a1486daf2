package node

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"path/filepath"
	"strconv"
	"sync"
	"time"

	"github.com/parley-p2p/parley/directory/client"
	"github.com/parley-p2p/parley/relay"
	"github.com/parley-p2p/parley/stun"
	"github.com/parley-p2p/parley/transport"
)

// Sentinel errors callers branch on. Their text is what a user sees.
var (
	ErrNotLoggedIn  = errors.New("not logged in: run `parley login` (or `parley register` for a new account)")
	ErrNoServer     = errors.New("no directory server known: start the daemon with `parley up --server URL`")
	ErrClosed       = errors.New("the daemon is shutting down")
	ErrNotContact   = errors.New("not a mutual contact: add them with `parley contacts add NAME` and wait until they accept")
	ErrNoPath       = errors.New("no path to the contact")
	errUnknownPeer  = errors.New("unknown peer device")
	errServerAbsent = errors.New("directory server unreachable")
)

// A Node is the peer daemon: one device's identity, its one UDP socket with
// the transport on it, its link to the directory server (login, contacts,
// presence, offers) and its sessions with contacts — one per pair of
// devices, whichever path carries it.
//
// The socket stack is
//
//	UDP socket (Config.Listener) → relay.Mux → transport.Endpoint
//	                                  │ other datagrams
//	                                  └→ Node.handleOther: STUN responses,
//	                                     punch probes, dial-back probes
//
// Locking: n.mu protects the fields below it; it is never held while
// calling the directory, the transport or the database, and never taken
// inside a peer's callbacks from the transport. stunMu is a leaf lock.
type Node struct {
	cfg  Config
	log  *slog.Logger
	dir  string
	key  transport.PrivateKey
	pub  transport.PublicKey
	st   *state
	hc   *http.Client
	tcfg transport.Config

	pc  net.PacketConn
	rc  *relay.Client
	mux *relay.Mux
	ep  *transport.Endpoint

	ctx      context.Context // ends when the node closes
	cancel   context.CancelFunc
	wg       sync.WaitGroup // goroutines started by the node
	loginC   chan struct{}  // wakes the event loop after login or logout (cap 1)
	refresh  chan struct{}  // asks for a contact-list refresh (cap 1)
	snWake   chan struct{}  // the server connection came up: reconsider the supernode role (cap 1)
	regather chan struct{}  // asks refreshLoop to gather candidates now (cap 1)
	runOnce  sync.Once
	closeMu  sync.Once

	// refreshing serialises contact-list refreshes (cap 1; taken before
	// mu). It is a channel rather than a mutex because it is held across
	// HTTP requests: a goroutine waiting on a channel is durably blocked,
	// so that tests in a synctest bubble can advance the clock meanwhile.
	refreshing chan struct{}
	// sweeping is held by the port sweep round running (sweep.go; cap 1):
	// one at a time per node. A channel so that a waiting sweep can give
	// up when its punch ends.
	sweeping chan struct{}

	stunMu   sync.Mutex // protects stunWait
	stunWait map[stun.TxID]chan netip.AddrPort

	handlersMu sync.RWMutex // protects handlers and onMailbox
	handlers   map[string]func(Peer, *transport.Stream)
	onMailbox  func() // the server says mail is waiting (set by EnableApps)

	mu           sync.Mutex // protects the fields below
	server       string
	dc           *client.Client // nil when logged out
	username     string
	contacts     []cachedContact
	peers        map[transport.PublicKey]*peer
	pairs        map[[8]byte]*peer
	serverUp     bool
	serverErr    string
	streamStop   context.CancelFunc // ends the current event stream
	reflexive    netip.AddrPort
	nat          string
	candidates   []netip.AddrPort
	mapped       netip.AddrPort // our router's port mapping (portmap.go), if any
	stunAddr     netip.AddrPort
	stunAlt      netip.AddrPort
	supernodes   []cachedSupernode
	volunteering bool // registered as a supernode
	udpBlocked   bool // STUN went unanswered while the server answered: relay over TCP
	closed       bool
}

// New prepares a daemon: it creates the data directory and the identity key
// on first run, opens the state database and binds the UDP socket. Run
// starts it; Close releases everything if Run is never called.
func New(cfg Config) (*Node, error) {
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	dir, err := DataDir(cfg.DataDir)
	if err != nil {
		return nil, err
	}
	if err := prepareDataDir(dir); err != nil {
		return nil, err
	}
	key, err := loadIdentity(dir, log)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	n := &Node{
		cfg:        cfg,
		log:        log,
		dir:        dir,
		key:        key,
		pub:        key.Public(),
		hc:         cfg.HTTPClient,
		ctx:        ctx,
		cancel:     cancel,
		loginC:     make(chan struct{}, 1),
		refresh:    make(chan struct{}, 1),
		refreshing: make(chan struct{}, 1),
		sweeping:   make(chan struct{}, 1),
		snWake:     make(chan struct{}, 1),
		regather:   make(chan struct{}, 1),
		stunWait:   make(map[stun.TxID]chan netip.AddrPort),
		handlers:   make(map[string]func(Peer, *transport.Stream)),
		peers:      make(map[transport.PublicKey]*peer),
		pairs:      make(map[[8]byte]*peer),
	}
	if n.hc == nil {
		n.hc = http.DefaultClient
	}
	if n.st, err = openState(ctx, filepath.Join(dir, "state.db")); err != nil {
		cancel()
		return nil, fmt.Errorf("open state: %w", err)
	}
	if err := n.loadState(ctx); err != nil {
		n.st.Close()
		cancel()
		return nil, err
	}
	if err := n.openSocket(ctx); err != nil {
		n.st.Close()
		cancel()
		return nil, err
	}
	return n, nil
}

// loadState restores the login and the cached contacts and supernodes.
func (n *Node) loadState(ctx context.Context) error {
	server, err := n.st.setting(ctx, settingServer)
	if err != nil {
		return fmt.Errorf("read state: %w", err)
	}
	if n.cfg.Server != "" {
		server = n.cfg.Server
		if err := n.st.setSetting(ctx, settingServer, server); err != nil {
			return fmt.Errorf("write state: %w", err)
		}
	}
	token, _ := n.st.setting(ctx, settingToken)
	user, _ := n.st.setting(ctx, settingUsername)
	contacts, err := n.st.contacts(ctx)
	if err != nil {
		return fmt.Errorf("read contacts cache: %w", err)
	}
	sns, err := n.st.supernodes(ctx)
	if err != nil {
		return fmt.Errorf("read supernodes cache: %w", err)
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	n.server = server
	if token != "" && server != "" {
		n.dc = client.New(server, n.hc).WithToken(token)
		n.username = user
	}
	n.supernodes = sns
	n.setContactsLocked(contacts)
	return nil
}

// openSocket binds the one UDP socket and builds the stack on it.
func (n *Node) openSocket(ctx context.Context) error {
	var pl transport.PacketListener = n.cfg.Listener
	if pl == nil {
		pl = &net.ListenConfig{}
	}
	addr := n.cfg.ListenAddr
	var pc net.PacketConn
	var err error
	if addr == "" {
		// Try the port of the last run first, so that contacts' cached
		// endpoints for us stay right.
		if p, _ := n.st.setting(ctx, settingPort); p != "" {
			pc, err = pl.ListenPacket(ctx, "udp4", ":"+p)
		}
		addr = ":0"
	}
	if pc == nil {
		if pc, err = pl.ListenPacket(ctx, "udp4", addr); err != nil {
			return fmt.Errorf("open UDP socket %s: %w", addr, err)
		}
	}
	if ap, err := netip.ParseAddrPort(pc.LocalAddr().String()); err == nil {
		n.st.setSetting(ctx, settingPort, strconv.Itoa(int(ap.Port())))
	}
	n.pc = pc
	n.rc = relay.NewClient(pc, n.log.With("part", "relay"))
	n.mux = relay.NewMux(pc, n.rc)
	n.mux.HandleOther(n.handleOther)
	if n.cfg.Transport != nil {
		n.tcfg = *n.cfg.Transport
	}
	n.tcfg.PrivateKey = n.key
	n.tcfg.AcceptPeer = n.acceptPeer
	if n.tcfg.Logger == nil {
		n.tcfg.Logger = n.log.With("part", "transport")
	}
	n.ep = transport.NewEndpoint(n.mux, n.key, &n.tcfg)
	n.ep.Listen()
	n.log.Info("listening", "addr", pc.LocalAddr(), "device", n.pub.Short())
	return nil
}

// PublicKey is the device's identity.
func (n *Node) PublicKey() transport.PublicKey { return n.pub }

// DataDir is the node's data directory.
func (n *Node) DataDir() string { return n.dir }

// LocalAddr is the UDP socket's address.
func (n *Node) LocalAddr() net.Addr { return n.pc.LocalAddr() }

// Run runs the daemon until ctx ends, then shuts it down: sessions are
// closed (peers are told), the event stream ends, the socket and the
// database are closed. It returns nil after a shutdown caused by ctx.
func (n *Node) Run(ctx context.Context) error {
	started := false
	n.runOnce.Do(func() { started = true })
	if !started {
		return errors.New("node: Run called twice")
	}
	n.goroutine(n.acceptLoop)
	n.goroutine(n.eventLoop)
	n.goroutine(n.refreshLoop)
	n.goroutine(n.contactRefresher)
	n.goroutine(n.supernodeLoop)
	n.goroutine(n.reconnectKnown)
	n.goroutine(n.portmapLoop)
	select {
	case <-ctx.Done():
	case <-n.ctx.Done():
	}
	return n.Close()
}

// Close stops the node and releases its resources. It is safe to call more
// than once and from Run.
func (n *Node) Close() error {
	n.closeMu.Do(func() {
		n.mu.Lock()
		n.closed = true
		n.mu.Unlock()
		n.cancel()
		n.ep.Close()
		n.mux.Close()
		n.rc.Close()
		n.pc.Close()
		n.wg.Wait()
		n.st.Close()
		n.log.Info("stopped")
	})
	return nil
}

func (n *Node) goroutine(f func(ctx context.Context)) {
	n.wg.Add(1)
	go func() {
		defer n.wg.Done()
		f(n.ctx)
	}()
}

// handleOther receives the datagrams that are neither Parley nor relay
// packets. It runs on the Mux's reader goroutine and must not block.
func (n *Node) handleOther(b []byte, from netip.AddrPort) {
	switch {
	case stun.IsMessage(b):
		n.stunResponse(b)
	case isProbe(b):
		n.handleProbe(b, from)
	case len(b) == dialbackSize && string(b[:len(dialbackMagic)]) == dialbackMagic:
		// The directory verifying a supernode claim: echo it where it
		// came from (docs/api.md, "Dial-back probe"). An echo is no
		// larger than the probe, so this cannot amplify.
		n.mux.WriteToUDPAddrPort(b, from)
	}
}

// stunBind asks server for our reflexive address over the shared socket,
// retransmitting (250 ms, doubling) until ctx ends.
func (n *Node) stunBind(ctx context.Context, server netip.AddrPort) (netip.AddrPort, error) {
	tx := stun.NewTxID()
	ch := make(chan netip.AddrPort, 1)
	n.stunMu.Lock()
	n.stunWait[tx] = ch
	n.stunMu.Unlock()
	defer func() {
		n.stunMu.Lock()
		delete(n.stunWait, tx)
		n.stunMu.Unlock()
	}()
	req := stun.AppendBindingRequest(nil, tx)
	rto := 250 * time.Millisecond
	t := time.NewTimer(0)
	defer t.Stop()
	for {
		select {
		case a := <-ch:
			return a, nil
		case <-ctx.Done():
			return netip.AddrPort{}, fmt.Errorf("STUN %v: %w", server, ctx.Err())
		case <-t.C:
			n.mux.WriteToUDPAddrPort(req, server)
			t.Reset(rto)
			rto = min(2*rto, 2*time.Second)
		}
	}
}

// stunResponse passes a STUN response to the stunBind waiting for it.
func (n *Node) stunResponse(b []byte) {
	var tx stun.TxID
	if len(b) < 8+len(tx) {
		return
	}
	copy(tx[:], b[8:])
	n.stunMu.Lock()
	ch := n.stunWait[tx]
	n.stunMu.Unlock()
	if ch == nil {
		return
	}
	a, err := stun.ParseResponse(b, tx)
	if err != nil {
		return
	}
	select {
	case ch <- netip.AddrPortFrom(a.Addr().Unmap(), a.Port()):
	default:
	}
}

// randomID returns a random signalling session ID.
func randomID() string {
	var b [12]byte
	rand.Read(b[:])
	return hex.EncodeToString(b[:])
}
