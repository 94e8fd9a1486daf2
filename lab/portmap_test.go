package lab_test

import (
	"context"
	"fmt"
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
// mapped public address among its candidates. Then the router's miniupnpd
// restarts, losing the mapping, and the daemon, hearing the ANNOUNCE it
// multicasts as it starts, maps again without waiting for its renewal.
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
	t.Cleanup(func() { upnp.Stop() }) // the daemon running at the end

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

	// The router's miniupnpd restarts and forgets the mapping: its rule
	// is gone until the daemon asks again. Alice tells the restart from
	// the epoch time going back, which it does once the daemon has
	// counted a few seconds.
	if err := upnp.WaitEpoch(ctx, h, 4); err != nil {
		t.Fatal(err)
	}
	rule := fmt.Sprintf("dnat ip to %v:4000", h.Addr())
	if err := upnp.Stop(); err != nil {
		t.Fatal(err)
	}
	if dnat := dnatRules(t, h.Router()); strings.Contains(dnat, rule) {
		t.Fatalf("the mapping outlived miniupnpd's restart:\n%s", dnat)
	}
	if upnp, err = h.Router().StartUPnP(ctx, lab.UPnPConfig{}); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	waitUntil(t, 15*time.Second, "alice mapping her port again after miniupnpd's restart", func() bool {
		return strings.Contains(dnatRules(t, h.Router()), rule)
	})
	t.Logf("mapped again %v after the restart", time.Since(start).Round(time.Millisecond))
	if b, _ := os.ReadFile(logPath); !strings.Contains(string(b), "announced a restart") {
		t.Errorf("alice's log does not say that the router announced a restart")
	}
	if cands := d.status().Candidates; !slices.Contains(cands, mapped) {
		t.Errorf("alice's candidates %v lack the mapping %s after the restart", cands, mapped)
	}
}

// dnatRules returns the rules miniupnpd keeps for its mappings on r.
func dnatRules(t *testing.T, r *lab.Router) string {
	t.Helper()
	out, err := r.Command(t.Context(), "nft", "list", "chain", "inet", "miniupnpd", "prerouting_miniupnpd").CombinedOutput()
	if err != nil {
		t.Fatalf("nft list chain: %v: %s", err, out)
	}
	return string(out)
}
