package dashboard_test

import (
	"context"
	"crypto/rand"
	"fmt"
	"net/http/httptest"
	"path/filepath"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/parley-p2p/parley/directory"
	"github.com/parley-p2p/parley/directory/client"
	"github.com/parley-p2p/parley/directory/store/sqlite"
	"github.com/parley-p2p/parley/internal/browsertest"
)

// TestDashboardLive drives the status page in headless Chromium: the page
// loads from the server alone, and its figures change when devices come
// online and offers flow, without a reload.
func TestDashboardLive(t *testing.T) {
	st, err := sqlite.Open(t.Context(), filepath.Join(t.TempDir(), "d.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	srv, err := directory.New(directory.Config{Store: st, Argon2: directory.Argon2Params{Time: 1, MemoryKiB: 64, Threads: 1}})
	if err != nil {
		t.Fatal(err)
	}
	ts := httptest.NewServer(srv)
	defer ts.Close()
	defer srv.Close()

	ctx := browsertest.New(t)
	ctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	text := func(id string) string {
		s, err := chromedp.Run(ctx, chromedp.Evaluate[string](fmt.Sprintf(`document.getElementById(%q).textContent`, id)))
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	waitText := func(id, want string) {
		t.Helper()
		js := fmt.Sprintf(`document.getElementById(%q).textContent === %q`, id, want)
		if _, err := chromedp.Run(ctx, chromedp.Poll[bool](js, chromedp.WithPollingTimeout(20*time.Second))); err != nil {
			t.Fatalf("#%s never showed %q (shows %q): %v", id, want, text(id), err)
		}
	}
	if err := chromedp.Do(ctx, chromedp.Navigate(ts.URL+"/")); err != nil {
		t.Fatal(err)
	}
	waitText("conn", "live")
	waitText("online", "0")
	waitText("nosn", "No supernodes listed.")

	// Two devices come online and exchange an offer.
	login := func(name string) (*client.Client, client.Key) {
		c := client.New(ts.URL, nil)
		if _, err := c.Register(t.Context(), name, "correct horse battery"); err != nil {
			t.Fatal(err)
		}
		var k client.Key
		rand.Read(k[:])
		if _, err := c.Login(t.Context(), name, "correct horse battery", "d", k); err != nil {
			t.Fatal(err)
		}
		return c, k
	}
	a, _ := login("alice")
	b, bKey := login("bob")
	a.RequestContact(t.Context(), "bob")
	b.AcceptContact(t.Context(), "alice")
	for _, c := range []*client.Client{a, b} {
		es, err := c.Events(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		defer es.CloseNow()
	}
	waitText("online", "2")
	if err := a.SendOffer(t.Context(), client.Offer{To: bKey, Kind: "offer", Session: "s"}); err != nil {
		t.Fatal(err)
	}
	waitText("offers", "1")
	if err := a.ReportSession(t.Context(), bKey, "direct"); err != nil {
		t.Fatal(err)
	}
	waitText("direct", "1")
}
