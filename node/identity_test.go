package node_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/parley-p2p/parley/natlab"
	"github.com/parley-p2p/parley/node"
)

func TestIdentityKeyFile(t *testing.T) {
	w := natlab.New(natlab.Config{})
	defer w.Close()
	h := w.NewHost("h", w.NewNetwork("lan", mustPrefix("10.0.0.0/24")), natlab.Link{})
	dir := filepath.Join(t.TempDir(), "data")

	n1, err := node.New(node.Config{Server: "http://127.0.0.1:1", DataDir: dir, Listener: h})
	if err != nil {
		t.Fatal(err)
	}
	key := n1.PublicKey()
	n1.Close()
	for name, want := range map[string]os.FileMode{"": 0o700, node.IdentityFile: 0o600, "state.db": 0o600} {
		fi, err := os.Stat(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm() != want {
			t.Errorf("%s: mode %v, want %v", filepath.Join(dir, name), fi.Mode().Perm(), want)
		}
	}

	n2, err := node.New(node.Config{DataDir: dir, Listener: h})
	if err != nil {
		t.Fatal(err)
	}
	if n2.PublicKey() != key {
		t.Errorf("the key changed across restarts")
	}
	if s := n2.Status(); s.Server != "http://127.0.0.1:1" {
		t.Errorf("the server URL was not remembered: %q", s.Server)
	}
	n2.Close()

	// A key others can read is refused, with what to do.
	path := filepath.Join(dir, node.IdentityFile)
	if err := os.Chmod(path, 0o644); err != nil {
		t.Fatal(err)
	}
	_, err = node.New(node.Config{DataDir: dir, Listener: h})
	if err == nil || !strings.Contains(err.Error(), "readable by others") || !strings.Contains(err.Error(), "chmod 600") {
		t.Errorf("group-readable key: %v", err)
	}
	os.Chmod(path, 0o600)

	// So is a data directory others can open.
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	_, err = node.New(node.Config{DataDir: dir, Listener: h})
	if err == nil || !strings.Contains(err.Error(), "chmod 700") {
		t.Errorf("open data directory: %v", err)
	}
	os.Chmod(dir, 0o700)

	// A malformed key is an error, not a new identity.
	os.WriteFile(path, []byte("not base64\n"), 0o600)
	if _, err := node.New(node.Config{DataDir: dir, Listener: h}); err == nil || !strings.Contains(err.Error(), "malformed") {
		t.Errorf("malformed key: %v", err)
	}
}

func TestDataDirFromEnv(t *testing.T) {
	d := t.TempDir()
	t.Setenv("PARLEY_DATA", d)
	got, err := node.DataDir("")
	if err != nil || got != d {
		t.Errorf("DataDir with PARLEY_DATA: %q, %v", got, err)
	}
	if got, _ := node.DataDir("/x/y"); got != "/x/y" {
		t.Errorf("an explicit directory wins: %q", got)
	}
	t.Setenv("PARLEY_DATA", "")
	t.Setenv("XDG_DATA_HOME", "/xdg")
	if got, _ := node.DataDir(""); got != "/xdg/parley" {
		t.Errorf("default: %q", got)
	}
}
