package directory

import (
	"context"
	"errors"
	"net/http"
	"sync"
	"time"

	"github.com/parley-p2p/parley/directory/store"
)

// ---- devices ----

// listDevices: GET /v1/devices, the caller's own devices.
func (s *Server) listDevices(w http.ResponseWriter, r *http.Request, sess session) *apiError {
	ds, err := s.store.Devices(r.Context(), sess.userID)
	if err != nil {
		return s.internal(r, "devices", err)
	}
	out := struct {
		Devices []deviceJSON `json:"devices"`
	}{Devices: []deviceJSON{}}
	var mod time.Time
	for _, d := range ds {
		out.Devices = append(out.Devices, deviceJSON{Key: keyString(d.PublicKey), Name: d.Name, Online: d.Online,
			LastSeen: d.LastSeen.UTC(), Endpoints: d.Endpoints, CreatedAt: d.CreatedAt.UTC(), Current: d.ID == sess.deviceID})
		mod = later(mod, d.UpdatedAt)
	}
	body := mustJSON(out)
	serveCached(w, r, body, etagOf(body), mod)
	return nil
}

func later(a, b time.Time) time.Time {
	if b.After(a) {
		return b
	}
	return a
}

// revokeDevice: DELETE /v1/devices/{key}; the key is base64url in the path.
func (s *Server) revokeDevice(w http.ResponseWriter, r *http.Request, sess session) *apiError {
	key, ok := parsePathKey(r.PathValue("key"))
	if !ok {
		return errorf(http.StatusBadRequest, codeInvalidKey, "the path must hold the device key in unpadded base64url")
	}
	ctx := r.Context()
	d, err := s.store.DeviceByKey(ctx, key)
	if errors.Is(err, store.ErrNotFound) || err == nil && d.UserID != sess.userID {
		// Another user's device is reported as missing, not forbidden:
		// the caller must not learn that the key exists.
		return errorf(http.StatusNotFound, codeNotFound, "you have no such device")
	}
	if err != nil {
		return s.internal(r, "device", err)
	}
	if err := s.store.DeleteDevice(ctx, sess.userID, d.ID); err != nil {
		return s.internal(r, "delete device", err)
	}
	s.stats.dropDevice(d.ID)
	contacts, _ := s.store.MutualContacts(ctx, sess.userID)
	s.notifyUsers(ctx, map[string]any{"type": evDeviceRevoked, "username": sess.username, "device": keyString(key)}, append(contacts, sess.userID)...)
	s.publish(ctx, broadcast{RevokeDevice: d.ID})
	s.log.Info("device revoked", "user", sess.username, "device", d.ID)
	noContent(w)
	return nil
}

type endpointsRequest struct {
	Endpoints []string `json:"endpoints"`
}

const maxEndpoints = 16

// setEndpoints: PUT /v1/devices/self/endpoints.
func (s *Server) setEndpoints(w http.ResponseWriter, r *http.Request, sess session) *apiError {
	var req endpointsRequest
	if e := decode(w, r, smallBody, &req); e != nil {
		return e
	}
	if len(req.Endpoints) > maxEndpoints {
		return errorf(http.StatusBadRequest, codeInvalidRequest, "at most %d endpoints", maxEndpoints)
	}
	for _, ep := range req.Endpoints {
		if _, err := parseAddrPort(ep); err != nil {
			return errorf(http.StatusBadRequest, codeInvalidRequest, "endpoint %q is not ip:port", ep)
		}
	}
	if req.Endpoints == nil {
		req.Endpoints = []string{}
	}
	ctx := r.Context()
	if err := s.store.SetDeviceEndpoints(ctx, sess.deviceID, req.Endpoints, s.now()); err != nil {
		return s.internal(r, "set endpoints", err)
	}
	contacts, _ := s.store.MutualContacts(ctx, sess.userID)
	s.notifyUsers(ctx, nil, append(contacts, sess.userID)...)
	noContent(w)
	return nil
}

// ---- contacts ----

type contactJSON struct {
	Username string       `json:"username"`
	State    string       `json:"state"`
	Since    time.Time    `json:"since,omitzero"`
	Online   bool         `json:"online"`
	Devices  []deviceJSON `json:"devices,omitempty"`
}

// listCache keeps each user's encoded contact list with its validators.
// The store stays the source of truth: every write that changes what a
// user's list shows (contacts, presence, devices, endpoints of contacts)
// broadcasts an invalidation for that user to every process.
//
// A list built while an invalidation arrives must not be cached: each
// user's generation counts invalidations, and a list is stored only if the
// generation did not move while it was built.
type listCache struct {
	mu sync.Mutex // protects m
	m  map[int64]*cachedList
}

