package directory

import (
	"bytes"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// Error codes: stable strings in every JSON error body, which clients
// branch on. The HTTP status says the class; the code says which case.
const (
	codeInvalidRequest   = "invalid_request"
	codeInvalidUsername  = "invalid_username"
	codeWeakPassword     = "weak_password"
	codeInvalidKey       = "invalid_key"
	codeUnauthorized     = "unauthorized"
	codeBadCredentials   = "bad_credentials"
	codeForbidden        = "forbidden"
	codeNotContacts      = "not_contacts"
	codeNotFound         = "not_found"
	codeMethodNotAllowed = "method_not_allowed"
	codeUsernameTaken    = "username_taken"
	codeKeyTaken         = "device_key_taken"
	codeConflict         = "conflict"
	codeAlreadyContacts  = "already_contacts"
	codeBlocked          = "blocked"
	codePeerOffline      = "peer_offline"
	codeMailboxFull      = "mailbox_full"
	codeTooLarge         = "too_large"
	codeUnsupportedType  = "unsupported_media_type"
	codeDialbackFailed   = "dialback_failed"
	codeNotSupernode     = "not_supernode"
	codeRateLimited      = "rate_limited"
	codeInternal         = "internal"
	codeUnavailable      = "unavailable"
)

// apiError is an error with its HTTP status and stable code, returned by
// handlers and written as {"error": {"code": …, "message": …}}.
type apiError struct {
	status     int
	code       string
	msg        string
	retryAfter time.Duration // for 429
}

func (e *apiError) Error() string { return e.code + ": " + e.msg }

func errorf(status int, code, format string, args ...any) *apiError {
	return &apiError{status: status, code: code, msg: fmt.Sprintf(format, args...)}
}

type errorBody struct {
	Error struct {
		Code    string `json:"code"`
		Message string `json:"message"`
	} `json:"error"`
}

// writeJSON writes v with an explicit Content-Length.
func writeJSON(w http.ResponseWriter, status int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		status = http.StatusInternalServerError
		b = []byte(`{"error":{"code":"internal","message":"encoding the response failed"}}`)
	}
	writeRaw(w, status, b)
}

func writeRaw(w http.ResponseWriter, status int, b []byte) {
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Content-Length", strconv.Itoa(len(b)))
	w.WriteHeader(status)
	w.Write(b)
}

func writeError(w http.ResponseWriter, e *apiError) {
	var body errorBody
	body.Error.Code, body.Error.Message = e.code, e.msg
	if e.status == http.StatusTooManyRequests && e.retryAfter > 0 {
		w.Header().Set("Retry-After", strconv.Itoa(int((e.retryAfter+time.Second-1)/time.Second)))
	}
	if e.status == http.StatusUnauthorized {
		w.Header().Set("WWW-Authenticate", `Bearer realm="parley"`)
	}
	writeJSON(w, e.status, body)
}

func noContent(w http.ResponseWriter) {
	w.WriteHeader(http.StatusNoContent)
}

// decode reads a JSON request body of at most limit bytes into v, rejecting
// unknown fields, trailing data and the wrong Content-Type.
func decode(w http.ResponseWriter, r *http.Request, limit int64, v any) *apiError {
	if ct := r.Header.Get("Content-Type"); ct != "" {
		mt, _, err := mime.ParseMediaType(ct)
		if err != nil || mt != "application/json" {
			return errorf(http.StatusUnsupportedMediaType, codeUnsupportedType, "the request body must be application/json")
		}
	}
	if r.ContentLength > limit {
		return errorf(http.StatusRequestEntityTooLarge, codeTooLarge, "the request body is larger than %d bytes", limit)
	}
	body := http.MaxBytesReader(w, r.Body, limit)
	dec := json.NewDecoder(body)
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return errorf(http.StatusRequestEntityTooLarge, codeTooLarge, "the request body is larger than %d bytes", limit)
		}
		return errorf(http.StatusBadRequest, codeInvalidRequest, "malformed JSON body: %v", err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return errorf(http.StatusBadRequest, codeInvalidRequest, "trailing data after the JSON body")
	}
	return nil
}

// etagOf is a strong validator for a representation.
func etagOf(b []byte) string {
	sum := sha256.Sum256(b)
	return `"` + base64.RawURLEncoding.EncodeToString(sum[:12]) + `"`
}

// serveCached writes a JSON body with its validators and answers
// conditional GETs (RFC 9110 §13): If-None-Match takes precedence over
// If-Modified-Since, and a match is 304 with no body.
func serveCached(w http.ResponseWriter, r *http.Request, body []byte, etag string, modified time.Time) {
	h := w.Header()
	h.Set("ETag", etag)
	h.Set("Cache-Control", "private, no-cache")
	if !modified.IsZero() {
		h.Set("Last-Modified", modified.UTC().Format(http.TimeFormat))
	}
	if notModified(r, etag, modified) {
		w.WriteHeader(http.StatusNotModified)
		return
	}
	writeRaw(w, http.StatusOK, body)
}

func notModified(r *http.Request, etag string, modified time.Time) bool {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		return false
	}
	if inm := r.Header.Get("If-None-Match"); inm != "" {
		for _, t := range strings.Split(inm, ",") {
			t = strings.TrimSpace(t)
			t = strings.TrimPrefix(t, "W/") // weak comparison for GET
			if t == "*" || t == etag {
				return true
			}
		}
		return false
	}
	if ims := r.Header.Get("If-Modified-Since"); ims != "" && !modified.IsZero() {
		t, err := http.ParseTime(ims)
		return err == nil && !modified.Truncate(time.Second).After(t)
	}
	return false
}

// captureWriter records what the default mux writes for unmatched requests,
// so they can be answered with a JSON body instead of text.
type captureWriter struct {
	h      http.Header
	status int
	buf    bytes.Buffer
}

func (c *captureWriter) Header() http.Header { return c.h }
func (c *captureWriter) WriteHeader(s int) {
	if c.status == 0 {
		c.status = s
	}
}
func (c *captureWriter) Write(b []byte) (int, error) {
	c.WriteHeader(http.StatusOK)
	return c.buf.Write(b)
}
