package directory

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"net/http"
	"net/netip"
	"slices"
	"time"

	"github.com/parley-p2p/parley/directory/store"
)

// peerDevice resolves a device key named by the caller and checks that the
// caller may reach it: it is one of the caller's own devices or belongs to
// a mutual contact. Anything else is 404, so that keys cannot be probed.
func (s *Server) peerDevice(ctx context.Context, r *http.Request, sess session, keyStr string) (store.Device, string, *apiError) {
	key, ok := parseKey(keyStr)
	if !ok {
		return store.Device{}, "", errorf(http.StatusBadRequest, codeInvalidKey, "the device key must be 32 bytes in standard base64")
	}
	d, err := s.store.DeviceByKey(ctx, key)
	if errors.Is(err, store.ErrNotFound) {
		return d, "", errorf(http.StatusNotFound, codeNotFound, "no such device among your contacts")
	}
	if err != nil {
		return d, "", s.internal(r, "device", err)
	}
	if d.ID == sess.deviceID {
		return d, "", errorf(http.StatusBadRequest, codeInvalidRequest, "that is this device")
	}
	if d.UserID == sess.userID {
		return d, sess.username, nil
	}
	st, err := s.store.ContactState(ctx, sess.userID, d.UserID)
	if err != nil && !errors.Is(err, store.ErrNotFound) {
		return d, "", s.internal(r, "contact", err)
	}
	if st != store.Mutual {
		return d, "", errorf(http.StatusNotFound, codeNotFound, "no such device among your contacts")
	}
	u, err := s.store.UserByID(ctx, d.UserID)
	if err != nil {
		return d, "", s.internal(r, "user", err)
	}
	return d, u.Username, nil
}

// Offer limits.
const (
	offerBody      = 8 << 10
	maxCandidates  = 16
	maxRTTs        = 16
	maxSessionID   = 64
	maxOfferTicket = 512
)

// rttJSON is one entry of an RTT vector: the sender's measured round trip
// to a supernode.
type rttJSON struct {
	Relay string  `json:"relay"`
	MS    float64 `json:"ms"`
}

type offerRequest struct {
	To         string    `json:"to"`
	Kind       string    `json:"kind"`
	Session    string    `json:"session"`
	Candidates []string  `json:"candidates"`
	RTTs       []rttJSON `json:"rtts"`
	Relay      string    `json:"relay,omitempty"`
	Ticket     string    `json:"ticket,omitempty"`
	NAT        string    `json:"nat,omitempty"`
	// IssueTicket asks the server to sign a relay ticket for the pair
	// through Relay and pass it on with the offer: one round trip instead
	// of POST /v1/tickets and then the offer.
	IssueTicket bool `json:"issue_ticket,omitempty"`
}

// natKinds are the NAT types an offer may state: what the sender learnt of
// its own network by STUN. The peer uses it to choose how to punch.
var natKinds = map[string]bool{"public": true, "endpoint-independent": true, "symmetric": true, "udp-blocked": true, "unknown": true}

type offerEvent struct {
	Type       string    `json:"type"`
	From       string    `json:"from"`
	FromDevice string    `json:"from_device"`
	Kind       string    `json:"kind"`
	Session    string    `json:"session"`
	Candidates []string  `json:"candidates"`
	RTTs       []rttJSON `json:"rtts"`
	Relay      string    `json:"relay,omitempty"`
	Ticket     string    `json:"ticket,omitempty"`
	NAT        string    `json:"nat,omitempty"`
}

func parseAddrPort(s string) (netip.AddrPort, error) {
	ap, err := netip.ParseAddrPort(s)
	if err != nil {
		return ap, err
	}
	if !ap.IsValid() || ap.Port() == 0 || ap.Addr().Zone() != "" {
		return ap, fmt.Errorf("invalid address %q", s)
	}
	return ap, nil
}

