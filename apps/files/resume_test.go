package files_test

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/parley-p2p/parley/apps/appmux"
	"github.com/parley-p2p/parley/apps/files"
	"github.com/parley-p2p/parley/natlab"
)

// slowLink moves about 1 MiB/s with a 20 ms round trip, so that a
// transfer can be cut part way.
var slowLink = natlab.Link{Delay: 10 * time.Millisecond, Rate: 8 << 20}

// interrupted offers a 4 MiB file and cuts the session once bob has more
// than 1 MiB of it. It returns the transfer, the file's SHA-256 and the
// partial file's path.
func interrupted(t *testing.T) (p *pair, id files.ID, want [32]byte, partial string) {
	var once sync.Once
	var cut func()
	p = newPair(t, slowLink, nil, files.Config{Progress: func(pr files.Progress) {
		if pr.Done > 1<<20 {
			once.Do(cut)
		}
	}})
	cut = func() {
		p.mu.Lock()
		defer p.mu.Unlock()
		p.ab.Close()
		p.ba.Close()
	}
	path, want := writeFile(t, p.aliceDir, "data.bin", 4<<20, 2)
	ctx := context.Background()
	offer, err := p.alice.Send(ctx, "bob", path)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := p.bob.Accept(ctx, offer.ID); err == nil || errors.Is(err, files.ErrChecksum) {
		t.Fatalf("Accept over a cut session = %v, want a transport error", err)
	}
	tr, _ := p.bob.Transfer(offer.ID)
	if tr.State != files.Receiving {
		t.Fatalf("after the cut bob's transfer is %v", tr.State)
	}
	partial = filepath.Join(p.bobDir, fmt.Sprintf("data.bin.%s.partial", offer.ID.String()[:8]))
	fi, err := os.Stat(partial)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Size() < 1<<20 || fi.Size() >= 4<<20 {
		t.Fatalf("partial file has %d bytes", fi.Size())
	}
	return p, offer.ID, want, partial
}

// TestResumeAfterRestart cuts a transfer, restarts bob's service from its
// records, reconnects, and checks that the download resumes at the partial
// file's end rather than starting over.
func TestResumeAfterRestart(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		p, id, want, partial := interrupted(t)
		fi, _ := os.Stat(partial)
		offset := fi.Size()

		p.bob.Close()
		var first files.Progress
		var once sync.Once
		bob := p.newBob(files.Config{Progress: func(pr files.Progress) { once.Do(func() { first = pr }) }})
		if tr, ok := bob.Transfer(id); !ok || tr.State != files.Receiving {
			t.Fatalf("restarted bob lost the transfer: %+v", tr)
		}
		p.connect()
		got, err := bob.Accept(context.Background(), id)
		if err != nil {
			t.Fatal(err)
		}
		if first.Done < offset || first.Done > offset+64<<10 {
			t.Errorf("resumed at %d, partial file had %d", first.Done, offset)
		}
		if sumFile(t, got.Path) != want {
			t.Fatal("resumed file differs")
		}
		if _, err := os.Stat(partial); !os.IsNotExist(err) {
			t.Errorf("partial file left behind: %v", err)
		}
	})
}

// TestCorruptPartial flips a byte of the partial file: the download fails
// with ErrChecksum, and accepting again starts over and succeeds.
func TestCorruptPartial(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		p, id, want, partial := interrupted(t)
		f, err := os.OpenFile(partial, os.O_RDWR, 0)
		if err != nil {
			t.Fatal(err)
		}
		b := make([]byte, 1)
		f.ReadAt(b, 1000)
		b[0] ^= 0x40
		f.WriteAt(b, 1000)
		f.Close()

		p.connect()
		ctx := context.Background()
		if _, err := p.bob.Accept(ctx, id); !errors.Is(err, files.ErrChecksum) {
			t.Fatalf("Accept with a corrupt partial = %v, want ErrChecksum", err)
		}
		if tr, _ := p.bob.Transfer(id); tr.State != files.Failed {
			t.Fatalf("state after mismatch: %v", tr.State)
		}
		got, err := p.bob.Accept(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		if sumFile(t, got.Path) != want {
			t.Fatal("file differs after the restart")
		}
		waitState(t, p.alice, id, files.Done)
	})
}

// TestNoOverwrite: a received file never replaces one in the download
// directory.
func TestNoOverwrite(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		p := newPair(t, natlab.Link{}, nil, files.Config{})
		for _, n := range []string{"report.txt", "report (1).txt"} {
			if err := os.WriteFile(filepath.Join(p.bobDir, n), []byte("mine"), 0o600); err != nil {
				t.Fatal(err)
			}
		}
		path, want := writeFile(t, p.aliceDir, "report.txt", 1000, 3)
		ctx := context.Background()
		offer, err := p.alice.Send(ctx, "bob", path)
		if err != nil {
			t.Fatal(err)
		}
		got, err := p.bob.Accept(ctx, offer.ID)
		if err != nil {
			t.Fatal(err)
		}
		if got.Path != filepath.Join(p.bobDir, "report (2).txt") || sumFile(t, got.Path) != want {
			t.Fatalf("saved as %s", got.Path)
		}
		for _, n := range []string{"report.txt", "report (1).txt"} {
			if b, _ := os.ReadFile(filepath.Join(p.bobDir, n)); string(b) != "mine" {
				t.Errorf("%s was overwritten", n)
			}
		}
	})
}

