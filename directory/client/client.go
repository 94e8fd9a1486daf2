// Package client is a typed Go client of the directory server's HTTP API
// (docs/api.md), used by the peer daemon, the benchmark and the tests.
//
// A Client is safe for concurrent use; its Token field is set by Login and
// must not be changed concurrently with requests.
package client

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/coder/websocket"
)

// Key is a device's Curve25519 public key.
type Key [32]byte

// String is the key in standard base64, as in JSON bodies.
func (k Key) String() string { return base64.StdEncoding.EncodeToString(k[:]) }

// MarshalText encodes the key in standard base64.
func (k Key) MarshalText() ([]byte, error) { return []byte(k.String()), nil }

// UnmarshalText decodes a standard base64 key.
func (k *Key) UnmarshalText(b []byte) error {
	d, err := base64.StdEncoding.Strict().DecodeString(string(b))
	if err != nil || len(d) != len(k) {
		return fmt.Errorf("bad device key %q", b)
	}
	copy(k[:], d)
	return nil
}

// PathString is the key in unpadded base64url, as in URL paths.
func (k Key) PathString() string { return base64.RawURLEncoding.EncodeToString(k[:]) }

// Error is an API error: the HTTP status and the stable code from the JSON
// body.
type Error struct {
	Status  int
	Code    string
	Message string
}

func (e *Error) Error() string {
	return fmt.Sprintf("directory: %d %s: %s", e.Status, e.Code, e.Message)
}

// IsCode reports whether err is an API error with the given code.
func IsCode(err error, code string) bool {
	var e *Error
	return errors.As(err, &e) && e.Code == code
}

// StatusOf returns err's HTTP status, or 0.
func StatusOf(err error) int {
	var e *Error
	if errors.As(err, &e) {
		return e.Status
	}
	return 0
}

// Client talks to one directory server.
type Client struct {
	base  string
	http  *http.Client
	Token string
}

// New returns a client for the server at baseURL (e.g.
// "https://dir.example:8443"). hc nil means http.DefaultClient.
func New(baseURL string, hc *http.Client) *Client {
	if hc == nil {
		hc = http.DefaultClient
	}
	return &Client{base: strings.TrimSuffix(baseURL, "/"), http: hc}
}

// WithToken returns a copy of c that authenticates with token.
func (c *Client) WithToken(token string) *Client {
	cc := *c
	cc.Token = token
	return &cc
}

// do sends a request with an optional JSON body and decodes a JSON answer
// into out (if non-nil). It returns the response headers.
func (c *Client) do(ctx context.Context, method, path string, in, out any, hdr http.Header) (*http.Response, error) {
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return nil, err
		}
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, body)
	if err != nil {
		return nil, err
	}
	for k, v := range hdr {
		req.Header[k] = v
	}
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if c.Token != "" {
		req.Header.Set("Authorization", "Bearer "+c.Token)
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode >= 400 {
		var eb struct {
			Error struct{ Code, Message string } `json:"error"`
		}
		json.NewDecoder(io.LimitReader(resp.Body, 64<<10)).Decode(&eb)
		return resp, &Error{Status: resp.StatusCode, Code: eb.Error.Code, Message: eb.Error.Message}
	}
	if out != nil && resp.StatusCode != http.StatusNotModified && resp.StatusCode != http.StatusNoContent {
		if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
			return resp, fmt.Errorf("directory: decoding %s %s: %w", method, path, err)
		}
	} else {
		io.Copy(io.Discard, resp.Body)
	}
	return resp, nil
}

// Account is a user's own profile.
type Account struct {
	Username  string    `json:"username"`
	CreatedAt time.Time `json:"created_at"`
}

// Register creates an account.
func (c *Client) Register(ctx context.Context, username, password string) (Account, error) {
	var a Account
	_, err := c.do(ctx, "POST", "/v1/accounts", map[string]string{"username": username, "password": password}, &a, nil)
	return a, err
}

