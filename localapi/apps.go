package localapi

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"syscall"
	"time"

	"github.com/parley-p2p/parley/apps/chat"
	"github.com/parley-p2p/parley/apps/files"
	"github.com/parley-p2p/parley/apps/tunnel"
	"github.com/parley-p2p/parley/node"
)

// The applications' routes:
//
//	POST   /v1/msg                    {"to", "text"} → Message
//	GET    /v1/history?peer=&search=&limit=  → {"messages": [...]}, oldest first (search: newest first)
//	POST   /v1/chat/{peer}/read       mark peer's messages read
//	POST   /v1/chat/{peer}/typing     tell peer the user types
//	GET    /v1/chat/events?peer=      newline-delimited JSON ChatEvents until the client goes away
//	GET    /v1/files                  → {"transfers": [...], "auto_accept": [...]}
//	GET    /v1/files/{id}             → node.TransferStatus
//	POST   /v1/files                  {"to", "path"} → node.TransferStatus
//	POST   /v1/files/{id}/accept      start the download in the daemon
//	POST   /v1/files/{id}/decline
//	POST   /v1/auto-accept/{peer}     {"on": bool}
//	GET    /v1/expose                 → {"ports": [...]}
//	POST   /v1/expose/{port}, DELETE /v1/expose/{port}
//	GET    /v1/connect/{peer}/{port}  with "Connection: Upgrade", "Upgrade:
//	                                  parley-tunnel": 101, then the socket
//	                                  carries the tunnel's bytes both ways

// TunnelProtocol is the Upgrade token of GET /v1/connect.
const TunnelProtocol = "parley-tunnel"

// Message is a chat message as the API carries it.
type Message struct {
	ID       string    `json:"id"`
	Peer     string    `json:"peer"`
	Outgoing bool      `json:"outgoing"`
	Body     string    `json:"body"`
	Time     time.Time `json:"time"`
	State    string    `json:"state"` // pending, sent, delivered, read
}

// MessageOf converts a chat message.
func MessageOf(m chat.Message) Message {
	return Message{ID: m.ID.String(), Peer: m.Peer, Outgoing: m.Outgoing, Body: m.Body, Time: m.Time, State: m.State.String()}
}

// ChatEvent is one event of GET /v1/chat/events.
type ChatEvent struct {
	Kind    string   `json:"kind"` // message, state, typing
	Peer    string   `json:"peer"`
	Message *Message `json:"message,omitempty"`
}

// ChatEventOf converts a chat event.
func ChatEventOf(ev chat.Event) ChatEvent {
	ce := ChatEvent{Peer: ev.Peer}
	switch ev.Kind {
	case chat.EventMessage:
		ce.Kind = "message"
	case chat.EventState:
		ce.Kind = "state"
	case chat.EventTyping:
		ce.Kind = "typing"
	}
	if ev.Kind != chat.EventTyping {
		m := MessageOf(ev.Message)
		ce.Message = &m
	}
	return ce
}

type sendRequest struct {
	To   string `json:"to"`
	Text string `json:"text,omitempty"`
	Path string `json:"path,omitempty"`
}

type historyResponse struct {
	Messages []Message `json:"messages"`
}

// FilesResponse is GET /v1/files.
type FilesResponse struct {
	Transfers  []node.TransferStatus `json:"transfers"`
	AutoAccept []string              `json:"auto_accept"`
}

type autoAcceptRequest struct {
	On bool `json:"on"`
}

type exposeResponse struct {
	Ports []uint16 `json:"ports"`
}

var errNoApps = errors.New("this daemon runs without applications")

