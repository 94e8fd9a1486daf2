package directory

import (
	"context"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"net/http"
	"sync"
	"time"

	"github.com/coder/websocket"

	"github.com/parley-p2p/parley/directory/store"
)

// Event types sent on a device's event stream. See docs/api.md.
const (
	evHello           = "hello"
	evPresence        = "presence"
	evContactRequest  = "contact_request"
	evContactAccepted = "contact_accepted"
	evContactRemoved  = "contact_removed"
	evOffer           = "offer"
	evMailbox         = "mailbox"
	evDeviceRevoked   = "device_revoked"
)

// broadcast is the message passed between server processes through the
// store's Broadcaster. Every process applies every message: it delivers the
// event to the matching streams it holds and drops matching cache entries.
// Field names are short because PostgreSQL's NOTIFY payload is limited.
type broadcast struct {
	// Event, if set, goes to every stream of Users and to Devices.
	Event   json.RawMessage `json:"e,omitempty"`
	Users   []int64         `json:"u,omitempty"`
	Devices []int64         `json:"d,omitempty"`
	// Except is a device that must not receive Event (its own presence).
	Except int64 `json:"x,omitempty"`
	// Invalidate drops the cached contact lists of these users.
	Invalidate []int64 `json:"i,omitempty"`
	// Revocations: tokens of RevokeUser (except KeepToken), of
	// RevokeDevice, or RevokeToken itself stop being valid; their event
	// streams are closed.
	RevokeUser   int64  `json:"ru,omitempty"`
	RevokeDevice int64  `json:"rd,omitempty"`
	RevokeToken  string `json:"rt,omitempty"`
	KeepToken    string `json:"kt,omitempty"`
	// Kick closes the stream of device Kick held by any process other than
	// Origin: the device has connected again elsewhere.
	Kick int64 `json:"k,omitempty"`
	// Origin is the publishing process, which applies its own messages
	// when it publishes them.
	Origin string `json:"o,omitempty"`
}

// maxIDsPerBroadcast keeps a broadcast well under store.MaxBroadcast even
// with a 4 KiB event.
const maxIDsPerBroadcast = 150

// publish sends b, split so that each message fits the broadcast limit.
func (s *Server) publish(ctx context.Context, b broadcast) {
	if len(b.Users) > maxIDsPerBroadcast || len(b.Invalidate) > maxIDsPerBroadcast || len(b.Devices) > maxIDsPerBroadcast {
		for len(b.Users) > 0 || len(b.Invalidate) > 0 || len(b.Devices) > 0 {
			part := b
			part.Users, b.Users = splitIDs(b.Users)
			part.Invalidate, b.Invalidate = splitIDs(b.Invalidate)
			part.Devices, b.Devices = splitIDs(b.Devices)
			if len(part.Users) == 0 && len(part.Devices) == 0 {
				part.Event = nil
			}
			s.publish(ctx, part)
		}
		return
	}
	// Apply locally at once, so that this process never lags its own
	// writes (a revoked token must fail on the next request here); other
	// processes apply it when the broadcast arrives, and this one ignores
	// its own copy.
	b.Origin = s.id
	s.apply(b)
	p, err := json.Marshal(b)
	if err == nil {
		err = s.store.Publish(ctx, p)
	}
	if err != nil {
		s.log.Error("broadcast failed", "err", err)
		s.m.broadcastErrors.Inc()
	}
}

func splitIDs(ids []int64) (head, rest []int64) {
	n := min(len(ids), maxIDsPerBroadcast)
	return ids[:n], ids[n:]
}

// onBroadcast applies a message from another process.
func (s *Server) onBroadcast(p []byte) {
	var b broadcast
	if err := json.Unmarshal(p, &b); err != nil {
		s.log.Warn("malformed broadcast", "err", err)
		return
	}
	if b.Origin == s.id {
		return // applied when published
	}
	s.apply(b)
}

