package tunnel_test

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/parley-p2p/parley/apps/appmux"
	"github.com/parley-p2p/parley/apps/tunnel"
	"github.com/parley-p2p/parley/internal/sshtest"
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

// TestSSH runs a real ssh client against a real sshd on loopback, with a
// tunnel over a transport session as its ProxyCommand: what
// `ssh -o ProxyCommand='parley connect %h:22' bob` does.
func TestSSH(t *testing.T) {
	if proxyCmdErr != nil {
		t.Fatal(proxyCmdErr)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	srv := sshtest.Start(t, ctx, "bob")

	// bob: a transport listener on loopback serving tunnels to sshd only.
	var policy tunnel.Ports
	policy.Expose(srv.Port)
	addr, key := serveListener(t, &policy)

	proxy := fmt.Sprintf("%s %s %s %d", proxyCmd, addr, key, srv.Port)
	out, err := exec.CommandContext(ctx, srv.SSH, srv.Args(proxy, "bob", "echo", "hello")...).CombinedOutput()
	if err != nil {
		t.Fatalf("ssh: %v\n%s", err, out)
	}
	if strings.TrimSpace(string(out)) != "hello" {
		t.Fatalf("ssh printed %q, want hello", out)
	}

	// A port bob does not expose: ssh fails, and the proxy says why.
	refused := fmt.Sprintf("%s %s %s %d", proxyCmd, addr, key, 25)
	out, err = exec.CommandContext(ctx, srv.SSH, srv.Args(refused, "bob", "true")...).CombinedOutput()
	if err == nil || !strings.Contains(string(out), "does not expose port 25") {
		t.Fatalf("ssh to an unexposed port: %v\n%s", err, out)
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
