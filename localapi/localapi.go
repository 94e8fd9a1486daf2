// Package localapi is how the parley CLI talks to its daemon: HTTP with JSON
// bodies over a Unix socket in the daemon's data directory
// (DATA/parley.sock). Only the user can open it: the socket is mode 0600 in
// a 0700 directory, and the server also checks each connection's peer
// credentials (SO_PEERCRED) against its own user ID.
//
// Routes (all JSON; errors are {"error": "one sentence"} with a 4xx or 5xx
// status):
//
//	POST   /v1/register              {"username", "password"}   register and log in
//	POST   /v1/login                 {"username", "password"}
//	POST   /v1/logout
//	GET    /v1/contacts              → {"contacts": [...], "cached": bool}
//	POST   /v1/contacts/{name}/{op}  op: add, accept, decline, block, unblock
//	DELETE /v1/contacts/{name}
//	GET    /v1/status                → node.Status
//
// and the applications' routes listed in apps.go.
package localapi

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/parley-p2p/parley/node"
)

// SocketName is the socket's file name in the data directory.
const SocketName = "parley.sock"

// SocketPath is the local API socket of the daemon whose data directory is
// dir.
func SocketPath(dir string) string { return filepath.Join(dir, SocketName) }

// ErrDaemonRunning means another daemon already serves the data directory.
var ErrDaemonRunning = errors.New("localapi: a daemon is already running")

// Listen opens the local API socket in dir with mode 0600. A socket left
// behind by a daemon that died is replaced; one that answers is not.
func Listen(dir string) (net.Listener, error) {
	path := SocketPath(dir)
	if c, err := net.DialTimeout("unix", path, time.Second); err == nil {
		c.Close()
		return nil, fmt.Errorf("%w for %s: stop it first, or use another --data directory", ErrDaemonRunning, dir)
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("remove stale socket: %w", err)
	}
	ln, err := net.Listen("unix", path)
	if err != nil {
		return nil, fmt.Errorf("local API socket: %w", err)
	}
	if err := os.Chmod(path, 0o600); err != nil {
		ln.Close()
		return nil, err
	}
	return &uidListener{Listener: ln, uid: os.Getuid()}, nil
}

// uidListener accepts only connections from processes of one user.
type uidListener struct {
	net.Listener
	uid int
}

func (l *uidListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		if uc, ok := c.(*net.UnixConn); ok {
			if uid, ok := peerUID(uc); ok && uid != l.uid {
				c.Close()
				continue
			}
		}
		return c, nil
	}
}

func peerUID(c *net.UnixConn) (int, bool) {
	rc, err := c.SyscallConn()
	if err != nil {
		return 0, false
	}
	var cred *unix.Ucred
	var cerr error
	if err := rc.Control(func(fd uintptr) {
		cred, cerr = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED)
	}); err != nil || cerr != nil {
		return 0, false
	}
	return int(cred.Uid), true
}

// Server serves the local API for a node.
type Server struct {
	Node   *node.Node
	Apps   *node.Apps   // nil: the application routes answer with an error
	Logger *slog.Logger // nil discards
}

// Serve serves on ln until ctx ends, then shuts down gracefully (requests
// in flight get 5 s) and removes the socket.
func (s *Server) Serve(ctx context.Context, ln net.Listener) error {
	hs := &http.Server{Handler: s.Handler(), ReadHeaderTimeout: 10 * time.Second}
	errc := make(chan error, 1)
	go func() { errc <- hs.Serve(ln) }()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	err := hs.Shutdown(sctx)
	<-errc
	if a, ok := ln.Addr().(*net.UnixAddr); ok {
		os.Remove(a.Name)
	}
	return err
}

type credentials struct {
	Username string `json:"username"`
	Password string `json:"password"`
}

// ContactsResponse is GET /v1/contacts.
type ContactsResponse struct {
	Contacts []node.Contact `json:"contacts"`
	Cached   bool           `json:"cached"` // the server did not answer; this is the cache
}

type contactOpResponse struct {
	State string `json:"state,omitempty"`
}

type errorBody struct {
	Error string `json:"error"`
}

