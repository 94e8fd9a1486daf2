package node_test

import (
	"context"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/parley-p2p/parley/apps/chat"
	"github.com/parley-p2p/parley/apps/files"
	"github.com/parley-p2p/parley/internal/browsertest"
	"github.com/parley-p2p/parley/web"
)

// TestWebUI drives alice's local web UI in headless Chromium: it shows bob
// online with his path, his message, sends one back that bob's daemon
// stores and whose delivery the page shows, and accepts bob's file.
func TestWebUI(t *testing.T) {
	ctx := browsertest.New(t)
	_, a, _, aa, ba := appsPair(t)

	token, err := web.LoadToken(a.DataDir())
	if err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(filepath.Join(a.DataDir(), web.TokenFile))
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("token file: %v, %v", fi.Mode(), err)
	}
	if again, _ := web.LoadToken(a.DataDir()); again != token {
		t.Fatal("the token changed between loads")
	}
	ln, err := web.Listen("")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := web.Listen("0.0.0.0:0"); err == nil {
		t.Error("the UI listened on all addresses")
	}
	sctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		(&web.Server{Node: a.Node, Apps: aa, Token: token}).Serve(sctx, ln)
	}()
	t.Cleanup(func() { cancel(); <-done })
	base := "http://" + ln.Addr().String()

	// Without the token, or by another host name, the API says no.
	resp, err := http.Get(base + "/api/state")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("no token: %s", resp.Status)
	}
	req, _ := http.NewRequest("GET", base+"/api/state", nil)
	req.Host = "evil.example"
	req.Header.Set("Authorization", "Bearer "+token)
	if resp, err := http.DefaultClient.Do(req); err != nil || resp.StatusCode != http.StatusMisdirectedRequest {
		t.Errorf("foreign host: %v, %v", resp, err)
	} else {
		resp.Body.Close()
	}

	// Bob writes first and offers a file.
	tctx := t.Context()
	if _, err := ba.SendMessage(tctx, "alice", "are you there?"); err != nil {
		t.Fatal(err)
	}
	src := filepath.Join(t.TempDir(), "slides.pdf")
	if err := os.WriteFile(src, []byte(strings.Repeat("parley ", 40000)), 0o600); err != nil {
		t.Fatal(err)
	}
	tr, err := ba.SendFile(tctx, "alice", src)
	if err != nil {
		t.Fatal(err)
	}

	ctx, cancelB := context.WithTimeout(ctx, 60*time.Second)
	defer cancelB()
	eval := func(js string) string {
		t.Helper()
		s, err := chromedp.Run(ctx, chromedp.Evaluate[string](js))
		if err != nil {
			t.Fatalf("%s: %v", js, err)
		}
		return s
	}
	wait := func(what, js string) {
		t.Helper()
		if _, err := chromedp.Run(ctx, chromedp.Poll[bool](js, chromedp.WithPollingTimeout(20*time.Second))); err != nil {
			t.Fatalf("the page never showed %s: %v\npage: %s", what, err, eval(`document.body.innerText`))
		}
	}
	if err := chromedp.Do(ctx, chromedp.Navigate(web.URL(ln, token))); err != nil {
		t.Fatal(err)
	}
	wait("bob online", `!!document.querySelector('#contacts li[data-user="bob"] .dot.online')`)
	eval(`document.querySelector('#contacts li[data-user="bob"]').click(); ""`)
	wait("bob's message", `[...document.querySelectorAll('#messages li.in .body')].some(e => e.textContent === "are you there?")`)
	eval(`document.getElementById("text").value = "yes, from the browser"; document.getElementById("compose").requestSubmit(); ""`)
	wait("the answer delivered", `[...document.querySelectorAll('#messages li.out')].some(e => e.textContent.includes("yes, from the browser") && (e.dataset.state === "delivered" || e.dataset.state === "read"))`)
	path := eval(`document.getElementById("peer-path").textContent`)
	if !strings.Contains(path, "direct") && !strings.Contains(path, "relayed via") {
		t.Errorf("path shown: %q", path)
	}
	if got := historyBodies(t, ba, "alice"); len(got) != 2 || got[1] != "yes, from the browser" {
		t.Errorf("bob's history: %q", got)
	}
	// Bob's message shown is marked read, and bob learns it.
	waitFor(t, 10*time.Second, "read receipt at bob", func() bool {
		h, _ := ba.ChatStore().History(tctx, "alice", 10)
		return len(h) > 0 && h[0].State == chat.Read
	})
	// The fragment's token is gone from the address bar.
	if loc := eval(`location.href`); strings.Contains(loc, token) {
		t.Errorf("location %q keeps the token", loc)
	}

	// Accept bob's file from the page.
	wait("the offer", `[...document.querySelectorAll('#transfers button')].some(b => b.textContent === "Accept")`)
	eval(`[...document.querySelectorAll('#transfers button')].find(b => b.textContent === "Accept").click(); ""`)
	waitFor(t, 20*time.Second, "the file at alice", func() bool {
		s, _ := aa.Transfer(tr.ID)
		return s.State == files.Done
	})
	wait("the file done", `document.getElementById("transfers").textContent.includes("slides.pdf from bob") && document.getElementById("transfers").textContent.includes("done")`)
	if out := os.Getenv("PARLEY_WEB_SCREENSHOT"); out != "" {
		if err := chromedp.Do(ctx, chromedp.EmulateViewport(1100, 700), chromedp.Sleep(1200*time.Millisecond)); err != nil {
			t.Fatal(err)
		}
		png, err := chromedp.Run(ctx, chromedp.CaptureScreenshot())
		if err != nil {
			t.Fatal(err)
		}
		os.WriteFile(out, png, 0o644)
	}
}
