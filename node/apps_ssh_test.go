package node_test

import (
	"context"
	"fmt"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/parley-p2p/parley/internal/sshtest"
)

// TestSSHThroughParleyConnect runs a real ssh client against a real sshd
// on loopback, with the real `parley connect` CLI as its ProxyCommand:
// the CLI reaches alice's daemon over its Unix socket, the daemon tunnels
// over its session with bob's daemon (behind NATs on natlab), and bob's
// daemon connects to the port it exposed.
func TestSSHThroughParleyConnect(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 120*time.Second)
	defer cancel()
	srv := sshtest.Start(t, ctx, "bob")
	bin := filepath.Join(t.TempDir(), "parley")
	if out, err := exec.CommandContext(ctx, filepath.Join(runtime.GOROOT(), "bin", "go"), "build", "-o", bin, "../cmd/parley").CombinedOutput(); err != nil {
		t.Fatalf("build parley: %v\n%s", err, out)
	}

	_, a, _, _, ba := appsPair(t)
	if err := ba.Expose(ctx, srv.Port); err != nil {
		t.Fatal(err)
	}
	proxy := fmt.Sprintf("%s connect --data %s %%h:%d", bin, a.DataDir(), srv.Port)
	out, err := exec.CommandContext(ctx, srv.SSH, srv.Args(proxy, "bob", "echo", "hello through parley")...).CombinedOutput()
	if err != nil {
		t.Fatalf("ssh: %v\n%s", err, out)
	}
	if strings.TrimSpace(string(out)) != "hello through parley" {
		t.Fatalf("ssh printed %q", out)
	}

	// A port bob does not expose: ssh fails, and parley connect says why.
	refused := fmt.Sprintf("%s connect --data %s %%h:25", bin, a.DataDir())
	out, err = exec.CommandContext(ctx, srv.SSH, srv.Args(refused, "bob", "true")...).CombinedOutput()
	if err == nil || !strings.Contains(string(out), "bob does not expose port 25") {
		t.Fatalf("ssh to an unexposed port: %v\n%s", err, out)
	}
}
