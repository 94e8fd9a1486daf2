package demo

import (
	"bytes"
	"context"
	"strings"
	"testing"
	"time"
)

// TestDemo runs the whole-system scenario: every pair exchanges messages
// and the file arrives verified, within the minute the demo promises.
func TestDemo(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	var out bytes.Buffer
	t0 := time.Now()
	res, err := Run(ctx, &out, Options{Bytes: 2 << 20})
	t.Logf("demo took %v:\n%s", time.Since(t0).Round(time.Millisecond), out.String())
	if err != nil {
		t.Fatalf("demo failed: %v", err)
	}
	if len(res.Pairs) != 3 {
		t.Fatalf("%d pairs", len(res.Pairs))
	}
	for _, p := range res.Pairs {
		if !p.Exchanged || p.FirstMessage <= 0 {
			t.Errorf("%s ↔ %s: no messages exchanged", p.A, p.B)
		}
	}
	ab := res.Pairs[0]
	if ab.A != "alice" || ab.B != "bob" || ab.Path == "none" || ab.ViaMailbox {
		t.Errorf("alice ↔ bob: %+v, want a session", ab)
	}
	// Carol's UDP is blocked: her sessions go through the supernode, her leg
	// over TCP.
	for _, p := range res.Pairs[1:] {
		if p.B != "carol" || p.Path != "relayed" || p.Relay == "" {
			t.Errorf("%s ↔ %s: path %q via %q, want relayed through the supernode", p.A, p.B, p.Path, p.Relay)
		}
	}
	if !res.FileVerified || res.FileBytes != 2<<20 || res.FileRate <= 0 {
		t.Errorf("file: %+v", res)
	}
	for _, want := range []string{"alice ↔ bob", "bob ↔ carol", "first message", "SHA-256 verified", "Mbit/s"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("output lacks %q", want)
		}
	}
}