// Device is a device as the API shows it.
type Device struct {
	Key       Key       `json:"key"`
	Name      string    `json:"name"`
	Online    bool      `json:"online"`
	LastSeen  time.Time `json:"last_seen"`
	Endpoints []string  `json:"endpoints,omitempty"`
	CreatedAt time.Time `json:"created_at,omitzero"`
	Current   bool      `json:"current,omitempty"`
}

// Session is the result of a login.
type Session struct {
	Token     string    `json:"token"`
	ExpiresAt time.Time `json:"expires_at"`
	Username  string    `json:"username"`
	Device    Device    `json:"device"`
}

// Login authenticates and registers the device; on success c.Token is set.
func (c *Client) Login(ctx context.Context, username, password, deviceName string, key Key) (Session, error) {
	var s Session
	_, err := c.do(ctx, "POST", "/v1/login", map[string]string{
		"username": username, "password": password, "device_name": deviceName, "device_key": key.String(),
	}, &s, nil)
	if err == nil {
		c.Token = s.Token
	}
	return s, err
}

// Logout revokes c's token.
func (c *Client) Logout(ctx context.Context) error {
	_, err := c.do(ctx, "POST", "/v1/logout", nil, nil, nil)
	return err
}

// Account returns the caller's profile.
func (c *Client) Account(ctx context.Context) (Account, error) {
	var a Account
	_, err := c.do(ctx, "GET", "/v1/account", nil, &a, nil)
	return a, err
}

// ChangePassword changes the password; other tokens are revoked.
func (c *Client) ChangePassword(ctx context.Context, old, new string) error {
	_, err := c.do(ctx, "PUT", "/v1/account/password", map[string]string{"old_password": old, "new_password": new}, nil, nil)
	return err
}

// DeleteAccount deletes the account and all its data.
func (c *Client) DeleteAccount(ctx context.Context, password string) error {
	_, err := c.do(ctx, "DELETE", "/v1/account", map[string]string{"password": password}, nil, nil)
	return err
}

// Devices lists the caller's devices.
func (c *Client) Devices(ctx context.Context) ([]Device, error) {
	var out struct{ Devices []Device }
	_, err := c.do(ctx, "GET", "/v1/devices", nil, &out, nil)
	return out.Devices, err
}

// RevokeDevice revokes one of the caller's devices.
func (c *Client) RevokeDevice(ctx context.Context, key Key) error {
	_, err := c.do(ctx, "DELETE", "/v1/devices/"+key.PathString(), nil, nil, nil)
	return err
}

// SetEndpoints reports the caller device's candidate addresses.
func (c *Client) SetEndpoints(ctx context.Context, endpoints []string) error {
	_, err := c.do(ctx, "PUT", "/v1/devices/self/endpoints", map[string]any{"endpoints": endpoints}, nil, nil)
	return err
}

// Contact is a row of the contact list.
type Contact struct {
	Username string    `json:"username"`
	State    string    `json:"state"` // outgoing, incoming, mutual, blocked
	Since    time.Time `json:"since,omitzero"`
	Online   bool      `json:"online"`
	Devices  []Device  `json:"devices,omitempty"`
}

// Contacts returns the contact list. If etag is non-empty and the list is
// unchanged, notModified is true and the list is nil.
func (c *Client) Contacts(ctx context.Context, etag string) (list []Contact, newETag string, notModified bool, err error) {
	var out struct{ Contacts []Contact }
	var hdr http.Header
	if etag != "" {
		hdr = http.Header{"If-None-Match": {etag}}
	}
	resp, err := c.do(ctx, "GET", "/v1/contacts", nil, &out, hdr)
	if err != nil {
		return nil, "", false, err
	}
	if resp.StatusCode == http.StatusNotModified {
		return nil, etag, true, nil
	}
	return out.Contacts, resp.Header.Get("ETag"), false, nil
}

// Contact returns the caller's row about one user.
func (c *Client) Contact(ctx context.Context, username string) (Contact, error) {
	var out Contact
	_, err := c.do(ctx, "GET", "/v1/contacts/"+url.PathEscape(username), nil, &out, nil)
	return out, err
}

