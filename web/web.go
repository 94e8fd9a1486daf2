// Package web is the daemon's local web UI: contacts and their presence,
// chat, sending and accepting files, and each contact's path (direct, or
// relayed via which supernode).
//
// It is served on 127.0.0.1 only. Every API call must carry the token kept
// in DATA/web.token (mode 0600, so only the user can read it) as
// "Authorization: Bearer TOKEN"; the page learns it from the URL's fragment
// (http://127.0.0.1:PORT/#token=…, which browsers never send to the server
// nor put in Referer headers) or from its login form. Because the token
// travels in a header that a foreign page cannot set without a CORS
// preflight (which this server never grants), other sites cannot drive the
// API from the user's browser; the Host check shuts out DNS rebinding. The
// pages themselves hold nothing secret.
package web

import (
	"context"
	"crypto/rand"
	"crypto/subtle"
	"embed"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/parley-p2p/parley/apps/chat"
	"github.com/parley-p2p/parley/apps/files"
	"github.com/parley-p2p/parley/localapi"
	"github.com/parley-p2p/parley/node"
)

//go:embed static
var static embed.FS

// TokenFile is the token's file name in the data directory.
const TokenFile = "web.token"

// LoadToken reads the UI's token from dir, creating it (mode 0600) on first
// use. It refuses a token file that others can read.
func LoadToken(dir string) (string, error) {
	path := filepath.Join(dir, TokenFile)
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		var raw [32]byte
		rand.Read(raw[:])
		tok := base64.RawURLEncoding.EncodeToString(raw[:])
		f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
		if err != nil {
			return "", fmt.Errorf("create web UI token: %w", err)
		}
		_, err = f.WriteString(tok + "\n")
		if err2 := f.Close(); err == nil {
			err = err2
		}
		return tok, err
	}
	if err != nil {
		return "", fmt.Errorf("read web UI token: %w", err)
	}
	fi, err := os.Stat(path)
	if err != nil {
		return "", err
	}
	if fi.Mode().Perm()&0o077 != 0 {
		return "", fmt.Errorf("web UI token %s is readable by others (mode %v): chmod 600 it", path, fi.Mode().Perm())
	}
	tok := strings.TrimSpace(string(b))
	if len(tok) < 32 {
		return "", fmt.Errorf("web UI token %s is malformed: delete it to make a new one", path)
	}
	return tok, nil
}

// Listen opens the UI's TCP listener on addr, which must be a loopback
// address ("" means 127.0.0.1 on any free port).
func Listen(addr string) (net.Listener, error) {
	if addr == "" {
		addr = "127.0.0.1:0"
	}
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, fmt.Errorf("web UI address %q: %w", addr, err)
	}
	ip, err := netip.ParseAddr(host)
	if err != nil || !ip.IsLoopback() {
		return nil, fmt.Errorf("the web UI listens on loopback only, not %q", addr)
	}
	return net.Listen("tcp", addr)
}

// URL is the address to open, with the token in its fragment.
func URL(ln net.Listener, token string) string {
	return "http://" + ln.Addr().String() + "/#token=" + token
}

// Server serves the UI for a daemon.
type Server struct {
	Node   *node.Node
	Apps   *node.Apps
	Token  string
	Logger *slog.Logger // nil discards
}

// Serve serves on ln until ctx ends, then shuts down.
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
	return err
}

// Handler returns the UI's routes.
func (s *Server) Handler() http.Handler {
	mux := http.NewServeMux()
	sub, _ := fs.Sub(static, "static")
	mux.Handle("GET /", http.FileServerFS(sub))
	api := func(pattern string, h func(w http.ResponseWriter, r *http.Request)) {
		mux.HandleFunc(pattern, func(w http.ResponseWriter, r *http.Request) {
			if !s.authorized(r) {
				writeJSON(w, http.StatusUnauthorized, errorBody{"wrong or missing token: open the URL `parley up` printed, or paste DATA/web.token"})
				return
			}
			h(w, r)
		})
	}
	api("GET /api/state", s.state)
	api("GET /api/history", func(w http.ResponseWriter, r *http.Request) {
		peer := r.URL.Query().Get("peer")
		ms, err := s.Apps.ChatStore().History(r.Context(), peer, 200)
		out := []localapi.Message{}
		for _, m := range ms {
			out = append(out, localapi.MessageOf(m))
		}
		reply(w, err, map[string]any{"messages": out})
	})
	api("POST /api/msg", func(w http.ResponseWriter, r *http.Request) {
		var req struct{ To, Text string }
		if !decode(w, r, &req) {
			return
		}
		m, err := s.Apps.SendMessage(r.Context(), req.To, req.Text)
		reply(w, err, localapi.MessageOf(m))
	})
	api("POST /api/read/{peer}", func(w http.ResponseWriter, r *http.Request) {
		reply(w, s.Apps.Chat().MarkRead(r.Context(), r.PathValue("peer")), map[string]bool{"ok": true})
	})
	api("POST /api/typing/{peer}", func(w http.ResponseWriter, r *http.Request) {
		reply(w, s.Apps.Chat().Typing(r.Context(), r.PathValue("peer")), map[string]bool{"ok": true})
	})
	api("POST /api/files", s.upload)
	api("POST /api/files/{id}/{op}", func(w http.ResponseWriter, r *http.Request) {
		id, err := files.ParseID(r.PathValue("id"))
		if err != nil {
			writeJSON(w, http.StatusNotFound, errorBody{"no such transfer"})
			return
		}
		switch r.PathValue("op") {
		case "accept":
			err = s.Apps.AcceptFile(id)
		case "decline":
			err = s.Apps.DeclineFile(r.Context(), id)
		default:
			writeJSON(w, http.StatusNotFound, errorBody{"no such operation"})
			return
		}
		reply(w, err, map[string]bool{"ok": true})
	})
	return s.guard(mux)
}

