// Package directory is Parley's directory server: the one centralized part
// of the system. It keeps accounts, devices and their public keys, contacts
// and presence, passes connection offers between mutual contacts, keeps an
// offline mailbox of end-to-end encrypted blobs, verifies and lists
// supernodes and signs the relay tickets they check. It never carries
// conversation data.
//
// The HTTP API is specified in docs/api.md. A Server is an http.Handler over
// a store.Store; it holds no state that other processes need: presence and
// events cross processes through the store's Broadcaster (PostgreSQL
// LISTEN/NOTIFY), so several Servers on one PostgreSQL database behave as
// one. What a Server keeps in memory is either a cache invalidated through
// the Broadcaster (tokens, encoded contact lists) or deliberately per
// process (rate limits, dashboard counters of offers and session paths).
//
// Concurrency: every exported method is safe for concurrent use. Lock order,
// where two are held: hub.mu before stream.mu; cache locks are never held
// while calling out.
package directory

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/parley-p2p/parley/directory/store"
)

// Config configures a Server. The zero value of every field but Store
// selects the documented default.
type Config struct {
	// Store is the database. Required.
	Store store.Store
	// Logger receives the server's logs; nil discards them.
	Logger *slog.Logger
	// Now is the clock; nil means time.Now.
	Now func() time.Time
	// ServerKey signs relay tickets; nil generates an ephemeral key
	// (tickets then stop verifying when the process restarts).
	ServerKey ed25519.PrivateKey
	// Argon2 is the password hashing cost; zero means DefaultArgon2.
	Argon2 Argon2Params
	// TokenLifetime is how long a login token is valid; zero means 30 days.
	TokenLifetime time.Duration

	// Rate limits; a zero Rate means the default in parentheses.
	LoginPerIP      Rate // (one per 2 s, burst 20)
	LoginPerAccount Rate // (one per 10 s, burst 5)
	RegisterPerIP   Rate // (one per 10 s, burst 5)
	SearchPerUser   Rate // (one per 2 s, burst 10)
	DialbackPerUser Rate // (one per 10 s, burst 3)
	// NoRateLimits disables every rate limit (benchmarks only).
	NoRateLimits bool

	// Mailbox quotas per recipient device; zero means 64 KiB per blob,
	// 100 blobs and 1 MiB in all.
	MailboxMaxBlob  int
	MailboxMaxCount int
	MailboxMaxBytes int64

	// AllowPrivateSupernodes lets devices claim loopback, private and
	// link-local addresses as supernodes (tests and LAN deployments). By
	// default only global unicast addresses are dialled back, so the server
	// cannot be used to probe private networks.
	AllowPrivateSupernodes bool
	// DialbackListener opens the UDP socket for dial-back probes; nil
	// means a real socket. Tests on natlab pass a natlab host, so that the
	// server can verify supernodes inside the emulated network.
	DialbackListener interface {
		ListenPacket(ctx context.Context, network, address string) (net.PacketConn, error)
	}
	// DialbackTimeout bounds a supernode verification; zero means 3 s.
	DialbackTimeout time.Duration
	// SupernodeTTL is how long a supernode stays listed without a load
	// report; zero means 2 minutes.
	SupernodeTTL time.Duration
	// TicketLifetime is a relay ticket's validity; zero means 10 minutes.
	TicketLifetime time.Duration

	// STUN and STUNAlt are the STUN listener's addresses, advertised to
	// clients in GET /v1/config; empty if none.
	STUN, STUNAlt string

	// Registerer receives the server's Prometheus metrics; nil means a new
	// registry, served by MetricsHandler.
	Registerer *prometheus.Registry
	// ID names this process in the store's presence rows; empty means
	// random. Two processes must never share an ID.
	ID string
	// HeartbeatInterval is how often this process records that it is
	// alive; a process silent for three intervals is taken for dead and
	// the devices it held are marked offline by the others. Zero means
	// 10 s.
	HeartbeatInterval time.Duration
}

// Server is a directory server. Create it with New, serve Handler, and Close
// it to end its event streams.
type Server struct {
	cfg    Config
	store  store.Store
	log    *slog.Logger
	id     string
	key    ed25519.PrivateKey
	reg    *prometheus.Registry
	m      *metrics
	mux    *http.ServeMux
	hashes chan struct{} // semaphore bounding concurrent argon2 runs

	dummyOnce sync.Once
	dummyHash string

	tokens tokenCache
	lists  listCache
	hub    hub
	stats  stats

	loginIP, loginUser, registerIP, search, dialback *limiter

	unsubscribe func()
	ctx         context.Context // canceled by Close; parent of stream contexts
	cancel      context.CancelFunc
	closeOnce   sync.Once
	wg          sync.WaitGroup // background goroutines
}

