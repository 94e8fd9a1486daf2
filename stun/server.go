package stun

import (
	"context"
	"encoding/binary"
	"errors"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"
)

// Server answers Binding requests on a primary socket and, for RFC 5780
// behaviour tests, an alternate socket on another port of the same address.
// A request's CHANGE-REQUEST "change port" flag makes the answer come from
// the other socket; "change IP" is refused with 420, since the server has
// one address.
//
// Classic RFC 3489 requests (without the magic cookie) are answered with
// MAPPED-ADDRESS only, so that old clients work too.
type Server struct {
	// Primary is required; Alt may be nil, which disables OTHER-ADDRESS
	// and CHANGE-REQUEST.
	Primary, Alt net.PacketConn
	// Software is sent in SOFTWARE; empty sends none.
	Software string
	// Advertise is the address put in RESPONSE-ORIGIN and OTHER-ADDRESS
	// when the sockets are bound to an unspecified address; if it is not
	// valid those attributes are left out in that case.
	Advertise netip.Addr
	// Logger may be nil.
	Logger *slog.Logger

	requests atomic.Uint64
}

// Requests returns how many Binding requests were answered.
func (s *Server) Requests() uint64 { return s.requests.Load() }

// Serve answers requests until ctx is done or a socket fails; it does not
// close the sockets, which belong to the caller.
func (s *Server) Serve(ctx context.Context) error {
	if s.Logger == nil {
		s.Logger = slog.New(slog.DiscardHandler)
	}
	conns := []net.PacketConn{s.Primary}
	if s.Alt != nil {
		conns = append(conns, s.Alt)
	}
	errc := make(chan error, len(conns))
	var wg sync.WaitGroup
	for i, pc := range conns {
		wg.Go(func() { errc <- s.loop(pc, i == 1) })
	}
	var err error
	select {
	case <-ctx.Done():
	case err = <-errc:
	}
	// Unblock the loops without closing the caller's sockets.
	for _, pc := range conns {
		pc.SetReadDeadline(time.Unix(1, 0))
	}
	wg.Wait()
	for _, pc := range conns {
		pc.SetReadDeadline(time.Time{})
	}
	return err
}

func (s *Server) loop(pc net.PacketConn, alt bool) error {
	buf := make([]byte, 1500)
	out := make([]byte, 0, 256)
	for {
		n, from, err := pc.ReadFrom(buf)
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				return nil
			}
			return err
		}
		src, ok := addrPortOf(from)
		if !ok {
			continue
		}
		resp, useAlt := s.handle(buf[:n], src, alt, out[:0])
		if resp == nil {
			continue
		}
		send := pc
		if useAlt {
			send = s.other(alt)
		}
		if _, err := send.WriteTo(resp, from); err != nil {
			s.Logger.Debug("stun: send failed", "to", from, "err", err)
		}
	}
}

func (s *Server) other(alt bool) net.PacketConn {
	if alt {
		return s.Primary
	}
	return s.Alt
}

func addrPortOf(a net.Addr) (netip.AddrPort, bool) {
	if ua, ok := a.(*net.UDPAddr); ok {
		ap := ua.AddrPort()
		return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port()), true
	}
	ap, err := netip.ParseAddrPort(a.String())
	return ap, err == nil
}

// localAddr is what RESPONSE-ORIGIN and OTHER-ADDRESS report for pc.
func (s *Server) localAddr(pc net.PacketConn) (netip.AddrPort, bool) {
	if pc == nil {
		return netip.AddrPort{}, false
	}
	ap, ok := addrPortOf(pc.LocalAddr())
	if !ok {
		return ap, false
	}
	if ap.Addr().IsUnspecified() {
		if !s.Advertise.IsValid() {
			return ap, false
		}
		ap = netip.AddrPortFrom(s.Advertise, ap.Port())
	}
	return ap, true
}

// understood lists the comprehension-required attributes (below 0x8000) a
// Binding request may carry without a 420: CHANGE-REQUEST, and those that
// only matter to authenticated or ICE usages, which a Binding server
// without credentials may ignore.
func understood(t uint16) bool {
	switch t {
	case attrChangeRequest,
		0x0006, // USERNAME
		0x0008, // MESSAGE-INTEGRITY
		0x001C, // MESSAGE-INTEGRITY-SHA256
		0x001E, // USERHASH
		0x0024, // PRIORITY (ICE)
		0x0025, // USE-CANDIDATE (ICE)
		0x0026: // PADDING (RFC 5780)
		return true
	}
	return t >= 0x8000
}

// handle builds the answer to one datagram, or nil to stay silent.
func (s *Server) handle(b []byte, src netip.AddrPort, onAlt bool, out []byte) (resp []byte, fromOther bool) {
	m, err := parse(b, true)
	if err != nil || m.typ != typeBindingRequest {
		// Responses, indications, other methods and garbage get no
		// answer: answering garbage would make the server a reflector.
		return nil, false
	}
	var unknown []uint16
	var flags uint32
	for _, a := range m.attrs {
		if !understood(a.typ) {
			unknown = append(unknown, a.typ)
		}
		if a.typ == attrChangeRequest && len(a.value) == 4 {
			flags = binary.BigEndian.Uint32(a.value)
		}
	}
	if flags&flagChangeIP != 0 || flags&flagChangePort != 0 && s.Alt == nil {
		// RFC 5780 §6.1: no alternate address to answer from.
		unknown = append(unknown, attrChangeRequest)
	}
	if len(unknown) > 0 {
		return s.errorResponse(out, m, 420, "Unknown Attribute", unknown), false
	}
	s.requests.Add(1)
	fromOther = flags&flagChangePort != 0
	if m.classic {
		w := newBuilder(out, typeBindingSuccess, m.txID, true)
		w.addr(attrMappedAddress, src, false, m.txID)
		return w.finish(false), fromOther
	}
	w := newBuilder(out, typeBindingSuccess, m.txID, false)
	w.addr(attrXORMappedAddress, src, true, m.txID)
	w.addr(attrMappedAddress, src, false, m.txID)
	sendOnAlt := onAlt != fromOther
	sender, other := s.Primary, s.Alt
	if sendOnAlt {
		sender, other = s.Alt, s.Primary
	}
	if ap, ok := s.localAddr(sender); ok {
		w.addr(attrResponseOrigin, ap, false, m.txID)
	}
	if s.Alt != nil {
		if ap, ok := s.localAddr(other); ok {
			w.addr(attrOtherAddress, ap, false, m.txID)
		}
	}
	if s.Software != "" {
		w.attr(attrSoftware, []byte(s.Software))
	}
	return w.finish(true), fromOther
}

func (s *Server) errorResponse(out []byte, m message, code int, reason string, unknown []uint16) []byte {
	w := newBuilder(out, typeBindingError, m.txID, m.classic)
	v := []byte{0, 0, byte(code / 100), byte(code % 100)}
	w.attr(attrErrorCode, append(v, reason...))
	if len(unknown) > 0 {
		var u []byte
		for _, t := range unknown {
			u = binary.BigEndian.AppendUint16(u, t)
		}
		w.attr(attrUnknownAttrs, u)
	}
	if s.Software != "" && !m.classic {
		w.attr(attrSoftware, []byte(s.Software))
	}
	return w.finish(!m.classic)
}
