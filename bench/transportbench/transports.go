// Package transportbench measures Parley's transport side by side with
// quic-go, Go's TCP + TLS 1.3 and plain TCP, in one process and one run:
// loopback bulk goodput and CPU per gigabyte, time to first byte at an
// emulated 50 ms RTT, mutually authenticated handshakes per second,
// request/response latency, and goodput over natlab's emulated lossy links.
//
// Every transport is driven through the same three small interfaces (Server,
// Client, Conn) and moves the same payloads through the same buffer sizes, so
// that a difference in a figure is a difference between the transports and
// not between their harnesses. It lives in its own module so that quic-go and
// the plotting library never become dependencies of Parley itself.
package transportbench

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"fmt"
	"io"
	"math/big"
	"net"
	"sync"
	"syscall"
	"time"

	"github.com/quic-go/quic-go"
	"golang.org/x/sys/unix"

	"github.com/parley-p2p/parley/transport"
)

// A Stream is one ordered, reliable byte stream that can be half-closed:
// Parley's *transport.Stream, a QUIC stream, a TCP or TLS connection.
type Stream interface {
	io.ReadWriteCloser
	// CloseWrite sends end-of-stream after the data written; the peer's
	// Read returns io.EOF.
	CloseWrite() error
}

// A Conn is one authenticated connection. For TCP and TLS, which carry one
// stream per connection, OpenStream and AcceptStream return the connection
// itself.
type Conn interface {
	OpenStream(ctx context.Context) (Stream, error)
	AcceptStream(ctx context.Context) (Stream, error)
	Close() error
}

// A Server accepts connections; Accept returns once the peer has been
// authenticated (for TLS: the handshake, client certificate included, is
// complete).
type Server interface {
	Addr() net.Addr
	Accept(ctx context.Context) (Conn, error)
	Close() error
}

// A Client dials connections to one server; Dial returns once the connection
// is authenticated both ways.
type Client interface {
	Dial(ctx context.Context) (Conn, error)
	Close() error
}

// Net is where a transport runs: how its sockets are made.
type Net struct {
	// ServerPacket and ClientPacket open the UDP sockets of the two ends
	// (loopback or natlab hosts).
	ServerPacket, ClientPacket func() (net.PacketConn, error)
	// TCPDelay, if positive, delays every byte of a TCP connection by this
	// much in each direction and adds one round trip before connect
	// returns, for the SYN/SYN-ACK exchange (see delayConn).
	TCPDelay time.Duration
	// PacketSize is Parley's MaxPacketSize on this network; zero means
	// LoopbackPacketSize.
	PacketSize int
	// ClientSource, if set, makes every Dial use a socket of its own bound
	// to the loopback address it returns, as many clients would, instead
	// of one client socket for all dials. (Parley's responder, under load,
	// limits initiations per source address, as WireGuard's does.)
	ClientSource func() string
}

// ManySources returns a ClientSource that hands out 127.0.0.0/8 addresses in
// turn, a different one for each call (Linux routes all of 127/8 to lo).
func ManySources() func() string {
	var mu sync.Mutex
	i := 0
	return func() string {
		mu.Lock()
		defer mu.Unlock()
		i = i%(250*250) + 1
		return fmt.Sprintf("127.1.%d.%d", i/250, i%250+1)
	}
}

// Loopback is the kernel's UDP and TCP on 127.0.0.1.
func Loopback() *Net {
	udp := func() (net.PacketConn, error) { return net.ListenPacket("udp4", "127.0.0.1:0") }
	return &Net{ServerPacket: udp, ClientPacket: udp}
}

// A Transport is one contestant: a name and how to start its two ends.
type Transport struct {
	Name string
	// Kind is "parley", "quic", "tls" or "tcp".
	Kind string
	// MSS clamps TCP's maximum segment size (TCP_MAXSEG) on both ends;
	// zero keeps the kernel's default.
	MSS int
	// X25519Only restricts TLS key exchange to X25519, as Noise IK does,
	// instead of Go's default hybrid X25519MLKEM768 first.
	X25519Only bool
	// Congestion is Parley's congestion controller ("" = its default).
	Congestion string
	// PacketSize overrides the Net's Parley packet size; zero keeps it.
	PacketSize int
	// Early makes the quic-go server accept connections before the
	// handshake completes (ListenEarly), so that it can send 0.5-RTT data
	// before it has verified the client's certificate.
	Early bool
}

