// Package tunnel carries TCP connections over Parley streams: `parley
// connect bob:22` (Connect), `parley forward 127.0.0.1:8080 bob:80`
// (Forward) and the serving side of `parley expose 22` (Serve with a
// Policy).
//
// A tunnel is one application stream (appmux.Tunnel). The caller sends a
// request naming the target port; the serving device checks its exposure
// policy, dials the port on its own loopback, and answers OK or a refusal
// code with a reason; then the stream carries the TCP bytes both ways. A
// half-close travels through: when one side's TCP peer shuts down writing,
// the stream's FIN follows, and the far side shuts down writing to its TCP
// peer, while the other direction keeps flowing. The wire format is in
// docs/protocol.md §7.4.
package tunnel

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/parley-p2p/parley/apps/appmux"
)

// Wire constants (docs/protocol.md §7.4).
const (
	version = 1

	// request: version (1) | port (2, big endian)
	requestLen = 3
	// response: code (1) | reason length (1) | reason
	responseHeaderLen = 2
	maxReasonLen      = 255

	// handshakeTimeout bounds reading a request or a response, so that a
	// stream that never speaks does not hold a goroutine forever.
	handshakeTimeout = 15 * time.Second
	// DialTimeout bounds DialLocal.
	DialTimeout = 10 * time.Second

	bufferSize = 32 << 10
)

// Code is the serving side's answer to a tunnel request.
type Code byte

// Response codes. The values are wire constants.
const (
	OK            Code = 0 // the port is connected; bytes follow
	NotExposed    Code = 1 // the device does not expose the port
	ConnectFailed Code = 2 // the port is exposed but nothing accepted the connection
	BadRequest    Code = 3 // unknown version or port 0
)

func (c Code) String() string {
	switch c {
	case OK:
		return "ok"
	case NotExposed:
		return "not exposed"
	case ConnectFailed:
		return "connect failed"
	case BadRequest:
		return "bad request"
	}
	return "code " + strconv.Itoa(int(c))
}

// RefusedError is returned by Connect when the peer refused the tunnel.
type RefusedError struct {
	Port   uint16
	Code   Code
	Reason string // from the peer, for logs; not trusted for display without escaping
}

func (e *RefusedError) Error() string { return "tunnel: " + e.Message("the peer") }

// Message is the sentence to show a user, naming the peer as peer:
// Message("bob") is "bob does not expose port 25".
func (e *RefusedError) Message(peer string) string {
	switch e.Code {
	case NotExposed:
		return fmt.Sprintf("%s does not expose port %d", peer, e.Port)
	case ConnectFailed:
		return fmt.Sprintf("%s exposes port %d but nothing is listening there", peer, e.Port)
	case BadRequest:
		return fmt.Sprintf("%s could not understand the request for port %d (version mismatch?)", peer, e.Port)
	}
	return fmt.Sprintf("%s refused port %d (%v)", peer, e.Port, e.Code)
}

// Policy decides which ports a device serves. Implementations must be safe
// for concurrent use.
type Policy interface {
	Allows(port uint16) bool
}

// Ports is the Policy of `parley expose`: an explicit set of ports. The zero
// value exposes nothing. It marshals to JSON as a sorted array of numbers so
// that the daemon can persist it. Its methods are safe for concurrent use.
type Ports struct {
	mu  sync.RWMutex
	set map[uint16]bool
}

// Expose adds port to the set.
func (p *Ports) Expose(port uint16) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.set == nil {
		p.set = make(map[uint16]bool)
	}
	p.set[port] = true
}

// Unexpose removes port from the set.
func (p *Ports) Unexpose(port uint16) {
	p.mu.Lock()
	defer p.mu.Unlock()
	delete(p.set, port)
}

// Allows reports whether port is exposed.
func (p *Ports) Allows(port uint16) bool {
	p.mu.RLock()
	defer p.mu.RUnlock()
	return p.set[port]
}

// List returns the exposed ports in increasing order.
func (p *Ports) List() []uint16 {
	p.mu.RLock()
	defer p.mu.RUnlock()
	l := make([]uint16, 0, len(p.set))
	for port := range p.set {
		l = append(l, port)
	}
	slices.Sort(l)
	return l
}

// MarshalJSON implements json.Marshaler.
func (p *Ports) MarshalJSON() ([]byte, error) { return json.Marshal(p.List()) }