type cachedList struct {
	gen      uint64
	valid    bool
	body     []byte
	etag     string
	modified time.Time
}

func (c *listCache) get(user int64) (cl cachedList, ok bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	e := c.m[user]
	if e == nil {
		return cachedList{}, false
	}
	return *e, e.valid
}

// put stores a list built from data read after generation gen was seen.
func (c *listCache) put(user int64, gen uint64, body []byte, now time.Time) cachedList {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.m == nil {
		c.m = make(map[int64]*cachedList)
	}
	e := c.m[user]
	if e == nil {
		e = &cachedList{}
		c.m[user] = e
	}
	etag := etagOf(body)
	mod := now
	if e.etag == etag && !e.modified.IsZero() {
		mod = e.modified // unchanged content keeps its Last-Modified
	}
	out := cachedList{gen: gen, valid: true, body: body, etag: etag, modified: mod}
	if e.gen == gen {
		*e = out
	}
	return out
}

func (c *listCache) invalidate(user int64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if e := c.m[user]; e != nil {
		e.gen++
		e.valid = false
	}
}

func (c *listCache) clear() {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, e := range c.m {
		e.gen++
		e.valid = false
	}
}

// generation returns the user's current generation, creating the entry.
func (c *listCache) generation(user int64) uint64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.m == nil {
		c.m = make(map[int64]*cachedList)
	}
	e := c.m[user]
	if e == nil {
		e = &cachedList{}
		c.m[user] = e
	}
	return e.gen
}

// contactList returns the user's encoded list, from the cache if valid.
func (s *Server) contactList(ctx context.Context, user int64) (cachedList, error) {
	if cl, ok := s.lists.get(user); ok {
		return cl, nil
	}
	gen := s.lists.generation(user)
	cs, err := s.store.Contacts(ctx, user)
	if err != nil {
		return cachedList{}, err
	}
	var mutual []int64
	for _, c := range cs {
		if c.State == store.Mutual {
			mutual = append(mutual, c.UserID)
		}
	}
	devs, err := s.store.DevicesOfUsers(ctx, mutual)
	if err != nil {
		return cachedList{}, err
	}
	byUser := make(map[int64][]store.Device)
	for _, d := range devs {
		byUser[d.UserID] = append(byUser[d.UserID], d)
	}
	out := struct {
		Contacts []contactJSON `json:"contacts"`
	}{Contacts: make([]contactJSON, 0, len(cs))}
	for _, c := range cs {
		out.Contacts = append(out.Contacts, s.contactJSON(c, byUser[c.UserID]))
	}
	return s.lists.put(user, gen, mustJSON(out), s.now()), nil
}

// contactJSON shows devices, keys, endpoints and presence only for mutual
// contacts.
func (s *Server) contactJSON(c store.Contact, devs []store.Device) contactJSON {
	cj := contactJSON{Username: c.Username, State: c.State.String(), Since: c.UpdatedAt.UTC()}
	if c.State != store.Mutual {
		return cj
	}
	cj.Devices = []deviceJSON{}
	for _, d := range devs {
		cj.Online = cj.Online || d.Online
		cj.Devices = append(cj.Devices, deviceJSON{Key: keyString(d.PublicKey), Name: d.Name, Online: d.Online, LastSeen: d.LastSeen.UTC(), Endpoints: d.Endpoints})
	}
	return cj
}

// listContacts: GET /v1/contacts, with ETag and Last-Modified.
func (s *Server) listContacts(w http.ResponseWriter, r *http.Request, sess session) *apiError {
	cl, err := s.contactList(r.Context(), sess.userID)
	if err != nil {
		return s.internal(r, "contacts", err)
	}
	serveCached(w, r, cl.body, cl.etag, cl.modified)
	return nil
}

// target resolves the {username} in the path to another user.
func (s *Server) target(r *http.Request, sess session) (store.User, *apiError) {
	name := r.PathValue("username")
	if !validUsername(name) {
		return store.User{}, errorf(http.StatusNotFound, codeNotFound, "no such user")
	}
	u, err := s.store.UserByName(r.Context(), name)
	if errors.Is(err, store.ErrNotFound) {
		return u, errorf(http.StatusNotFound, codeNotFound, "no such user")
	}
	if err != nil {
		return u, s.internal(r, "user", err)
	}
	if u.ID == sess.userID {
		return u, errorf(http.StatusBadRequest, codeInvalidRequest, "that is you")
	}
	return u, nil
}