// appRoutes adds the applications' routes to mux.
func (s *Server) appRoutes(mux *http.ServeMux) {
	handle := func(pattern string, h func(a *node.Apps, w http.ResponseWriter, r *http.Request)) {
		mux.HandleFunc(pattern, func(w http.ResponseWriter, r *http.Request) {
			if s.Apps == nil {
				reply(w, errNoApps, nil)
				return
			}
			h(s.Apps, w, r)
		})
	}
	handle("POST /v1/msg", func(a *node.Apps, w http.ResponseWriter, r *http.Request) {
		var req sendRequest
		if !decode(w, r, &req) {
			return
		}
		m, err := a.SendMessage(r.Context(), req.To, req.Text)
		reply(w, err, MessageOf(m))
	})
	handle("GET /v1/history", func(a *node.Apps, w http.ResponseWriter, r *http.Request) {
		q := r.URL.Query()
		limit, _ := strconv.Atoi(q.Get("limit"))
		if limit <= 0 {
			limit = 50
		}
		var ms []chat.Message
		var err error
		if word := q.Get("search"); word != "" {
			ms, err = a.ChatStore().Search(r.Context(), q.Get("peer"), word, limit)
		} else {
			ms, err = a.ChatStore().History(r.Context(), q.Get("peer"), limit)
		}
		res := historyResponse{Messages: []Message{}}
		for _, m := range ms {
			res.Messages = append(res.Messages, MessageOf(m))
		}
		reply(w, err, res)
	})
	handle("POST /v1/chat/{peer}/read", func(a *node.Apps, w http.ResponseWriter, r *http.Request) {
		reply(w, a.Chat().MarkRead(r.Context(), r.PathValue("peer")), nil)
	})
	handle("POST /v1/chat/{peer}/typing", func(a *node.Apps, w http.ResponseWriter, r *http.Request) {
		reply(w, a.Chat().Typing(r.Context(), r.PathValue("peer")), nil)
	})
	handle("GET /v1/chat/events", func(a *node.Apps, w http.ResponseWriter, r *http.Request) {
		peer := r.URL.Query().Get("peer")
		evs, stop := a.Chat().Subscribe(64)
		defer stop()
		w.Header().Set("Content-Type", "application/x-ndjson")
		w.WriteHeader(http.StatusOK)
		fl, _ := w.(http.Flusher)
		if fl != nil {
			fl.Flush()
		}
		enc := json.NewEncoder(w)
		for {
			select {
			case <-r.Context().Done():
				return
			case ev := <-evs:
				if peer != "" && ev.Peer != peer {
					continue
				}
				if enc.Encode(ChatEventOf(ev)) != nil {
					return
				}
				if fl != nil {
					fl.Flush()
				}
			}
		}
	})
	handle("GET /v1/files", func(a *node.Apps, w http.ResponseWriter, r *http.Request) {
		res := FilesResponse{Transfers: a.Transfers(), AutoAccept: a.AutoAcceptList()}
		if res.Transfers == nil {
			res.Transfers = []node.TransferStatus{}
		}
		reply(w, nil, res)
	})
	transfer := func(a *node.Apps, w http.ResponseWriter, r *http.Request) (files.ID, bool) {
		id, err := files.ParseID(r.PathValue("id"))
		if err != nil {
			writeJSON(w, http.StatusNotFound, errorBody{"no transfer " + strconv.Quote(r.PathValue("id")) + ": see `parley files`"})
			return id, false
		}
		if _, ok := a.Transfer(id); !ok {
			writeJSON(w, http.StatusNotFound, errorBody{"no transfer " + id.String() + ": see `parley files`"})
			return id, false
		}
		return id, true
	}
	handle("GET /v1/files/{id}", func(a *node.Apps, w http.ResponseWriter, r *http.Request) {
		if id, ok := transfer(a, w, r); ok {
			t, _ := a.Transfer(id)
			reply(w, nil, t)
		}
	})
	handle("POST /v1/files", func(a *node.Apps, w http.ResponseWriter, r *http.Request) {
		var req sendRequest
		if !decode(w, r, &req) {
			return
		}
		t, err := a.SendFile(r.Context(), req.To, req.Path)
		if err != nil {
			reply(w, err, nil)
			return
		}
		ts, _ := a.Transfer(t.ID)
		reply(w, nil, ts)
	})
	handle("POST /v1/files/{id}/accept", func(a *node.Apps, w http.ResponseWriter, r *http.Request) {
		if id, ok := transfer(a, w, r); ok {
			reply(w, a.AcceptFile(id), nil)
		}
	})
	handle("POST /v1/files/{id}/decline", func(a *node.Apps, w http.ResponseWriter, r *http.Request) {
		if id, ok := transfer(a, w, r); ok {
			reply(w, a.DeclineFile(r.Context(), id), nil)
		}
	})
	handle("POST /v1/auto-accept/{peer}", func(a *node.Apps, w http.ResponseWriter, r *http.Request) {
		var req autoAcceptRequest
		if decode(w, r, &req) {
			reply(w, a.SetAutoAccept(r.Context(), r.PathValue("peer"), req.On), nil)
		}
	})
	handle("GET /v1/expose", func(a *node.Apps, w http.ResponseWriter, r *http.Request) {
		reply(w, nil, exposeResponse{Ports: append([]uint16{}, a.Exposed()...)})
	})
	port := func(w http.ResponseWriter, s string) (uint16, bool) {
		p, err := strconv.ParseUint(s, 10, 16)
		if err != nil || p == 0 {
			writeJSON(w, http.StatusBadRequest, errorBody{fmt.Sprintf("%q is not a port number (1 to 65535)", s)})
			return 0, false
		}
		return uint16(p), true
	}
	handle("POST /v1/expose/{port}", func(a *node.Apps, w http.ResponseWriter, r *http.Request) {
		if p, ok := port(w, r.PathValue("port")); ok {
			reply(w, a.Expose(r.Context(), p), nil)
		}
	})
	handle("DELETE /v1/expose/{port}", func(a *node.Apps, w http.ResponseWriter, r *http.Request) {
		if p, ok := port(w, r.PathValue("port")); ok {
			reply(w, a.Unexpose(r.Context(), p), nil)
		}
	})
	handle("GET /v1/connect/{peer}/{port}", func(a *node.Apps, w http.ResponseWriter, r *http.Request) {
		p, ok := port(w, r.PathValue("port"))
		if !ok {
			return
		}
		if r.Header.Get("Upgrade") != TunnelProtocol {
			writeJSON(w, http.StatusBadRequest, errorBody{"connect needs Upgrade: " + TunnelProtocol})
			return
		}
		// The tunnel is set up before the upgrade, so that a refusal is
		// an ordinary error answer.
		c, err := a.Tunnel(r.Context(), r.PathValue("peer"), p)
		if err != nil {
			reply(w, err, nil)
			return
		}
		rc := http.NewResponseController(w)
		conn, brw, err := rc.Hijack()
		if err != nil {
			c.Close()
			return
		}
		conn.SetDeadline(time.Time{})
		brw.WriteString("HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: " + TunnelProtocol + "\r\n\r\n")
		if err := brw.Flush(); err != nil {
			conn.Close()
			c.Close()
			return
		}
		// Bytes the client sent after its request may sit in brw's
		// reader already.
		tunnel.Join(&bufferedConn{Conn: conn, r: brw.Reader}, c)
	})
}

