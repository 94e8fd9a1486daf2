package relay

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
)

// TCP fallback framing, docs/protocol.md §6.6: a stream of frames, each a
// 2-byte big-endian length followed by one relay packet of that length.
const (
	frameHeader = 2
	// tcpQueue bounds the frames waiting to be written to one TCP side; a
	// side that cannot keep up loses packets (DropWrite) instead of
	// stalling the forwarding of everyone else.
	tcpQueue = 256
	// tcpReadBuffer is small: a relay may hold thousands of TCP sides.
	tcpReadBuffer = 4 << 10
)

var errFrame = errors.New("relay: bad TCP frame length")

// readFrame reads one frame from r into *buf (grown as needed) and returns
// the packet.
func readFrame(r *bufio.Reader, buf *[]byte) ([]byte, error) {
	var h [frameHeader]byte
	if _, err := io.ReadFull(r, h[:]); err != nil {
		return nil, err
	}
	n := int(binary.BigEndian.Uint16(h[:]))
	if n < HeaderSize || n > MaxPacketSize {
		return nil, fmt.Errorf("%w: %d", errFrame, n)
	}
	if cap(*buf) < n {
		*buf = make([]byte, n)
	}
	b := (*buf)[:n]
	if _, err := io.ReadFull(r, b); err != nil {
		if err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		return nil, err
	}
	return b, nil
}

// putFrame writes pkt as a frame into dst, which must have room for
// len(pkt)+frameHeader bytes, and returns the frame.
func putFrame(dst, pkt []byte) []byte {
	f := dst[:frameHeader+len(pkt)]
	binary.BigEndian.PutUint16(f, uint16(len(pkt)))
	copy(f[frameHeader:], pkt)
	return f
}

// bufPool hands out packet buffers in two size classes, so that the usual
// packet (at most ~1,500 bytes) does not pin 64 KiB while queued.
type bufPool struct{ small, big sync.Pool }

const smallBuf = 2048

func (p *bufPool) get(n int) *[]byte {
	if n <= smallBuf {
		if b, ok := p.small.Get().(*[]byte); ok {
			return b
		}
		b := make([]byte, smallBuf)
		return &b
	}
	if b, ok := p.big.Get().(*[]byte); ok {
		return b
	}
	b := make([]byte, MaxPacketSize+frameHeader)
	return &b
}

func (p *bufPool) put(b *[]byte) {
	if cap(*b) == smallBuf {
		p.small.Put(b)
	} else {
		p.big.Put(b)
	}
}

// tcpConn is one peer's TCP connection to the relay. Its reader goroutine
// hands packets to the server; its writer goroutine drains q. Both belong
// to ServeTCP, which stops them.
type tcpConn struct {
	c      net.Conn
	remote string
	bufs   *bufPool
	q      chan *[]byte // frames; never closed (enqueue may race with close)
	done   chan struct{}
	once   sync.Once
	closed atomic.Bool
}

// enqueue queues a copy of pkt as a frame. It reports false if the
// connection is closed or its queue is full.
func (t *tcpConn) enqueue(pkt []byte) bool {
	if t.closed.Load() {
		return false
	}
	bp := t.bufs.get(len(pkt) + frameHeader)
	*bp = putFrame((*bp)[:cap(*bp)], pkt)
	select {
	case t.q <- bp:
		return true
	default:
		t.bufs.put(bp)
		return false
	}
}

func (t *tcpConn) close() {
	t.once.Do(func() {
		t.closed.Store(true)
		close(t.done)
		t.c.Close()
	})
}

// writeLoop writes queued frames, gathering what is queued into one
// writev.
func (t *tcpConn) writeLoop() {
	var pending []*[]byte
	var bufs net.Buffers
	for {
		select {
		case bp := <-t.q:
			pending = append(pending[:0], bp)
		gather:
			for len(pending) < 64 {
				select {
				case bp := <-t.q:
					pending = append(pending, bp)
				default:
					break gather
				}
			}
			bufs = bufs[:0]
			for _, bp := range pending {
				bufs = append(bufs, *bp)
			}
			b := bufs // WriteTo consumes its receiver
			_, err := b.WriteTo(t.c)
			for _, bp := range pending {
				t.bufs.put(bp)
			}
			if err != nil {
				t.close()
				return
			}
		case <-t.done:
			return
		}
	}
}

// ServeTCP serves the TCP fallback on ln until ctx is done (then it returns
// nil) or ln fails. It closes ln and every connection it accepted, and
// returns only when their goroutines have ended.
func (s *Server) ServeTCP(ctx context.Context, ln net.Listener) error {
	var (
		wg    sync.WaitGroup
		mu    sync.Mutex
		conns = make(map[*tcpConn]struct{})
	)
	stop := context.AfterFunc(ctx, func() { ln.Close() })
	defer stop()
	var err error
	for {
		c, aerr := ln.Accept()
		if aerr != nil {
			if ctx.Err() == nil {
				err = fmt.Errorf("relay: accept: %w", aerr)
			}
			break
		}
		t := &tcpConn{
			c:      c,
			remote: c.RemoteAddr().String(),
			bufs:   &s.bufs,
			q:      make(chan *[]byte, tcpQueue),
			done:   make(chan struct{}),
		}
		mu.Lock()
		conns[t] = struct{}{}
		mu.Unlock()
		wg.Go(t.writeLoop)
		wg.Go(func() {
			s.readTCP(t)
			t.close()
			mu.Lock()
			delete(conns, t)
			mu.Unlock()
		})
	}
	ln.Close()
	mu.Lock()
	for t := range conns {
		t.close()
	}
	mu.Unlock()
	wg.Wait()
	return err
}

func (s *Server) readTCP(t *tcpConn) {
	r := bufio.NewReaderSize(t.c, tcpReadBuffer)
	var buf []byte
	for {
		pkt, err := readFrame(r, &buf)
		if err != nil {
			if !errors.Is(err, io.EOF) && !t.closed.Load() {
				s.log.Debug("relay: TCP connection failed", "remote", t.remote, "err", err)
			}
			return
		}
		s.handle(pkt, side{tcp: t})
	}
}
