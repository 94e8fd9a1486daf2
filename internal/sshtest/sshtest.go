// Package sshtest runs a real sshd on loopback for tests that reach it
// through Parley tunnels, with a real ssh client: host and client keys,
// known_hosts for one host alias, and the client's arguments.
//
// Tests skip when OpenSSH is missing, except with CI=true, where they fail:
// .ci/run installs openssh-server and openssh-client.
package sshtest

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// Server is a running sshd and what a client needs to log in to it.
type Server struct {
	Port       uint16 // sshd's port on 127.0.0.1
	SSH        string // path of the ssh client
	dir        string
	clientKey  string
	knownHosts string
	user       string
}

// Need returns the path of program, skipping the test when it is missing
// (failing it with CI=true).
func Need(t testing.TB, program string) string {
	t.Helper()
	p, err := exec.LookPath(program)
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("%s is missing (install openssh-server and openssh-client)", program)
		}
		t.Skipf("%s is missing: install openssh-server and openssh-client to run this test", program)
	}
	return p
}

func run(t testing.TB, ctx context.Context, name string, args ...string) {
	t.Helper()
	if out, err := exec.CommandContext(ctx, name, args...).CombinedOutput(); err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
}

// Start generates keys, starts sshd in the foreground on a free loopback
// port until the test ends, and waits until it accepts connections. The
// client trusts its host key under the name alias only, so that a tunnel
// that reached any other sshd would fail host key checking.
func Start(t testing.TB, ctx context.Context, alias string) *Server {
	t.Helper()
	sshd := Need(t, "/usr/sbin/sshd")
	s := &Server{SSH: Need(t, "ssh"), dir: t.TempDir()}
	keygen := Need(t, "ssh-keygen")
	if os.Geteuid() == 0 {
		// sshd running as root insists on its privilege separation
		// directory, which the service unit would create.
		os.MkdirAll("/run/sshd", 0o755)
	}
	hostKey := filepath.Join(s.dir, "host_ed25519")
	s.clientKey = filepath.Join(s.dir, "id_ed25519")
	run(t, ctx, keygen, "-q", "-t", "ed25519", "-N", "", "-f", hostKey)
	run(t, ctx, keygen, "-q", "-t", "ed25519", "-N", "", "-f", s.clientKey)
	pub, err := os.ReadFile(s.clientKey + ".pub")
	if err != nil {
		t.Fatal(err)
	}
	authorized := filepath.Join(s.dir, "authorized_keys")
	if err := os.WriteFile(authorized, pub, 0o600); err != nil {
		t.Fatal(err)
	}
	hostPub, err := os.ReadFile(hostKey + ".pub")
	if err != nil {
		t.Fatal(err)
	}
	s.knownHosts = filepath.Join(s.dir, "known_hosts")
	if err := os.WriteFile(s.knownHosts, []byte(alias+" "+string(hostPub)), 0o600); err != nil {
		t.Fatal(err)
	}
	u, err := user.Current()
	if err != nil {
		t.Fatal(err)
	}
	s.user = u.Username

	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s.Port = uint16(l.Addr().(*net.TCPAddr).Port)
	l.Close()
	config := filepath.Join(s.dir, "sshd_config")
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
`, hostKey, authorized, filepath.Join(s.dir, "sshd.pid"))
	if err := os.WriteFile(config, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(sshd, "-D", "-e", "-f", config, "-p", fmt.Sprint(s.Port))
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
		c, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", s.Port), time.Second)
		if err == nil {
			c.Close()
			return s
		}
		select {
		case <-exited:
			t.Fatalf("sshd exited: %s", logs.String())
		case <-deadline.C:
			t.Fatalf("sshd did not listen: %v", err)
		case <-ctx.Done():
			t.Fatalf("sshd did not listen: %v", err)
		case <-time.After(20 * time.Millisecond): // polling a condition, with the deadlines above
		}
	}
}

// Args returns ssh's arguments to log in with the client key through the
// ProxyCommand proxy, checking the host key strictly, followed by extra
// (the host alias and the remote command).
func (s *Server) Args(proxy string, extra ...string) []string {
	return append([]string{"-F", "/dev/null", "-i", s.clientKey,
		"-o", "IdentitiesOnly=yes", "-o", "BatchMode=yes",
		"-o", "StrictHostKeyChecking=yes",
		"-o", "UserKnownHostsFile=" + s.knownHosts,
		"-o", "ProxyCommand=" + proxy,
		"-o", "ConnectTimeout=30", "-l", s.user}, extra...)
}