// bufferedConn is a connection whose first bytes were read into r.
type bufferedConn struct {
	net.Conn
	r *bufio.Reader
}

func (c *bufferedConn) Read(b []byte) (int, error) { return c.r.Read(b) }

// CloseWrite half-closes the connection, so that an end of input travels
// through the tunnel.
func (c *bufferedConn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return c.Conn.Close()
}

// SendMessage sends a chat message to peer.
func (c *Client) SendMessage(ctx context.Context, peer, text string) (Message, error) {
	var m Message
	err := c.do(ctx, http.MethodPost, "/v1/msg", sendRequest{To: peer, Text: text}, &m)
	return m, err
}

// History returns the last limit messages with peer, or with search the
// messages containing its words (newest first).
func (c *Client) History(ctx context.Context, peer, search string, limit int) ([]Message, error) {
	q := url.Values{}
	q.Set("peer", peer)
	if search != "" {
		q.Set("search", search)
	}
	q.Set("limit", strconv.Itoa(limit))
	var r historyResponse
	err := c.do(ctx, http.MethodGet, "/v1/history?"+q.Encode(), nil, &r)
	return r.Messages, err
}

// MarkRead marks peer's messages read.
func (c *Client) MarkRead(ctx context.Context, peer string) error {
	return c.do(ctx, http.MethodPost, "/v1/chat/"+url.PathEscape(peer)+"/read", nil, nil)
}

// Typing tells peer the user types.
func (c *Client) Typing(ctx context.Context, peer string) error {
	return c.do(ctx, http.MethodPost, "/v1/chat/"+url.PathEscape(peer)+"/typing", nil, nil)
}

