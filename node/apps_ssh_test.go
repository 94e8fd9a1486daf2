package node_test

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"
)

// needProgram skips the test when a program is missing, except in CI where
// it fails.
func needProgram(t *testing.T, path string) string {
	t.Helper()
	p, err := exec.LookPath(path)
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("%s is missing (install openssh-server and openssh-client)", path)
		}
		t.Skipf("%s is missing: install openssh-server and openssh-client to run this test", path)
	}
	return p
}

func runProgram(t *testing.T, ctx context.Context, name string, args ...string) {
	t.Helper()
	if out, err := exec.CommandContext(ctx, name, args...).CombinedOutput(); err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
}

// TestSSHThroughParleyConnect runs a real ssh client against a real sshd
// on loopback, with the real `parley connect` CLI as its ProxyCommand:
// the CLI reaches alice's daemon over its Unix socket, the daemon tunnels
// over its session with bob's daemon (behind NATs on natlab), and bob's
// daemon connects to the port it exposed.
func TestSSHThroughParleyConnect(t *testing.T) {
	sshd := needProgram(t, "/usr/sbin/sshd")
	ssh := needProgram(t, "ssh")
	keygen := needProgram(t, "ssh-keygen")
	ctx, cancel := context.WithTimeout(context.Background(), 120*time.Second)
	defer cancel()
	dir := t.TempDir()
	bin := filepath.Join(dir, "parley")
	if out, err := exec.CommandContext(ctx, filepath.Join(runtime.GOROOT(), "bin", "go"), "build", "-o", bin, "../cmd/parley").CombinedOutput(); err != nil {
		t.Fatalf("build parley: %v\n%s", err, out)
	}
	if os.Geteuid() == 0 {
		os.MkdirAll("/run/sshd", 0o755) // sshd as root wants its privilege separation directory
	}
	hostKey := filepath.Join(dir, "host_ed25519")
	clientKey := filepath.Join(dir, "id_ed25519")
	runProgram(t, ctx, keygen, "-q", "-t", "ed25519", "-N", "", "-f", hostKey)
	runProgram(t, ctx, keygen, "-q", "-t", "ed25519", "-N", "", "-f", clientKey)
	pub, err := os.ReadFile(clientKey + ".pub")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "authorized_keys"), pub, 0o600); err != nil {
		t.Fatal(err)
	}
	hostPub, err := os.ReadFile(hostKey + ".pub")
	if err != nil {
		t.Fatal(err)
	}
	// Strict host key checking: the tunnel must reach this sshd, no other.
	if err := os.WriteFile(filepath.Join(dir, "known_hosts"), []byte("bob "+string(hostPub)), 0o600); err != nil {
		t.Fatal(err)
	}
	u, err := user.Current()
	if err != nil {
		t.Fatal(err)
	}
	port := startSSHDaemon(t, ctx, sshd, dir, hostKey)

	_, a, _, _, ba := appsPair(t)
	if err := ba.Expose(ctx, port); err != nil {
		t.Fatal(err)
	}
	sshArgs := func(proxy string, extra ...string) []string {
		return append([]string{"-F", "/dev/null", "-i", clientKey,
			"-o", "IdentitiesOnly=yes", "-o", "BatchMode=yes",
			"-o", "StrictHostKeyChecking=yes",
			"-o", "UserKnownHostsFile=" + filepath.Join(dir, "known_hosts"),
			"-o", "ProxyCommand=" + proxy,
			"-o", "ConnectTimeout=30", "-l", u.Username}, extra...)
	}
	proxy := fmt.Sprintf("%s connect --data %s %%h:%d", bin, a.DataDir(), port)
	out, err := exec.CommandContext(ctx, ssh, sshArgs(proxy, "bob", "echo", "hello through parley")...).CombinedOutput()
	if err != nil {
		t.Fatalf("ssh: %v\n%s", err, out)
	}
	if strings.TrimSpace(string(out)) != "hello through parley" {
		t.Fatalf("ssh printed %q", out)
	}

	// A port bob does not expose: ssh fails, and parley connect says why.
	refused := fmt.Sprintf("%s connect --data %s %%h:25", bin, a.DataDir())
	out, err = exec.CommandContext(ctx, ssh, sshArgs(refused, "bob", "true")...).CombinedOutput()
	if err == nil || !strings.Contains(string(out), "bob does not expose port 25") {
		t.Fatalf("ssh to an unexposed port: %v\n%s", err, out)
	}
}

// startSSHDaemon runs sshd in the foreground on a free loopback port until
// the test ends, and waits until it accepts connections.
func startSSHDaemon(t *testing.T, ctx context.Context, sshd, dir, hostKey string) uint16 {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := uint16(l.Addr().(*net.TCPAddr).Port)
	l.Close()
	config := filepath.Join(dir, "sshd_config")
	conf := fmt.Sprintf(`ListenAddress 127.0.0.1
HostKey %s
AuthorizedKeysFile %s
PidFile %s
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
PermitRootLogin prohibit-password
StrictModes no
UsePAM no
`, hostKey, filepath.Join(dir, "authorized_keys"), filepath.Join(dir, "sshd.pid"))
	if err := os.WriteFile(config, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(sshd, "-D", "-e", "-f", config, "-p", fmt.Sprint(port))
	var logs strings.Builder
	cmd.Stderr = &logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() {
		cmd.Wait()
		close(exited)
	}()
	t.Cleanup(func() {
		cmd.Process.Kill()
		<-exited
		if t.Failed() {
			t.Logf("sshd log:\n%s", logs.String())
		}
	})
	deadline := time.NewTimer(20 * time.Second)
	defer deadline.Stop()
	for {
		c, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", port), time.Second)
		if err == nil {
			c.Close()
			return port
		}
		select {
		case <-exited:
			t.Fatalf("sshd exited: %s", logs.String())
		case <-deadline.C:
			t.Fatalf("sshd did not listen: %v", err)
		case <-time.After(20 * time.Millisecond): // polling a condition, with the deadline above
		}
	}
}
