package directory_test

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/parley-p2p/parley/directory"
	"github.com/parley-p2p/parley/directory/client"
)

func TestRegisterRules(t *testing.T) {
	e := newEnv(t)
	c := e.client()
	ctx := t.Context()
	for _, name := range []string{"ab", "Alice", "1alice", "al ice", "alice!", strings.Repeat("a", 33), "ålice"} {
		_, err := c.Register(ctx, name, password)
		wantStatus(t, err, 400, "invalid_username")
	}
	for _, pw := range []string{"short", "123456789", "alice.b-_1"} {
		_, err := c.Register(ctx, "alice.b-_1", pw)
		wantStatus(t, err, 400, "weak_password")
	}
	a, err := c.Register(ctx, "alice.b-_1", password)
	if err != nil || a.Username != "alice.b-_1" {
		t.Fatalf("register = %+v, %v", a, err)
	}
	_, err = c.Register(ctx, "alice.b-_1", password)
	wantStatus(t, err, 409, "username_taken")
}

func TestLoginLogout(t *testing.T) { testLoginLogout(t, newEnv) }

func testLoginLogout(t *testing.T, newEnv envMaker) {
	e := newEnv(t)
	ctx := t.Context()
	c, key := e.user("alice")
	acct, err := c.Account(ctx)
	if err != nil || acct.Username != "alice" {
		t.Fatalf("account = %+v, %v", acct, err)
	}
	devs, err := c.Devices(ctx)
	if err != nil || len(devs) != 1 || devs[0].Key != key || !devs[0].Current || devs[0].Name != "alice-laptop" {
		t.Fatalf("devices = %+v, %v", devs, err)
	}
	_, err = e.client().Login(ctx, "alice", "wrong password!", "x", newKey(t))
	wantStatus(t, err, 401, "bad_credentials")
	_, err = e.client().Login(ctx, "nobody", password, "x", newKey(t))
	wantStatus(t, err, 401, "bad_credentials")
	resp, body := e.raw("POST", "/v1/login", "", `{"username":"alice","password":"`+password+`","device_name":"x","device_key":"AAAA"}`, nil)
	if resp.StatusCode != 400 || !strings.Contains(body, "invalid_key") {
		t.Fatalf("bad key: %d %s", resp.StatusCode, body)
	}
	if err := c.Logout(ctx); err != nil {
		t.Fatal(err)
	}
	_, err = c.Account(ctx)
	wantStatus(t, err, 401, "unauthorized")
	// Logging in again with the same key keeps one device.
	c2 := e.client()
	if _, err := c2.Login(ctx, "alice", password, "renamed", key); err != nil {
		t.Fatal(err)
	}
	devs, _ = c2.Devices(ctx)
	if len(devs) != 1 || devs[0].Name != "renamed" {
		t.Fatalf("devices after re-login = %+v", devs)
	}
}

func TestTokenExpires(t *testing.T) {
	now := time.Unix(1_800_000_000, 0)
	clock := func() time.Time { return now }
	e := newEnv(t, func(c *directory.Config) { c.Now = clock; c.TokenLifetime = time.Hour })
	c, _ := e.user("alice")
	if _, err := c.Account(t.Context()); err != nil {
		t.Fatal(err)
	}
	now = now.Add(2 * time.Hour)
	_, err := c.Account(t.Context())
	wantStatus(t, err, 401, "unauthorized")
}

func TestChangePasswordRevokesOtherTokens(t *testing.T) {
	testChangePasswordRevokesOtherTokens(t, newEnv)
}

func testChangePasswordRevokesOtherTokens(t *testing.T, newEnv envMaker) {
	e := newEnv(t)
	ctx := t.Context()
	c1, _ := e.user("alice")
	c2, _ := e.login("alice")
	s2 := events(t, c2)
	err := c1.ChangePassword(ctx, "not the password", "another long password")
	wantStatus(t, err, 403, "bad_credentials")
	err = c1.ChangePassword(ctx, password, "short")
	wantStatus(t, err, 400, "weak_password")
	if err := c1.ChangePassword(ctx, password, "another long password"); err != nil {
		t.Fatal(err)
	}
	if _, err := c1.Account(ctx); err != nil {
		t.Fatalf("current token revoked: %v", err)
	}
	_, err = c2.Account(ctx)
	wantStatus(t, err, 401, "unauthorized")
	// The other device's event stream is closed.
	if ev := nextEvent(t, s2, "closing"); ev.Reason != "revoked" {
		t.Fatalf("closing event %+v", ev)
	}
	_, err = e.client().Login(ctx, "alice", password, "x", newKey(t))
	wantStatus(t, err, 401, "bad_credentials")
	if _, err := e.client().Login(ctx, "alice", "another long password", "x", newKey(t)); err != nil {
		t.Fatal(err)
	}
}