// apply acts on a broadcast: delivers its event to the matching streams
// this process holds and drops the matching cache entries.
func (s *Server) apply(b broadcast) {
	for _, u := range b.Invalidate {
		s.lists.invalidate(u)
	}
	if b.RevokeUser != 0 || b.RevokeDevice != 0 || b.RevokeToken != "" {
		keep, _ := hex.DecodeString(b.KeepToken)
		tok, _ := hex.DecodeString(b.RevokeToken)
		match := func(sess session) bool {
			switch {
			case b.RevokeUser != 0 && sess.userID == b.RevokeUser:
				return string(sess.tokenHash[:]) != string(keep)
			case b.RevokeDevice != 0 && sess.deviceID == b.RevokeDevice:
				return true
			case len(tok) == 32 && string(sess.tokenHash[:]) == string(tok):
				return true
			}
			return false
		}
		s.tokens.drop(match)
		s.hub.closeMatching(match, websocket.StatusPolicyViolation, "revoked", false)
	}
	if b.Kick != 0 && b.Origin != s.id {
		s.hub.closeMatching(func(sess session) bool { return sess.deviceID == b.Kick }, websocket.StatusPolicyViolation, "connected elsewhere", true)
	}
	if len(b.Event) > 0 {
		s.hub.deliver(b.Users, b.Devices, b.Except, b.Event)
	}
}

// onBroadcastReset runs when broadcasts may have been lost: every cache may
// be stale.
func (s *Server) onBroadcastReset() {
	s.tokens.clear()
	s.lists.clear()
}

// ---- the hub of this process's event streams ----

// hub indexes the event streams held by this process.
type hub struct {
	mu       sync.Mutex // protects the maps; before stream.mu
	byDevice map[int64]*stream
	byUser   map[int64]map[int64]*stream
}

func (h *hub) init() {
	h.byDevice = make(map[int64]*stream)
	h.byUser = make(map[int64]map[int64]*stream)
}

// add registers st and returns the stream it replaces, if any.
func (h *hub) add(st *stream) (old *stream) {
	h.mu.Lock()
	defer h.mu.Unlock()
	old = h.byDevice[st.sess.deviceID]
	h.byDevice[st.sess.deviceID] = st
	m := h.byUser[st.sess.userID]
	if m == nil {
		m = make(map[int64]*stream)
		h.byUser[st.sess.userID] = m
	}
	m[st.sess.deviceID] = st
	return old
}

// remove unregisters st unless it was already replaced; it reports whether
// st was the device's current stream.
func (h *hub) remove(st *stream) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.byDevice[st.sess.deviceID] != st {
		return false
	}
	delete(h.byDevice, st.sess.deviceID)
	m := h.byUser[st.sess.userID]
	delete(m, st.sess.deviceID)
	if len(m) == 0 {
		delete(h.byUser, st.sess.userID)
	}
	return true
}

func (h *hub) count() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.byDevice)
}

func (h *hub) deliver(users, devices []int64, except int64, ev []byte) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, u := range users {
		for d, st := range h.byUser[u] {
			if d != except {
				st.send(ev)
			}
		}
	}
	for _, d := range devices {
		if st := h.byDevice[d]; st != nil {
			st.send(ev)
		}
	}
}

// closeMatching closes the streams whose session matches; moved marks them
// as moved to another process, so their end is not announced as offline.
func (h *hub) closeMatching(match func(session) bool, code websocket.StatusCode, reason string, moved bool) {
	h.mu.Lock()
	var victims []*stream
	for _, st := range h.byDevice {
		if match(st.sess) {
			victims = append(victims, st)
		}
	}
	h.mu.Unlock()
	for _, st := range victims {
		if moved {
			st.mu.Lock()
			st.moved = true
			st.mu.Unlock()
		}
		st.close(code, reason)
	}
}

func (h *hub) closeAll() {
	h.closeMatching(func(session) bool { return true }, websocket.StatusGoingAway, "server shutting down", false)
}

// ---- one event stream ----

// streamQueue bounds the events waiting for a slow device; a device that
// falls this far behind is disconnected and must reconnect and resync.
const streamQueue = 64