// Packet sizes (UDP payload) at which Parley runs: the size quic-go uses on
// the same sockets, so that neither carries more bytes per packet.
const (
	// LoopbackPacketSize is what quic-go reaches on loopback by path MTU
	// discovery (its largest): an Ethernet MTU less IPv6 and UDP headers.
	LoopbackPacketSize = 1452
	// NatlabPacketSize is quic-go's InitialPacketSize, where it stays on
	// natlab: path MTU discovery needs a socket that sets the DF bit.
	// (Raising quic-go's InitialPacketSize without discovery makes its
	// pacer and sender disagree on the datagram size: the pacer is built
	// with 1,280 and only told otherwise by MTU discovery, so it says
	// "send now" while the sender wants budget for a larger packet. In
	// real time that busy-waits briefly; under synctest's frozen clock it
	// spins for ever.)
	NatlabPacketSize = 1280
)

// Start starts a server and a client of t on n.
func (t Transport) Start(ctx context.Context, n *Net) (Server, Client, error) {
	switch t.Kind {
	case "parley":
		if t.PacketSize != 0 {
			nn := *n
			nn.PacketSize = t.PacketSize
			n = &nn
		}
		return startParley(n, t.Congestion)
	case "quic":
		return startQUIC(n, t.X25519Only, t.Early)
	case "tls", "tcp":
		return startTCP(n, t.Kind == "tls", t.MSS, t.X25519Only)
	}
	return nil, nil, fmt.Errorf("unknown transport kind %q", t.Kind)
}

// ---- Parley ----

func parleyConfig(n *Net, congestion string) *transport.Config {
	size := n.PacketSize
	if size == 0 {
		size = LoopbackPacketSize
	}
	return &transport.Config{
		MaxPacketSize: size,
		Congestion:    congestion,
		// The benchmark's idle connections must not be closed under it;
		// keepalives would only add noise.
		KeepAlivePeriod: -1,
		IdleTimeout:     5 * time.Minute,
	}
}

type parleyServer struct {
	pc net.PacketConn
	ln *transport.Listener
}

type parleyClient struct {
	n      *Net
	cfg    *transport.Config
	key    transport.PrivateKey
	pc     net.PacketConn
	ep     *transport.Endpoint
	addr   net.Addr
	remote transport.PublicKey
}

func startParley(n *Net, congestion string) (Server, Client, error) {
	spc, err := n.ServerPacket()
	if err != nil {
		return nil, nil, err
	}
	skey, err := transport.GeneratePrivateKey()
	if err != nil {
		return nil, nil, err
	}
	ln, err := transport.Listen(spc, skey, parleyConfig(n, congestion))
	if err != nil {
		spc.Close()
		return nil, nil, err
	}
	cpc, err := n.ClientPacket()
	if err != nil {
		ln.Close()
		spc.Close()
		return nil, nil, err
	}
	ckey, err := transport.GeneratePrivateKey()
	if err != nil {
		return nil, nil, err
	}
	c := &parleyClient{n: n, cfg: parleyConfig(n, congestion), key: ckey, pc: cpc, remote: skey.Public()}
	c.ep = transport.NewEndpoint(cpc, ckey, c.cfg)
	c.addr = spc.LocalAddr()
	return &parleyServer{pc: spc, ln: ln}, c, nil
}

func (s *parleyServer) Addr() net.Addr { return s.pc.LocalAddr() }

func (s *parleyServer) Accept(ctx context.Context) (Conn, error) {
	sess, err := s.ln.Accept(ctx)
	if err != nil {
		return nil, err
	}
	return parleyConn{s: sess}, nil
}

// Stats returns the listening endpoint's drop and cookie counters.
func (s *parleyServer) Stats() transport.EndpointStats { return s.ln.Endpoint().Stats() }

func (s *parleyServer) Close() error {
	s.ln.Close()
	return s.pc.Close()
}

