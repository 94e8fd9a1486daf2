package directory

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"golang.org/x/crypto/argon2"

	"github.com/parley-p2p/parley/directory/store"
)

// Username rules: 3 to 32 characters from a-z, 0-9, '.', '_' and '-',
// starting with a letter. Names are compared exactly; there is no case
// folding because there are no capitals.
const (
	minUsername = 3
	maxUsername = 32
)

// Password policy: at least 10 characters, at most 1024 bytes, not the
// username. Length is what makes a password strong; composition rules only
// make it harder to remember.
const (
	minPassword = 10
	maxPassword = 1024
)

func validUsername(s string) bool {
	if len(s) < minUsername || len(s) > maxUsername || s[0] < 'a' || s[0] > 'z' {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('a' <= c && c <= 'z' || '0' <= c && c <= '9' || c == '.' || c == '_' || c == '-') {
			return false
		}
	}
	return true
}

func checkPassword(username, pw string) *apiError {
	if !utf8.ValidString(pw) || strings.ContainsRune(pw, 0) {
		return errorf(http.StatusBadRequest, codeWeakPassword, "the password must be valid UTF-8 without NUL")
	}
	if utf8.RuneCountInString(pw) < minPassword {
		return errorf(http.StatusBadRequest, codeWeakPassword, "the password must have at least %d characters", minPassword)
	}
	if len(pw) > maxPassword {
		return errorf(http.StatusBadRequest, codeWeakPassword, "the password must have at most %d bytes", maxPassword)
	}
	if pw == username {
		return errorf(http.StatusBadRequest, codeWeakPassword, "the password must not be the username")
	}
	return nil
}

// Argon2Params are argon2id's cost parameters (RFC 9106).
type Argon2Params struct {
	Time      uint32
	MemoryKiB uint32
	Threads   uint8
}

// DefaultArgon2 is OWASP's recommended minimum for argon2id: 19 MiB, two
// passes, one lane. It costs about 25 ms of one core.
var DefaultArgon2 = Argon2Params{Time: 2, MemoryKiB: 19 * 1024, Threads: 1}

const (
	saltLen = 16
	hashLen = 32
)

// hashPassword returns the PHC string of pw under p.
func hashPassword(pw string, p Argon2Params) (string, error) {
	salt := make([]byte, saltLen)
	if _, err := rand.Read(salt); err != nil {
		return "", err
	}
	h := argon2.IDKey([]byte(pw), salt, p.Time, p.MemoryKiB, p.Threads, hashLen)
	return fmt.Sprintf("$argon2id$v=%d$m=%d,t=%d,p=%d$%s$%s", argon2.Version, p.MemoryKiB, p.Time, p.Threads,
		base64.RawStdEncoding.EncodeToString(salt), base64.RawStdEncoding.EncodeToString(h)), nil
}

// verifyPassword checks pw against a PHC string in constant time.
func verifyPassword(pw, phc string) bool {
	parts := strings.Split(phc, "$")
	if len(parts) != 6 || parts[1] != "argon2id" || parts[2] != fmt.Sprintf("v=%d", argon2.Version) {
		return false
	}
	var p Argon2Params
	if _, err := fmt.Sscanf(parts[3], "m=%d,t=%d,p=%d", &p.MemoryKiB, &p.Time, &p.Threads); err != nil {
		return false
	}
	if p.Time == 0 || p.Threads == 0 || p.MemoryKiB > 1<<20 || p.Time > 64 {
		return false
	}
	salt, err1 := base64.RawStdEncoding.DecodeString(parts[4])
	want, err2 := base64.RawStdEncoding.DecodeString(parts[5])
	if err1 != nil || err2 != nil || len(want) == 0 {
		return false
	}
	got := argon2.IDKey([]byte(pw), salt, p.Time, p.MemoryKiB, p.Threads, uint32(len(want)))
	return subtle.ConstantTimeCompare(got, want) == 1
}

// Tokens are 256 random bits, shown to the client once as unpadded
// base64url (43 characters) and stored only as their SHA-256 hash, so a
// leaked database holds no usable tokens.
const tokenBytes = 32

