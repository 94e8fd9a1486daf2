// Package appmux routes the streams of a transport session to Parley's
// applications.
//
// Every application stream begins with one byte naming the application
// (docs/protocol.md §7.1); the application's own preamble follows. The side
// that opens a stream writes the byte at once, so that the peer learns of the
// stream even before the application has anything to say; the accepting
// daemon reads it with Accept and hands the stream to the application.
package appmux

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"time"

	"github.com/parley-p2p/parley/transport"
)

// App identifies the application a stream belongs to: the first byte of
// every application stream.
type App byte

// Applications. The values are wire constants (docs/protocol.md §7.1).
const (
	Chat   App = 1
	File   App = 2
	Tunnel App = 3
)

func (a App) String() string {
	switch a {
	case Chat:
		return "chat"
	case File:
		return "file"
	case Tunnel:
		return "tunnel"
	}
	return fmt.Sprintf("app(%d)", byte(a))
}

// ErrUnknownApp is returned by Accept for a stream naming no application this
// implementation knows. The daemon resets such a stream.
var ErrUnknownApp = errors.New("appmux: unknown application")

// An Opener opens streams: *transport.Session is one.
type Opener interface {
	OpenStream(ctx context.Context) (*transport.Stream, error)
}

// Open opens a stream on sess for app and writes the routing header. The
// returned conn is a *transport.Stream; ctx bounds only the opening.
func Open(ctx context.Context, sess Opener, app App) (net.Conn, error) {
	st, err := sess.OpenStream(ctx)
	if err != nil {
		return nil, fmt.Errorf("open %v stream: %w", app, err)
	}
	// Writing one byte only waits when the send buffer is full, which a new
	// stream's is not; the deadline is for a session that stalls anyway.
	if d, ok := ctx.Deadline(); ok {
		st.SetWriteDeadline(d)
	}
	if _, err := st.Write([]byte{byte(app)}); err != nil {
		st.Reset(0)
		return nil, fmt.Errorf("open %v stream: %w", app, err)
	}
	st.SetWriteDeadline(time.Time{})
	return st, nil
}

// Accept reads the routing header of an incoming stream and returns the
// application it names. It fails with ErrUnknownApp for a byte it does not
// know, and with the read error (io.ErrUnexpectedEOF for a stream that ended
// first) otherwise. Set a read deadline on conn to bound the wait.
func Accept(conn net.Conn) (App, error) {
	var b [1]byte
	if _, err := io.ReadFull(conn, b[:]); err != nil {
		if errors.Is(err, io.EOF) {
			err = io.ErrUnexpectedEOF
		}
		return 0, fmt.Errorf("read app header: %w", err)
	}
	switch a := App(b[0]); a {
	case Chat, File, Tunnel:
		return a, nil
	default:
		return a, fmt.Errorf("%w: %d", ErrUnknownApp, b[0])
	}
}

// CloseWrite half-closes conn if it can (a *transport.Stream, a
// *net.TCPConn), and closes it otherwise.
func CloseWrite(conn net.Conn) error {
	if cw, ok := conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return conn.Close()
}
