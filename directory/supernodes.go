package directory

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"time"

	"github.com/parley-p2p/parley/directory/store"
	"github.com/parley-p2p/parley/directory/ticket"
)

// Dial-back probe: the server proves that a device claiming to be a
// supernode is reachable on its claimed UDP address by sending it
//
//	offset size field
//	     0    8 magic "PRLYDB01"
//	     8   16 nonce, random
//
// and waiting for the same 24 bytes to come back from that address. The
// first byte 'P' (0x50, top bits 01) tells the probe apart from Parley
// packets (0xC1) and STUN messages (top bits 00) on the supernode's single
// socket. The probe is resent every 500 ms until DialbackTimeout; a probe
// is no larger than its echo, so the server cannot be used to amplify.
const (
	DialbackMagic = "PRLYDB01"
	DialbackSize  = len(DialbackMagic) + 16
)

// dialback verifies that addr echoes a probe before the timeout.
func (s *Server) verifyReachable(ctx context.Context, addr netip.AddrPort) error {
	var probe [DialbackSize]byte
	copy(probe[:], DialbackMagic)
	if _, err := rand.Read(probe[len(DialbackMagic):]); err != nil {
		return err
	}
	network := "udp4"
	if addr.Addr().Is6() && !addr.Addr().Is4In6() {
		network = "udp6"
	}
	var pc net.PacketConn
	var err error
	if s.cfg.DialbackListener != nil {
		pc, err = s.cfg.DialbackListener.ListenPacket(ctx, network, ":0")
	} else {
		pc, err = net.ListenUDP(network, nil)
	}
	if err != nil {
		return fmt.Errorf("dial-back socket: %w", err)
	}
	defer pc.Close()
	deadline := time.Now().Add(s.cfg.DialbackTimeout)
	if d, ok := ctx.Deadline(); ok && d.Before(deadline) {
		deadline = d
	}
	dst := net.UDPAddrFromAddrPort(addr)
	buf := make([]byte, 64)
	for time.Now().Before(deadline) {
		if _, err := pc.WriteTo(probe[:], dst); err != nil {
			return fmt.Errorf("dial-back send: %w", err)
		}
		next := time.Now().Add(500 * time.Millisecond)
		if next.After(deadline) {
			next = deadline
		}
		pc.SetReadDeadline(next)
		for {
			n, a, err := pc.ReadFrom(buf)
			var from netip.AddrPort
			if ua, ok := a.(*net.UDPAddr); ok {
				from = ua.AddrPort()
			}
			if err != nil {
				if ctx.Err() != nil {
					return ctx.Err()
				}
				break // timeout: resend
			}
			if from.Addr().Unmap() == addr.Addr().Unmap() && from.Port() == addr.Port() && bytes.Equal(buf[:n], probe[:]) {
				return nil
			}
		}
	}
	return errors.New("no echo before the deadline")
}

type supernodeRequest struct {
	Addr        string `json:"addr"`
	TCPPort     int    `json:"tcp_port"`     // relay over TCP on addr's host; 0: none
	BudgetRate  int64  `json:"budget_rate"`  // bytes per second
	BudgetBytes int64  `json:"budget_bytes"` // bytes per relayed session
}

type supernodeJSON struct {
	Key         string    `json:"key"`
	Addr        string    `json:"addr"`
	TCPPort     int       `json:"tcp_port,omitempty"`
	Load        int       `json:"load"`
	Sessions    int       `json:"sessions"`
	BudgetRate  int64     `json:"budget_rate"`
	BudgetBytes int64     `json:"budget_bytes"`
	VerifiedAt  time.Time `json:"verified_at"`
}

