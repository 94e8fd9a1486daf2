package cli

import (
	"bufio"
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"io"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/parley-p2p/parley/stun"
)

// startServerCmd runs `parley server` with args and returns its API URL,
// STUN address, and a function that stops it (as SIGTERM would, by
// canceling the context) and returns the exit code.
func startServerCmd(t *testing.T, args ...string) (api, stunAddr string, stop func() int) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	pr, pw := io.Pipe()
	var stderr bytes.Buffer
	code := make(chan int, 1)
	go func() {
		code <- Run(ctx, append([]string{"server"}, args...), pw, &stderr)
		pw.Close()
	}()
	line, err := bufio.NewReader(pr).ReadString('\n')
	go io.Copy(io.Discard, pr)
	if err != nil {
		cancel()
		t.Fatalf("server did not start: %v; stderr: %s", err, stderr.String())
	}
	m := regexp.MustCompile(`API on (\S+?),.*STUN on udp (\S+) and`).FindStringSubmatch(line)
	if m == nil {
		cancel()
		t.Fatalf("unexpected banner %q", line)
	}
	stopped := false
	stop = func() int {
		stopped = true
		cancel()
		select {
		case c := <-code:
			return c
		case <-time.After(20 * time.Second):
			t.Fatal("server did not stop")
			return -1
		}
	}
	t.Cleanup(func() {
		if !stopped {
			stop()
		}
	})
	return m[1], m[2], stop
}

func TestServerCommand(t *testing.T) {
	dir := t.TempDir()
	api, stunAddr, stop := startServerCmd(t, "--listen", "127.0.0.1:0", "--stun", "127.0.0.1:0", "--data", dir)
	resp, err := http.Get(api + "/healthz")
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("healthz: %v %v", resp, err)
	}
	resp.Body.Close()
	resp, err = http.Get(api + "/metrics")
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("metrics: %v %v", resp, err)
	}
	resp.Body.Close()
	pc, _ := net.ListenPacket("udp4", "127.0.0.1:0")
	defer pc.Close()
	ua, _ := net.ResolveUDPAddr("udp", stunAddr)
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	got, err := stun.Bind(ctx, pc, ua)
	if err != nil || got != pc.LocalAddr().(*net.UDPAddr).AddrPort() {
		t.Fatalf("STUN: %v %v", got, err)
	}
	fi, err := os.Stat(filepath.Join(dir, "server.key"))
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("server key: %v %v", fi, err)
	}
	if _, err := os.Stat(filepath.Join(dir, "directory.db")); err != nil {
		t.Fatalf("no SQLite database: %v", err)
	}
	if c := stop(); c != 0 {
		t.Fatalf("exit code %d after graceful shutdown", c)
	}
	// The key survives a restart: tickets stay verifiable.
	key1, _ := os.ReadFile(filepath.Join(dir, "server.key"))
	_, _, stop = startServerCmd(t, "--listen", "127.0.0.1:0", "--stun", "127.0.0.1:0", "--data", dir)
	stop()
	key2, _ := os.ReadFile(filepath.Join(dir, "server.key"))
	if !bytes.Equal(key1, key2) {
		t.Fatal("server key changed across restarts")
	}
}

func TestServerRefusesPlainHTTPOffLoopback(t *testing.T) {
	var out, errb bytes.Buffer
	code := Run(t.Context(), []string{"server", "--listen", "0.0.0.0:0", "--stun", "", "--data", t.TempDir()}, &out, &errb)
	if code != 2 || !strings.Contains(errb.String(), "refusing plain HTTP") {
		t.Fatalf("code %d, stderr %q", code, errb.String())
	}
	// --insecure allows it (here on an ephemeral port).
	_, _, stop := startServerCmd(t, "--listen", "0.0.0.0:0", "--insecure", "--stun", "127.0.0.1:0", "--data", t.TempDir())
	if c := stop(); c != 0 {
		t.Fatalf("exit %d", c)
	}
	// A world-readable key is refused.
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "server.key"), []byte("AAAA\n"), 0o644)
	code = Run(t.Context(), []string{"server", "--listen", "127.0.0.1:0", "--stun", "", "--data", dir}, &out, &errb)
	if code != 1 || !strings.Contains(errb.String(), "chmod 600") {
		t.Fatalf("code %d, stderr %q", code, errb.String())
	}
}

func TestServerTLS(t *testing.T) {
	dir := t.TempDir()
	certFile, keyFile := selfSigned(t, dir)
	api, _, stop := startServerCmd(t, "--listen", "127.0.0.1:0", "--stun", "127.0.0.1:0", "--data", dir, "--tls-cert", certFile, "--tls-key", keyFile)
	if !strings.HasPrefix(api, "https://") {
		t.Fatalf("api %s", api)
	}
	pool := x509.NewCertPool()
	certPEM, _ := os.ReadFile(certFile)
	pool.AppendCertsFromPEM(certPEM)
	hc := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
	defer hc.CloseIdleConnections()
	resp, err := hc.Get(api + "/healthz")
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("https healthz: %v %v", resp, err)
	}
	resp.Body.Close()
	stop()
}

func selfSigned(t *testing.T, dir string) (string, string) {
	priv, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "127.0.0.1"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}, KeyUsage: x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}, IsCA: true, BasicConstraintsValid: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &priv.PublicKey, priv)
	if err != nil {
		t.Fatal(err)
	}
	kb, _ := x509.MarshalECPrivateKey(priv)
	cf, kf := filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	os.WriteFile(cf, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600)
	os.WriteFile(kf, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kb}), 0o600)
	return cf, kf
}
