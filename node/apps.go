package node

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"time"

	"github.com/parley-p2p/parley/apps/appmux"
	"github.com/parley-p2p/parley/apps/chat"
	"github.com/parley-p2p/parley/apps/files"
	"github.com/parley-p2p/parley/apps/tunnel"
	"github.com/parley-p2p/parley/directory/client"
	"github.com/parley-p2p/parley/transport"
)

// This file wires Parley's applications (package apps) into the daemon:
// chat with the offline mailbox, file transfer and tunnels.
//
// Application streams are streams of the node service "app"; after the
// node's service header each continues with the appmux byte that names its
// application (docs/protocol.md §7.1), so the node keeps one routing table
// for its own services and appmux one for the applications.
//
// The applications watch the node: a goroutine per peer waits on the peer's
// changed channel and flushes the chat outbox when a session comes up, and
// one loop reads the mailbox when the server says mail is waiting (its
// "mailbox" event), when the server connection comes up and every
// AppsConfig.MailboxPoll (in case an event was missed), and retries the
// outbox of peers with undelivered messages: over a session when the peer
// is reachable, else sealed into the directory's mailbox.

// appService is the node service that carries application streams.
const appService = "app"

// Settings keys of the applications.
const (
	settingExposed    = "tunnel.exposed"    // JSON array of exposed ports
	settingAutoAccept = "files.auto_accept" // JSON array of usernames
)

// ErrPeerOffline is returned by application calls that need a session to a
// contact whose devices are all offline.
var ErrPeerOffline = errors.New("the contact is offline")

// AppsConfig configures the applications. The zero value works.
type AppsConfig struct {
	// DownloadDir receives files; "" means DATA/downloads.
	DownloadDir string
	// MailboxPoll is how often the mailbox is read while the server is
	// up, in case a "mailbox" event was missed (it is also read on that
	// event, when the server connection comes up and when a session comes
	// up); 0 means 10 s.
	MailboxPoll time.Duration
	// RetryInterval is how often undelivered messages are retried; 0
	// means 5 s.
	RetryInterval time.Duration
	// ConnectTimeout bounds setting up a session for an application; 0
	// means the punch timeout plus 5 s.
	ConnectTimeout time.Duration
}

// Apps is the daemon's applications: chat, files and tunnels on the node's
// sessions. Its methods are safe for concurrent use.
type Apps struct {
	n       *Node
	cfg     AppsConfig
	store   *chat.Store
	chat    *chat.Service
	files   *files.Service
	ports   tunnel.Ports  // has its own lock
	mailNow chan struct{} // asks the loop to read the mailbox (cap 1)

	watched map[*peer]bool // peers with a watchPeer; owned by loop

	// mu protects the fields below. It is a leaf lock: Node.mu is never
	// taken while it is held.
	mu         sync.Mutex
	autoAccept []string
	progress   map[files.ID]files.Progress
	accepting  map[files.ID]bool
	acceptErr  map[files.ID]string
	mailed     map[mailKey]bool // posted to the mailbox (in memory: a repost after a restart is deduplicated by ID)
	retrying   map[string]bool  // contacts with a flush running
}

// mailKey is a message sealed to one device: posted once to its mailbox.
type mailKey struct {
	dev transport.PublicKey
	id  chat.ID
}