// getContact: GET /v1/contacts/{username}: the caller's row about one user.
func (s *Server) getContact(w http.ResponseWriter, r *http.Request, sess session) *apiError {
	u, e := s.target(r, sess)
	if e != nil {
		return e
	}
	ctx := r.Context()
	st, err := s.store.ContactState(ctx, sess.userID, u.ID)
	if errors.Is(err, store.ErrNotFound) {
		return errorf(http.StatusNotFound, codeNotFound, "%s is not in your contacts", u.Username)
	}
	if err != nil {
		return s.internal(r, "contact", err)
	}
	var devs []store.Device
	if st == store.Mutual {
		if devs, err = s.store.Devices(ctx, u.ID); err != nil {
			return s.internal(r, "devices", err)
		}
	}
	cj := s.contactJSON(store.Contact{UserID: u.ID, Username: u.Username, State: st}, devs)
	mod := u.CreatedAt
	for _, d := range devs {
		mod = later(mod, d.UpdatedAt)
	}
	body := mustJSON(cj)
	serveCached(w, r, body, etagOf(body), mod)
	return nil
}

type contactStateJSON struct {
	Username string `json:"username"`
	State    string `json:"state"`
}

// requestContact: POST /v1/contacts/{username}/request. If the other user
// had already asked, the two become mutual contacts at once.
func (s *Server) requestContact(w http.ResponseWriter, r *http.Request, sess session) *apiError {
	u, e := s.target(r, sess)
	if e != nil {
		return e
	}
	ctx := r.Context()
	// Whether the other side blocks the caller must not show: check
	// before, and stay silent towards them.
	theirs, err := s.store.ContactState(ctx, u.ID, sess.userID)
	if err != nil && !errors.Is(err, store.ErrNotFound) {
		return s.internal(r, "contact", err)
	}
	st, err := s.store.RequestContact(ctx, sess.userID, u.ID, s.now())
	switch {
	case errors.Is(err, store.ErrBlocked):
		return errorf(http.StatusConflict, codeBlocked, "you block %s; unblock them first", u.Username)
	case errors.Is(err, store.ErrConflict):
		return errorf(http.StatusConflict, codeAlreadyContacts, "you are already contacts")
	case err != nil:
		return s.internal(r, "request contact", err)
	}
	switch {
	case st == store.Mutual:
		s.notifyUsers(ctx, map[string]any{"type": evContactAccepted, "username": sess.username}, u.ID)
		s.notifyUsers(ctx, map[string]any{"type": evContactAccepted, "username": u.Username}, sess.userID)
	case theirs != store.Blocked:
		s.notifyUsers(ctx, map[string]any{"type": evContactRequest, "username": sess.username}, u.ID)
		s.notifyUsers(ctx, nil, sess.userID)
	default:
		s.notifyUsers(ctx, nil, sess.userID)
	}
	writeJSON(w, http.StatusOK, contactStateJSON{u.Username, st.String()})
	return nil
}

// acceptContact: POST /v1/contacts/{username}/accept.
func (s *Server) acceptContact(w http.ResponseWriter, r *http.Request, sess session) *apiError {
	u, e := s.target(r, sess)
	if e != nil {
		return e
	}
	ctx := r.Context()
	err := s.store.AcceptContact(ctx, sess.userID, u.ID, s.now())
	if errors.Is(err, store.ErrNotFound) {
		return errorf(http.StatusNotFound, codeNotFound, "%s has not asked to be your contact", u.Username)
	}
	if err != nil {
		return s.internal(r, "accept", err)
	}
	s.notifyUsers(ctx, map[string]any{"type": evContactAccepted, "username": sess.username}, u.ID)
	s.notifyUsers(ctx, map[string]any{"type": evContactAccepted, "username": u.Username}, sess.userID)
	writeJSON(w, http.StatusOK, contactStateJSON{u.Username, store.Mutual.String()})
	return nil
}

// declineContact: POST /v1/contacts/{username}/decline.
func (s *Server) declineContact(w http.ResponseWriter, r *http.Request, sess session) *apiError {
	return s.contactChange(w, r, sess, func(ctx context.Context, other int64) error {
		return s.store.DeclineContact(ctx, sess.userID, other)
	}, "%s has not asked to be your contact", false)
}

// removeContact: DELETE /v1/contacts/{username} ends a contact or cancels
// the caller's request.
func (s *Server) removeContact(w http.ResponseWriter, r *http.Request, sess session) *apiError {
	return s.contactChange(w, r, sess, func(ctx context.Context, other int64) error {
		return s.store.RemoveContact(ctx, sess.userID, other)
	}, "%s is not your contact", true)
}

// blockContact: POST /v1/contacts/{username}/block.
func (s *Server) blockContact(w http.ResponseWriter, r *http.Request, sess session) *apiError {
	return s.contactChange(w, r, sess, func(ctx context.Context, other int64) error {
		return s.store.Block(ctx, sess.userID, other, s.now())
	}, "%s cannot be blocked", true)
}

