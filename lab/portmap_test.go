package lab_test

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/parley-p2p/parley/lab"
)

// TestDaemonPortMapping runs a real `parley up` behind an EIM router that
// offers port mappings (miniupnpd: PCP, NAT-PMP, UPnP IGD): the daemon maps
// its socket's port on the router, says so in its log, and offers the
// mapped public address among its candidates.
func TestDaemonPortMapping(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs real daemons")
	}
	lab.RequireUPnP(t)
	l := lab.NewTest(t, lab.Config{Name: "pmap"})
	bin := buildParley(t)
	srv, err := l.AddPublicHost("server")
	if err != nil {
		t.Fatal(err)
	}
	h, err := l.AddNATHostConfig("alice", lab.RouterConfig{Kind: lab.EIM, UPnP: true})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	upnp, err := h.Router().StartUPnP(ctx, lab.UPnPConfig{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { upnp.Stop() })

	dir := t.TempDir()
	srvAddr := srv.Addr().String()
	runDaemon(t, srv, filepath.Join(dir, "server.log"), bin, "server", "--data", filepath.Join(dir, "server"),
		"--listen", srvAddr+":8080", "--insecure", "--stun", srvAddr+":3478", "--log-level", "debug")
	waitTCP(t, srv, srvAddr+":8080")
	logPath := filepath.Join(dir, "alice.log")
	d := &peerDaemon{t: t, bin: bin, name: "alice", data: filepath.Join(dir, "alice")}
	runDaemon(t, h, logPath, bin, "up", "--server", "http://"+srvAddr+":8080", "--data", d.data,
		"--listen", h.Addr().String()+":4000", "--supernode", "off", "--web", "off", "--log-level", "debug")
	d.waitSocket()
	if err := os.WriteFile(filepath.Join(dir, "pw"), []byte("correct horse battery staple\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	d.cli("register", "alice", "--password-file", filepath.Join(dir, "pw"))

	public := h.Router().PublicAddr().String()
	var mapped string
	waitUntil(t, 30*time.Second, "a router port mapping in alice's log", func() bool {
		b, _ := os.ReadFile(logPath)
		for _, line := range strings.Split(string(b), "\n") {
			if i := strings.Index(line, "router port mapping"); i >= 0 {
				if j := strings.Index(line, "external="); j >= 0 {
					mapped = strings.Fields(line[j+len("external="):])[0]
					return true
				}
			}
		}
		return false
	})
	if !strings.HasPrefix(mapped, public+":") {
		t.Fatalf("mapped %s, want an address of the router's public %s", mapped, public)
	}
	waitUntil(t, 30*time.Second, "the mapping among alice's candidates", func() bool {
		return slices.Contains(d.status().Candidates, mapped)
	})
	t.Logf("alice's candidates: %v (mapped %s; miniupnpd log tail:\n%s)", d.status().Candidates, mapped, tail(upnp.Log(), 5))
}
