package tunnel

import (
	"bytes"
	"errors"
	"io"
	"strings"
	"testing"
)

func TestResponseTruncated(t *testing.T) {
	full := appendResponse(nil, NotExposed, "port 25 is not exposed")
	code, reason, err := readResponse(bytes.NewReader(full))
	if err != nil || code != NotExposed || reason != "port 25 is not exposed" {
		t.Fatalf("round trip: %v %q %v", code, reason, err)
	}
	for n := range len(full) {
		if _, _, err := readResponse(bytes.NewReader(full[:n])); !errors.Is(err, io.ErrUnexpectedEOF) {
			t.Errorf("prefix %d: err = %v", n, err)
		}
	}
	long := appendResponse(nil, ConnectFailed, strings.Repeat("x", 1000))
	if _, reason, err := readResponse(bytes.NewReader(long)); err != nil || len(reason) != maxReasonLen {
		t.Fatalf("long reason: %d bytes, %v", len(reason), err)
	}
}

func TestRequestTruncated(t *testing.T) {
	full := []byte{version, 0, 22}
	if v, port, err := readRequest(bytes.NewReader(full)); err != nil || v != version || port != 22 {
		t.Fatalf("readRequest = %v %v %v", v, port, err)
	}
	for n := range len(full) {
		if _, _, err := readRequest(bytes.NewReader(full[:n])); !errors.Is(err, io.ErrUnexpectedEOF) {
			t.Errorf("prefix %d: err = %v", n, err)
		}
	}
}

func FuzzReadResponse(f *testing.F) {
	f.Add(appendResponse(nil, OK, ""))
	f.Add(appendResponse(nil, NotExposed, "no"))
	f.Fuzz(func(t *testing.T, b []byte) {
		code, reason, err := readResponse(bytes.NewReader(b))
		if err == nil {
			if got := appendResponse(nil, code, reason); !bytes.Equal(got, b[:len(got)]) {
				t.Fatalf("re-encoded %x from %x", got, b)
			}
		}
	})
}