// UnmarshalJSON implements json.Unmarshaler; it replaces the set.
func (p *Ports) UnmarshalJSON(b []byte) error {
	var l []uint16
	if err := json.Unmarshal(b, &l); err != nil {
		return err
	}
	set := make(map[uint16]bool, len(l))
	for _, port := range l {
		if port == 0 {
			return errors.New("tunnel: port 0 in policy")
		}
		set[port] = true
	}
	p.mu.Lock()
	p.set = set
	p.mu.Unlock()
	return nil
}

// Connect opens a tunnel over sess to port on the peer's machine. It waits
// for the peer's answer: a refusal is a *RefusedError. The returned conn is a
// stream with CloseWrite.
func Connect(ctx context.Context, sess appmux.Opener, port uint16) (net.Conn, error) {
	conn, err := appmux.Open(ctx, sess, appmux.Tunnel)
	if err != nil {
		return nil, err
	}
	stop := context.AfterFunc(ctx, func() { conn.SetReadDeadline(time.Now()) })
	code, reason, err := handshake(conn, port)
	if !stop() {
		err = ctx.Err()
	}
	if err != nil {
		conn.Close()
		return nil, fmt.Errorf("tunnel to port %d: %w", port, err)
	}
	conn.SetReadDeadline(time.Time{})
	if code != OK {
		conn.Close()
		return nil, &RefusedError{Port: port, Code: code, Reason: reason}
	}
	return conn, nil
}

func handshake(conn net.Conn, port uint16) (Code, string, error) {
	req := [requestLen]byte{version}
	binary.BigEndian.PutUint16(req[1:], port)
	if _, err := conn.Write(req[:]); err != nil {
		return 0, "", err
	}
	conn.SetReadDeadline(time.Now().Add(handshakeTimeout))
	return readResponse(conn)
}

// readResponse reads a response; it never panics on any input.
func readResponse(r io.Reader) (Code, string, error) {
	var h [responseHeaderLen]byte
	if _, err := io.ReadFull(r, h[:]); err != nil {
		return 0, "", fmt.Errorf("read response: %w", unexpected(err))
	}
	reason := make([]byte, h[1])
	if _, err := io.ReadFull(r, reason); err != nil {
		return 0, "", fmt.Errorf("read response: %w", unexpected(err))
	}
	return Code(h[0]), string(reason), nil
}

func appendResponse(b []byte, code Code, reason string) []byte {
	if len(reason) > maxReasonLen {
		reason = reason[:maxReasonLen]
	}
	b = append(b, byte(code), byte(len(reason)))
	return append(b, reason...)
}

// readRequest reads a request; it never panics on any input.
func readRequest(r io.Reader) (ver byte, port uint16, err error) {
	var b [requestLen]byte
	if _, err := io.ReadFull(r, b[:]); err != nil {
		return 0, 0, fmt.Errorf("read request: %w", unexpected(err))
	}
	return b[0], binary.BigEndian.Uint16(b[1:]), nil
}

func unexpected(err error) error {
	if err == io.EOF {
		return io.ErrUnexpectedEOF
	}
	return err
}

// DialLocal dials port on the loopback address, as a device serving an
// exposed port does.
func DialLocal(port uint16) (net.Conn, error) {
	return net.DialTimeout("tcp", netip.AddrPortFrom(netip.AddrFrom4([4]byte{127, 0, 0, 1}), port).String(), DialTimeout)
}

// Serve answers one tunnel stream whose appmux header has been read: it
// reads the request, refuses ports policy does not allow, dials the others
// with dial (DialLocal in the daemon), and joins the two connections until
// both directions have ended. It closes conn.
func Serve(conn net.Conn, policy Policy, dial func(port uint16) (net.Conn, error)) error {
	defer conn.Close()
	conn.SetReadDeadline(time.Now().Add(handshakeTimeout))
	ver, port, err := readRequest(conn)
	if err != nil {
		return err
	}
	conn.SetReadDeadline(time.Time{})
	refuse := func(code Code, reason string) error {
		conn.Write(appendResponse(nil, code, reason))
		return &RefusedError{Port: port, Code: code, Reason: reason}
	}
	switch {
	case ver != version:
		return refuse(BadRequest, fmt.Sprintf("unsupported tunnel version %d", ver))
	case port == 0:
		return refuse(BadRequest, "port 0")
	case !policy.Allows(port):
		return refuse(NotExposed, fmt.Sprintf("port %d is not exposed", port))
	}
	target, err := dial(port)
	if err != nil {
		// The reason stays generic: the dial error would tell the caller
		// about the serving machine's setup.
		refuse(ConnectFailed, "connection refused")
		return fmt.Errorf("tunnel: dial port %d: %w", port, err)
	}
	if _, err := conn.Write(appendResponse(nil, OK, "")); err != nil {
		target.Close()
		return err
	}
	return Join(conn, target)
}