func (c *Client) contactAction(ctx context.Context, username, action string) (string, error) {
	var out struct{ State string }
	_, err := c.do(ctx, "POST", "/v1/contacts/"+url.PathEscape(username)+"/"+action, nil, &out, nil)
	return out.State, err
}

// RequestContact asks username to be a contact and returns the new state
// ("outgoing", or "mutual" if they had asked already).
func (c *Client) RequestContact(ctx context.Context, username string) (string, error) {
	return c.contactAction(ctx, username, "request")
}

// AcceptContact accepts username's request.
func (c *Client) AcceptContact(ctx context.Context, username string) error {
	_, err := c.contactAction(ctx, username, "accept")
	return err
}

// DeclineContact declines username's request.
func (c *Client) DeclineContact(ctx context.Context, username string) error {
	_, err := c.contactAction(ctx, username, "decline")
	return err
}

// BlockContact blocks username.
func (c *Client) BlockContact(ctx context.Context, username string) error {
	_, err := c.contactAction(ctx, username, "block")
	return err
}

// UnblockContact lifts a block.
func (c *Client) UnblockContact(ctx context.Context, username string) error {
	_, err := c.contactAction(ctx, username, "unblock")
	return err
}

// RemoveContact ends a contact or cancels a request.
func (c *Client) RemoveContact(ctx context.Context, username string) error {
	_, err := c.do(ctx, "DELETE", "/v1/contacts/"+url.PathEscape(username), nil, nil, nil)
	return err
}

// User is the result of a lookup.
type User struct {
	Username string   `json:"username"`
	Contact  string   `json:"contact,omitempty"`
	Online   *bool    `json:"online,omitempty"`
	Devices  []Device `json:"devices,omitempty"`
}

// LookupUser finds a user by exact name.
func (c *Client) LookupUser(ctx context.Context, username string) (User, error) {
	var out User
	_, err := c.do(ctx, "GET", "/v1/users/"+url.PathEscape(username), nil, &out, nil)
	return out, err
}

// SearchUsers lists users whose name starts with prefix.
func (c *Client) SearchUsers(ctx context.Context, prefix string) ([]User, error) {
	var out struct{ Users []User }
	_, err := c.do(ctx, "GET", "/v1/users?prefix="+url.QueryEscape(prefix), nil, &out, nil)
	return out.Users, err
}

// RTT is one entry of an RTT vector.
type RTT struct {
	Relay Key     `json:"relay"`
	MS    float64 `json:"ms"`
}

// Offer is a connection offer, answer or cancellation.
type Offer struct {
	To         Key      `json:"to"`
	Kind       string   `json:"kind"` // offer, answer, cancel
	Session    string   `json:"session"`
	Candidates []string `json:"candidates"`
	RTTs       []RTT    `json:"rtts"`
	Relay      *Key     `json:"relay,omitempty"`
	Ticket     []byte   `json:"ticket,omitempty"`
	// NAT is the sender's NAT type as it learnt it by STUN: "public",
	// "endpoint-independent", "symmetric", "udp-blocked" or "unknown".
	NAT string `json:"nat,omitempty"`
}

// SendOffer passes o to a device of a mutual contact.
func (c *Client) SendOffer(ctx context.Context, o Offer) error {
	_, err := c.do(ctx, "POST", "/v1/offers", o, nil, nil)
	return err
}

// OfferRelay passes an offer of a relay channel through relay (o.Relay must
// be set, o.Ticket empty) with a ticket the server signs for the pair: the
// peer receives the ticket with the offer, and the caller gets it back. One
// round trip where Ticket and then SendOffer take two.
func (c *Client) OfferRelay(ctx context.Context, o Offer) (ticket []byte, expires time.Time, relayAddr string, err error) {
	var out struct {
		Ticket    []byte    `json:"ticket"`
		ExpiresAt time.Time `json:"expires_at"`
		RelayAddr string    `json:"relay_addr"`
	}
	req := struct {
		Offer
		IssueTicket bool `json:"issue_ticket"`
	}{o, true}
	_, err = c.do(ctx, "POST", "/v1/offers", req, &out, nil)
	return out.Ticket, out.ExpiresAt, out.RelayAddr, err
}