func TestDeleteAccount(t *testing.T) { testDeleteAccount(t, newEnv) }

func testDeleteAccount(t *testing.T, newEnv envMaker) {
	e := newEnv(t)
	ctx := t.Context()
	a, _ := e.user("alice")
	b, bKey := e.user("bob")
	befriend(t, a, b, "bob", "alice")
	bs := events(t, b)
	if _, err := a.PutMail(ctx, bKey, []byte("sealed")); err != nil {
		t.Fatal(err)
	}
	err := a.DeleteAccount(ctx, "wrong password!")
	wantStatus(t, err, 403, "bad_credentials")
	if err := a.DeleteAccount(ctx, password); err != nil {
		t.Fatal(err)
	}
	if ev := nextEvent(t, bs, "contact_removed"); ev.Username != "alice" {
		t.Fatalf("event %+v", ev)
	}
	_, err = a.Account(ctx)
	wantStatus(t, err, 401, "")
	cs, _, _, _ := b.Contacts(ctx, "")
	if len(cs) != 0 {
		t.Fatalf("bob still lists %+v", cs)
	}
	if ms, _ := b.Mail(ctx); len(ms) != 0 {
		t.Fatalf("mail from a deleted account survives: %+v", ms)
	}
	_, err = b.LookupUser(ctx, "alice")
	wantStatus(t, err, 404, "not_found")
	// The name is free again.
	if _, err := e.client().Register(ctx, "alice", password); err != nil {
		t.Fatal(err)
	}
}

func TestLoginRateLimit(t *testing.T) {
	e := newEnv(t, func(c *directory.Config) {
		c.LoginPerAccount = directory.Rate{Every: time.Hour, Burst: 3}
		c.LoginPerIP = directory.Rate{Every: time.Hour, Burst: 6}
	})
	e.user("alice") // one login
	e.client().Register(t.Context(), "bob", password)
	ctx := t.Context()
	for range 2 {
		_, err := e.client().Login(ctx, "alice", "wrong password!", "x", newKey(t))
		wantStatus(t, err, 401, "bad_credentials")
	}
	// The account's bucket is empty: even the right password is refused.
	_, err := e.client().Login(ctx, "alice", password, "x", newKey(t))
	wantStatus(t, err, 429, "rate_limited")
	resp, _ := e.raw("POST", "/v1/login", "", `{"username":"alice","password":"x","device_name":"x","device_key":"`+newKey(t).String()+`"}`, nil)
	if resp.StatusCode != 429 || resp.Header.Get("Retry-After") == "" {
		t.Fatalf("status %d, Retry-After %q", resp.StatusCode, resp.Header.Get("Retry-After"))
	}
	// Another account from the same address: the address bucket (6) has
	// room for one more (alice used 5).
	if _, err := e.client().Login(ctx, "bob", password, "x", newKey(t)); err != nil {
		t.Fatalf("bob: %v", err)
	}
	_, err = e.client().Login(ctx, "bob", password, "x", newKey(t))
	wantStatus(t, err, 429, "rate_limited")
}

func TestSearchRateLimit(t *testing.T) {
	e := newEnv(t, func(c *directory.Config) { c.SearchPerUser = directory.Rate{Every: time.Hour, Burst: 2} })
	a, _ := e.user("alice")
	e.user("alfred")
	ctx := t.Context()
	us, err := a.SearchUsers(ctx, "alf")
	if err != nil || len(us) != 1 || us[0].Username != "alfred" || us[0].Devices != nil {
		t.Fatalf("search = %+v, %v", us, err)
	}
	_, err = a.SearchUsers(ctx, "al")
	wantStatus(t, err, 400, "invalid_request")
	a.SearchUsers(ctx, "ali")
	_, err = a.SearchUsers(ctx, "ali")
	wantStatus(t, err, 429, "rate_limited")
}

func TestDevices(t *testing.T) { testDevices(t, newEnv) }