// EnableApps starts the applications on n: it registers the "app" stream
// service and starts the goroutines that deliver chat messages. Call it
// once, after New and before Run; the applications stop when the node
// closes.
func (n *Node) EnableApps(cfg AppsConfig) (*Apps, error) {
	if cfg.MailboxPoll <= 0 {
		cfg.MailboxPoll = 10 * time.Second
	}
	if cfg.RetryInterval <= 0 {
		cfg.RetryInterval = 5 * time.Second
	}
	if cfg.ConnectTimeout <= 0 {
		cfg.ConnectTimeout = n.cfg.punchTimeout() + 5*time.Second
	}
	if cfg.DownloadDir == "" {
		cfg.DownloadDir = filepath.Join(n.dir, "downloads")
	}
	a := &Apps{
		n:         n,
		cfg:       cfg,
		mailNow:   make(chan struct{}, 1),
		progress:  map[files.ID]files.Progress{},
		accepting: map[files.ID]bool{},
		mailed:    map[mailKey]bool{},
		retrying:  map[string]bool{},
		watched:   map[*peer]bool{},
		acceptErr: map[files.ID]string{},
	}
	n.handlersMu.Lock()
	n.onMailbox = a.kickMail
	n.handlersMu.Unlock()
	ctx := n.ctx
	var err error
	if a.store, err = chat.NewStore(ctx, n.st.db); err != nil {
		return nil, fmt.Errorf("open chat history: %w", err)
	}
	a.chat = chat.NewService(chat.Config{
		Store:   a.store,
		Session: a.session,
		Logger:  n.log.With("part", "chat"),
	})
	if v, _ := n.st.setting(ctx, settingExposed); v != "" {
		if err := json.Unmarshal([]byte(v), &a.ports); err != nil {
			n.log.Warn("exposed ports unreadable; exposing none", "err", err)
		}
	}
	if v, _ := n.st.setting(ctx, settingAutoAccept); v != "" {
		json.Unmarshal([]byte(v), &a.autoAccept)
	}
	a.files, err = files.New(files.Config{
		Dir:        cfg.DownloadDir,
		StateDir:   filepath.Join(n.dir, "transfers"),
		Session:    a.session,
		AutoAccept: func(t files.Transfer) bool { return a.AutoAccepts(t.Peer) },
		Progress:   a.onProgress,
		Logger:     n.log.With("part", "files"),
	})
	if err != nil {
		return nil, err
	}
	n.Handle(appService, a.serveStream)
	n.goroutine(a.loop)
	n.goroutine(func(ctx context.Context) {
		<-ctx.Done()
		a.files.Close()
	})
	return a, nil
}

// Node is the node the applications run on.
func (a *Apps) Node() *Node { return a.n }

// Chat is the chat service.
func (a *Apps) Chat() *chat.Service { return a.chat }

// ChatStore is the chat history.
func (a *Apps) ChatStore() *chat.Store { return a.store }

// Files is the file transfer service.
func (a *Apps) Files() *files.Service { return a.files }

// appOpener opens application streams on one session.
type appOpener struct{ s *transport.Session }

func (o appOpener) OpenStream(ctx context.Context) (*transport.Stream, error) {
	return openService(ctx, o.s, appService)
}

// session returns an opener on the session with username's device,
// connecting if the contact is online (or the server cannot tell). It fails
// at once with ErrPeerOffline when the server says every device of theirs is
// offline, so that the chat outbox goes to the mailbox without waiting.
func (a *Apps) session(ctx context.Context, username string) (appmux.Opener, error) {
	n := a.n
	p, err := n.pickPeer(username)
	if err != nil {
		return nil, err
	}
	n.mu.Lock()
	s := p.liveLocked()
	offline := !p.online && n.serverUp
	n.mu.Unlock()
	if s != nil {
		return appOpener{s}, nil
	}
	if offline {
		return nil, fmt.Errorf("%s: %w", username, ErrPeerOffline)
	}
	cctx, cancel := context.WithTimeout(ctx, a.cfg.ConnectTimeout)
	defer cancel()
	s, err = n.Connect(cctx, username)
	if err != nil {
		return nil, err
	}
	return appOpener{s}, nil
}

// serveStream routes an application stream by its appmux byte.
func (a *Apps) serveStream(p Peer, st *transport.Stream) {
	st.SetReadDeadline(time.Now().Add(10 * time.Second))
	app, err := appmux.Accept(st)
	if err != nil {
		st.CloseRead(codeUnknownService)
		st.Reset(codeUnknownService)
		return
	}
	st.SetReadDeadline(time.Time{})
	ctx := a.n.ctx
	switch app {
	case appmux.Chat:
		err = a.chat.HandleStream(ctx, st, p.Username)
	case appmux.File:
		err = a.files.HandleStream(ctx, st, p.Username)
	case appmux.Tunnel:
		err = tunnel.Serve(st, &a.ports, tunnel.DialLocal)
	}
	if err != nil && !errors.Is(err, io.EOF) {
		a.n.log.Debug("application stream", "app", app, "peer", p.Username, "err", err)
	}
}

