package transportbench

import (
	"errors"
	"net"
	"sync"
	"time"
)

// delayConn emulates a path with a one-way delay in each direction on top of
// a loopback TCP connection, for measuring TCP + TLS's time to first byte
// where natlab (a UDP lab) cannot carry TCP. It wraps the client's end: bytes
// it writes reach the socket delay later, and bytes the socket delivers
// become readable delay later, so every exchange costs one emulated round
// trip. A goroutine per direction keeps a queue of timestamped chunks, so
// that writes never wait and back-to-back chunks are not delayed twice.
//
// The TCP handshake is not on the wire here: Client.Dial waits one round
// trip before connecting, as a SYN and SYN-ACK would take.
type delayConn struct {
	*net.TCPConn
	delay time.Duration

	out  chan chunk // to the writer goroutine
	in   chan chunk // from the reader goroutine
	done chan struct{}
	wg   sync.WaitGroup

	rmu  sync.Mutex // protects rbuf and rerr: serialises Reads
	rbuf []byte
	rerr error // the socket's error, returned once rbuf is drained

	closeOnce sync.Once
}

type chunk struct {
	due       time.Time
	b         []byte
	closeSend bool // the writer half-closes the socket instead of writing
	err       error
}

func newDelayConn(c *net.TCPConn, delay time.Duration) *delayConn {
	d := &delayConn{
		TCPConn: c,
		delay:   delay,
		out:     make(chan chunk, 256),
		in:      make(chan chunk, 256),
		done:    make(chan struct{}),
	}
	d.wg.Add(2)
	go d.writeLoop()
	go d.readLoop()
	return d
}

// wait sleeps until t or until the connection closes, reporting which.
func (d *delayConn) wait(t time.Time) bool {
	w := time.Until(t)
	if w <= 0 {
		return true
	}
	tm := time.NewTimer(w)
	defer tm.Stop()
	select {
	case <-tm.C:
		return true
	case <-d.done:
		return false
	}
}

func (d *delayConn) writeLoop() {
	defer d.wg.Done()
	for {
		select {
		case c := <-d.out:
			if !d.wait(c.due) {
				return
			}
			if c.closeSend {
				d.TCPConn.CloseWrite()
				continue
			}
			if _, err := d.TCPConn.Write(c.b); err != nil {
				return
			}
		case <-d.done:
			return
		}
	}
}

func (d *delayConn) readLoop() {
	defer d.wg.Done()
	for {
		b := make([]byte, 64<<10)
		n, err := d.TCPConn.Read(b)
		c := chunk{due: time.Now().Add(d.delay), b: b[:n], err: err}
		select {
		case d.in <- c:
		case <-d.done:
			return
		}
		if err != nil {
			return
		}
	}
}

func (d *delayConn) Write(b []byte) (int, error) {
	c := chunk{due: time.Now().Add(d.delay), b: append([]byte(nil), b...)}
	select {
	case d.out <- c:
		return len(b), nil
	case <-d.done:
		return 0, net.ErrClosed
	}
}

func (d *delayConn) CloseWrite() error {
	select {
	case d.out <- chunk{due: time.Now().Add(d.delay), closeSend: true}:
		return nil
	case <-d.done:
		return net.ErrClosed
	}
}

func (d *delayConn) Read(b []byte) (int, error) {
	d.rmu.Lock()
	defer d.rmu.Unlock()
	for len(d.rbuf) == 0 {
		if d.rerr != nil {
			return 0, d.rerr
		}
		select {
		case c := <-d.in:
			if !d.wait(c.due) {
				return 0, net.ErrClosed
			}
			d.rbuf, d.rerr = c.b, c.err
		case <-d.done:
			return 0, net.ErrClosed
		}
	}
	n := copy(b, d.rbuf)
	d.rbuf = d.rbuf[n:]
	return n, nil
}

func (d *delayConn) Close() error {
	err := errors.New("already closed")
	d.closeOnce.Do(func() {
		close(d.done)
		err = d.TCPConn.Close()
		d.wg.Wait()
	})
	return err
}