func testDevices(t *testing.T, newEnv envMaker) {
	e := newEnv(t)
	ctx := t.Context()
	c1, k1 := e.user("alice")
	c2, k2 := e.login("alice")
	devs, err := c1.Devices(ctx)
	if err != nil || len(devs) != 2 {
		t.Fatalf("devices = %+v, %v", devs, err)
	}
	// A key is one device's identity: another account cannot claim it.
	e.client().Register(ctx, "bob", password)
	_, err = e.client().Login(ctx, "bob", password, "x", k1)
	wantStatus(t, err, 409, "device_key_taken")
	if err := c1.SetEndpoints(ctx, []string{"192.0.2.1:4000"}); err != nil {
		t.Fatal(err)
	}
	err = c1.SetEndpoints(ctx, []string{"nonsense"})
	wantStatus(t, err, 400, "invalid_request")
	if err := c1.RevokeDevice(ctx, k2); err != nil {
		t.Fatal(err)
	}
	_, err = c2.Devices(ctx)
	wantStatus(t, err, 401, "unauthorized")
	err = c1.RevokeDevice(ctx, k2)
	wantStatus(t, err, 404, "not_found")
	devs, _ = c1.Devices(ctx)
	if len(devs) != 1 || devs[0].Key != k1 || devs[0].Endpoints[0] != "192.0.2.1:4000" {
		t.Fatalf("devices = %+v", devs)
	}
}

func TestContactsFlowAndConditionalGET(t *testing.T) { testContactsFlowAndConditionalGET(t, newEnv) }

func testContactsFlowAndConditionalGET(t *testing.T, newEnv envMaker) {
	e := newEnv(t)
	ctx := t.Context()
	a, _ := e.user("alice")
	b, bKey := e.user("bob")
	as, bs := events(t, a), events(t, b)

	st, err := a.RequestContact(ctx, "bob")
	if err != nil || st != "outgoing" {
		t.Fatalf("request = %q, %v", st, err)
	}
	if ev := nextEvent(t, bs, "contact_request"); ev.Username != "alice" {
		t.Fatalf("event %+v", ev)
	}
	// Pending: bob's devices are not visible to alice.
	cs, etag1, _, err := a.Contacts(ctx, "")
	if err != nil || len(cs) != 1 || cs[0].State != "outgoing" || cs[0].Devices != nil || cs[0].Online {
		t.Fatalf("contacts = %+v, %v", cs, err)
	}
	u, _ := a.LookupUser(ctx, "bob")
	if u.Devices != nil || u.Online != nil || u.Contact != "outgoing" {
		t.Fatalf("lookup before accept shows %+v", u)
	}
	// Unchanged list: 304.
	_, _, nm, err := a.Contacts(ctx, etag1)
	if err != nil || !nm {
		t.Fatalf("conditional GET: notModified=%v, %v", nm, err)
	}
	if err := b.AcceptContact(ctx, "alice"); err != nil {
		t.Fatal(err)
	}
	if ev := nextEvent(t, as, "contact_accepted"); ev.Username != "bob" {
		t.Fatalf("event %+v", ev)
	}
	cs, etag2, nm, err := a.Contacts(ctx, etag1)
	if err != nil || nm || etag2 == etag1 {
		t.Fatalf("changed list: notModified=%v etag %s→%s, %v", nm, etag1, etag2, err)
	}
	if len(cs) != 1 || cs[0].State != "mutual" || !cs[0].Online || len(cs[0].Devices) != 1 || cs[0].Devices[0].Key != bKey {
		t.Fatalf("mutual contact = %+v", cs)
	}
	// Presence change invalidates: bob goes offline.
	bs.Close()
	// Becoming mutual may first tell alice that bob is online; wait for
	// the offline event.
	ev := nextEvent(t, as, "presence")
	for ev.Online && ev.Username == "bob" {
		ev = nextEvent(t, as, "presence")
	}
	if ev.Username != "bob" || ev.Online || *ev.Device != bKey {
		t.Fatalf("presence %+v", ev)
	}
	cs, etag3, nm, _ := a.Contacts(ctx, etag2)
	if nm || etag3 == etag2 || cs[0].Online {
		t.Fatalf("after bob left: notModified=%v online=%v", nm, cs[0].Online)
	}
	// If-Modified-Since and Last-Modified.
	resp, _ := e.raw("GET", "/v1/contacts", a.Token, "", nil)
	lm := resp.Header.Get("Last-Modified")
	if lm == "" || resp.Header.Get("ETag") != etag3 {
		t.Fatalf("validators: Last-Modified %q ETag %q", lm, resp.Header.Get("ETag"))
	}
	resp, body := e.raw("GET", "/v1/contacts", a.Token, "", map[string]string{"If-Modified-Since": lm})
	if resp.StatusCode != 304 || body != "" {
		t.Fatalf("If-Modified-Since: %d %q", resp.StatusCode, body)
	}
	resp, _ = e.raw("GET", "/v1/users/bob", a.Token, "", nil)
	et := resp.Header.Get("ETag")
	resp, _ = e.raw("GET", "/v1/users/bob", a.Token, "", map[string]string{"If-None-Match": et})
	if resp.StatusCode != 304 {
		t.Fatalf("profile conditional GET: %d", resp.StatusCode)
	}
	// Remove.
	if err := b.RemoveContact(ctx, "alice"); err != nil {
		t.Fatal(err)
	}
	nextEvent(t, as, "contact_removed")
	cs, _, _, _ = a.Contacts(ctx, "")
	if len(cs) != 0 {
		t.Fatalf("after remove: %+v", cs)
	}
	err = b.AcceptContact(ctx, "alice")
	wantStatus(t, err, 404, "not_found")
	_, err = a.RequestContact(ctx, "nobody")
	wantStatus(t, err, 404, "not_found")
	_, err = a.RequestContact(ctx, "alice")
	wantStatus(t, err, 400, "invalid_request")
}