// offer: POST /v1/offers passes a connection offer (or answer) to one
// device of a mutual contact, on its event stream.
func (s *Server) offer(w http.ResponseWriter, r *http.Request, sess session) *apiError {
	var req offerRequest
	if e := decode(w, r, offerBody, &req); e != nil {
		return e
	}
	switch req.Kind {
	case "offer", "answer", "cancel":
	default:
		return errorf(http.StatusBadRequest, codeInvalidRequest, `kind must be "offer", "answer" or "cancel"`)
	}
	if req.Session == "" || len(req.Session) > maxSessionID {
		return errorf(http.StatusBadRequest, codeInvalidRequest, "session must have 1 to %d characters", maxSessionID)
	}
	if len(req.Candidates) > maxCandidates || len(req.RTTs) > maxRTTs || len(req.Ticket) > maxOfferTicket {
		return errorf(http.StatusBadRequest, codeInvalidRequest, "too many candidates or RTTs")
	}
	for _, c := range req.Candidates {
		if _, err := parseAddrPort(c); err != nil {
			return errorf(http.StatusBadRequest, codeInvalidRequest, "candidate %q is not ip:port", c)
		}
	}
	for _, rt := range req.RTTs {
		if _, ok := parseKey(rt.Relay); !ok || rt.MS < 0 || rt.MS > 60_000 {
			return errorf(http.StatusBadRequest, codeInvalidRequest, "bad RTT entry")
		}
	}
	if req.NAT != "" && !natKinds[req.NAT] {
		return errorf(http.StatusBadRequest, codeInvalidRequest, `nat must be "public", "endpoint-independent", "symmetric", "udp-blocked" or "unknown"`)
	}
	if req.Relay != "" {
		if _, ok := parseKey(req.Relay); !ok {
			return errorf(http.StatusBadRequest, codeInvalidKey, "relay must be a device key")
		}
	}
	if req.Ticket != "" {
		if _, err := base64.StdEncoding.DecodeString(req.Ticket); err != nil {
			return errorf(http.StatusBadRequest, codeInvalidRequest, "ticket must be standard base64")
		}
	}
	if req.IssueTicket && (req.Kind != "offer" || req.Relay == "" || req.Ticket != "") {
		return errorf(http.StatusBadRequest, codeInvalidRequest, `issue_ticket needs kind "offer", a relay and no ticket`)
	}
	ctx := r.Context()
	d, _, e := s.peerDevice(ctx, r, sess, req.To)
	if e != nil {
		return e
	}
	if !d.Online {
		return errorf(http.StatusConflict, codePeerOffline, "the device is offline; leave a mailbox message instead")
	}
	var grant *ticketResponse
	if req.IssueTicket {
		relayKey, _ := parseKey(req.Relay)
		g, e := s.signTicket(r, sess, d.PublicKey, relayKey)
		if e != nil {
			return e
		}
		grant = &g
		req.Ticket = base64.StdEncoding.EncodeToString(g.Ticket)
	}
	if req.Candidates == nil {
		req.Candidates = []string{}
	}
	if req.RTTs == nil {
		req.RTTs = []rttJSON{}
	}
	ev := offerEvent{Type: evOffer, From: sess.username, FromDevice: keyString(sess.deviceKey), Kind: req.Kind,
		Session: req.Session, Candidates: req.Candidates, RTTs: req.RTTs, Relay: req.Relay, Ticket: req.Ticket, NAT: req.NAT}
	s.publish(ctx, broadcast{Event: mustJSON(ev), Devices: []int64{d.ID}})
	s.m.offers.Inc()
	s.stats.offer(s.now())
	if grant != nil {
		writeJSON(w, http.StatusOK, grant)
		return nil
	}
	w.WriteHeader(http.StatusAccepted)
	return nil
}

type sessionReport struct {
	Peer string `json:"peer"`
	Path string `json:"path"`
}

// reportSession: POST /v1/sessions tells the server which path a session
// with a peer uses now, for the dashboard's direct/relayed counts.
func (s *Server) reportSession(w http.ResponseWriter, r *http.Request, sess session) *apiError {
	var req sessionReport
	if e := decode(w, r, smallBody, &req); e != nil {
		return e
	}
	if !slices.Contains([]string{"direct", "relayed", "closed"}, req.Path) {
		return errorf(http.StatusBadRequest, codeInvalidRequest, `path must be "direct", "relayed" or "closed"`)
	}
	d, _, e := s.peerDevice(r.Context(), r, sess, req.Peer)
	if e != nil {
		return e
	}
	s.stats.setPath(sess.deviceID, d.ID, req.Path)
	noContent(w)
	return nil
}

