package cli

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/parley-p2p/parley/directory"
	"github.com/parley-p2p/parley/directory/store"
	"github.com/parley-p2p/parley/directory/store/postgres"
	"github.com/parley-p2p/parley/directory/store/sqlite"
	"github.com/parley-p2p/parley/stun"
)

type serverOptions struct {
	listen, stun, stunAlt, data, db string
	tlsCert, tlsKey                 string
	insecure                        bool
	advertise                       string
	logLevel                        string
	allowPrivateSupernodes          bool
	noRateLimits                    bool
}

func newServerCmd() *cobra.Command {
	var o serverOptions
	cmd := &cobra.Command{
		Use:   "server",
		Short: "Run the directory server",
		Long: `Run Parley's directory server: accounts, contacts, presence, signalling,
the offline mailbox, the supernode registry and a STUN listener.

By default it keeps its data in an embedded SQLite database in the data
directory; --db postgres://… shares a PostgreSQL database between several
server processes. Plain HTTP is only allowed on loopback addresses unless
--insecure is given; use --tls-cert and --tls-key otherwise.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runServer(cmd.Context(), o, cmd.OutOrStdout(), cmd.ErrOrStderr())
		},
	}
	f := cmd.Flags()
	f.StringVar(&o.listen, "listen", "127.0.0.1:8080", "HTTP(S) listen address")
	f.StringVar(&o.stun, "stun", ":3478", "STUN UDP listen address (empty disables STUN)")
	f.StringVar(&o.stunAlt, "stun-alt", "", "second STUN UDP address for RFC 5780 tests (default: the STUN port + 1)")
	f.StringVar(&o.data, "data", "", "data directory (default: the user's data directory/parley-server)")
	f.StringVar(&o.db, "db", "", "database URL: postgres://… (default: SQLite in the data directory)")
	f.StringVar(&o.tlsCert, "tls-cert", "", "TLS certificate file (PEM)")
	f.StringVar(&o.tlsKey, "tls-key", "", "TLS private key file (PEM)")
	f.BoolVar(&o.insecure, "insecure", false, "allow plain HTTP on non-loopback addresses")
	f.StringVar(&o.advertise, "advertise", "", "public IP reported in STUN RESPONSE-ORIGIN/OTHER-ADDRESS when listening on all addresses")
	f.StringVar(&o.logLevel, "log-level", "info", "log level: debug, info, warn or error")
	f.BoolVar(&o.allowPrivateSupernodes, "allow-private-supernodes", false, "accept loopback and private supernode addresses (LANs, tests)")
	f.BoolVar(&o.noRateLimits, "no-rate-limits", false, "disable rate limits (benchmarks only)")
	f.MarkHidden("no-rate-limits")
	return cmd
}

// defaultDataDir is $XDG_DATA_HOME/parley-server or ~/.local/share/parley-server.
func defaultDataDir() (string, error) {
	if d := os.Getenv("XDG_DATA_HOME"); d != "" {
		return filepath.Join(d, "parley-server"), nil
	}
	home, err := os.UserHomeDir()
	if err != nil {
		return "", err
	}
	return filepath.Join(home, ".local", "share", "parley-server"), nil
}

// isLoopback reports whether a listen address only accepts local
// connections.
func isLoopback(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	if host == "localhost" {
		return true
	}
	a, err := netip.ParseAddr(host)
	return err == nil && a.IsLoopback()
}

// loadServerKey reads the ticket-signing key from dir, creating it (0600)
// on first start.
func loadServerKey(dir string, log *slog.Logger) (ed25519.PrivateKey, error) {
	path := filepath.Join(dir, "server.key")
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		seed := make([]byte, ed25519.SeedSize)
		if _, err := rand.Read(seed); err != nil {
			return nil, err
		}
		if err := os.WriteFile(path, []byte(base64.StdEncoding.EncodeToString(seed)+"\n"), 0o600); err != nil {
			return nil, fmt.Errorf("write server key: %w", err)
		}
		log.Info("created server key", "path", path)
		return ed25519.NewKeyFromSeed(seed), nil
	}
	if err != nil {
		return nil, fmt.Errorf("read server key: %w", err)
	}
	if fi, err := os.Stat(path); err == nil && fi.Mode().Perm()&0o077 != 0 {
		return nil, fmt.Errorf("server key %s is readable by others (mode %v); chmod 600 it", path, fi.Mode().Perm())
	}
	seed, err := base64.StdEncoding.DecodeString(strings.TrimSpace(string(b)))
	if err != nil || len(seed) != ed25519.SeedSize {
		return nil, fmt.Errorf("server key %s is malformed", path)
	}
	return ed25519.NewKeyFromSeed(seed), nil
}

func parseLevel(s string) (slog.Level, error) {
	var l slog.Level
	err := l.UnmarshalText([]byte(s))
	return l, err
}

func runServer(ctx context.Context, o serverOptions, stdout, stderr io.Writer) error {
	level, err := parseLevel(o.logLevel)
	if err != nil {
		return usageError{fmt.Errorf("bad --log-level %q", o.logLevel)}
	}
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: level}))
	useTLS := o.tlsCert != "" || o.tlsKey != ""
	if useTLS && (o.tlsCert == "" || o.tlsKey == "") {
		return usageError{errors.New("--tls-cert and --tls-key go together")}
	}
	if !useTLS && !isLoopback(o.listen) && !o.insecure {
		return usageError{fmt.Errorf("refusing plain HTTP on non-loopback address %s: give --tls-cert and --tls-key, or --insecure behind a TLS-terminating proxy", o.listen)}
	}
	if o.data == "" {
		if o.data, err = defaultDataDir(); err != nil {
			return fmt.Errorf("no data directory: %w; give --data", err)
		}
	}
	if err := os.MkdirAll(o.data, 0o700); err != nil {
		return fmt.Errorf("data directory: %w", err)
	}
	key, err := loadServerKey(o.data, log)
	if err != nil {
		return err
	}

	var st store.Store
	switch {
	case o.db == "":
		s, err := sqlite.Open(ctx, filepath.Join(o.data, "directory.db"))
		if err != nil {
			return err
		}
		// One process owns a SQLite database: whatever it recorded as
		// online before a crash is stale.
		if err := s.ClearOnline(ctx, "", time.Now()); err != nil {
			s.Close()
			return err
		}
		st = s
	case strings.HasPrefix(o.db, "postgres://") || strings.HasPrefix(o.db, "postgresql://"):
		s, err := postgres.Open(ctx, o.db, log)
		if err != nil {
			return err
		}
		st = s
	default:
		return usageError{errors.New("--db must be a postgres:// URL")}
	}
	defer st.Close()

	// STUN.
	stunCtx, stopSTUN := context.WithCancel(context.Background())
	defer stopSTUN()
	var stunDone chan error
	var stunAddr, stunAltAddr string
	if o.stun != "" {
		p, err := net.ListenPacket("udp", o.stun)
		if err != nil {
			return fmt.Errorf("STUN: %w", err)
		}
		defer p.Close()
		alt := o.stunAlt
		if alt == "" {
			host, port, _ := net.SplitHostPort(p.LocalAddr().String())
			n, _ := strconv.Atoi(port)
			alt = net.JoinHostPort(host, strconv.Itoa(n+1))
			if n == 0 {
				alt = net.JoinHostPort(host, "0")
			}
		}
		a, err := net.ListenPacket("udp", alt)
		if err != nil {
			return fmt.Errorf("STUN alternate port: %w", err)
		}
		defer a.Close()
		ss := &stun.Server{Primary: p, Alt: a, Software: "parley-directory", Logger: log}
		if o.advertise != "" {
			if ss.Advertise, err = netip.ParseAddr(o.advertise); err != nil {
				return usageError{fmt.Errorf("bad --advertise: %v", err)}
			}
		}
		stunAddr, stunAltAddr = p.LocalAddr().String(), a.LocalAddr().String()
		stunDone = make(chan error, 1)
		go func() { stunDone <- ss.Serve(stunCtx) }()
	}

	srv, err := directory.New(directory.Config{
		Store: st, Logger: log, ServerKey: key,
		AllowPrivateSupernodes: o.allowPrivateSupernodes, NoRateLimits: o.noRateLimits,
		STUN: stunAddr, STUNAlt: stunAltAddr,
	})
	if err != nil {
		return err
	}
	ln, err := net.Listen("tcp", o.listen)
	if err != nil {
		srv.Close()
		return err
	}
	hs := &http.Server{
		Handler:           srv,
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       30 * time.Second,
		WriteTimeout:      30 * time.Second,
		IdleTimeout:       120 * time.Second,
		MaxHeaderBytes:    16 << 10,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelDebug),
	}
	serveErr := make(chan error, 1)
	scheme := "http"
	go func() {
		if useTLS {
			serveErr <- hs.ServeTLS(ln, o.tlsCert, o.tlsKey)
		} else {
			serveErr <- hs.Serve(ln)
		}
	}()
	if useTLS {
		scheme = "https"
	}
	fmt.Fprintf(stdout, "parley server: API on %s://%s", scheme, ln.Addr())
	if stunAddr != "" {
		fmt.Fprintf(stdout, ", STUN on udp %s and %s", stunAddr, stunAltAddr)
	}
	fmt.Fprintf(stdout, ", data in %s\n", o.data)
	log.Info("directory server started", "listen", ln.Addr().String(), "tls", useTLS, "stun", stunAddr, "id", srv.ID())

	var runErr error
	select {
	case <-ctx.Done():
		log.Info("shutting down")
	case runErr = <-serveErr:
	case runErr = <-stunDone:
		runErr = fmt.Errorf("STUN: %w", runErr)
		stunDone = nil
	}
	// Event streams first (they are hijacked, so Shutdown does not see
	// them), then in-flight requests.
	srv.Close()
	sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := hs.Shutdown(sctx); err != nil {
		log.Warn("shutdown", "err", err)
	}
	stopSTUN()
	if stunDone != nil {
		<-stunDone
	}
	if errors.Is(runErr, http.ErrServerClosed) {
		runErr = nil
	}
	log.Info("stopped")
	return runErr
}