// Handler returns the API's routes.
func (s *Server) Handler() http.Handler {
	mux := http.NewServeMux()
	n := s.Node
	mux.HandleFunc("POST /v1/register", func(w http.ResponseWriter, r *http.Request) {
		var c credentials
		if decode(w, r, &c) {
			reply(w, n.Register(r.Context(), c.Username, c.Password), nil)
		}
	})
	mux.HandleFunc("POST /v1/login", func(w http.ResponseWriter, r *http.Request) {
		var c credentials
		if decode(w, r, &c) {
			reply(w, n.Login(r.Context(), c.Username, c.Password), nil)
		}
	})
	mux.HandleFunc("POST /v1/logout", func(w http.ResponseWriter, r *http.Request) {
		reply(w, n.Logout(r.Context()), nil)
	})
	mux.HandleFunc("GET /v1/contacts", func(w http.ResponseWriter, r *http.Request) {
		list, cached, err := n.Contacts(r.Context())
		reply(w, err, ContactsResponse{Contacts: list, Cached: cached})
	})
	mux.HandleFunc("POST /v1/contacts/{name}/{op}", func(w http.ResponseWriter, r *http.Request) {
		name, ctx := r.PathValue("name"), r.Context()
		var err error
		var res contactOpResponse
		switch r.PathValue("op") {
		case "add":
			res.State, err = n.AddContact(ctx, name)
		case "accept":
			err = n.AcceptContact(ctx, name)
		case "decline":
			err = n.DeclineContact(ctx, name)
		case "block":
			err = n.BlockContact(ctx, name)
		case "unblock":
			err = n.UnblockContact(ctx, name)
		default:
			writeJSON(w, http.StatusNotFound, errorBody{"no such contact operation"})
			return
		}
		reply(w, err, res)
	})
	mux.HandleFunc("DELETE /v1/contacts/{name}", func(w http.ResponseWriter, r *http.Request) {
		reply(w, n.RemoveContact(r.Context(), r.PathValue("name")), nil)
	})
	mux.HandleFunc("GET /v1/status", func(w http.ResponseWriter, r *http.Request) {
		reply(w, nil, n.Status())
	})
	s.appRoutes(mux)
	return mux
}

func decode(w http.ResponseWriter, r *http.Request, v any) bool {
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, 64<<10))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		writeJSON(w, http.StatusBadRequest, errorBody{"malformed request: " + err.Error()})
		return false
	}
	return true
}

func reply(w http.ResponseWriter, err error, v any) {
	if err != nil {
		writeJSON(w, http.StatusBadRequest, errorBody{err.Error()})
		return
	}
	if v == nil {
		w.WriteHeader(http.StatusNoContent)
		return
	}
	writeJSON(w, http.StatusOK, v)
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		status, b = http.StatusInternalServerError, []byte(`{"error":"internal error"}`)
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	w.Write(append(b, '\n'))
}

// Client talks to the daemon whose data directory is Dir.
type Client struct {
	dir string
	hc  *http.Client
}

// NewClient returns a client for the daemon of data directory dir.
func NewClient(dir string) *Client {
	path := SocketPath(dir)
	return &Client{dir: dir, hc: &http.Client{Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", path)
		},
	}}}
}

// Close releases the client's idle connections.
func (c *Client) Close() { c.hc.CloseIdleConnections() }

// ErrNoDaemon means nothing listens on the data directory's socket.
var ErrNoDaemon = errors.New("localapi: no daemon running")

// DaemonError is an error the daemon reported: its text is meant for the
// user as it is.
type DaemonError struct{ Msg string }

func (e *DaemonError) Error() string { return e.Msg }

func (c *Client) do(ctx context.Context, method, path string, in, out any) error {
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return err
		}
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, "http://parley"+path, body)
	if err != nil {
		return err
	}
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		if errors.Is(err, syscall.ENOENT) || errors.Is(err, syscall.ECONNREFUSED) {
			return fmt.Errorf("%w for %s", ErrNoDaemon, c.dir)
		}
		return err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
	if err != nil {
		return err
	}
	if resp.StatusCode >= 300 {
		var eb errorBody
		if json.Unmarshal(b, &eb) != nil || eb.Error == "" {
			return &DaemonError{fmt.Sprintf("the daemon answered %s", resp.Status)}
		}
		return &DaemonError{eb.Error}
	}
	if out != nil && len(b) > 0 {
		return json.Unmarshal(b, out)
	}
	return nil
}

// Register creates an account and logs the daemon's device in.
func (c *Client) Register(ctx context.Context, username, password string) error {
	return c.do(ctx, http.MethodPost, "/v1/register", credentials{username, password}, nil)
}

// Login logs the daemon's device in.
func (c *Client) Login(ctx context.Context, username, password string) error {
	return c.do(ctx, http.MethodPost, "/v1/login", credentials{username, password}, nil)
}

// Logout logs the daemon's device out.
func (c *Client) Logout(ctx context.Context) error {
	return c.do(ctx, http.MethodPost, "/v1/logout", nil, nil)
}

// Contacts lists the contacts.
func (c *Client) Contacts(ctx context.Context) (ContactsResponse, error) {
	var r ContactsResponse
	err := c.do(ctx, http.MethodGet, "/v1/contacts", nil, &r)
	return r, err
}

// ContactOp runs op (add, accept, decline, block, unblock) on username
// and returns the new state for add.
func (c *Client) ContactOp(ctx context.Context, op, username string) (string, error) {
	var r contactOpResponse
	err := c.do(ctx, http.MethodPost, "/v1/contacts/"+url.PathEscape(username)+"/"+op, nil, &r)
	return r.State, err
}

// RemoveContact ends a contact or cancels a request.
func (c *Client) RemoveContact(ctx context.Context, username string) error {
	return c.do(ctx, http.MethodDelete, "/v1/contacts/"+url.PathEscape(username), nil, nil)
}

// Status returns the daemon's status.
func (c *Client) Status(ctx context.Context) (node.Status, error) {
	var s node.Status
	err := c.do(ctx, http.MethodGet, "/v1/status", nil, &s)
	return s, err
}