// New returns a Server over cfg.Store.
func New(cfg Config) (*Server, error) {
	if cfg.Store == nil {
		return nil, errors.New("directory: Config.Store is required")
	}
	s := &Server{cfg: cfg, store: cfg.Store, log: cfg.Logger, id: cfg.ID, key: cfg.ServerKey, reg: cfg.Registerer}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	if s.cfg.Now == nil {
		s.cfg.Now = time.Now
	}
	if s.id == "" {
		var b [8]byte
		rand.Read(b[:])
		s.id = hex.EncodeToString(b[:])
	}
	if s.key == nil {
		_, priv, err := ed25519.GenerateKey(rand.Reader)
		if err != nil {
			return nil, err
		}
		s.key = priv
	}
	if s.cfg.Argon2 == (Argon2Params{}) {
		s.cfg.Argon2 = DefaultArgon2
	}
	def := func(d *time.Duration, v time.Duration) {
		if *d == 0 {
			*d = v
		}
	}
	def(&s.cfg.TokenLifetime, 30*24*time.Hour)
	def(&s.cfg.DialbackTimeout, 3*time.Second)
	def(&s.cfg.SupernodeTTL, 2*time.Minute)
	def(&s.cfg.TicketLifetime, 10*time.Minute)
	def(&s.cfg.HeartbeatInterval, 10*time.Second)
	if s.cfg.MailboxMaxBlob == 0 {
		s.cfg.MailboxMaxBlob = 64 << 10
	}
	if s.cfg.MailboxMaxCount == 0 {
		s.cfg.MailboxMaxCount = 100
	}
	if s.cfg.MailboxMaxBytes == 0 {
		s.cfg.MailboxMaxBytes = 1 << 20
	}
	rate := func(r, d Rate) *limiter {
		if s.cfg.NoRateLimits {
			return nil
		}
		if r == (Rate{}) {
			r = d
		}
		return newLimiter(r)
	}
	s.loginIP = rate(cfg.LoginPerIP, Rate{2 * time.Second, 20})
	s.loginUser = rate(cfg.LoginPerAccount, Rate{10 * time.Second, 5})
	s.registerIP = rate(cfg.RegisterPerIP, Rate{10 * time.Second, 5})
	s.search = rate(cfg.SearchPerUser, Rate{2 * time.Second, 10})
	s.dialback = rate(cfg.DialbackPerUser, Rate{10 * time.Second, 3})

	// Argon2 holds MemoryKiB per run: bound the runs so that a burst of
	// logins queues instead of exhausting memory.
	s.hashes = make(chan struct{}, 4)
	if s.reg == nil {
		s.reg = prometheus.NewRegistry()
	}
	s.m = newMetrics(s.reg, s)
	s.ctx, s.cancel = context.WithCancel(context.Background())
	s.hub.init()
	hctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := s.store.Heartbeat(hctx, s.id, s.now()); err != nil {
		return nil, fmt.Errorf("directory: heartbeat: %w", err)
	}
	s.wg.Add(3)
	go s.pinger()
	go s.janitor()
	go s.reaper()
	s.unsubscribe = s.store.Subscribe(s.onBroadcast, s.onBroadcastReset)
	s.routes()
	return s, nil
}

// ID returns the process ID used in the store's presence rows.
func (s *Server) ID() string { return s.id }

// PublicKey returns the Ed25519 key that verifies this server's tickets.
func (s *Server) PublicKey() ed25519.PublicKey { return s.key.Public().(ed25519.PublicKey) }

// MetricsHandler serves the Prometheus metrics.
func (s *Server) MetricsHandler() http.Handler {
	return promhttp.HandlerFor(s.reg, promhttp.HandlerOpts{})
}

// Close ends every event stream held by this process, marking its devices
// offline and telling their contacts, and stops listening for broadcasts.
// The store is not closed.
func (s *Server) Close() error {
	s.closeOnce.Do(func() {
		s.hub.closeAll()
		s.cancel()
		s.wg.Wait()
		s.unsubscribe()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := s.store.ClearOnline(ctx, s.id, s.now()); err != nil {
			s.log.Warn("clear presence on close", "err", err)
		}
		if _, err := s.store.DeleteServer(ctx, s.id); err != nil {
			s.log.Warn("unregister on close", "err", err)
		}
	})
	return nil
}

func (s *Server) now() time.Time { return s.cfg.Now() }