// loop watches peers for new sessions, reads the mailbox and retries the
// outbox.
func (a *Apps) loop(ctx context.Context) {
	n := a.n
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	var lastMail, lastRetry time.Time
	wasUp := false
	for {
		n.mu.Lock()
		up := n.serverUp && n.dc != nil
		var fresh []*peer
		for _, p := range n.peers {
			if !a.watched[p] {
				a.watched[p] = true
				fresh = append(fresh, p)
			}
		}
		n.mu.Unlock()
		for _, p := range fresh {
			n.goroutine(func(ctx context.Context) { a.watchPeer(ctx, p) })
		}
		now := time.Now()
		mailNow := false
		select {
		case <-a.mailNow:
			mailNow = true
		default:
		}
		if up && (!wasUp || mailNow || now.Sub(lastMail) >= a.cfg.MailboxPoll) {
			lastMail = now
			if err := a.fetchMail(ctx); err != nil && ctx.Err() == nil {
				n.log.Debug("read mailbox", "err", err)
			}
		}
		wasUp = up
		if now.Sub(lastRetry) >= a.cfg.RetryInterval {
			lastRetry = now
			a.retryOutbox(ctx)
		}
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		case <-a.mailNow:
			select { // put it back for the top of the loop
			case a.mailNow <- struct{}{}:
			default:
			}
		}
	}
}

func (a *Apps) kickMail() {
	select {
	case a.mailNow <- struct{}{}:
	default:
	}
}

// watchPeer flushes the chat outbox to p each time a session with it comes
// up, and reads the mailbox then (a contact that just connected may have
// left messages while we could not be reached).
func (a *Apps) watchPeer(ctx context.Context, p *peer) {
	n := a.n
	var last *transport.Session
	for {
		n.mu.Lock()
		s := p.liveLocked()
		ch := p.changed
		username := p.username
		n.mu.Unlock()
		if s != nil && s != last {
			last = s
			a.kickMail()
			a.flush(ctx, username)
		}
		select {
		case <-ctx.Done():
			return
		case <-ch:
		}
	}
}

// flush delivers username's outbox on a goroutine of its own, one at a
// time per contact.
func (a *Apps) flush(ctx context.Context, username string) {
	a.mu.Lock()
	busy := a.retrying[username]
	a.retrying[username] = true
	a.mu.Unlock()
	if busy {
		return
	}
	a.n.goroutine(func(ctx context.Context) {
		defer func() {
			a.mu.Lock()
			delete(a.retrying, username)
			a.mu.Unlock()
		}()
		err := a.chat.Flush(ctx, username)
		if err == nil {
			return
		}
		a.n.log.Debug("chat: outbox not delivered", "peer", username, "err", err)
		// Unreachable (offline, or no path at all): the mailbox carries
		// it, sealed, until a session acknowledges it.
		if err := a.mailOutbox(ctx, username); err != nil && ctx.Err() == nil {
			a.n.log.Debug("chat: mailbox", "peer", username, "err", err)
		}
	})
}

// retryOutbox retries every contact with undelivered messages.
func (a *Apps) retryOutbox(ctx context.Context) {
	peers, err := a.store.OutboxPeers(ctx)
	if err != nil {
		return
	}
	for _, u := range peers {
		a.flush(ctx, u)
	}
}

// SendMessage sends text to username: over the session if the contact can
// be reached, else sealed into the directory's mailbox. The message is in
// the persisted outbox before anything is sent and stays there until the
// contact's device acknowledges it.
func (a *Apps) SendMessage(ctx context.Context, username, text string) (chat.Message, error) {
	if _, err := a.n.pickPeer(username); err != nil {
		return chat.Message{}, err
	}
	m, err := a.chat.Send(ctx, username, text)
	if err != nil {
		return m, err
	}
	if m.State == chat.Pending {
		if err := a.mailOutbox(ctx, username); err != nil {
			a.n.log.Debug("chat: mailbox", "peer", username, "err", err)
		}
		if cur, err := a.store.Message(ctx, username, true, m.ID); err == nil {
			m = cur
		}
	}
	return m, nil
}