// registerSupernode: POST /v1/supernodes. The claimed address is verified
// by dial-back before the device is listed.
func (s *Server) registerSupernode(w http.ResponseWriter, r *http.Request, sess session) *apiError {
	var req supernodeRequest
	if e := decode(w, r, smallBody, &req); e != nil {
		return e
	}
	ap, err := parseAddrPort(req.Addr)
	if err != nil {
		return errorf(http.StatusBadRequest, codeInvalidRequest, "addr must be ip:port")
	}
	a := ap.Addr().Unmap()
	if !s.cfg.AllowPrivateSupernodes && (!a.IsGlobalUnicast() || a.IsPrivate()) {
		return errorf(http.StatusBadRequest, codeInvalidRequest, "a supernode needs a public unicast address")
	}
	if req.BudgetRate <= 0 || req.BudgetBytes <= 0 {
		return errorf(http.StatusBadRequest, codeInvalidRequest, "budget_rate and budget_bytes must be positive")
	}
	if req.TCPPort < 0 || req.TCPPort > 65535 {
		return errorf(http.StatusBadRequest, codeInvalidRequest, "tcp_port must be 0 (none) to 65535")
	}
	if e := s.limit(s.dialback, "dialback:"+sess.username); e != nil {
		return e
	}
	ctx := r.Context()
	if err := s.verifyReachable(ctx, netip.AddrPortFrom(a, ap.Port())); err != nil {
		s.m.dialbacks.WithLabelValues("failed").Inc()
		return errorf(http.StatusUnprocessableEntity, codeDialbackFailed, "%s did not echo the dial-back probe: %v", ap, err)
	}
	s.m.dialbacks.WithLabelValues("ok").Inc()
	now := s.now()
	sn := store.Supernode{DeviceID: sess.deviceID, Addr: netip.AddrPortFrom(a, ap.Port()).String(), TCPPort: req.TCPPort, VerifiedAt: now, ReportedAt: now,
		BudgetRate: req.BudgetRate, BudgetBytes: req.BudgetBytes}
	if err := s.store.PutSupernode(ctx, sn); err != nil {
		return s.internal(r, "put supernode", err)
	}
	s.log.Info("supernode verified", "user", sess.username, "device", sess.deviceID, "addr", sn.Addr)
	writeJSON(w, http.StatusCreated, supernodeJSON{Key: keyString(sess.deviceKey), Addr: sn.Addr, TCPPort: sn.TCPPort, BudgetRate: sn.BudgetRate, BudgetBytes: sn.BudgetBytes, VerifiedAt: now.UTC()})
	return nil
}

type loadReport struct {
	Load     int `json:"load"`
	Sessions int `json:"sessions"`
}

// reportLoad: PUT /v1/supernodes/self/load, at least once per SupernodeTTL
// to stay listed.
func (s *Server) reportLoad(w http.ResponseWriter, r *http.Request, sess session) *apiError {
	var req loadReport
	if e := decode(w, r, smallBody, &req); e != nil {
		return e
	}
	if req.Load < 0 || req.Load > 100 || req.Sessions < 0 {
		return errorf(http.StatusBadRequest, codeInvalidRequest, "load is a percentage 0..100 and sessions a count")
	}
	err := s.store.ReportLoad(r.Context(), sess.deviceID, req.Load, req.Sessions, s.now())
	if errors.Is(err, store.ErrNotFound) {
		return errorf(http.StatusNotFound, codeNotSupernode, "this device is not a listed supernode; register it first")
	}
	if err != nil {
		return s.internal(r, "report load", err)
	}
	noContent(w)
	return nil
}

// unregisterSupernode: DELETE /v1/supernodes/self.
func (s *Server) unregisterSupernode(w http.ResponseWriter, r *http.Request, sess session) *apiError {
	err := s.store.DeleteSupernode(r.Context(), sess.deviceID)
	if errors.Is(err, store.ErrNotFound) {
		return errorf(http.StatusNotFound, codeNotSupernode, "this device is not a listed supernode")
	}
	if err != nil {
		return s.internal(r, "delete supernode", err)
	}
	noContent(w)
	return nil
}

// Supernode candidates given to a device.
const (
	maxCandidateSupernodes = 8
	overloaded             = 90 // percent
)

