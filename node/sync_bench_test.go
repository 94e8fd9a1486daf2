package node_test

import (
	"bytes"
	"encoding/base64"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	"github.com/parley-p2p/parley/natlab"
	"github.com/parley-p2p/parley/node"
	"github.com/parley-p2p/parley/transport"
)

// TestSyncConnectTimes measures, in virtual time on natlab, how long a
// connection takes to carry its first message and to be direct: 12.5 ms
// access links (50 ms RTT between two peers, 25 ms to the directory, whose
// connections add 12.5 ms each way), a supernode on the internet. The
// figures go to the test log (go test -run ConnectTimes -v ./node/) and
// docs/benchmarks.md; the test fails only if a pair that should be direct
// is not, or takes absurdly long.
func TestSyncConnectTimes(t *testing.T) {
	type scenario struct {
		name     string
		a, b     *[2]natlab.Behavior // mapping, filtering; nil: public
		direct   bool
		relayOut bool // cut alice's route to bob at first: relayed first
	}
	eim := &[2]natlab.Behavior{natlab.EndpointIndependent, natlab.AddressAndPortDependent}
	sym := &[2]natlab.Behavior{natlab.AddressAndPortDependent, natlab.AddressAndPortDependent}
	var pub *[2]natlab.Behavior
	scenarios := []scenario{
		{name: "public–EIM", a: pub, b: eim, direct: true},
		{name: "EIM–EIM", a: eim, b: eim, direct: true},
		{name: "EIM–symmetric", a: eim, b: sym, direct: true},
		{name: "symmetric–EIM", a: sym, b: eim, direct: true},
		{name: "symmetric–symmetric (relayed)", a: sym, b: sym},
	}
	var table strings.Builder
	fmt.Fprintf(&table, "| pair | smaller key | first message read by bob | its echo back | path then | direct after |\n|---|---|---|---|---|---|\n")
	for _, sc := range scenarios {
		// Both orders of the keys, which used to decide who dials.
		for _, smaller := range []string{"alice", "bob"} {
			t.Run(sc.name+"/"+smaller+" smaller", func(t *testing.T) {
				synctest.Test(t, func(t *testing.T) {
					wd := newSyncWorld(t, syncWorldConfig{Link: wanLink, ServerDelay: 12500 * time.Microsecond})
					dir := t.TempDir()
					small, large := orderedKeys(t)
					if smaller == "alice" {
						writeIdentity(t, filepath.Join(dir, "alice"), small)
						writeIdentity(t, filepath.Join(dir, "bob"), large)
					} else {
						writeIdentity(t, filepath.Join(dir, "alice"), large)
						writeIdentity(t, filepath.Join(dir, "bob"), small)
					}
					wd.startSupernode("carol", dir)
					host := func(name string, nb *[2]natlab.Behavior) *natlab.Host {
						if nb == nil {
							return wd.publicHost(name)
						}
						h, _ := wd.natHost(name, nb[0], nb[1])
						return h
					}
					a := wd.startNodeConfig("alice", node.Config{DataDir: filepath.Join(dir, "alice"), Listener: host("alice", sc.a), Supernode: "off"})
					b := wd.startNodeConfig("bob", node.Config{DataDir: filepath.Join(dir, "bob"), Listener: host("bob", sc.b), Supernode: "off"})
					// bob notes when the first message arrives, then echoes.
					arrived := make(chan time.Time, 1)
					a.Handle("echo", echo)
					b.Handle("echo", func(_ node.Peer, st *transport.Stream) {
						buf := make([]byte, 64)
						n, err := st.Read(buf)
						select {
						case arrived <- time.Now():
						default:
						}
						if err == nil {
							st.Write(buf[:n])
						}
						io.Copy(st, st)
						st.Close()
					})
					befriend(t, a, b, "alice", "bob")
					// Let both settle (supernodes measured, candidates known).
					time.Sleep(5 * time.Second)

					t0 := time.Now()
					roundTrip(t, a, "bob", []byte("hello"))
					echoed := time.Since(t0)
					var read time.Duration
					select {
					case at := <-arrived:
						read = at.Sub(t0)
					default:
						t.Fatal("bob's handler saw no message")
					}
					pathThen := contactStatus(a, "bob").Path
					direct := time.Duration(-1)
					for time.Since(t0) < 10*time.Second {
						if contactStatus(a, "bob").Path == "direct" && contactStatus(b, "alice").Path == "direct" {
							direct = time.Since(t0)
							break
						}
						time.Sleep(time.Millisecond)
					}
					ds := "never"
					if direct >= 0 {
						ds = direct.String()
					}
					fmt.Fprintf(&table, "| %s | %s | %v | %v | %s | %s |\n", sc.name, smaller, read, echoed, pathThen, ds)
					t.Logf("%s || %s", contactStatus(a, "bob"), contactStatus(b, "alice"))
					if sc.direct && direct < 0 {
						t.Errorf("%s: not direct after 10 s", sc.name)
					}
					if echoed > 5*time.Second {
						t.Errorf("%s: first message's echo after %v", sc.name, echoed)
					}
				})
			})
		}
	}
	t.Logf("50 ms RTT between peers, 25 ms to the directory (virtual time):\n%s", table.String())
}

// orderedKeys returns two fresh device keys, the smaller public key first.
func orderedKeys(t *testing.T) (small, large transport.PrivateKey) {
	t.Helper()
	var k [2]transport.PrivateKey
	for i := range k {
		var err error
		if k[i], err = transport.GeneratePrivateKey(); err != nil {
			t.Fatal(err)
		}
	}
	a, b := k[0].Public(), k[1].Public()
	if bytes.Compare(a[:], b[:]) > 0 {
		return k[1], k[0]
	}
	return k[0], k[1]
}

// writeIdentity makes key the identity of the daemon that will run in dir.
func writeIdentity(t *testing.T, dir string, key transport.PrivateKey) {
	t.Helper()
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	b := base64.StdEncoding.EncodeToString(key[:]) + "\n"
	if err := os.WriteFile(filepath.Join(dir, node.IdentityFile), []byte(b), 0o600); err != nil {
		t.Fatal(err)
	}
}