func TestDecline(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		p := newPair(t, natlab.Link{Delay: 5 * time.Millisecond}, nil, files.Config{})
		path, _ := writeFile(t, p.aliceDir, "x.bin", 10, 4)
		ctx := context.Background()
		offer, err := p.alice.Send(ctx, "bob", path)
		if err != nil {
			t.Fatal(err)
		}
		if err := p.bob.Decline(ctx, offer.ID); err != nil {
			t.Fatal(err)
		}
		if tr, _ := p.alice.Transfer(offer.ID); tr.State != files.Declined {
			t.Fatalf("alice's transfer is %v after bob declined", tr.State)
		}
		if _, err := p.bob.Accept(ctx, offer.ID); err == nil {
			t.Fatal("Accept after Decline succeeded")
		}
	})
}

// TestAutoAccept: an offer from a peer the user chose downloads by itself.
func TestAutoAccept(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		done := make(chan files.Transfer, 1)
		p := newPair(t, natlab.Link{Delay: 5 * time.Millisecond}, nil, files.Config{
			AutoAccept: func(tr files.Transfer) bool { return tr.Peer == "alice" },
			Progress: func(pr files.Progress) {
				if pr.Done == pr.Size {
					done <- files.Transfer{ID: pr.ID}
				}
			},
		})
		path, want := writeFile(t, p.aliceDir, "auto.bin", 100<<10, 5)
		offer, err := p.alice.Send(context.Background(), "bob", path)
		if err != nil {
			t.Fatal(err)
		}
		<-done
		waitState(t, p.bob, offer.ID, files.Done)
		tr, _ := p.bob.Transfer(offer.ID)
		if sumFile(t, tr.Path) != want {
			t.Fatal("auto-accepted file differs")
		}
	})
}

// TestBadNames offers unsafe names on the wire: each is refused, and
// nothing is recorded or written.
func TestBadNames(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		p := newPair(t, natlab.Link{}, nil, files.Config{})
		ctx := context.Background()
		for i, name := range []string{"../evil", "a/b", `..\evil`, "..", ".", "", "/etc/passwd", "c:evil", "x\x00y", "tab\there", "dot."} {
			conn, err := appmux.Open(ctx, p.ab, appmux.File)
			if err != nil {
				t.Fatal(err)
			}
			body, _ := json.Marshal(map[string]any{"id": fmt.Sprintf("%032x", i+1), "name": name, "size": 1})
			req := append([]byte{1, 1}, binary.BigEndian.AppendUint16(nil, uint16(len(body)))...)
			conn.Write(append(req, body...))
			resp, err := io.ReadAll(conn)
			if err != nil {
				t.Fatal(err)
			}
			if len(resp) < 2 || files.Status(resp[0]) != files.StatusBadName {
				t.Errorf("offer of %q answered %x", name, resp)
			}
			conn.Close()
		}
		if l := p.bob.Transfers(); len(l) != 0 {
			t.Fatalf("bob recorded %d bad offers", len(l))
		}
		ents, _ := os.ReadDir(p.bobDir)
		if len(ents) != 1 { // .parley only
			t.Fatalf("bob's directory has %d entries", len(ents))
		}
	})
}

func TestValidName(t *testing.T) {
	for _, ok := range []string{"a", "report.txt", ".bashrc", "naïve café.pdf", "a b", "x..y"} {
		if err := files.ValidName(ok); err != nil {
			t.Errorf("ValidName(%q) = %v", ok, err)
		}
	}
	long := string(make([]byte, 201))
	for _, bad := range []string{"", ".", "..", "../x", "x/..", "a\\b", "c:", " a", "a ", "a.", "\x7f", "\xff", long} {
		if err := files.ValidName(bad); !errors.Is(err, files.ErrBadName) {
			t.Errorf("ValidName(%q) = %v", bad, err)
		}
	}
}

// TestSparseResume resumes a 2 GiB transfer whose partial file holds all but
// its last MiB: both sides hash 2 GiB through one fixed buffer.
func TestSparseResume(t *testing.T) {
	if testing.Short() || raceEnabled {
		t.Skip("hashes 4 GiB")
	}
	const size = 2 << 30
	p := newPair(t, natlab.Link{}, nil, files.Config{Logger: quiet})
	path := filepath.Join(p.aliceDir, "disk.img")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	f.Truncate(size)
	f.Close()
	ctx := timeout(t, 2*time.Minute)
	offer, err := p.alice.Send(ctx, "bob", path)
	if err != nil {
		t.Fatal(err)
	}
	partial := filepath.Join(p.bobDir, fmt.Sprintf("disk.img.%s.partial", offer.ID.String()[:8]))
	f, err = os.Create(partial)
	if err != nil {
		t.Fatal(err)
	}
	f.Truncate(size - 1<<20)
	f.Close()
	start := time.Now()
	got, err := p.bob.Accept(ctx, offer.ID)
	if err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(got.Path)
	if err != nil || fi.Size() != size {
		t.Fatalf("saved %v: %v", fi, err)
	}
	t.Logf("resumed a 2 GiB transfer in %v", time.Since(start).Round(time.Millisecond))
}