func (c *parleyClient) Dial(ctx context.Context) (Conn, error) {
	ua, ok := c.addr.(*net.UDPAddr)
	if !ok {
		return nil, fmt.Errorf("parley: server address %v is not UDP", c.addr)
	}
	if c.n.ClientSource == nil {
		sess, err := c.ep.Dial(ctx, ua.AddrPort(), c.remote)
		if err != nil {
			return nil, err
		}
		return parleyConn{s: sess}, nil
	}
	pc, err := net.ListenPacket("udp4", c.n.ClientSource()+":0")
	if err != nil {
		return nil, err
	}
	ep := transport.NewEndpoint(pc, c.key, c.cfg)
	cleanup := func() { ep.Close(); pc.Close() }
	sess, err := ep.Dial(ctx, ua.AddrPort(), c.remote)
	if err != nil {
		cleanup()
		return nil, err
	}
	return parleyConn{s: sess, cleanup: cleanup}, nil
}

func (c *parleyClient) Close() error {
	c.ep.Close()
	return c.pc.Close()
}

type parleyConn struct {
	s       *transport.Session
	cleanup func() // closes a per-dial endpoint and socket, if any
}

func (c parleyConn) OpenStream(ctx context.Context) (Stream, error) {
	return c.s.OpenStream(ctx)
}

func (c parleyConn) AcceptStream(ctx context.Context) (Stream, error) {
	return c.s.AcceptStream(ctx)
}

func (c parleyConn) Close() error {
	err := c.s.Close()
	if c.cleanup != nil {
		c.cleanup()
	}
	return err
}

// Stats exposes the session's counters to the bulk test.
func (c parleyConn) Stats() transport.SessionStats { return c.s.Stats() }

// ---- quic-go ----

// alpn is the application protocol both QUIC ends announce; QUIC requires one.
const alpn = "parley-bench"

type quicServer struct {
	pc net.PacketConn
	tr *quic.Transport
	ln quicListener
}

// quicListener is what *quic.Listener and *quic.EarlyListener share.
type quicListener interface {
	Accept(context.Context) (*quic.Conn, error)
	Close() error
}

type quicClient struct {
	n    *Net
	pc   net.PacketConn
	tr   *quic.Transport
	addr net.Addr
	tls  *tls.Config
	conf *quic.Config
}

func quicConfig(*Net) *quic.Config {
	return &quic.Config{MaxIdleTimeout: 5 * time.Minute}
}

func startQUIC(n *Net, x25519, early bool) (Server, Client, error) {
	serverTLS, clientTLS, err := tlsConfigs(x25519)
	if err != nil {
		return nil, nil, err
	}
	serverTLS.NextProtos = []string{alpn}
	clientTLS.NextProtos = []string{alpn}
	spc, err := n.ServerPacket()
	if err != nil {
		return nil, nil, err
	}
	str := &quic.Transport{Conn: spc}
	var ln quicListener
	if early {
		ln, err = str.ListenEarly(serverTLS, quicConfig(n))
	} else {
		ln, err = str.Listen(serverTLS, quicConfig(n))
	}
	if err != nil {
		str.Close()
		spc.Close()
		return nil, nil, err
	}
	cpc, err := n.ClientPacket()
	if err != nil {
		ln.Close()
		str.Close()
		spc.Close()
		return nil, nil, err
	}
	c := &quicClient{n: n, pc: cpc, tr: &quic.Transport{Conn: cpc}, addr: spc.LocalAddr(), tls: clientTLS, conf: quicConfig(n)}
	return &quicServer{pc: spc, tr: str, ln: ln}, c, nil
}

func (s *quicServer) Addr() net.Addr { return s.pc.LocalAddr() }

func (s *quicServer) Accept(ctx context.Context) (Conn, error) {
	c, err := s.ln.Accept(ctx)
	if err != nil {
		return nil, err
	}
	return quicConn{c: c}, nil
}

func (s *quicServer) Close() error {
	s.ln.Close()
	s.tr.Close()
	return s.pc.Close()
}

func (c *quicClient) Dial(ctx context.Context) (Conn, error) {
	if c.n.ClientSource == nil {
		qc, err := c.tr.Dial(ctx, c.addr, c.tls, c.conf)
		if err != nil {
			return nil, err
		}
		return quicConn{c: qc}, nil
	}
	pc, err := net.ListenPacket("udp4", c.n.ClientSource()+":0")
	if err != nil {
		return nil, err
	}
	tr := &quic.Transport{Conn: pc}
	cleanup := func() { tr.Close(); pc.Close() }
	qc, err := tr.Dial(ctx, c.addr, c.tls, c.conf)
	if err != nil {
		cleanup()
		return nil, err
	}
	return quicConn{c: qc, cleanup: cleanup}, nil
}