// ReportSession tells the server which path a session uses now: "direct",
// "relayed" or "closed".
func (c *Client) ReportSession(ctx context.Context, peer Key, path string) error {
	_, err := c.do(ctx, "POST", "/v1/sessions", map[string]any{"peer": peer, "path": path}, nil, nil)
	return err
}

// Mail is a mailbox message.
type Mail struct {
	ID         int64     `json:"id"`
	From       string    `json:"from"`
	FromDevice Key       `json:"from_device"`
	Blob       []byte    `json:"blob"`
	CreatedAt  time.Time `json:"created_at"`
}

// PutMail leaves an encrypted blob for a device.
func (c *Client) PutMail(ctx context.Context, to Key, blob []byte) (int64, error) {
	var out struct{ ID int64 }
	_, err := c.do(ctx, "POST", "/v1/mailbox", map[string]any{"to": to, "blob": blob}, &out, nil)
	return out.ID, err
}

// Mail returns the blobs waiting for the caller's device.
func (c *Client) Mail(ctx context.Context) ([]Mail, error) {
	var out struct{ Messages []Mail }
	_, err := c.do(ctx, "GET", "/v1/mailbox", nil, &out, nil)
	return out.Messages, err
}

// AckMail deletes delivered blobs and returns how many were deleted.
func (c *Client) AckMail(ctx context.Context, ids []int64) (int, error) {
	var out struct{ Deleted int }
	_, err := c.do(ctx, "POST", "/v1/mailbox/ack", map[string]any{"ids": ids}, &out, nil)
	return out.Deleted, err
}

// Supernode is a listed relay.
type Supernode struct {
	Key         Key       `json:"key"`
	Addr        string    `json:"addr"`
	TCPPort     int       `json:"tcp_port,omitempty"` // relay over TCP on Addr's host; 0: none
	Load        int       `json:"load"`
	Sessions    int       `json:"sessions"`
	BudgetRate  int64     `json:"budget_rate"`
	BudgetBytes int64     `json:"budget_bytes"`
	VerifiedAt  time.Time `json:"verified_at"`
}

// RegisterSupernode claims addr; the server dials it back before listing.
// tcpPort is the port on addr's host where it relays over TCP, 0 if none.
func (c *Client) RegisterSupernode(ctx context.Context, addr string, tcpPort int, budgetRate, budgetBytes int64) (Supernode, error) {
	var out Supernode
	_, err := c.do(ctx, "POST", "/v1/supernodes", map[string]any{"addr": addr, "tcp_port": tcpPort, "budget_rate": budgetRate, "budget_bytes": budgetBytes}, &out, nil)
	return out, err
}

// ReportLoad reports the supernode's load (percent) and sessions.
func (c *Client) ReportLoad(ctx context.Context, load, sessions int) error {
	_, err := c.do(ctx, "PUT", "/v1/supernodes/self/load", map[string]int{"load": load, "sessions": sessions}, nil, nil)
	return err
}

// UnregisterSupernode stops listing the caller's device.
func (c *Client) UnregisterSupernode(ctx context.Context) error {
	_, err := c.do(ctx, "DELETE", "/v1/supernodes/self", nil, nil, nil)
	return err
}

// Supernodes returns candidate relays for the caller.
func (c *Client) Supernodes(ctx context.Context) ([]Supernode, error) {
	var out struct{ Supernodes []Supernode }
	_, err := c.do(ctx, "GET", "/v1/supernodes", nil, &out, nil)
	return out.Supernodes, err
}

// Ticket asks for a relay ticket for the caller and peer through relay.
func (c *Client) Ticket(ctx context.Context, peer, relay Key) (ticket []byte, expires time.Time, relayAddr string, err error) {
	var out struct {
		Ticket    []byte    `json:"ticket"`
		ExpiresAt time.Time `json:"expires_at"`
		RelayAddr string    `json:"relay_addr"`
	}
	_, err = c.do(ctx, "POST", "/v1/tickets", map[string]any{"peer": peer, "relay": relay}, &out, nil)
	return out.Ticket, out.ExpiresAt, out.RelayAddr, err
}

