package tunnel_test

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
	"sync"
	"testing"
	"time"

	"github.com/parley-p2p/parley/apps/appmux"
	"github.com/parley-p2p/parley/apps/tunnel"
	"github.com/parley-p2p/parley/transport"
)

// proxyCmd is the path of the built internal/proxycmd, or "" with
// proxyCmdErr saying why not.
var (
	proxyCmd    string
	proxyCmdErr error
)

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "parley-tunnel-test")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	bin := filepath.Join(dir, "proxycmd")
	out, err := exec.Command(filepath.Join(runtime.GOROOT(), "bin", "go"), "build", "-o", bin, "./internal/proxycmd").CombinedOutput()
	if err != nil {
		proxyCmdErr = fmt.Errorf("build proxycmd: %v\n%s", err, out)
	} else {
		proxyCmd = bin
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// need skips the test when a program is missing, except in CI where it
// fails.
func need(t *testing.T, path string) string {
	p, err := exec.LookPath(path)
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("%s is missing (install openssh-server and openssh-client)", path)
		}
		t.Skipf("%s is missing: install openssh-server and openssh-client to run this test", path)
	}
	return p
}

func run(t *testing.T, ctx context.Context, name string, args ...string) {
	t.Helper()
	if out, err := exec.CommandContext(ctx, name, args...).CombinedOutput(); err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
}

// TestSSH runs a real ssh client against a real sshd on loopback, with a
// tunnel over a transport session as its ProxyCommand: what
// `ssh -o ProxyCommand='parley connect %h:22' bob` does.
func TestSSH(t *testing.T) {
	sshd := need(t, "/usr/sbin/sshd")
	ssh := need(t, "ssh")
	keygen := need(t, "ssh-keygen")
	if proxyCmdErr != nil {
		t.Fatal(proxyCmdErr)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	dir := t.TempDir()
	if os.Geteuid() == 0 {
		// sshd running as root insists on its privilege separation
		// directory, which the service unit would create.
		os.MkdirAll("/run/sshd", 0o755)
	}
	hostKey := filepath.Join(dir, "host_ed25519")
	clientKey := filepath.Join(dir, "id_ed25519")
	run(t, ctx, keygen, "-q", "-t", "ed25519", "-N", "", "-f", hostKey)
	run(t, ctx, keygen, "-q", "-t", "ed25519", "-N", "", "-f", clientKey)
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
	// The client checks the host key strictly: the tunnel must reach this
	// sshd and no other.
	if err := os.WriteFile(filepath.Join(dir, "known_hosts"), []byte("bob "+string(hostPub)), 0o600); err != nil {
		t.Fatal(err)
	}
	u, err := user.Current()
	if err != nil {
		t.Fatal(err)
	}

	port := startSSHD(t, ctx, sshd, dir, hostKey)

	// bob: a transport listener on loopback serving tunnels to sshd only.
	var policy tunnel.Ports
	policy.Expose(port)
	addr, key := serveListener(t, &policy)

	proxy := fmt.Sprintf("%s %s %s %d", proxyCmd, addr, key, port)
	cmd := exec.CommandContext(ctx, ssh, "-F", "/dev/null",
		"-i", clientKey,
		"-o", "IdentitiesOnly=yes",
		"-o", "BatchMode=yes",
		"-o", "StrictHostKeyChecking=yes",
		"-o", "UserKnownHostsFile="+filepath.Join(dir, "known_hosts"),
		"-o", "ProxyCommand="+proxy,
		"-o", "ConnectTimeout=20",
		"-l", u.Username,
		"bob", "echo", "hello")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("ssh: %v\n%s", err, out)
	}
	if strings.TrimSpace(string(out)) != "hello" {
		t.Fatalf("ssh printed %q, want hello", out)
	}

	// A port bob does not expose: ssh fails, and the proxy says why.
	refused := fmt.Sprintf("%s %s %s %d", proxyCmd, addr, key, 25)
	out, err = exec.CommandContext(ctx, ssh, "-F", "/dev/null", "-o", "BatchMode=yes",
		"-o", "ProxyCommand="+refused, "bob", "true").CombinedOutput()
	if err == nil || !strings.Contains(string(out), "does not expose port 25") {
		t.Fatalf("ssh to an unexposed port: %v\n%s", err, out)
	}
}

// startSSHD runs sshd in the foreground on a free loopback port until the
// test ends, and waits until it accepts connections.
func startSSHD(t *testing.T, ctx context.Context, sshd, dir, hostKey string) uint16 {
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
	for {
		c, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", port), time.Second)
		if err == nil {
			c.Close()
			return port
		}
		select {
		case <-exited:
			t.Fatalf("sshd exited: %s", logs.String())
		case <-ctx.Done():
			t.Fatalf("sshd did not listen: %v", err)
		case <-time.After(20 * time.Millisecond): // polling a condition, with the deadline above
		}
	}
}

// serveListener accepts transport sessions on a loopback UDP socket and
// serves their tunnel streams with policy until the test ends.
func serveListener(t *testing.T, policy tunnel.Policy) (addr string, key transport.PublicKey) {
	pc, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	k, err := transport.GeneratePrivateKey()
	if err != nil {
		t.Fatal(err)
	}
	ln, err := transport.Listen(pc, k, nil)
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	t.Cleanup(func() {
		ln.Close()
		wg.Wait()
		pc.Close()
	})
	wg.Go(func() {
		for {
			sess, err := ln.Accept(context.Background())
			if err != nil {
				return
			}
			wg.Go(func() {
				for {
					st, err := sess.AcceptStream(context.Background())
					if err != nil {
						return
					}
					wg.Go(func() {
						if app, err := appmux.Accept(st); err != nil || app != appmux.Tunnel {
							st.Close()
							return
						}
						tunnel.Serve(st, policy, tunnel.DialLocal)
					})
				}
			})
		}
	})
	return pc.LocalAddr().String(), k.Public()
}