func (c *quicClient) Close() error {
	c.tr.Close()
	return c.pc.Close()
}

type quicConn struct {
	c       *quic.Conn
	cleanup func() // closes a per-dial transport and socket, if any
}

func (c quicConn) OpenStream(ctx context.Context) (Stream, error) {
	s, err := c.c.OpenStreamSync(ctx)
	if err != nil {
		return nil, err
	}
	return quicStream{s}, nil
}

func (c quicConn) AcceptStream(ctx context.Context) (Stream, error) {
	s, err := c.c.AcceptStream(ctx)
	if err != nil {
		return nil, err
	}
	return quicStream{s}, nil
}

func (c quicConn) Close() error {
	err := c.c.CloseWithError(0, "")
	if c.cleanup != nil {
		c.cleanup()
	}
	return err
}

// quicStream maps quic-go's stream, whose Close only ends the send side, onto
// Stream's net.Conn-like Close and CloseWrite.
type quicStream struct{ *quic.Stream }

func (s quicStream) CloseWrite() error { return s.Stream.Close() }

func (s quicStream) Close() error {
	s.Stream.CancelRead(0)
	return s.Stream.Close()
}

// ---- TCP and TLS ----

// tcpServer accepts on a background goroutine and runs each TLS server
// handshake on a goroutine of its own, as quic-go and Parley handle
// handshakes concurrently too.
type tcpServer struct {
	ln    net.Listener
	tls   *tls.Config
	conns chan Conn
	ctx   context.Context // ends at Close, aborting handshakes
	stop  context.CancelFunc
	wg    sync.WaitGroup
}

type tcpClient struct {
	n     *Net
	addr  string
	d     net.Dialer
	tls   *tls.Config
	delay time.Duration
}

// mssControl returns a socket Control function that sets TCP_MAXSEG, or nil
// for the default MSS. On a listener the option is inherited by accepted
// sockets; set before connect, it is what the SYN advertises.
func mssControl(mss int) func(network, address string, c syscall.RawConn) error {
	if mss == 0 {
		return nil
	}
	return func(_, _ string, c syscall.RawConn) error {
		var serr error
		err := c.Control(func(fd uintptr) {
			serr = unix.SetsockoptInt(int(fd), unix.IPPROTO_TCP, unix.TCP_MAXSEG, mss)
		})
		if err != nil {
			return err
		}
		return serr
	}
}

func startTCP(n *Net, useTLS bool, mss int, x25519 bool) (Server, Client, error) {
	lc := net.ListenConfig{Control: mssControl(mss)}
	ln, err := lc.Listen(context.Background(), "tcp4", "127.0.0.1:0")
	if err != nil {
		return nil, nil, err
	}
	s := &tcpServer{ln: ln, conns: make(chan Conn)}
	s.ctx, s.stop = context.WithCancel(context.Background())
	c := &tcpClient{n: n, addr: ln.Addr().String(), d: net.Dialer{Control: mssControl(mss)}, delay: n.TCPDelay}
	if useTLS {
		if s.tls, c.tls, err = tlsConfigs(x25519); err != nil {
			ln.Close()
			return nil, nil, err
		}
	}
	s.wg.Add(1)
	go s.acceptLoop()
	return s, c, nil
}

func (s *tcpServer) acceptLoop() {
	defer s.wg.Done()
	for {
		c, err := s.ln.Accept()
		if err != nil {
			return
		}
		if s.tls == nil {
			s.deliver(&tcpConn{s: c.(*net.TCPConn), mss: tcpMSS(c)})
			continue
		}
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			tc := tls.Server(c, s.tls)
			if err := tc.HandshakeContext(s.ctx); err != nil {
				c.Close()
				return
			}
			s.deliver(&tcpConn{s: tc, mss: tcpMSS(c)})
		}()
	}
}

func (s *tcpServer) deliver(c Conn) {
	select {
	case s.conns <- c:
	case <-s.ctx.Done():
		c.Close()
	}
}

func (s *tcpServer) Addr() net.Addr { return s.ln.Addr() }

func (s *tcpServer) Accept(ctx context.Context) (Conn, error) {
	select {
	case c := <-s.conns:
		return c, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	case <-s.ctx.Done():
		return nil, net.ErrClosed
	}
}