// Join copies between a and b in both directions until both have ended,
// then closes both. When one side's reads end with EOF, the other side is
// half-closed (CloseWrite if it has one) and the opposite direction carries
// on. Any other error aborts both directions; Join returns the first such
// error, or nil when both directions ended with EOF.
func Join(a, b net.Conn) error {
	errc := make(chan error, 2)
	half := func(dst, src net.Conn) {
		buf := make([]byte, bufferSize)
		_, err := io.CopyBuffer(onlyWriter{dst}, onlyReader{src}, buf)
		if err == nil {
			err = appmux.CloseWrite(dst)
		}
		if err != nil {
			// Abort: unblock the other direction.
			a.Close()
			b.Close()
		}
		errc <- err
	}
	go half(a, b)
	go half(b, a)
	err1, err2 := <-errc, <-errc
	a.Close()
	b.Close()
	// The second error is usually the first one's consequence (the
	// abort closed its connection).
	if err1 != nil {
		return err1
	}
	return err2
}

// onlyReader and onlyWriter hide WriteTo and ReadFrom (a *net.TCPConn's
// splice paths, which do not apply to streams) so that io.CopyBuffer uses the
// fixed buffer it is given.
type onlyReader struct{ io.Reader }

type onlyWriter struct{ io.Writer }

// Forward accepts connections on ln and tunnels each to port on the peer
// over the session sess returns at that moment (so that a reconnected session
// is picked up). It returns when ctx ends, closing ln and every tunnel it
// started, or when ln fails. A connection the peer refuses is closed and
// logged; log may be nil for slog.Default().
func Forward(ctx context.Context, ln net.Listener, sess func(context.Context) (appmux.Opener, error), port uint16, log *slog.Logger) error {
	if log == nil {
		log = slog.Default()
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stop := context.AfterFunc(ctx, func() { ln.Close() })
	defer stop()

	var (
		wg    sync.WaitGroup
		mu    sync.Mutex // protects conns
		conns = make(map[net.Conn]bool)
	)
	track := func(c net.Conn, on bool) {
		mu.Lock()
		defer mu.Unlock()
		if on {
			conns[c] = true
		} else {
			delete(conns, c)
		}
	}
	defer func() {
		cancel()
		mu.Lock()
		for c := range conns {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	}()
	for {
		c, err := ln.Accept()
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			return fmt.Errorf("tunnel: forward: %w", err)
		}
		track(c, true)
		wg.Go(func() {
			defer track(c, false)
			defer c.Close()
			s, err := sess(ctx)
			if err != nil {
				log.Info("tunnel: no session for forwarded connection", "port", port, "err", err)
				return
			}
			remote, err := Connect(ctx, s, port)
			if err != nil {
				log.Info("tunnel: forwarded connection refused", "port", port, "err", err)
				return
			}
			track(remote, true)
			defer track(remote, false)
			if err := Join(c, remote); err != nil {
				log.Debug("tunnel: forwarded connection ended", "port", port, "err", err)
			}
		})
	}
}

// Pipe joins conn to a local reader and writer, as `parley connect` joins a
// tunnel to standard input and output: r is copied to conn, which is then
// half-closed; conn is copied to w. Pipe returns when conn's data has ended
// (or failed) and closes conn. A copy from r still blocked in r.Read then
// fails on the closed conn once r yields; a process bridging os.Stdin simply
// exits.
func Pipe(conn net.Conn, r io.Reader, w io.Writer) error {
	go func() {
		buf := make([]byte, bufferSize)
		if _, err := io.CopyBuffer(conn, onlyReader{r}, buf); err != nil {
			conn.Close()
			return
		}
		appmux.CloseWrite(conn)
	}()
	buf := make([]byte, bufferSize)
	_, err := io.CopyBuffer(w, onlyReader{conn}, buf)
	conn.Close()
	return err
}
