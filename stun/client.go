package stun

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"time"
)

// Retransmission defaults, RFC 8489 §6.2.1: an initial RTO of 500 ms,
// doubled after each transmission, Rc = 7 transmissions, and a final wait
// of Rm = 16 RTOs: 39.5 s in all.
const (
	DefaultRTO      = 500 * time.Millisecond
	DefaultAttempts = 7
	lastWaitFactor  = 16
)

// ErrTimeout is returned when no response arrived after all
// retransmissions.
var ErrTimeout = errors.New("stun: no response")

// NewTxID returns a random transaction ID.
func NewTxID() TxID {
	var id TxID
	rand.Read(id[:])
	return id
}

// Client sends Binding requests. The zero value uses the RFC 8489
// defaults.
type Client struct {
	RTO      time.Duration // zero means DefaultRTO
	Attempts int           // zero means DefaultAttempts
}

// Bind asks server for pc's reflexive address with the default client.
//
// Bind reads from pc until it has the answer, discarding datagrams that are
// not the answer, and leaves pc's read deadline cleared: it is meant for
// before pc is handed to the code that reads from it. Code that already
// reads from pc sends AppendBindingRequest itself and passes STUN packets
// (IsMessage) to ParseResponse.
func Bind(ctx context.Context, pc net.PacketConn, server net.Addr) (netip.AddrPort, error) {
	var c Client
	r, err := c.Request(ctx, pc, server, false)
	return r.mapped, err
}

// Bind is the package-level Bind with c's retransmission settings.
func (c *Client) Bind(ctx context.Context, pc net.PacketConn, server net.Addr) (netip.AddrPort, error) {
	r, err := c.Request(ctx, pc, server, false)
	return r.mapped, err
}

// Request sends a Binding request, with CHANGE-REQUEST "change port" if
// changePort (RFC 5780 §4.3: the answer comes from the server's other
// port), and returns the full response.
func (c *Client) Request(ctx context.Context, pc net.PacketConn, server net.Addr, changePort bool) (Response, error) {
	rto := c.RTO
	if rto <= 0 {
		rto = DefaultRTO
	}
	attempts := c.Attempts
	if attempts <= 0 {
		attempts = DefaultAttempts
	}
	id := NewTxID()
	var req []byte
	if changePort {
		var full [16]byte
		binary.BigEndian.PutUint32(full[:], magicCookie)
		copy(full[4:], id[:])
		w := newBuilder(make([]byte, 0, 64), typeBindingRequest, full, false)
		w.attr(attrChangeRequest, []byte{0, 0, 0, flagChangePort})
		req = w.finish(true)
	} else {
		req = AppendBindingRequest(make([]byte, 0, 32), id)
	}
	defer pc.SetReadDeadline(time.Time{})
	// Cancellation interrupts a read in progress.
	stop := context.AfterFunc(ctx, func() { pc.SetReadDeadline(time.Unix(1, 0)) })
	defer stop()
	buf := make([]byte, 1500)
	wait := rto
	for i := 0; i < attempts; i++ {
		if err := ctx.Err(); err != nil {
			return Response{}, err
		}
		if _, err := pc.WriteTo(req, server); err != nil {
			return Response{}, fmt.Errorf("stun: send to %v: %w", server, err)
		}
		if i == attempts-1 {
			wait = rto * lastWaitFactor
		}
		deadline := time.Now().Add(wait)
		if d, ok := ctx.Deadline(); ok && d.Before(deadline) {
			deadline = d
		}
		pc.SetReadDeadline(deadline)
		if ctx.Err() != nil {
			// Canceled between the check and the deadline: the
			// AfterFunc's deadline may have been overwritten.
			return Response{}, ctx.Err()
		}
		for {
			n, _, err := pc.ReadFrom(buf)
			if err != nil {
				var ne net.Error
				if errors.As(err, &ne) && ne.Timeout() {
					break
				}
				return Response{}, fmt.Errorf("stun: read: %w", err)
			}
			if !IsMessage(buf[:n]) {
				continue
			}
			r, err := parseResponse(buf[:n], id)
			if errors.Is(err, ErrMismatch) || errors.Is(err, errUnexpectType) {
				continue // someone else's transaction, or a request
			}
			return r, err
		}
		if err := ctx.Err(); err != nil {
			return Response{}, err
		}
		wait *= 2
	}
	return Response{}, ErrTimeout
}