func (s *tcpServer) Close() error {
	s.stop()
	err := s.ln.Close()
	s.wg.Wait()
	return err
}

func (c *tcpClient) Dial(ctx context.Context) (Conn, error) {
	if c.delay > 0 {
		// The SYN and SYN-ACK cross the emulated path before connect
		// returns; the loopback connect itself is measured on top.
		t := time.NewTimer(2 * c.delay)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return nil, ctx.Err()
		}
	}
	d := c.d
	if c.n.ClientSource != nil {
		d.LocalAddr = &net.TCPAddr{IP: net.ParseIP(c.n.ClientSource())}
	}
	nc, err := d.DialContext(ctx, "tcp4", c.addr)
	if err != nil {
		return nil, err
	}
	mss := tcpMSS(nc)
	var s Stream = nc.(*net.TCPConn)
	if c.delay > 0 {
		dc := newDelayConn(nc.(*net.TCPConn), c.delay)
		nc, s = dc, dc
	}
	if c.tls == nil {
		return &tcpConn{s: s, mss: mss}, nil
	}
	tc := tls.Client(nc, c.tls)
	if err := tc.HandshakeContext(ctx); err != nil {
		nc.Close()
		return nil, err
	}
	return &tcpConn{s: tc, mss: mss}, nil
}

func (c *tcpClient) Close() error { return nil }

// tcpConn is a TCP or TLS connection: one stream, handed out by both
// OpenStream and AcceptStream.
type tcpConn struct {
	s   Stream
	mss int // the kernel's send MSS when the connection was made
}

// MSS returns the sender's maximum segment size as the kernel reported it
// (TCP_INFO tcpi_snd_mss): the clamp less TCP options such as timestamps.
func (c *tcpConn) MSS() int { return c.mss }

// tcpMSS reads the kernel's current send MSS of a TCP socket, or 0.
func tcpMSS(c net.Conn) int {
	tc, ok := c.(*net.TCPConn)
	if !ok {
		return 0
	}
	rc, err := tc.SyscallConn()
	if err != nil {
		return 0
	}
	var mss int
	rc.Control(func(fd uintptr) {
		if info, err := unix.GetsockoptTCPInfo(int(fd), unix.IPPROTO_TCP, unix.TCP_INFO); err == nil {
			mss = int(info.Snd_mss)
		}
	})
	return mss
}

func (c *tcpConn) OpenStream(context.Context) (Stream, error)   { return c.s, nil }
func (c *tcpConn) AcceptStream(context.Context) (Stream, error) { return c.s, nil }
func (c *tcpConn) Close() error                                 { return c.s.Close() }

// tlsConfigs returns matching server and client configurations for mutually
// authenticated TLS 1.3: each side has a self-signed Ed25519 certificate
// that the other trusts as its only root. Session tickets are off so that
// every handshake is a full one, as every Noise IK handshake is.
func tlsConfigs(x25519Only bool) (server, client *tls.Config, err error) {
	scert, spool, err := selfSigned("server.parley-bench")
	if err != nil {
		return nil, nil, err
	}
	ccert, cpool, err := selfSigned("client.parley-bench")
	if err != nil {
		return nil, nil, err
	}
	server = &tls.Config{
		MinVersion:             tls.VersionTLS13,
		Certificates:           []tls.Certificate{scert},
		ClientAuth:             tls.RequireAndVerifyClientCert,
		ClientCAs:              cpool,
		SessionTicketsDisabled: true,
	}
	client = &tls.Config{
		MinVersion:   tls.VersionTLS13,
		Certificates: []tls.Certificate{ccert},
		RootCAs:      spool,
		ServerName:   "server.parley-bench",
	}
	if x25519Only {
		server.CurvePreferences = []tls.CurveID{tls.X25519}
		client.CurvePreferences = []tls.CurveID{tls.X25519}
	}
	return server, client, nil
}

func selfSigned(name string) (tls.Certificate, *x509.CertPool, error) {
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return tls.Certificate{}, nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: name},
		DNSNames:              []string{name},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, pub, priv)
	if err != nil {
		return tls.Certificate{}, nil, err
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		return tls.Certificate{}, nil, err
	}
	pool := x509.NewCertPool()
	pool.AddCert(leaf)
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: priv, Leaf: leaf}, pool, nil
}
