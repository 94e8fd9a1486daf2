package node_test

import (
	"bytes"
	"crypto/rand"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/parley-p2p/parley/apps/chat"
	"github.com/parley-p2p/parley/apps/files"
	"github.com/parley-p2p/parley/natlab"
	"github.com/parley-p2p/parley/node"
)

// enableApps starts d's applications with short poll intervals.
func enableApps(t *testing.T, d *daemon) *node.Apps {
	t.Helper()
	a, err := d.EnableApps(node.AppsConfig{MailboxPoll: 200 * time.Millisecond, RetryInterval: 200 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	return a
}

func messageState(t *testing.T, a *node.Apps, peer string, id chat.ID) chat.State {
	m, err := a.ChatStore().Message(t.Context(), peer, true, id)
	if err != nil {
		t.Fatal(err)
	}
	return m.State
}

func historyBodies(t *testing.T, a *node.Apps, peer string) []string {
	h, err := a.ChatStore().History(t.Context(), peer, 100)
	if err != nil {
		t.Fatal(err)
	}
	var l []string
	for _, m := range h {
		l = append(l, m.Body)
	}
	return l
}

// TestAppsChatFilesTunnel runs the three applications between two daemons
// behind NATs: a message is delivered and read, a file arrives verified,
// and a tunnel reaches an exposed port while another port is refused.
func TestAppsChatFilesTunnel(t *testing.T) {
	wd := newWorld(t)
	ah, _ := wd.natHost("alice", natlab.EndpointIndependent, natlab.EndpointIndependent)
	bh, _ := wd.natHost("bob", natlab.EndpointIndependent, natlab.AddressAndPortDependent)
	dir := t.TempDir()
	a := wd.startNode("alice", filepath.Join(dir, "alice"), ah)
	b := wd.startNode("bob", filepath.Join(dir, "bob"), bh)
	aa, ba := enableApps(t, a), enableApps(t, b)
	befriend(t, a, b, "alice", "bob")
	ctx := t.Context()

	m, err := aa.SendMessage(ctx, "bob", "hello bob")
	if err != nil {
		t.Fatal(err)
	}
	if m.State != chat.Delivered {
		t.Errorf("state after send = %v, want delivered", m.State)
	}
	if got := historyBodies(t, ba, "alice"); len(got) != 1 || got[0] != "hello bob" {
		t.Fatalf("bob's history %q", got)
	}
	if err := ba.Chat().MarkRead(ctx, "alice"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "read receipt", func() bool { return messageState(t, aa, "bob", m.ID) == chat.Read })
	if _, err := aa.SendMessage(ctx, "carol", "hi"); err == nil {
		t.Error("message to a stranger accepted")
	}

	// Files: bob accepts; the bytes arrive verified.
	src := filepath.Join(dir, "report.bin")
	data := make([]byte, 3<<20+17)
	rand.Read(data)
	if err := os.WriteFile(src, data, 0o600); err != nil {
		t.Fatal(err)
	}
	tr, err := aa.SendFile(ctx, "bob", src)
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, 5*time.Second, "offer at bob", func() bool { _, ok := ba.Transfer(tr.ID); return ok })
	if err := ba.AcceptFile(tr.ID); err != nil {
		t.Fatal(err)
	}
	var got node.TransferStatus
	waitFor(t, 30*time.Second, "download", func() bool {
		got, _ = ba.Transfer(tr.ID)
		return got.State == files.Done || got.Error != ""
	})
	if got.State != files.Done {
		t.Fatalf("download: %+v", got)
	}
	if b, err := os.ReadFile(got.Path); err != nil || !bytes.Equal(b, data) {
		t.Fatalf("downloaded file differs (%v)", err)
	}
	if filepath.Dir(got.Path) != filepath.Join(b.DataDir(), "downloads") {
		t.Errorf("saved to %s", got.Path)
	}
	waitFor(t, 5*time.Second, "sender sees done", func() bool {
		s, _ := aa.Transfer(tr.ID)
		return s.State == files.Done
	})

	// Tunnels: bob exposes an echo port on loopback, not another.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() { io.Copy(c, c); c.Close() }()
		}
	}()
	port := uint16(ln.Addr().(*net.TCPAddr).Port)
	if _, err := aa.Tunnel(ctx, "bob", port); err == nil || !strings.Contains(err.Error(), "bob does not expose port") {
		t.Fatalf("tunnel to an unexposed port: %v", err)
	}
	if err := ba.Expose(ctx, port); err != nil {
		t.Fatal(err)
	}
	c, err := aa.Tunnel(ctx, "bob", port)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Write([]byte("ping")); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 4)
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.ReadFull(c, buf); err != nil || string(buf) != "ping" {
		t.Fatalf("echo %q, %v", buf, err)
	}
}

// TestAppsMailbox sends to a contact whose daemon is down: the message is
// sealed into the directory's mailbox and arrives, once, when the contact
// comes back; a crash of the sender in between loses nothing.
func TestAppsMailbox(t *testing.T) {
	wd := newWorld(t)
	ah := wd.publicHost("alice")
	bh := wd.publicHost("bob")
	dir := t.TempDir()
	a := wd.startNode("alice", filepath.Join(dir, "alice"), ah)
	b := wd.startNode("bob", filepath.Join(dir, "bob"), bh)
	aa := enableApps(t, a)
	enableApps(t, b)
	befriend(t, a, b, "alice", "bob")
	ctx := t.Context()

	b.stop()
	waitFor(t, 10*time.Second, "bob offline", func() bool {
		s := a.Status()
		return len(s.Contacts) == 1 && !s.Contacts[0].Online
	})
	m, err := aa.SendMessage(ctx, "bob", "while you were out")
	if err != nil {
		t.Fatal(err)
	}
	if m.State != chat.Sent {
		t.Errorf("state = %v, want sent (sealed into the mailbox)", m.State)
	}
	// Alice goes down (as in a crash); bob comes back while she is away,
	// so the message can only reach him through the mailbox.
	a.stop()
	b = wd.startNode("bob", filepath.Join(dir, "bob"), bh)
	ba := enableApps(t, b)
	waitFor(t, 20*time.Second, "message at bob", func() bool {
		return len(historyBodies(t, ba, "alice")) == 1
	})
	// Alice's outbox survived her restart; her next session with bob
	// takes the message out of it, and bob shows it once.
	a = wd.startNode("alice", filepath.Join(dir, "alice"), ah)
	aa = enableApps(t, a)
	if st := messageState(t, aa, "bob", m.ID); st != chat.Sent {
		t.Errorf("after restart: state %v, want sent", st)
	}
	waitFor(t, 20*time.Second, "delivery acknowledged", func() bool { return messageState(t, aa, "bob", m.ID) >= chat.Delivered })
	if got := historyBodies(t, ba, "alice"); len(got) != 1 || got[0] != "while you were out" {
		t.Fatalf("bob's history %q", got)
	}
}