func TestBlock(t *testing.T) { testBlock(t, newEnv) }

func testBlock(t *testing.T, newEnv envMaker) {
	e := newEnv(t)
	ctx := t.Context()
	a, _ := e.user("alice")
	b, _ := e.user("bob")
	befriend(t, a, b, "bob", "alice")
	as := events(t, a)
	if err := a.BlockContact(ctx, "bob"); err != nil {
		t.Fatal(err)
	}
	// Bob asks again; alice hears nothing and bob cannot tell.
	st, err := b.RequestContact(ctx, "alice")
	if err != nil || st != "outgoing" {
		t.Fatalf("blocked request = %q, %v", st, err)
	}
	cs, _, _, _ := a.Contacts(ctx, "")
	if len(cs) != 1 || cs[0].State != "blocked" {
		t.Fatalf("alice's list %+v", cs)
	}
	_, err = a.RequestContact(ctx, "bob")
	wantStatus(t, err, 409, "blocked")
	if err := a.UnblockContact(ctx, "bob"); err != nil {
		t.Fatal(err)
	}
	// Anything queued for alice must not be a contact_request from bob.
	if _, err := a.RequestContact(ctx, "bob"); err != nil {
		t.Fatal(err)
	}
	ev := nextEvent(t, as, "contact_accepted")
	if ev.Username != "bob" {
		t.Fatalf("event %+v", ev)
	}
}

