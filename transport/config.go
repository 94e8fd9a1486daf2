package transport

import (
	"log/slog"
	"time"
)

// Defaults for Config's zero fields.
const (
	// DefaultMaxPacketSize keeps a packet, with IPv6 and UDP headers, within
	// the 1,280-byte minimum IPv6 MTU, so it crosses any path unfragmented.
	DefaultMaxPacketSize = 1232
	// MaxPacketSize is the largest UDP payload: a datagram's 65,535 bytes
	// less the IPv4 and UDP headers.
	MaxPacketSize = 65507

	DefaultIdleTimeout          = 30 * time.Second
	DefaultKeepAlivePeriod      = 10 * time.Second
	DefaultHandshakeTimeout     = 10 * time.Second
	DefaultStreamWindow         = 512 << 10 // initial per-stream receive window
	DefaultMaxStreamWindow      = 32 << 20
	DefaultSessionWindow        = 1536 << 10 // initial per-session receive window
	DefaultMaxSessionWindow     = 64 << 20
	DefaultMaxIncomingStreams   = 256
	DefaultMaxDatagramSize      = 1200
	DefaultKeyUpdatePackets     = 1 << 22 // well below AES-GCM's 2^23 limit (RFC 9001 §6.6)
	DefaultKeyUpdateInterval    = 10 * time.Minute
	DefaultDatagramQueue        = 256
	DefaultAcceptQueue          = 64
	DefaultSendBufferPerStream  = 1 << 20
	defaultInitialRTT           = 100 * time.Millisecond
	defaultMaxAckDelay          = 25 * time.Millisecond
	defaultAckEvery             = 2
	closeLingerPTOs             = 3
	maxPathChallengeRetransmits = 5
)

// The early data (0-RTT) allowance: before the response arrives, an
// initiator may open EarlyMaxStreams streams and send EarlyMaxData bytes of
// stream data, which is also each stream's credit until then. Every endpoint
// grants at least this much in its handshake parameters (Config's windows
// and stream limit are raised to it), so early data never exceeds the limits
// the response brings; an initiator refuses a response that grants less.
const (
	EarlyMaxStreams = 4
	EarlyMaxData    = 16 << 10
)

// Config tunes an endpoint and its sessions. The zero value is ready to use:
// every zero field takes the default named in its comment.
type Config struct {
	// PrivateKey is the local device's key for the package-level Dial.
	// The zero key means a fresh random key (an anonymous client). Listen
	// and NewEndpoint take the key as an argument instead.
	PrivateKey PrivateKey

	// MaxPacketSize is the largest UDP payload this side sends and accepts.
	// 0 means DefaultMaxPacketSize (1,232 bytes). Raise it only for paths
	// known to carry larger datagrams (loopback, jumbo frames).
	MaxPacketSize int

	// IdleTimeout closes a session after this long without hearing from the
	// peer. 0 means DefaultIdleTimeout (30 s). The smaller of both sides'
	// values applies.
	IdleTimeout time.Duration

	// KeepAlivePeriod sends a PING after this long without sending
	// anything, which keeps NAT mappings open and the idle timer quiet.
	// 0 means DefaultKeepAlivePeriod (10 s); negative disables keepalives.
	KeepAlivePeriod time.Duration

	// HandshakeTimeout bounds Dial when its context has no deadline.
	// 0 means DefaultHandshakeTimeout (10 s).
	HandshakeTimeout time.Duration

	// StreamWindow and SessionWindow are the initial flow-control receive
	// windows; they grow by auto-tuning up to MaxStreamWindow and
	// MaxSessionWindow. 0 means the Default* values; the initial windows are
	// at least EarlyMaxData.
	StreamWindow     int
	MaxStreamWindow  int
	SessionWindow    int
	MaxSessionWindow int

	// MaxIncomingStreams is how many streams the peer may have open at once.
	// 0 means DefaultMaxIncomingStreams (256); at least EarlyMaxStreams.
	MaxIncomingStreams int

	// MaxDatagramSize is the largest datagram payload accepted from the
	// peer. 0 means DefaultMaxDatagramSize; negative disables datagrams.
	MaxDatagramSize int

	// Congestion picks the congestion controller: "bbr" (default) or
	// "cubic".
	Congestion string

	// KeyUpdatePackets and KeyUpdateInterval bound how much and how long
	// one key is used before a key update. 0 means the defaults (2^22
	// packets, 10 minutes).
	KeyUpdatePackets  uint64
	KeyUpdateInterval time.Duration

	// AcceptPeer, if set, is asked before a listener accepts a session from
	// a peer; returning false refuses the handshake (silently, before any
	// state is kept). nil accepts every peer that completes the handshake.
	AcceptPeer func(PublicKey) bool

	// Logger receives the transport's logs. nil means slog.Default() with
	// the transport's records at debug level.
	Logger *slog.Logger
}

func (c *Config) maxPacketSize() int {
	switch {
	case c == nil || c.MaxPacketSize == 0:
		return DefaultMaxPacketSize
	case c.MaxPacketSize < 1200:
		return 1200
	case c.MaxPacketSize > MaxPacketSize:
		return MaxPacketSize
	}
	return c.MaxPacketSize
}

func orDuration(v, def time.Duration) time.Duration {
	if v == 0 {
		return def
	}
	return v
}

func orInt(v, def int) int {
	if v <= 0 {
		return def
	}
	return v
}

// withDefaults returns a copy of c with every zero field filled in.
func (c *Config) withDefaults() Config {
	var d Config
	if c != nil {
		d = *c
	}
	d.MaxPacketSize = c.maxPacketSize()
	d.IdleTimeout = orDuration(d.IdleTimeout, DefaultIdleTimeout)
	d.KeepAlivePeriod = orDuration(d.KeepAlivePeriod, DefaultKeepAlivePeriod)
	d.HandshakeTimeout = orDuration(d.HandshakeTimeout, DefaultHandshakeTimeout)
	d.StreamWindow = max(orInt(d.StreamWindow, DefaultStreamWindow), EarlyMaxData)
	d.MaxStreamWindow = max(orInt(d.MaxStreamWindow, DefaultMaxStreamWindow), d.StreamWindow)
	d.SessionWindow = max(orInt(d.SessionWindow, DefaultSessionWindow), EarlyMaxData)
	d.MaxSessionWindow = max(orInt(d.MaxSessionWindow, DefaultMaxSessionWindow), d.SessionWindow)
	d.MaxIncomingStreams = max(orInt(d.MaxIncomingStreams, DefaultMaxIncomingStreams), EarlyMaxStreams)
	if d.MaxDatagramSize == 0 {
		d.MaxDatagramSize = DefaultMaxDatagramSize
	}
	if d.KeyUpdatePackets == 0 {
		d.KeyUpdatePackets = DefaultKeyUpdatePackets
	}
	d.KeyUpdateInterval = orDuration(d.KeyUpdateInterval, DefaultKeyUpdateInterval)
	if d.Logger == nil {
		d.Logger = slog.Default()
	}
	return d
}