// ServerKey returns the Ed25519 key that verifies relay tickets.
func (c *Client) ServerKey(ctx context.Context) (ed25519.PublicKey, error) {
	var out struct{ Algorithm, Key string }
	if _, err := c.do(ctx, "GET", "/v1/server-key", nil, &out, nil); err != nil {
		return nil, err
	}
	b, err := base64.StdEncoding.DecodeString(out.Key)
	if err != nil || out.Algorithm != "ed25519" || len(b) != ed25519.PublicKeySize {
		return nil, fmt.Errorf("directory: bad server key")
	}
	return ed25519.PublicKey(b), nil
}

// Status is the public status the dashboard shows.
type Status struct {
	OnlineDevices   int `json:"online_devices"`
	StreamsHere     int `json:"streams_here"`
	OffersPerMinute int `json:"offers_per_minute"`
	Direct          int `json:"direct_sessions"`
	Relayed         int `json:"relayed_sessions"`
	Supernodes      []struct {
		Key      string `json:"key"`
		Load     int    `json:"load"`
		Sessions int    `json:"sessions"`
	} `json:"supernodes"`
}

// Status returns the server's status.
func (c *Client) Status(ctx context.Context) (Status, error) {
	var out Status
	_, err := c.do(ctx, "GET", "/v1/status", nil, &out, nil)
	return out, err
}

// Event is one event from the stream. Type says which fields are set.
type Event struct {
	Type       string    `json:"type"`
	Username   string    `json:"username,omitempty"`
	Device     *Key      `json:"device,omitempty"`
	Online     bool      `json:"online,omitempty"`
	At         time.Time `json:"at,omitzero"`
	Count      int       `json:"count,omitempty"`
	From       string    `json:"from,omitempty"`
	FromDevice *Key      `json:"from_device,omitempty"`
	Kind       string    `json:"kind,omitempty"`
	Session    string    `json:"session,omitempty"`
	Candidates []string  `json:"candidates,omitempty"`
	RTTs       []RTT     `json:"rtts,omitempty"`
	Relay      *Key      `json:"relay,omitempty"`
	Ticket     []byte    `json:"ticket,omitempty"`
	NAT        string    `json:"nat,omitempty"`
	Code       int       `json:"code,omitempty"`
	Reason     string    `json:"reason,omitempty"`
	// Raw is the event as received.
	Raw json.RawMessage `json:"-"`
}

// EventStream is a device's event stream.
type EventStream struct {
	conn *websocket.Conn
}

// Events opens the caller device's event stream. The first event is
// "hello".
func (c *Client) Events(ctx context.Context) (*EventStream, error) {
	u := c.base + "/v1/events"
	u = "ws" + strings.TrimPrefix(u, "http")
	conn, resp, err := websocket.Dial(ctx, u, &websocket.DialOptions{
		HTTPClient: c.http,
		HTTPHeader: http.Header{"Authorization": {"Bearer " + c.Token}},
	})
	if err != nil {
		if resp != nil && resp.StatusCode >= 400 {
			return nil, &Error{Status: resp.StatusCode, Message: err.Error()}
		}
		return nil, err
	}
	conn.SetReadLimit(1 << 20)
	return &EventStream{conn: conn}, nil
}

// Next returns the next event.
func (s *EventStream) Next(ctx context.Context) (Event, error) {
	_, b, err := s.conn.Read(ctx)
	if err != nil {
		return Event{}, err
	}
	var ev Event
	if err := json.Unmarshal(b, &ev); err != nil {
		return Event{}, fmt.Errorf("directory: bad event: %w", err)
	}
	ev.Raw = b
	return ev, nil
}

// Close closes the stream.
func (s *EventStream) Close() error {
	return s.conn.Close(websocket.StatusNormalClosure, "")
}

// CloseNow closes the stream without the closing handshake.
func (s *EventStream) CloseNow() error { return s.conn.CloseNow() }
