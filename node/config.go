package node

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/parley-p2p/parley/transport"
)

// Config configures a Node. The zero value of every field but Server (which
// may be empty when the data directory remembers one) selects the default
// named in its comment.
type Config struct {
	// Server is the directory server's base URL. Empty means the one the
	// data directory remembers from the last login.
	Server string
	// DataDir holds the identity key, the state database and the local API
	// socket. Empty means DefaultDataDir().
	DataDir string
	// Listener opens the daemon's one UDP socket. nil means real sockets
	// (*net.ListenConfig); tests pass a natlab host.
	Listener transport.PacketListener
	// ListenAddr is the UDP address to bind. Empty means the port bound
	// last time (so that contacts' cached endpoints stay right across a
	// restart), or any free port.
	ListenAddr string
	// HTTPClient reaches the directory server; nil means
	// http.DefaultClient.
	HTTPClient *http.Client
	// STUN is the STUN server's address. Empty means the one the directory
	// announces in GET /v1/config.
	STUN string
	// DeviceName names this device at login; empty means the host name.
	DeviceName string
	// Supernode is the supernode role: "auto" (the default: volunteer when
	// the socket turns out to be publicly reachable), "on" or "off".
	Supernode string
	// BudgetRate and BudgetBytes are what a supernode volunteers: bytes per
	// second across sessions and bytes per relayed pair. Zero means 1 MiB/s
	// and 1 GiB.
	BudgetRate, BudgetBytes int64
	// RelayTCP is the TCP address on which, as a supernode, the daemon
	// also serves relaying over TCP (docs/protocol.md §6.6) for peers whose
	// UDP is blocked, for example ":443"; the port is announced to the
	// directory, which lists it. When this daemon's own UDP is blocked it
	// dials each supernode on the port listed for it, or, for one that
	// announced none, on this port (443 if empty). Empty serves nothing.
	RelayTCP string
	// DialTCP dials supernodes' TCP ports when UDP is blocked; nil means a
	// net.Dialer on real sockets, and no TCP fallback at all when Listener
	// is set (natlab carries no TCP).
	DialTCP func(ctx context.Context, network, addr string) (net.Conn, error)
	// RelayOnly never sends our addresses to peers nor probes theirs:
	// every session goes through a supernode, which hides our IP address
	// from contacts (at the cost of relay latency).
	RelayOnly bool
	// Transport tunes the sessions; nil means the transport's defaults.
	// Its PrivateKey and AcceptPeer are set by the Node.
	Transport *transport.Config
	// PortMap "off" keeps the daemon from asking its router for a port
	// mapping (PCP, NAT-PMP or UPnP IGD, portmap.go); anything else asks,
	// on a real socket not bound to loopback.
	PortMap string
	// SweepRate is the pings per second of a port sweep towards a peer
	// behind a symmetric NAT when we are behind an endpoint-independent
	// one (sweep.go); zero means 32,768, negative turns sweeps off. It is
	// a ceiling: a sweep on a busy machine runs slower, and covers the
	// ports within the punch's timeout when 64,512 pings at this rate fit
	// in it.
	SweepRate int
	// PunchTimeout bounds hole punching; zero means 5 s.
	PunchTimeout time.Duration
	// RefreshInterval is how often the daemon checks its reflexive address
	// (noticing NAT rebinding) and reports its load as a supernode; zero
	// means 25 s, under common NAT timeouts.
	RefreshInterval time.Duration
	// Logger receives the daemon's logs; nil discards them.
	Logger *slog.Logger
}

func (c *Config) punchTimeout() time.Duration {
	if c.PunchTimeout > 0 {
		return c.PunchTimeout
	}
	return 5 * time.Second
}

// relayTCPPort is the TCP port of supernodes' relays.
func (c *Config) relayTCPPort() string {
	if _, port, err := net.SplitHostPort(c.RelayTCP); err == nil && port != "" && port != "0" {
		return port
	}
	return "443"
}

// dialTCP is the TCP dialer for the relay fallback, nil if there is none.
func (c *Config) dialTCP() func(ctx context.Context, network, addr string) (net.Conn, error) {
	if c.DialTCP != nil {
		return c.DialTCP
	}
	if c.Listener != nil {
		return nil
	}
	return (&net.Dialer{}).DialContext
}

func (c *Config) refreshInterval() time.Duration {
	if c.RefreshInterval > 0 {
		return c.RefreshInterval
	}
	return 25 * time.Second
}

// DefaultDataDir is $XDG_DATA_HOME/parley or ~/.local/share/parley.
func DefaultDataDir() (string, error) {
	if d := os.Getenv("XDG_DATA_HOME"); d != "" {
		return filepath.Join(d, "parley"), nil
	}
	home, err := os.UserHomeDir()
	if err != nil {
		return "", err
	}
	return filepath.Join(home, ".local", "share", "parley"), nil
}

// DataDir resolves the data directory: dir if set, else $PARLEY_DATA, else
// DefaultDataDir. Every parley command finds its daemon this way, so that
// several daemons can run side by side.
func DataDir(dir string) (string, error) {
	if dir == "" {
		dir = os.Getenv("PARLEY_DATA")
	}
	if dir == "" {
		var err error
		if dir, err = DefaultDataDir(); err != nil {
			return "", fmt.Errorf("no data directory (%v): give --data or set PARLEY_DATA", err)
		}
	}
	return filepath.Abs(dir)
}

// prepareDataDir creates dir (0700) and refuses one that others can open,
// since it holds the identity key and the local API socket.
func prepareDataDir(dir string) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("create data directory: %w", err)
	}
	fi, err := os.Stat(dir)
	if err != nil {
		return err
	}
	if !fi.IsDir() {
		return fmt.Errorf("data directory %s is not a directory", dir)
	}
	if fi.Mode().Perm()&0o077 != 0 {
		return fmt.Errorf("data directory %s can be opened by others (mode %v): chmod 700 it", dir, fi.Mode().Perm())
	}
	return nil
}

// IdentityFile is the name of the identity key file in the data directory.
const IdentityFile = "identity.key"

// loadIdentity reads the device's private key from dir, creating it (mode
// 0600) on first run. It refuses a key file that others can read.
func loadIdentity(dir string, log *slog.Logger) (transport.PrivateKey, error) {
	var key transport.PrivateKey
	path := filepath.Join(dir, IdentityFile)
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		if key, err = transport.GeneratePrivateKey(); err != nil {
			return key, err
		}
		// O_EXCL: never overwrite a key another daemon just wrote.
		f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
		if err != nil {
			return key, fmt.Errorf("create identity key: %w", err)
		}
		_, err = f.WriteString(base64.StdEncoding.EncodeToString(key[:]) + "\n")
		if err2 := f.Close(); err == nil {
			err = err2
		}
		if err != nil {
			return key, fmt.Errorf("write identity key: %w", err)
		}
		log.Info("created identity key", "path", path, "public", key.Public().Short())
		return key, nil
	}
	if err != nil {
		return key, fmt.Errorf("read identity key: %w", err)
	}
	fi, err := os.Stat(path)
	if err != nil {
		return key, err
	}
	if fi.Mode().Perm()&0o077 != 0 {
		return key, fmt.Errorf("identity key %s is readable by others (mode %v): chmod 600 it", path, fi.Mode().Perm())
	}
	raw, err := base64.StdEncoding.DecodeString(strings.TrimSpace(string(b)))
	if err != nil || len(raw) != len(key) {
		return key, fmt.Errorf("identity key %s is malformed", path)
	}
	copy(key[:], raw)
	return key, nil
}
