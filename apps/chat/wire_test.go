package chat

import (
	"bytes"
	"errors"
	"io"
	"testing"
)

func TestFrameTruncated(t *testing.T) {
	full, err := appendFrame(nil, frameMsg, msgBody{Body: "hi"})
	if err != nil {
		t.Fatal(err)
	}
	typ, body, err := readFrame(bytes.NewReader(full))
	if err != nil || typ != frameMsg || len(body) != len(full)-frameHeaderLen {
		t.Fatalf("round trip: %d %q %v", typ, body, err)
	}
	if _, _, err := readFrame(bytes.NewReader(nil)); err != io.EOF {
		t.Fatalf("empty: %v", err)
	}
	for n := 1; n < len(full); n++ {
		if _, _, err := readFrame(bytes.NewReader(full[:n])); !errors.Is(err, errMalformed) {
			t.Errorf("prefix %d: %v", n, err)
		}
	}
}

func FuzzReadFrame(f *testing.F) {
	b, _ := appendFrame(nil, frameAck, ackBody{State: "read"})
	f.Add(b)
	f.Fuzz(func(t *testing.T, b []byte) {
		readFrame(bytes.NewReader(b))
	})
}