func TestHTTPBasics(t *testing.T) {
	e := newEnv(t)
	a, _ := e.user("alice")
	resp, body := e.raw("GET", "/v1/nothing", "", "", nil)
	if resp.StatusCode != 404 || !strings.Contains(body, `"code":"not_found"`) || resp.Header.Get("Content-Type") != "application/json" {
		t.Fatalf("404: %d %s", resp.StatusCode, body)
	}
	if resp.Header.Get("Server") == "" || resp.Header.Get("Date") == "" || resp.Header.Get("Content-Length") == "" {
		t.Fatalf("headers %v", resp.Header)
	}
	resp, body = e.raw("PATCH", "/v1/accounts", "", "", nil)
	if resp.StatusCode != 405 || !strings.Contains(body, "method_not_allowed") || !strings.Contains(resp.Header.Get("Allow"), "POST") {
		t.Fatalf("405: %d %s %v", resp.StatusCode, body, resp.Header)
	}
	resp, body = e.raw("POST", "/v1/accounts", "", `{"username":"zed","password":"`+password+`","extra":1}`, nil)
	if resp.StatusCode != 400 || !strings.Contains(body, "invalid_request") {
		t.Fatalf("unknown field: %d %s", resp.StatusCode, body)
	}
	resp, body = e.raw("POST", "/v1/accounts", "", `{"username":"zed"`, nil)
	if resp.StatusCode != 400 {
		t.Fatalf("truncated JSON: %d %s", resp.StatusCode, body)
	}
	resp, body = e.raw("POST", "/v1/accounts", "", `{"username":"zed","password":"`+strings.Repeat("x", 20000)+`"}`, nil)
	if resp.StatusCode != 413 || !strings.Contains(body, "too_large") {
		t.Fatalf("large body: %d %s", resp.StatusCode, body)
	}
	resp, body = e.raw("POST", "/v1/accounts", "", `{}`, map[string]string{"Content-Type": "text/plain"})
	if resp.StatusCode != 415 {
		t.Fatalf("content type: %d %s", resp.StatusCode, body)
	}
	resp, body = e.raw("GET", "/v1/account", "", "", nil)
	if resp.StatusCode != 401 || resp.Header.Get("WWW-Authenticate") == "" {
		t.Fatalf("no token: %d %s", resp.StatusCode, body)
	}
	resp, _ = e.raw("GET", "/v1/account", strings.Repeat("A", 43), "", nil)
	if resp.StatusCode != 401 {
		t.Fatalf("unknown token: %d", resp.StatusCode)
	}
	resp, _ = e.raw("POST", "/v1/logout", a.Token, "", nil)
	if resp.StatusCode != 204 {
		t.Fatalf("logout: %d", resp.StatusCode)
	}
	resp, body = e.raw("GET", "/healthz", "", "", nil)
	if resp.StatusCode != 200 || !strings.Contains(body, "ok") {
		t.Fatalf("healthz: %d %s", resp.StatusCode, body)
	}
	resp, body = e.raw("GET", "/metrics", "", "", nil)
	if resp.StatusCode != 200 || !strings.Contains(body, "parley_directory_logins_total") || !strings.Contains(body, "parley_directory_online_devices") {
		t.Fatalf("metrics: %d", resp.StatusCode)
	}
	resp, body = e.raw("GET", "/v1/server-key", "", "", nil)
	var sk map[string]string
	json.Unmarshal([]byte(body), &sk)
	if resp.StatusCode != 200 || sk["algorithm"] != "ed25519" || len(sk["key"]) != 44 {
		t.Fatalf("server key: %d %s", resp.StatusCode, body)
	}
	resp, _ = e.raw("GET", "/", "", "", nil)
	if resp.StatusCode != 200 || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/html") {
		t.Fatalf("dashboard: %d %s", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
}

// TestUnauthenticated: every endpoint that needs a token refuses without.
func TestUnauthenticated(t *testing.T) {
	e := newEnv(t)
	routes := []string{
		"POST /v1/logout", "GET /v1/account", "PUT /v1/account/password", "DELETE /v1/account",
		"GET /v1/devices", "DELETE /v1/devices/AAAA", "PUT /v1/devices/self/endpoints",
		"GET /v1/contacts", "GET /v1/contacts/bob", "POST /v1/contacts/bob/request", "POST /v1/contacts/bob/accept",
		"POST /v1/contacts/bob/decline", "POST /v1/contacts/bob/block", "POST /v1/contacts/bob/unblock", "DELETE /v1/contacts/bob",
		"GET /v1/users/bob", "GET /v1/users?prefix=bob", "GET /v1/events", "POST /v1/offers", "POST /v1/sessions",
		"POST /v1/mailbox", "GET /v1/mailbox", "POST /v1/mailbox/ack",
		"POST /v1/supernodes", "PUT /v1/supernodes/self/load", "DELETE /v1/supernodes/self", "GET /v1/supernodes", "POST /v1/tickets",
	}
	for _, rt := range routes {
		m, p, _ := strings.Cut(rt, " ")
		resp, body := e.raw(m, p, "", "{}", nil)
		if resp.StatusCode != 401 || !strings.Contains(body, `"unauthorized"`) {
			t.Errorf("%s without token: %d %s", rt, resp.StatusCode, body)
		}
	}
}

func TestPasswordHashCost(t *testing.T) {
	// The default parameters are OWASP's minimum for argon2id.
	p := directory.DefaultArgon2
	if p.MemoryKiB < 19*1024 || p.Time < 2 {
		t.Fatalf("argon2id parameters %+v are below OWASP's minimum", p)
	}
	e := newEnv(t, func(c *directory.Config) { c.Argon2 = directory.DefaultArgon2 })
	c, _ := e.user("alice")
	if _, err := c.Account(t.Context()); err != nil {
		t.Fatal(err)
	}
}

var _ = client.Key{}
