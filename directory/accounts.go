package directory

import (
	"context"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"net/http"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/parley-p2p/parley/directory/store"
)

// smallBody bounds the JSON bodies of every endpoint but the mailbox and
// offers.
const smallBody = 8 << 10

func (s *Server) hashPassword(ctx context.Context, pw string) (string, error) {
	if err := s.acquireHash(ctx); err != nil {
		return "", err
	}
	defer func() { <-s.hashes }()
	return hashPassword(pw, s.cfg.Argon2)
}

func (s *Server) verifyPassword(ctx context.Context, pw, phc string) (bool, error) {
	if err := s.acquireHash(ctx); err != nil {
		return false, err
	}
	defer func() { <-s.hashes }()
	return verifyPassword(pw, phc), nil
}

func (s *Server) acquireHash(ctx context.Context) error {
	select {
	case s.hashes <- struct{}{}:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

type credentials struct {
	Username string `json:"username"`
	Password string `json:"password"`
}

type accountJSON struct {
	Username  string    `json:"username"`
	CreatedAt time.Time `json:"created_at"`
}

// register: POST /v1/accounts.
func (s *Server) register(w http.ResponseWriter, r *http.Request) *apiError {
	var req credentials
	if e := decode(w, r, smallBody, &req); e != nil {
		return e
	}
	if !validUsername(req.Username) {
		return errorf(http.StatusBadRequest, codeInvalidUsername, "usernames are 3 to 32 characters of a-z, 0-9, '.', '_' and '-', starting with a letter")
	}
	if e := checkPassword(req.Username, req.Password); e != nil {
		return e
	}
	// Charged once the request is valid: it is the hash that costs.
	if e := s.limit(s.registerIP, "register:"+clientIP(r)); e != nil {
		return e
	}
	hash, err := s.hashPassword(r.Context(), req.Password)
	if err != nil {
		return s.internal(r, "hash password", err)
	}
	u, err := s.store.CreateUser(r.Context(), req.Username, hash, s.now())
	if errors.Is(err, store.ErrConflict) {
		return errorf(http.StatusConflict, codeUsernameTaken, "the username is taken")
	}
	if err != nil {
		return s.internal(r, "create user", err)
	}
	s.log.Info("account registered", "user", u.Username)
	w.Header().Set("Location", "/v1/account")
	writeJSON(w, http.StatusCreated, accountJSON{u.Username, u.CreatedAt.UTC()})
	return nil
}

type loginRequest struct {
	Username   string `json:"username"`
	Password   string `json:"password"`
	DeviceName string `json:"device_name"`
	DeviceKey  string `json:"device_key"`
}

type deviceJSON struct {
	Key       string    `json:"key"`
	Name      string    `json:"name"`
	Online    bool      `json:"online"`
	LastSeen  time.Time `json:"last_seen"`
	Endpoints []string  `json:"endpoints,omitempty"`
	CreatedAt time.Time `json:"created_at,omitzero"`
	Current   bool      `json:"current,omitempty"`
}

type loginResponse struct {
	Token     string     `json:"token"`
	ExpiresAt time.Time  `json:"expires_at"`
	Username  string     `json:"username"`
	Device    deviceJSON `json:"device"`
}

// parseKey decodes a device key: standard base64 with padding (RFC 4648
// §4) of 32 bytes.
func parseKey(s string) (store.Key, bool) {
	var k store.Key
	b, err := base64.StdEncoding.Strict().DecodeString(s)
	if err != nil || len(b) != store.KeySize {
		return k, false
	}
	copy(k[:], b)
	return k, true
}

// parsePathKey decodes a key in a URL path: unpadded base64url (RFC 4648
// §5), since standard base64's '/' cannot appear in a path segment.
func parsePathKey(s string) (store.Key, bool) {
	var k store.Key
	b, err := base64.RawURLEncoding.Strict().DecodeString(s)
	if err != nil || len(b) != store.KeySize {
		return k, false
	}
	copy(k[:], b)
	return k, true
}

func validDeviceName(n string) bool {
	return n != "" && len(n) <= 64 && utf8.ValidString(n) && !strings.ContainsFunc(n, func(r rune) bool { return r < 0x20 || r == 0x7f })
}

// login: POST /v1/login.
func (s *Server) login(w http.ResponseWriter, r *http.Request) *apiError {
	var req loginRequest
	if e := decode(w, r, smallBody, &req); e != nil {
		return e
	}
	key, ok := parseKey(req.DeviceKey)
	if !ok {
		return errorf(http.StatusBadRequest, codeInvalidKey, "device_key must be a 32-byte Curve25519 public key in standard base64")
	}
	if !validDeviceName(req.DeviceName) {
		return errorf(http.StatusBadRequest, codeInvalidRequest, "device_name must be 1 to 64 bytes of printable UTF-8")
	}
	// Both limits are charged before the password is checked, so that
	// guessing costs the guesser whatever the outcome.
	if e := s.limit(s.loginIP, "login-ip:"+clientIP(r)); e != nil {
		s.m.logins.WithLabelValues("rate_limited").Inc()
		return e
	}
	if e := s.limit(s.loginUser, "login-user:"+req.Username); e != nil {
		s.m.logins.WithLabelValues("rate_limited").Inc()
		return e
	}
	ctx := r.Context()
	u, err := s.store.UserByName(ctx, req.Username)
	if err != nil && !errors.Is(err, store.ErrNotFound) {
		return s.internal(r, "user lookup", err)
	}
	phc := u.PasswordHash
	if err != nil {
		phc = s.dummy()
	}
	ok, herr := s.verifyPassword(ctx, req.Password, phc)
	if herr != nil {
		return s.internal(r, "verify password", herr)
	}
	if err != nil || !ok {
		s.m.logins.WithLabelValues("bad_credentials").Inc()
		return errorf(http.StatusUnauthorized, codeBadCredentials, "wrong username or password")
	}
	now := s.now()
	d, err := s.store.UpsertDevice(ctx, u.ID, key, req.DeviceName, now)
	if errors.Is(err, store.ErrConflict) {
		return errorf(http.StatusConflict, codeKeyTaken, "this device key belongs to another account")
	}
	if err != nil {
		return s.internal(r, "upsert device", err)
	}
	tok, hash, err := newToken()
	if err != nil {
		return s.internal(r, "new token", err)
	}
	exp := now.Add(s.cfg.TokenLifetime)
	if err := s.store.CreateToken(ctx, store.Token{Hash: hash, UserID: u.ID, DeviceID: d.ID, CreatedAt: now, ExpiresAt: exp}); err != nil {
		return s.internal(r, "create token", err)
	}
	s.m.logins.WithLabelValues("ok").Inc()
	s.log.Info("login", "user", u.Username, "device", d.ID)
	// A new device changes what the user's contacts see.
	if contacts, err := s.store.MutualContacts(ctx, u.ID); err == nil {
		s.notifyUsers(ctx, nil, append(contacts, u.ID)...)
	}
	writeJSON(w, http.StatusOK, loginResponse{
		Token: tok, ExpiresAt: exp.UTC(), Username: u.Username,
		Device: deviceJSON{Key: keyString(d.PublicKey), Name: d.Name, LastSeen: d.LastSeen.UTC(), CreatedAt: d.CreatedAt.UTC(), Current: true},
	})
	return nil
}

// dummy returns a hash to verify against when a login names an unknown
// user, so that the response time does not tell which usernames exist. It
// is computed lazily with the configured cost.
func (s *Server) dummy() string {
	s.dummyOnce.Do(func() { s.dummyHash, _ = hashPassword("parley-dummy-password", s.cfg.Argon2) })
	return s.dummyHash
}

// logout: POST /v1/logout revokes the token used.
func (s *Server) logout(w http.ResponseWriter, r *http.Request, sess session) *apiError {
	if err := s.store.DeleteToken(r.Context(), sess.tokenHash); err != nil && !errors.Is(err, store.ErrNotFound) {
		return s.internal(r, "delete token", err)
	}
	s.publish(r.Context(), broadcast{RevokeToken: hex.EncodeToString(sess.tokenHash[:])})
	noContent(w)
	return nil
}

// account: GET /v1/account, the caller's own profile.
func (s *Server) account(w http.ResponseWriter, r *http.Request, sess session) *apiError {
	u, err := s.store.UserByID(r.Context(), sess.userID)
	if err != nil {
		return s.internal(r, "user", err)
	}
	body := mustJSON(accountJSON{u.Username, u.CreatedAt.UTC()})
	serveCached(w, r, body, etagOf(body), u.CreatedAt)
	return nil
}

type passwordChange struct {
	OldPassword string `json:"old_password"`
	NewPassword string `json:"new_password"`
}

// changePassword: PUT /v1/account/password. Every other token of the
// account is revoked; the caller's stays valid.
func (s *Server) changePassword(w http.ResponseWriter, r *http.Request, sess session) *apiError {
	var req passwordChange
	if e := decode(w, r, smallBody, &req); e != nil {
		return e
	}
	if e := checkPassword(sess.username, req.NewPassword); e != nil {
		return e
	}
	if e := s.limit(s.loginUser, "login-user:"+sess.username); e != nil {
		return e
	}
	ctx := r.Context()
	u, err := s.store.UserByID(ctx, sess.userID)
	if err != nil {
		return s.internal(r, "user", err)
	}
	ok, err := s.verifyPassword(ctx, req.OldPassword, u.PasswordHash)
	if err != nil {
		return s.internal(r, "verify", err)
	}
	if !ok {
		return errorf(http.StatusForbidden, codeBadCredentials, "the old password is wrong")
	}
	hash, err := s.hashPassword(ctx, req.NewPassword)
	if err != nil {
		return s.internal(r, "hash", err)
	}
	if err := s.store.SetPasswordHash(ctx, u.ID, hash, s.now()); err != nil {
		return s.internal(r, "set password", err)
	}
	if _, err := s.store.DeleteUserTokens(ctx, u.ID, sess.tokenHash); err != nil {
		return s.internal(r, "revoke tokens", err)
	}
	s.publish(ctx, broadcast{RevokeUser: u.ID, KeepToken: hex.EncodeToString(sess.tokenHash[:])})
	s.log.Info("password changed", "user", u.Username)
	noContent(w)
	return nil
}

type passwordConfirm struct {
	Password string `json:"password"`
}

// deleteAccount: DELETE /v1/account with the password in the body.
func (s *Server) deleteAccount(w http.ResponseWriter, r *http.Request, sess session) *apiError {
	var req passwordConfirm
	if e := decode(w, r, smallBody, &req); e != nil {
		return e
	}
	if e := s.limit(s.loginUser, "login-user:"+sess.username); e != nil {
		return e
	}
	ctx := r.Context()
	u, err := s.store.UserByID(ctx, sess.userID)
	if err != nil {
		return s.internal(r, "user", err)
	}
	ok, err := s.verifyPassword(ctx, req.Password, u.PasswordHash)
	if err != nil {
		return s.internal(r, "verify", err)
	}
	if !ok {
		return errorf(http.StatusForbidden, codeBadCredentials, "the password is wrong")
	}
	// Whoever had a row about this user must drop it from their list.
	var others []int64
	if cs, err := s.store.Contacts(ctx, u.ID); err == nil {
		for _, c := range cs {
			others = append(others, c.UserID)
		}
	}
	if err := s.store.DeleteUser(ctx, u.ID); err != nil {
		return s.internal(r, "delete user", err)
	}
	s.publish(ctx, broadcast{RevokeUser: u.ID})
	if len(others) > 0 {
		s.notifyUsers(ctx, map[string]any{"type": evContactRemoved, "username": u.Username}, others...)
	}
	s.log.Info("account deleted", "user", u.Username)
	noContent(w)
	return nil
}