// ServeHTTP implements http.Handler.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Server", "parley-directory/1")
	h, pattern := s.mux.Handler(r)
	if pattern == "" {
		// Unmatched: let the mux decide between 404 and 405 (with its Allow
		// header), but answer in JSON like every other error.
		cw := &captureWriter{h: make(http.Header)}
		h.ServeHTTP(cw, r)
		if allow := cw.h.Get("Allow"); allow != "" {
			w.Header().Set("Allow", allow)
		}
		if cw.status == http.StatusMethodNotAllowed {
			writeError(w, errorf(http.StatusMethodNotAllowed, codeMethodNotAllowed, "%s is not allowed here", r.Method))
			return
		}
		if cw.status >= 300 && cw.status < 400 {
			// Path cleaning redirects.
			for k, v := range cw.h {
				w.Header()[k] = v
			}
			w.WriteHeader(cw.status)
			return
		}
		writeError(w, errorf(http.StatusNotFound, codeNotFound, "no such endpoint"))
		return
	}
	// The mux, not the handler it returned, sets the path values.
	s.mux.ServeHTTP(w, r)
}

// handlerFunc is an API handler: it returns an error to be written as JSON.
type handlerFunc func(w http.ResponseWriter, r *http.Request) *apiError

// authedFunc is a handler that needs a valid token.
type authedFunc func(w http.ResponseWriter, r *http.Request, sess session) *apiError

func (s *Server) handle(pattern string, h handlerFunc) {
	route := pattern
	s.mux.HandleFunc(pattern, func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		rw := &statusWriter{ResponseWriter: w}
		if e := h(rw, r); e != nil {
			writeError(rw, e)
		}
		s.m.observe(route, rw.status, time.Since(start))
	})
}

func (s *Server) authed(pattern string, h authedFunc) {
	s.handle(pattern, func(w http.ResponseWriter, r *http.Request) *apiError {
		sess, e := s.authenticate(r.Context(), r)
		if e != nil {
			return e
		}
		return h(w, r, sess)
	})
}

// statusWriter records the status for metrics and passes everything else,
// including Hijack for WebSockets, through.
type statusWriter struct {
	http.ResponseWriter
	status int
}