// unblockContact: POST /v1/contacts/{username}/unblock.
func (s *Server) unblockContact(w http.ResponseWriter, r *http.Request, sess session) *apiError {
	return s.contactChange(w, r, sess, func(ctx context.Context, other int64) error {
		return s.store.Unblock(ctx, sess.userID, other)
	}, "you do not block %s", false)
}

// contactChange applies a change that may end a relationship, and tells
// the other user's devices if they could see it.
func (s *Server) contactChange(w http.ResponseWriter, r *http.Request, sess session, change func(context.Context, int64) error, missing string, tell bool) *apiError {
	u, e := s.target(r, sess)
	if e != nil {
		return e
	}
	ctx := r.Context()
	before, err := s.store.ContactState(ctx, sess.userID, u.ID)
	if err != nil && !errors.Is(err, store.ErrNotFound) {
		return s.internal(r, "contact", err)
	}
	err = change(ctx, u.ID)
	if errors.Is(err, store.ErrNotFound) {
		return errorf(http.StatusNotFound, codeNotFound, missing, u.Username)
	}
	if err != nil {
		return s.internal(r, "contact change", err)
	}
	if tell && (before == store.Mutual || before == store.Outgoing) {
		s.notifyUsers(ctx, map[string]any{"type": evContactRemoved, "username": sess.username}, u.ID)
	} else {
		s.notifyUsers(ctx, nil, u.ID)
	}
	s.notifyUsers(ctx, nil, sess.userID)
	noContent(w)
	return nil
}

type userJSON struct {
	Username string       `json:"username"`
	Contact  string       `json:"contact,omitempty"` // the caller's state about them
	Online   *bool        `json:"online,omitempty"`
	Devices  []deviceJSON `json:"devices,omitempty"`
}

// lookupUser: GET /v1/users/{username}, exact lookup. Devices, keys,
// endpoints and presence only for a mutual contact.
func (s *Server) lookupUser(w http.ResponseWriter, r *http.Request, sess session) *apiError {
	name := r.PathValue("username")
	if !validUsername(name) {
		return errorf(http.StatusNotFound, codeNotFound, "no such user")
	}
	ctx := r.Context()
	u, err := s.store.UserByName(ctx, name)
	if errors.Is(err, store.ErrNotFound) {
		return errorf(http.StatusNotFound, codeNotFound, "no such user")
	}
	if err != nil {
		return s.internal(r, "user", err)
	}
	out := userJSON{Username: u.Username}
	mod := u.CreatedAt
	st, err := s.store.ContactState(ctx, sess.userID, u.ID)
	if err == nil {
		out.Contact = st.String()
	}
	if st == store.Mutual || u.ID == sess.userID {
		devs, err := s.store.Devices(ctx, u.ID)
		if err != nil {
			return s.internal(r, "devices", err)
		}
		online := false
		out.Devices = []deviceJSON{}
		for _, d := range devs {
			online = online || d.Online
			out.Devices = append(out.Devices, deviceJSON{Key: keyString(d.PublicKey), Name: d.Name, Online: d.Online, LastSeen: d.LastSeen.UTC(), Endpoints: d.Endpoints})
			mod = later(mod, d.UpdatedAt)
		}
		out.Online = &online
	}
	body := mustJSON(out)
	serveCached(w, r, body, etagOf(body), mod)
	return nil
}

// searchUsers: GET /v1/users?prefix=…, rate limited per account: prefix
// search is how usernames would be enumerated.
func (s *Server) searchUsers(w http.ResponseWriter, r *http.Request, sess session) *apiError {
	prefix := r.URL.Query().Get("prefix")
	if len(prefix) < minUsername || len(prefix) > maxUsername {
		return errorf(http.StatusBadRequest, codeInvalidRequest, "prefix must have %d to %d characters", minUsername, maxUsername)
	}
	for i := 0; i < len(prefix); i++ {
		if c := prefix[i]; !('a' <= c && c <= 'z' || '0' <= c && c <= '9' || c == '.' || c == '_' || c == '-') {
			return errorf(http.StatusBadRequest, codeInvalidRequest, "prefix has a character usernames cannot have")
		}
	}
	if e := s.limit(s.search, "search:"+sess.username); e != nil {
		return e
	}
	us, err := s.store.SearchUsers(r.Context(), prefix, 20)
	if err != nil {
		return s.internal(r, "search", err)
	}
	out := struct {
		Users []userJSON `json:"users"`
	}{Users: []userJSON{}}
	for _, u := range us {
		out.Users = append(out.Users, userJSON{Username: u.Username})
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}
