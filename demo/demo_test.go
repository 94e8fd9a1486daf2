package demo

import (
	"bytes"
	"context"
	"strings"
	"testing"
	"time"
)

func TestDemoMovesVerifiedData(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	var out bytes.Buffer
	res, err := Run(ctx, &out, Options{Bytes: 2 << 20, Streams: 2, RTT: 40 * time.Millisecond})
	if err != nil {
		t.Fatalf("demo failed: %v\n%s", err, out.String())
	}
	if res.VerifiedStreams != 2 || res.Transferred != 2<<20 {
		t.Fatalf("verified %d streams, %d bytes", res.VerifiedStreams, res.Transferred)
	}
	// One round trip, with slack for scheduling on a loaded machine.
	if res.HandshakeRTTs < 0.9 || res.HandshakeRTTs > 3 {
		t.Fatalf("handshake took %.2f round trips", res.HandshakeRTTs)
	}
	for _, want := range []string{"handshake:", "round trips", "goodput", "SHA-256 verified"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("output lacks %q:\n%s", want, out.String())
		}
	}
}