func (w *statusWriter) WriteHeader(code int) {
	if w.status == 0 {
		w.status = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(b []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	return w.ResponseWriter.Write(b)
}

func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

func (s *Server) routes() {
	s.mux = http.NewServeMux()
	s.mux.HandleFunc("GET /healthz", s.healthz)
	s.mux.Handle("GET /metrics", s.MetricsHandler())
	s.handle("GET /v1/server-key", s.serverKey)
	s.handle("GET /v1/config", s.configInfo)
	s.handle("GET /v1/status", s.status)

	s.handle("POST /v1/accounts", s.register)
	s.handle("POST /v1/login", s.login)
	s.authed("POST /v1/logout", s.logout)
	s.authed("GET /v1/account", s.account)
	s.authed("PUT /v1/account/password", s.changePassword)
	s.authed("DELETE /v1/account", s.deleteAccount)

	s.authed("GET /v1/devices", s.listDevices)
	s.authed("DELETE /v1/devices/{key}", s.revokeDevice)
	s.authed("PUT /v1/devices/self/endpoints", s.setEndpoints)

	s.authed("GET /v1/contacts", s.listContacts)
	s.authed("GET /v1/contacts/{username}", s.getContact)
	s.authed("POST /v1/contacts/{username}/request", s.requestContact)
	s.authed("POST /v1/contacts/{username}/accept", s.acceptContact)
	s.authed("POST /v1/contacts/{username}/decline", s.declineContact)
	s.authed("POST /v1/contacts/{username}/block", s.blockContact)
	s.authed("POST /v1/contacts/{username}/unblock", s.unblockContact)
	s.authed("DELETE /v1/contacts/{username}", s.removeContact)
	s.authed("GET /v1/users/{username}", s.lookupUser)
	s.authed("GET /v1/users", s.searchUsers)

	s.authed("GET /v1/events", s.events)
	s.authed("POST /v1/offers", s.offer)
	s.authed("POST /v1/sessions", s.reportSession)

	s.authed("POST /v1/mailbox", s.putMail)
	s.authed("GET /v1/mailbox", s.getMail)
	s.authed("POST /v1/mailbox/ack", s.ackMail)

	s.authed("POST /v1/supernodes", s.registerSupernode)
	s.authed("PUT /v1/supernodes/self/load", s.reportLoad)
	s.authed("DELETE /v1/supernodes/self", s.unregisterSupernode)
	s.authed("GET /v1/supernodes", s.listSupernodes)
	s.authed("POST /v1/tickets", s.issueTicket)

	s.mux.HandleFunc("GET /v1/status/stream", s.statusStream)
	dash := dashboardHandler()
	for _, p := range []string{"GET /{$}", "GET /app.js", "GET /style.css"} {
		s.mux.Handle(p, dash)
	}
}

// reaper keeps this process's heartbeat and marks offline the devices held
// by processes that stopped beating without closing (crashed, killed,
// partitioned), telling their contacts.
func (s *Server) reaper() {
	defer s.wg.Done()
	t := time.NewTicker(s.cfg.HeartbeatInterval)
	defer t.Stop()
	for {
		select {
		case <-s.ctx.Done():
			return
		case <-t.C:
		}
		ctx, cancel := context.WithTimeout(s.ctx, s.cfg.HeartbeatInterval)
		s.reap(ctx)
		cancel()
	}
}

func (s *Server) reap(ctx context.Context) {
	now := s.now()
	if err := s.store.Heartbeat(ctx, s.id, now); err != nil {
		s.log.Warn("heartbeat failed", "err", err)
		return
	}
	stale, err := s.store.StaleServers(ctx, now.Add(-3*s.cfg.HeartbeatInterval))
	if err != nil {
		s.log.Warn("listing stale servers", "err", err)
		return
	}
	for _, id := range stale {
		if id == s.id {
			continue
		}
		held, err := s.store.DevicesHeldBy(ctx, id)
		if err != nil {
			return
		}
		if ok, err := s.store.DeleteServer(ctx, id); err != nil || !ok {
			continue // another process is reaping it
		}
		if err := s.store.ClearOnline(ctx, id, now); err != nil {
			s.log.Warn("clearing a dead server's presence", "server", id, "err", err)
			continue
		}
		s.log.Warn("server stopped beating; its devices are offline", "server", id, "devices", len(held))
		for _, d := range held {
			u, err := s.store.UserByID(ctx, d.UserID)
			if err != nil {
				continue
			}
			s.presenceChanged(ctx, session{userID: u.ID, username: u.Username, deviceID: d.ID, deviceKey: d.PublicKey}, false, now)
		}
	}
}

// janitor deletes expired tokens once an hour. Expired tokens are refused
// anyway; this only keeps the table small.
func (s *Server) janitor() {
	defer s.wg.Done()
	t := time.NewTicker(time.Hour)
	defer t.Stop()
	for {
		ctx, cancel := context.WithTimeout(s.ctx, time.Minute)
		if n, err := s.store.DeleteExpiredTokens(ctx, s.now()); err != nil {
			if s.ctx.Err() == nil {
				s.log.Warn("deleting expired tokens", "err", err)
			}
		} else if n > 0 {
			s.log.Info("deleted expired tokens", "count", n)
		}
		cancel()
		select {
		case <-s.ctx.Done():
			return
		case <-t.C:
		}
	}
}

func (s *Server) healthz(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
	defer cancel()
	if _, err := s.store.CountOnline(ctx); err != nil {
		s.log.Warn("health check failed", "err", err)
		writeError(w, errorf(http.StatusServiceUnavailable, codeUnavailable, "the database is unreachable"))
		return
	}
	writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
}

// internal logs err and returns a 500 that reveals nothing about it.
func (s *Server) internal(r *http.Request, what string, err error) *apiError {
	if errors.Is(err, context.Canceled) {
		return errorf(499, codeInternal, "request canceled")
	}
	s.log.Error("internal error", "op", what, "method", r.Method, "path", r.URL.Path, "err", err)
	return errorf(http.StatusInternalServerError, codeInternal, "internal error")
}

// clientIP is the request's peer address, the key of per-address limits.
// X-Forwarded-For is deliberately ignored: behind a proxy, limit there.
func clientIP(r *http.Request) string {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return r.RemoteAddr
	}
	if a, err := netip.ParseAddr(host); err == nil && a.Is6() && !a.Is4In6() {
		// One IPv6 user usually holds a whole /64.
		p, _ := a.Prefix(64)
		return p.String()
	}
	return strings.TrimPrefix(host, "::ffff:")
}

func (s *Server) limit(l *limiter, key string) *apiError {
	ok, wait := l.allow(key, s.now())
	if ok {
		return nil
	}
	s.m.rateLimited.Inc()
	e := errorf(http.StatusTooManyRequests, codeRateLimited, "too many requests; retry later")
	e.retryAfter = wait
	return e
}
