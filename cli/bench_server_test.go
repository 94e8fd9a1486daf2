package cli

import (
	"bytes"
	"strings"
	"testing"
)

// TestBenchServerSmall runs the server benchmark at a small scale, in
// process, to keep its code working.
func TestBenchServerSmall(t *testing.T) {
	var out, errb bytes.Buffer
	code := Run(t.Context(), []string{"bench", "server", "--in-process", "--devices", "40", "--contacts", "4",
		"--duration", "300ms", "--workers", "4", "--fanouts", "5", "--login-users", "4"}, &out, &errb)
	if code != 0 {
		t.Fatalf("exit %d: %s\n%s", code, out.String(), errb.String())
	}
	for _, want := range []string{"logins:", "contact-list reads:", "connected 40 event streams", "presence fan-out with 40 streams: 40 deliveries"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("output lacks %q:\n%s", want, out.String())
		}
	}
}