// pingInterval keeps NATs and proxies from dropping idle streams and
// detects dead peers.
const pingInterval = 30 * time.Second

// stream is one device's WebSocket. To keep idle streams cheap (the target
// is 10,000 per server at under 30 KB each) a stream has one goroutine, the
// reader, while idle; a writer goroutine exists only while events are
// queued.
type stream struct {
	sess   session
	conn   *websocket.Conn
	ctx    context.Context // canceled when the stream ends
	cancel context.CancelFunc
	done   chan struct{}   // closed when teardown is complete
	wg     *sync.WaitGroup // the server's: counts the stream's goroutines

	mu      sync.Mutex // protects the fields below
	queue   [][]byte
	writing bool
	closed  bool
	moved   bool // closed because the device connected to another process
}

// send queues ev; it never blocks.
func (st *stream) send(ev []byte) {
	st.mu.Lock()
	if st.closed {
		st.mu.Unlock()
		return
	}
	if len(st.queue) >= streamQueue {
		st.mu.Unlock()
		st.close(websocket.StatusPolicyViolation, "too slow")
		return
	}
	st.queue = append(st.queue, ev)
	if st.writing {
		st.mu.Unlock()
		return
	}
	st.writing = true
	st.wg.Add(1)
	st.mu.Unlock()
	go st.pump()
}

// pump writes queued events until the queue is empty.
func (st *stream) pump() {
	defer st.wg.Done()
	for {
		st.mu.Lock()
		if len(st.queue) == 0 || st.closed {
			st.queue = nil
			st.writing = false
			st.mu.Unlock()
			return
		}
		ev := st.queue[0]
		st.queue = st.queue[1:]
		st.mu.Unlock()
		// Not st.ctx: canceling a write in progress would break the
		// connection before the closing event goes out. close ends the
		// loop instead, and the timeout bounds a stuck peer.
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		var err error
		if ev == nil {
			err = st.conn.Ping(ctx)
		} else {
			err = st.conn.Write(ctx, websocket.MessageText, ev)
		}
		cancel()
		if err != nil {
			st.close(websocket.StatusGoingAway, "write failed")
		}
	}
}

func (st *stream) close(code websocket.StatusCode, reason string) {
	st.mu.Lock()
	if st.closed {
		st.mu.Unlock()
		return
	}
	st.closed = true
	st.wg.Add(1)
	st.mu.Unlock()
	// End the stream for the server now; the closing handshake below may
	// take as long as the peer lets it.
	st.cancel()
	// CloseNow rather than Close: a close handshake waits for the peer,
	// which a misbehaving device may never answer. The status is best
	// effort.
	go func() {
		defer st.wg.Done()
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		st.conn.Write(ctx, websocket.MessageText, mustJSON(map[string]any{"type": "closing", "code": int(code), "reason": reason}))
		st.conn.Close(code, reason)
		st.conn.CloseNow()
	}()
}

func mustJSON(v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err) // only called on values that always encode
	}
	return b
}

func keyString(k store.Key) string { return base64.StdEncoding.EncodeToString(k[:]) }