// guard answers only requests addressed to a loopback host name (against
// DNS rebinding) and sets headers that keep the page in its own origin.
func (s *Server) guard(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		host := r.Host
		if h, _, err := net.SplitHostPort(host); err == nil {
			host = h
		}
		ip, err := netip.ParseAddr(strings.Trim(host, "[]"))
		if host != "localhost" && (err != nil || !ip.IsLoopback()) {
			http.Error(w, "the Parley UI answers on 127.0.0.1 only", http.StatusMisdirectedRequest)
			return
		}
		w.Header().Set("Content-Security-Policy", "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'")
		w.Header().Set("X-Frame-Options", "DENY")
		w.Header().Set("X-Content-Type-Options", "nosniff")
		w.Header().Set("Referrer-Policy", "no-referrer")
		w.Header().Set("Cache-Control", "no-store")
		h.ServeHTTP(w, r)
	})
}

func (s *Server) authorized(r *http.Request) bool {
	got, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	return ok && subtle.ConstantTimeCompare([]byte(got), []byte(s.Token)) == 1
}

// contactView is one contact as the page shows it.
type contactView struct {
	Username string  `json:"username"`
	State    string  `json:"state"`
	Online   bool    `json:"online"`
	Path     string  `json:"path"` // direct, relayed, none
	Via      string  `json:"via"`  // the relay's address when relayed
	RTTms    float64 `json:"rtt_ms"`
	Why      string  `json:"why,omitempty"`
	Unread   int     `json:"unread"`
}

type stateView struct {
	Me        string                `json:"me"`
	ServerUp  bool                  `json:"server_up"`
	NAT       string                `json:"nat"`
	Contacts  []contactView         `json:"contacts"`
	Transfers []node.TransferStatus `json:"transfers"`
}

func (s *Server) state(w http.ResponseWriter, r *http.Request) {
	st := s.Node.Status()
	v := stateView{Me: st.Username, ServerUp: st.ServerUp, NAT: st.NAT, Contacts: []contactView{}, Transfers: s.Apps.Transfers()}
	if v.Transfers == nil {
		v.Transfers = []node.TransferStatus{}
	}
	for _, c := range st.Contacts {
		cv := contactView{Username: c.Username, State: c.State, Online: c.Online, Path: c.Path, Via: c.Relay,
			RTTms: float64(c.RTT.Microseconds()) / 1000, Why: c.Why}
		if c.State == "mutual" {
			if h, err := s.Apps.ChatStore().History(r.Context(), c.Username, 200); err == nil {
				for _, m := range h {
					if !m.Outgoing && m.State < chat.Read {
						cv.Unread++
					}
				}
			}
		}
		v.Contacts = append(v.Contacts, cv)
	}
	reply(w, nil, v)
}

// upload receives a file from the page (the request body is the file's
// bytes, streamed to disk) and offers it to a contact.
func (s *Server) upload(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	to, name := q.Get("to"), q.Get("name")
	if err := files.ValidName(name); err != nil {
		writeJSON(w, http.StatusBadRequest, errorBody{"not a plain file name: " + name})
		return
	}
	dir := filepath.Join(s.Node.DataDir(), "outgoing")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		reply(w, err, nil)
		return
	}
	var rnd [6]byte
	rand.Read(rnd[:])
	sub := filepath.Join(dir, base64.RawURLEncoding.EncodeToString(rnd[:]))
	if err := os.Mkdir(sub, 0o700); err != nil {
		reply(w, err, nil)
		return
	}
	path := filepath.Join(sub, name)
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		reply(w, err, nil)
		return
	}
	_, err = io.Copy(f, r.Body)
	if err2 := f.Close(); err == nil {
		err = err2
	}
	if err != nil {
		os.RemoveAll(sub)
		reply(w, fmt.Errorf("upload: %w", err), nil)
		return
	}
	t, err := s.Apps.SendFile(r.Context(), to, path)
	if err != nil {
		os.RemoveAll(sub)
	}
	reply(w, err, t)
}

type errorBody struct {
	Error string `json:"error"`
}

func decode(w http.ResponseWriter, r *http.Request, v any) bool {
	if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, 64<<10)).Decode(v); err != nil {
		writeJSON(w, http.StatusBadRequest, errorBody{"malformed request"})
		return false
	}
	return true
}

func reply(w http.ResponseWriter, err error, v any) {
	if err != nil {
		writeJSON(w, http.StatusBadRequest, errorBody{err.Error()})
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