// listSupernodes: GET /v1/supernodes: candidate relays for the caller,
// least loaded first. The caller measures RTTs to them and puts the vector
// in its offers, so that the pair can choose the relay that minimises
// RTT(a,R)+RTT(R,b).
func (s *Server) listSupernodes(w http.ResponseWriter, r *http.Request, sess session) *apiError {
	sns, err := s.store.Supernodes(r.Context(), s.now().Add(-s.cfg.SupernodeTTL))
	if err != nil {
		return s.internal(r, "supernodes", err)
	}
	out := struct {
		Supernodes []supernodeJSON `json:"supernodes"`
	}{Supernodes: []supernodeJSON{}}
	for _, sn := range sns {
		if sn.DeviceID == sess.deviceID || sn.Load >= overloaded {
			continue
		}
		out.Supernodes = append(out.Supernodes, supernodeJSON{Key: keyString(sn.PublicKey), Addr: sn.Addr, TCPPort: sn.TCPPort, Load: sn.Load, Sessions: sn.Sessions,
			BudgetRate: sn.BudgetRate, BudgetBytes: sn.BudgetBytes, VerifiedAt: sn.VerifiedAt.UTC()})
		if len(out.Supernodes) == maxCandidateSupernodes {
			break
		}
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

type ticketRequest struct {
	Peer  string `json:"peer"`
	Relay string `json:"relay"`
}

type ticketResponse struct {
	Ticket    []byte    `json:"ticket"` // standard base64
	ExpiresAt time.Time `json:"expires_at"`
	Relay     string    `json:"relay_addr"`
}

// issueTicket: POST /v1/tickets signs a relay ticket for the caller's
// device and a peer device (own or a mutual contact's) through a listed
// supernode.
func (s *Server) issueTicket(w http.ResponseWriter, r *http.Request, sess session) *apiError {
	var req ticketRequest
	if e := decode(w, r, smallBody, &req); e != nil {
		return e
	}
	peer, _, e := s.peerDevice(r.Context(), r, sess, req.Peer)
	if e != nil {
		return e
	}
	relayKey, ok := parseKey(req.Relay)
	if !ok {
		return errorf(http.StatusBadRequest, codeInvalidKey, "relay must be a device key")
	}
	g, e := s.signTicket(r, sess, peer.PublicKey, relayKey)
	if e != nil {
		return e
	}
	writeJSON(w, http.StatusOK, g)
	return nil
}

// signTicket signs a relay ticket for the caller's device and peer through
// the listed supernode relayKey (POST /v1/tickets, and offers with
// issue_ticket).
func (s *Server) signTicket(r *http.Request, sess session, peer, relayKey [32]byte) (ticketResponse, *apiError) {
	ctx := r.Context()
	now := s.now()
	sns, err := s.store.Supernodes(ctx, now.Add(-s.cfg.SupernodeTTL))
	if err != nil {
		return ticketResponse{}, s.internal(r, "supernodes", err)
	}
	var relay *store.Supernode
	for i := range sns {
		if sns[i].PublicKey == relayKey {
			relay = &sns[i]
		}
	}
	if relay == nil {
		return ticketResponse{}, errorf(http.StatusNotFound, codeNotSupernode, "the relay is not a listed supernode")
	}
	t := ticket.Ticket{
		IssuedAt: now, ExpiresAt: now.Add(s.cfg.TicketLifetime),
		A: sess.deviceKey, B: peer, Relay: relayKey,
		Budget: uint64(relay.BudgetBytes), Rate: uint32(min(relay.BudgetRate, 1<<32-1)),
	}
	s.m.tickets.Inc()
	return ticketResponse{Ticket: ticket.Sign(s.key, t), ExpiresAt: t.ExpiresAt.Truncate(time.Second).UTC(), Relay: relay.Addr}, nil
}

// serverKey: GET /v1/server-key publishes the key that verifies tickets.
func (s *Server) serverKey(w http.ResponseWriter, r *http.Request) *apiError {
	writeJSON(w, http.StatusOK, map[string]string{"algorithm": "ed25519", "key": base64.StdEncoding.EncodeToString(s.PublicKey())})
	return nil
}

// configInfo: GET /v1/config tells clients where the STUN listener is.
func (s *Server) configInfo(w http.ResponseWriter, r *http.Request) *apiError {
	writeJSON(w, http.StatusOK, map[string]any{"stun": s.cfg.STUN, "stun_alt": s.cfg.STUNAlt, "api_version": 1})
	return nil
}