// mailOutbox seals username's outbox to each of their devices and posts
// what was not posted already to the directory's mailbox.
func (a *Apps) mailOutbox(ctx context.Context, username string) error {
	n := a.n
	n.mu.Lock()
	dc, up := n.dc, n.serverUp
	var devs []transport.PublicKey
	for _, p := range n.peers {
		if p.username == username && p.mutual {
			devs = append(devs, p.key)
		}
	}
	n.mu.Unlock()
	if dc == nil || !up {
		return errServerAbsent
	}
	for _, d := range devs {
		sealed, err := a.chat.SealOutbox(ctx, username, d, n.key)
		if err != nil {
			return err
		}
		for _, s := range sealed {
			k := mailKey{d, s.ID}
			a.mu.Lock()
			done := a.mailed[k]
			a.mu.Unlock()
			if done {
				continue
			}
			if _, err := dc.PutMail(ctx, client.Key(d), s.Blob); err != nil {
				return n.dirErr(err, username)
			}
			a.mu.Lock()
			a.mailed[k] = true
			a.mu.Unlock()
			n.log.Info("chat: message sealed into the mailbox", "peer", username, "device", d.Short(), "id", s.ID)
		}
	}
	return nil
}

// fetchMail reads the device's mailbox, stores each message once and
// acknowledges what it handled.
func (a *Apps) fetchMail(ctx context.Context) error {
	n := a.n
	dc, err := n.dirClient()
	if err != nil {
		return err
	}
	mail, err := dc.Mail(ctx)
	if err != nil {
		return err
	}
	if len(mail) == 0 {
		return nil
	}
	var ack []int64
	refreshed := false
	for _, m := range mail {
		key := transport.PublicKey(m.FromDevice)
		known := func() bool {
			n.mu.Lock()
			defer n.mu.Unlock()
			p := n.peers[key]
			return p != nil && p.mutual && p.username == m.From
		}
		if !known() && !refreshed {
			refreshed = true
			n.refreshContacts(ctx)
		}
		if !known() {
			n.log.Info("chat: dropping mail from a device that is not a contact's", "from", m.From)
			ack = append(ack, m.ID)
			continue
		}
		msg, err := a.chat.ReceiveSealed(ctx, m.From, key, n.key, m.Blob)
		switch {
		case errors.Is(err, chat.ErrSealed), errors.Is(err, chat.ErrWrongSender):
			n.log.Info("chat: dropping mail that does not open", "from", m.From, "err", err)
		case err != nil:
			return err // the store failed: keep the mail for later
		default:
			n.log.Info("chat: message from the mailbox", "peer", m.From, "id", msg.ID)
		}
		ack = append(ack, m.ID)
	}
	_, err = dc.AckMail(ctx, ack)
	return err
}

// Expose lets contacts tunnel to port on this machine, and remembers it.
func (a *Apps) Expose(ctx context.Context, port uint16) error {
	a.ports.Expose(port)
	return a.savePorts(ctx)
}

// Unexpose stops serving port to new tunnels.
func (a *Apps) Unexpose(ctx context.Context, port uint16) error {
	a.ports.Unexpose(port)
	return a.savePorts(ctx)
}

// Exposed lists the exposed ports.
func (a *Apps) Exposed() []uint16 { return a.ports.List() }

func (a *Apps) savePorts(ctx context.Context) error {
	b, err := json.Marshal(&a.ports)
	if err != nil {
		return err
	}
	return a.n.st.setSetting(ctx, settingExposed, string(b))
}

// Tunnel connects to port on username's machine. A refusal is a sentence
// naming the contact ("bob does not expose port 25").
func (a *Apps) Tunnel(ctx context.Context, username string, port uint16) (net.Conn, error) {
	o, err := a.session(ctx, username)
	if err != nil {
		return nil, err
	}
	c, err := tunnel.Connect(ctx, o, port)
	var re *tunnel.RefusedError
	if errors.As(err, &re) {
		return nil, errors.New(re.Message(username))
	}
	return c, err
}

// SetAutoAccept sets whether files offered by username are downloaded
// without asking.
func (a *Apps) SetAutoAccept(ctx context.Context, username string, on bool) error {
	a.mu.Lock()
	l := slices.DeleteFunc(slices.Clone(a.autoAccept), func(s string) bool { return s == username })
	if on {
		l = append(l, username)
		slices.Sort(l)
	}
	a.autoAccept = l
	b, _ := json.Marshal(l)
	a.mu.Unlock()
	return a.n.st.setSetting(ctx, settingAutoAccept, string(b))
}