// ---- mailbox ----

type mailRequest struct {
	To   string `json:"to"`
	Blob []byte `json:"blob"` // standard base64 in JSON
}

type mailJSON struct {
	ID         int64     `json:"id"`
	From       string    `json:"from"`
	FromDevice string    `json:"from_device"`
	Blob       []byte    `json:"blob"`
	CreatedAt  time.Time `json:"created_at"`
}

// putMail: POST /v1/mailbox leaves an end-to-end encrypted blob for a
// device of a mutual contact (or one of the caller's own devices).
func (s *Server) putMail(w http.ResponseWriter, r *http.Request, sess session) *apiError {
	var req mailRequest
	// base64 grows the blob by 4/3; allow for the rest of the JSON.
	if e := decode(w, r, int64(s.cfg.MailboxMaxBlob)*4/3+1024, &req); e != nil {
		return e
	}
	if len(req.Blob) == 0 {
		return errorf(http.StatusBadRequest, codeInvalidRequest, "blob is empty")
	}
	if len(req.Blob) > s.cfg.MailboxMaxBlob {
		return errorf(http.StatusRequestEntityTooLarge, codeTooLarge, "a blob may have at most %d bytes", s.cfg.MailboxMaxBlob)
	}
	ctx := r.Context()
	d, _, e := s.peerDevice(ctx, r, sess, req.To)
	if e != nil {
		return e
	}
	m, err := s.store.PutMail(ctx, store.Mail{RecipientDevice: d.ID, SenderUser: sess.userID, SenderKey: sess.deviceKey, Blob: req.Blob, CreatedAt: s.now()},
		s.cfg.MailboxMaxCount, s.cfg.MailboxMaxBytes)
	if errors.Is(err, store.ErrLimit) {
		return errorf(http.StatusConflict, codeMailboxFull, "the recipient's mailbox is full")
	}
	if err != nil {
		return s.internal(r, "put mail", err)
	}
	s.m.mailboxPuts.Inc()
	if n, err := s.store.CountMail(ctx, d.ID); err == nil {
		s.publish(ctx, broadcast{Event: mustJSON(map[string]any{"type": evMailbox, "count": n}), Devices: []int64{d.ID}})
	}
	writeJSON(w, http.StatusCreated, map[string]int64{"id": m.ID})
	return nil
}

// getMail: GET /v1/mailbox returns the caller device's waiting blobs.
func (s *Server) getMail(w http.ResponseWriter, r *http.Request, sess session) *apiError {
	ms, err := s.store.Mail(r.Context(), sess.deviceID)
	if err != nil {
		return s.internal(r, "mail", err)
	}
	out := struct {
		Messages []mailJSON `json:"messages"`
	}{Messages: []mailJSON{}}
	for _, m := range ms {
		out.Messages = append(out.Messages, mailJSON{m.ID, m.SenderUsername, keyString(m.SenderKey), m.Blob, m.CreatedAt.UTC()})
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

type ackRequest struct {
	IDs []int64 `json:"ids"`
}

// ackMail: POST /v1/mailbox/ack deletes delivered blobs.
func (s *Server) ackMail(w http.ResponseWriter, r *http.Request, sess session) *apiError {
	var req ackRequest
	if e := decode(w, r, 64<<10, &req); e != nil {
		return e
	}
	if len(req.IDs) == 0 || len(req.IDs) > 1000 {
		return errorf(http.StatusBadRequest, codeInvalidRequest, "ids must list 1 to 1000 messages")
	}
	n, err := s.store.DeleteMail(r.Context(), sess.deviceID, req.IDs)
	if err != nil {
		return s.internal(r, "delete mail", err)
	}
	writeJSON(w, http.StatusOK, map[string]int{"deleted": n})
	return nil
}