// events upgrades to the device's event stream: GET /v1/events.
func (s *Server) events(w http.ResponseWriter, r *http.Request, sess session) *apiError {
	if s.ctx.Err() != nil {
		return errorf(http.StatusServiceUnavailable, codeUnavailable, "the server is shutting down")
	}
	// The http.Server's read and write timeouts would otherwise stay on
	// the hijacked connection and cut the stream; pings and per-write
	// timeouts take their place.
	rc := http.NewResponseController(w)
	rc.SetReadDeadline(time.Time{})
	rc.SetWriteDeadline(time.Time{})
	conn, err := websocket.Accept(w, r, &websocket.AcceptOptions{CompressionMode: websocket.CompressionDisabled})
	if err != nil {
		// Accept has written the HTTP error.
		s.log.Debug("websocket accept failed", "err", err)
		return nil
	}
	// Devices send nothing on the stream (offers are POSTed), so cap reads.
	conn.SetReadLimit(4096)
	// The stream outlives this handler: its context descends from the
	// server's, not the request's.
	st := &stream{sess: sess, conn: conn, done: make(chan struct{}), wg: &s.wg}
	st.ctx, st.cancel = context.WithCancel(conn.CloseRead(s.ctx))
	if old := s.hub.add(st); old != nil {
		old.close(websocket.StatusPolicyViolation, "connected again")
	}
	s.m.streams.Inc()
	now := s.now()
	ctx := context.Background()
	if err := s.store.SetDeviceOnline(ctx, sess.deviceID, s.id, true, now); err != nil {
		s.log.Error("set device online", "err", err)
	}
	// A stream for this device on another process must go.
	s.publish(ctx, broadcast{Kick: sess.deviceID})
	st.send(mustJSON(map[string]any{"type": evHello, "device": keyString(sess.deviceKey), "username": sess.username, "server_time": now.UTC()}))
	s.presenceChanged(ctx, sess, true, now)
	if n, err := s.store.CountMail(ctx, sess.deviceID); err == nil && n > 0 {
		st.send(mustJSON(map[string]any{"type": evMailbox, "count": n}))
	}
	s.wg.Add(1)
	context.AfterFunc(st.ctx, func() { s.teardown(st) })
	return nil
}

// teardown runs once the stream has ended, on its own goroutine (from
// context.AfterFunc): an idle stream needs no goroutine of its own to
// notice its end.
func (s *Server) teardown(st *stream) {
	defer s.wg.Done()
	defer close(st.done)
	st.close(websocket.StatusNormalClosure, "")
	s.m.streams.Dec()
	if !s.hub.remove(st) {
		return // replaced by a newer stream on this process
	}
	st.mu.Lock()
	moved := st.moved
	st.mu.Unlock()
	if moved {
		return // the device is online on another process now
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	now := s.now()
	if err := s.store.SetDeviceOnline(ctx, st.sess.deviceID, s.id, false, now); err != nil {
		s.log.Error("set device offline", "err", err)
	}
	s.presenceChanged(ctx, st.sess, false, now)
}

// pinger pings every stream once per pingInterval, spread over the
// interval, from one goroutine for the whole process.
func (s *Server) pinger() {
	defer s.wg.Done()
	t := time.NewTicker(pingInterval)
	defer t.Stop()
	for {
		select {
		case <-s.ctx.Done():
			return
		case <-t.C:
		}
		s.hub.mu.Lock()
		all := make([]*stream, 0, len(s.hub.byDevice))
		for _, st := range s.hub.byDevice {
			all = append(all, st)
		}
		s.hub.mu.Unlock()
		for _, st := range all {
			st.mu.Lock()
			idle := len(st.queue) == 0
			st.mu.Unlock()
			if idle {
				st.send(nil) // nil is a ping
			}
		}
	}
}

// presenceChanged tells the user's mutual contacts and the user's own other
// devices that a device came online or went offline.
func (s *Server) presenceChanged(ctx context.Context, sess session, online bool, now time.Time) {
	contacts, err := s.store.MutualContacts(ctx, sess.userID)
	if err != nil {
		s.log.Error("presence: contacts", "err", err)
		return
	}
	s.m.presenceChanges.Inc()
	ev := mustJSON(map[string]any{"type": evPresence, "username": sess.username, "device": keyString(sess.deviceKey), "online": online, "at": now.UTC()})
	users := append(contacts, sess.userID)
	s.publish(ctx, broadcast{Event: ev, Users: users, Except: sess.deviceID, Invalidate: users})
}

// notifyUsers sends an event to all devices of users and drops their cached
// contact lists.
func (s *Server) notifyUsers(ctx context.Context, ev map[string]any, users ...int64) {
	b := broadcast{Invalidate: users, Users: users}
	if ev != nil {
		b.Event = mustJSON(ev)
	} else {
		b.Users = nil
	}
	s.publish(ctx, b)
}