// AutoAccepts reports whether files from username are accepted without
// asking.
func (a *Apps) AutoAccepts(username string) bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	return slices.Contains(a.autoAccept, username)
}

// AutoAcceptList lists the contacts whose files are accepted without asking.
func (a *Apps) AutoAcceptList() []string {
	a.mu.Lock()
	defer a.mu.Unlock()
	return slices.Clone(a.autoAccept)
}

func (a *Apps) onProgress(p files.Progress) {
	a.mu.Lock()
	a.progress[p.ID] = p
	a.mu.Unlock()
}

// TransferStatus is a transfer with its latest progress.
type TransferStatus struct {
	files.Transfer
	// Done is the bytes present at the receiver; Rate is bytes per
	// second; ETA is the time left (0 when unknown or done).
	Done   int64         `json:"done"`
	Rate   float64       `json:"rate"`
	ETA    time.Duration `json:"eta"`
	Active bool          `json:"active"` // bytes are moving now
}

func (a *Apps) status(t files.Transfer) TransferStatus {
	a.mu.Lock()
	defer a.mu.Unlock()
	ts := TransferStatus{Transfer: t}
	if p, ok := a.progress[t.ID]; ok {
		ts.Done, ts.Rate, ts.ETA = p.Done, p.Rate, p.ETA
		ts.Active = p.Done < p.Size && (t.State == files.Receiving || t.State == files.Sending)
	}
	if t.State == files.Done {
		ts.Done, ts.ETA, ts.Active = t.Size, 0, false
	}
	if ts.Error == "" {
		ts.Error = a.acceptErr[t.ID]
	}
	return ts
}

// Transfers lists every transfer with its progress, oldest first.
func (a *Apps) Transfers() []TransferStatus {
	var l []TransferStatus
	for _, t := range a.files.Transfers() {
		l = append(l, a.status(t))
	}
	return l
}

// Transfer returns one transfer with its progress.
func (a *Apps) Transfer(id files.ID) (TransferStatus, bool) {
	t, ok := a.files.Transfer(id)
	if !ok {
		return TransferStatus{}, false
	}
	return a.status(t), true
}

// SendFile offers the file at path to username.
func (a *Apps) SendFile(ctx context.Context, username, path string) (files.Transfer, error) {
	if _, err := a.n.pickPeer(username); err != nil {
		return files.Transfer{}, err
	}
	abs, err := filepath.Abs(path)
	if err != nil {
		return files.Transfer{}, err
	}
	fi, err := os.Stat(abs)
	if err != nil {
		return files.Transfer{}, err
	}
	if !fi.Mode().IsRegular() {
		return files.Transfer{}, fmt.Errorf("%s is not a regular file", path)
	}
	return a.files.Send(ctx, username, abs)
}

// AcceptFile starts downloading an offered file in the daemon and returns
// at once; Transfer shows its progress. The download carries on if the
// caller goes away, and a failed one can be accepted again (it resumes).
func (a *Apps) AcceptFile(id files.ID) error {
	t, ok := a.files.Transfer(id)
	if !ok || t.Direction != files.Incoming {
		return files.ErrUnknown
	}
	if t.State == files.Done {
		return nil
	}
	a.mu.Lock()
	busy := a.accepting[id]
	a.accepting[id] = true
	delete(a.acceptErr, id)
	a.mu.Unlock()
	if busy {
		return nil
	}
	a.n.goroutine(func(ctx context.Context) {
		_, err := a.files.Accept(ctx, id)
		a.mu.Lock()
		delete(a.accepting, id)
		if err != nil {
			a.acceptErr[id] = err.Error()
		}
		a.mu.Unlock()
		if err != nil {
			a.n.log.Info("files: download stopped", "id", id, "err", err)
		}
	})
	return nil
}

// DeclineFile declines an offered file.
func (a *Apps) DeclineFile(ctx context.Context, id files.ID) error {
	return a.files.Decline(ctx, id)
}