func newToken() (string, [32]byte, error) {
	var b [tokenBytes]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", [32]byte{}, err
	}
	tok := base64.RawURLEncoding.EncodeToString(b[:])
	return tok, sha256.Sum256([]byte(tok)), nil
}

// session is an authenticated request's identity.
type session struct {
	userID    int64
	username  string
	deviceID  int64
	deviceKey store.Key
	tokenHash [32]byte
	expires   time.Time
}

// tokenCache remembers recent token lookups so that an authenticated read
// does not cost a database query. Entries live at most tokenCacheTTL and are
// dropped at once when a revocation is broadcast (logout, password change,
// device revocation, account deletion), from any process.
type tokenCache struct {
	mu sync.Mutex // protects m
	m  map[[32]byte]cachedToken
}

type cachedToken struct {
	s     session
	until time.Time
}

const (
	tokenCacheTTL = 5 * time.Minute
	tokenCacheMax = 200_000
)

func (c *tokenCache) get(h [32]byte, now time.Time) (session, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.m[h]
	if !ok || now.After(e.until) {
		return session{}, false
	}
	return e.s, true
}

func (c *tokenCache) put(s session, now time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.m == nil || len(c.m) >= tokenCacheMax {
		c.m = make(map[[32]byte]cachedToken)
	}
	until := now.Add(tokenCacheTTL)
	if s.expires.Before(until) {
		until = s.expires
	}
	c.m[s.tokenHash] = cachedToken{s, until}
}

// drop removes the entries for which match is true.
func (c *tokenCache) drop(match func(session) bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for h, e := range c.m {
		if match(e.s) {
			delete(c.m, h)
		}
	}
}

func (c *tokenCache) clear() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.m = nil
}

var errNoToken = errors.New("no token")

// authenticate resolves the request's bearer token.
func (s *Server) authenticate(ctx context.Context, r *http.Request) (session, *apiError) {
	h := r.Header.Get("Authorization")
	tok, ok := strings.CutPrefix(h, "Bearer ")
	if !ok || len(tok) != base64.RawURLEncoding.EncodedLen(tokenBytes) {
		return session{}, errorf(http.StatusUnauthorized, codeUnauthorized, "a valid bearer token is required")
	}
	hash := sha256.Sum256([]byte(tok))
	now := s.now()
	if sess, ok := s.tokens.get(hash, now); ok {
		return sess, nil
	}
	t, err := s.store.TokenByHash(ctx, hash)
	if err != nil {
		if errors.Is(err, store.ErrNotFound) {
			return session{}, errorf(http.StatusUnauthorized, codeUnauthorized, "the token is unknown, revoked or expired")
		}
		return session{}, s.internal(r, "token lookup", err)
	}
	// The hash was found by equality in an index; compare again in constant
	// time so that the comparison itself leaks nothing.
	if subtle.ConstantTimeCompare(t.Hash[:], hash[:]) != 1 || !now.Before(t.ExpiresAt) {
		return session{}, errorf(http.StatusUnauthorized, codeUnauthorized, "the token is unknown, revoked or expired")
	}
	u, err := s.store.UserByID(ctx, t.UserID)
	if err != nil {
		return session{}, errorf(http.StatusUnauthorized, codeUnauthorized, "the token is unknown, revoked or expired")
	}
	d, err := s.store.DeviceByID(ctx, t.DeviceID)
	if err != nil {
		return session{}, errorf(http.StatusUnauthorized, codeUnauthorized, "the token is unknown, revoked or expired")
	}
	sess := session{userID: u.ID, username: u.Username, deviceID: d.ID, deviceKey: d.PublicKey, tokenHash: hash, expires: t.ExpiresAt}
	s.tokens.put(sess, now)
	return sess, nil
}

// HashPassword returns the argon2id PHC string of pw under p, as stored by
// the server; exported for tools that seed databases (parley bench server).
func HashPassword(pw string, p Argon2Params) (string, error) { return hashPassword(pw, p) }