// ChatEvents streams chat events with peer ("" for all) to fn until ctx
// ends or fn returns false.
func (c *Client) ChatEvents(ctx context.Context, peer string, fn func(ChatEvent) bool) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://parley/v1/chat/events?peer="+url.QueryEscape(peer), nil)
	if err != nil {
		return err
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return c.dialErr(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return errorOf(resp)
	}
	dec := json.NewDecoder(resp.Body)
	for {
		var ev ChatEvent
		if err := dec.Decode(&ev); err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			return err
		}
		if !fn(ev) {
			return nil
		}
	}
}

// Files lists the transfers.
func (c *Client) Files(ctx context.Context) (FilesResponse, error) {
	var r FilesResponse
	err := c.do(ctx, http.MethodGet, "/v1/files", nil, &r)
	return r, err
}

// File returns one transfer.
func (c *Client) File(ctx context.Context, id string) (node.TransferStatus, error) {
	var t node.TransferStatus
	err := c.do(ctx, http.MethodGet, "/v1/files/"+url.PathEscape(id), nil, &t)
	return t, err
}

// SendFile offers the file at path (made absolute by the caller) to peer.
func (c *Client) SendFile(ctx context.Context, peer, path string) (node.TransferStatus, error) {
	var t node.TransferStatus
	err := c.do(ctx, http.MethodPost, "/v1/files", sendRequest{To: peer, Path: path}, &t)
	return t, err
}

// FileOp runs op (accept, decline) on transfer id.
func (c *Client) FileOp(ctx context.Context, op, id string) error {
	return c.do(ctx, http.MethodPost, "/v1/files/"+url.PathEscape(id)+"/"+op, nil, nil)
}

// SetAutoAccept sets whether files from peer are accepted without asking.
func (c *Client) SetAutoAccept(ctx context.Context, peer string, on bool) error {
	return c.do(ctx, http.MethodPost, "/v1/auto-accept/"+url.PathEscape(peer), autoAcceptRequest{On: on}, nil)
}

// Exposed lists the exposed ports.
func (c *Client) Exposed(ctx context.Context) ([]uint16, error) {
	var r exposeResponse
	err := c.do(ctx, http.MethodGet, "/v1/expose", nil, &r)
	return r.Ports, err
}

// Expose exposes port (or stops exposing it, with on false).
func (c *Client) Expose(ctx context.Context, port uint16, on bool) error {
	m := http.MethodPost
	if !on {
		m = http.MethodDelete
	}
	return c.do(ctx, m, "/v1/expose/"+strconv.Itoa(int(port)), nil, nil)
}

// Connect opens a tunnel to port on peer's machine through the daemon. The
// returned conn carries the tunnel's bytes; CloseWrite half-closes it.
func (c *Client) Connect(ctx context.Context, peer string, port uint16) (net.Conn, error) {
	var d net.Dialer
	conn, err := d.DialContext(ctx, "unix", SocketPath(c.dir))
	if err != nil {
		return nil, c.dialErr(err)
	}
	stop := context.AfterFunc(ctx, func() { conn.SetDeadline(time.Unix(1, 0)) })
	defer stop()
	req, err := http.NewRequest(http.MethodGet, "http://parley/v1/connect/"+url.PathEscape(peer)+"/"+strconv.Itoa(int(port)), nil)
	if err != nil {
		conn.Close()
		return nil, err
	}
	req.Header.Set("Connection", "Upgrade")
	req.Header.Set("Upgrade", TunnelProtocol)
	if err := req.Write(conn); err != nil {
		conn.Close()
		return nil, err
	}
	br := bufio.NewReader(conn)
	resp, err := http.ReadResponse(br, req)
	if err != nil {
		conn.Close()
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		return nil, err
	}
	if resp.StatusCode != http.StatusSwitchingProtocols {
		defer conn.Close()
		return nil, errorOf(resp)
	}
	if !stop() {
		conn.Close()
		return nil, ctx.Err()
	}
	return &bufferedConn{Conn: conn, r: br}, nil
}

func (c *Client) dialErr(err error) error {
	if errors.Is(err, syscall.ENOENT) || errors.Is(err, syscall.ECONNREFUSED) {
		return fmt.Errorf("%w for %s", ErrNoDaemon, c.dir)
	}
	return err
}

// errorOf reads an error answer.
func errorOf(resp *http.Response) error {
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	var eb errorBody
	if json.Unmarshal(b, &eb) != nil || eb.Error == "" {
		return &DaemonError{fmt.Sprintf("the daemon answered %s", resp.Status)}
	}
	return &DaemonError{eb.Error}
}
