// Package chat is Parley's messaging: `parley msg`, `parley chat` and
// `parley history`.
//
// Every message has a 128-bit random ID and is written to the local SQLite
// store before anything is sent: an outgoing message sits in the outbox
// until the peer's device acknowledges it, so a crash or a dead session
// loses nothing, and the receiver stores each ID once, so a retried or
// relayed copy is shown once. Messages travel on chat streams of the
// session between the two devices (appmux.Chat) with delivery and read
// acknowledgements and typing indicators; for a peer that is offline, Seal
// encrypts a message end to end to its device key for the directory's
// mailbox. The wire formats are in docs/protocol.md §7.2.
//
// A Service is the whole application: it sends, answers incoming streams
// (HandleStream), flushes the outbox when the daemon reconnects to a peer
// (Flush), and publishes events (Subscribe) that a terminal UI and the web
// UI both render.
package chat

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/parley-p2p/parley/apps/appmux"
	"github.com/parley-p2p/parley/transport"
)

// State is a message's delivery state. It only moves forward:
//
//	outgoing: Pending ─written to a stream or mailbox→ Sent ─ACK delivered→ Delivered ─ACK read→ Read
//	incoming: Delivered (stored) ─MarkRead→ Read
//
// An ACK may skip states (a read receipt can arrive for a Pending message
// whose delivery ACK was lost with its session).
type State uint8

const (
	Pending   State = 0 // stored in the outbox, not yet handed to the peer
	Sent      State = 1 // handed to a session or the mailbox, not yet acknowledged
	Delivered State = 2 // stored on the peer's device
	Read      State = 3 // shown to the peer
)

func (s State) String() string {
	switch s {
	case Pending:
		return "pending"
	case Sent:
		return "sent"
	case Delivered:
		return "delivered"
	case Read:
		return "read"
	}
	return fmt.Sprintf("state(%d)", uint8(s))
}

// Message is one chat message, either way.
type Message struct {
	ID       ID
	Peer     string // the contact, as the daemon names it
	Outgoing bool
	Body     string
	Time     time.Time // when the sender wrote it, by the sender's clock
	Stored   time.Time // when this device stored it
	State    State
}

// EventKind says what an Event reports.
type EventKind uint8

const (
	EventMessage EventKind = iota + 1 // a new message, either way
	EventState                        // an outgoing message's State moved forward
	EventTyping                       // the peer is typing
)

// Event is what a UI renders. Message is set for EventMessage and
// EventState.
type Event struct {
	Kind    EventKind
	Peer    string
	Message Message
}

// Config configures a Service. Store and Session are required.
type Config struct {
	Store *Store
	// Session returns the session to peer, or an error when the peer is
	// offline; the service then keeps messages in the outbox.
	Session func(ctx context.Context, peer string) (appmux.Opener, error)
	// DeliveryTimeout bounds one delivery attempt; 0 means 30 s.
	DeliveryTimeout time.Duration
	// TypingInterval is the least time between two typing indicators to
	// one peer; 0 means 3 s.
	TypingInterval time.Duration
	// Logger receives the service's logs; nil means slog.Default().
	Logger *slog.Logger
}

// Service is the chat application. Its methods are safe for concurrent
// use.
type Service struct {
	cfg Config
	log *slog.Logger

	mu         sync.Mutex // protects the fields below; never held during I/O
	peers      map[string]*peerState
	subs       map[chan Event]bool
	dropped    uint64 // events dropped for slow subscribers
	lastTyping map[string]time.Time
}

// peerState serialises deliveries to one peer, so that a Send and a Flush
// do not both write the outbox at once.
type peerState struct {
	deliver sync.Mutex
}

// NewService returns a service on cfg.
func NewService(cfg Config) *Service {
	if cfg.DeliveryTimeout == 0 {
		cfg.DeliveryTimeout = 30 * time.Second
	}
	if cfg.TypingInterval == 0 {
		cfg.TypingInterval = 3 * time.Second
	}
	s := &Service{
		cfg:        cfg,
		log:        cfg.Logger,
		peers:      make(map[string]*peerState),
		subs:       make(map[chan Event]bool),
		lastTyping: make(map[string]time.Time),
	}
	if s.log == nil {
		s.log = slog.Default()
	}
	return s
}

// Subscribe returns a channel of events with room for buf of them, and a
// function that ends the subscription. Events are never allowed to block
// the service: a subscriber that falls more than buf behind loses events
// (and should reload the history).
func (s *Service) Subscribe(buf int) (<-chan Event, func()) {
	c := make(chan Event, buf)
	s.mu.Lock()
	s.subs[c] = true
	s.mu.Unlock()
	var once sync.Once
	return c, func() {
		once.Do(func() {
			s.mu.Lock()
			delete(s.subs, c)
			s.mu.Unlock()
		})
	}
}

func (s *Service) publish(e Event) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for c := range s.subs {
		select {
		case c <- e:
		default:
			s.dropped++
		}
	}
}

func (s *Service) peer(name string) *peerState {
	s.mu.Lock()
	defer s.mu.Unlock()
	p := s.peers[name]
	if p == nil {
		p = new(peerState)
		s.peers[name] = p
	}
	return p
}

// ErrEmpty is returned by Send for an empty message.
var ErrEmpty = errors.New("chat: empty message")

// Send writes a message to peer into the store and the outbox, then tries
// to deliver the outbox. It returns the message as it stands: Delivered if
// the peer acknowledged it at once, Pending if the peer could not be
// reached (it stays in the outbox for Flush or the mailbox). Only a failure
// to store the message is an error.
func (s *Service) Send(ctx context.Context, peer, text string) (Message, error) {
	text = strings.TrimRight(text, "\r\n")
	switch {
	case strings.TrimSpace(text) == "":
		return Message{}, ErrEmpty
	case len(text) > MaxBody:
		return Message{}, fmt.Errorf("chat: message of %d bytes is longer than %d", len(text), MaxBody)
	case !utf8.ValidString(text):
		return Message{}, errors.New("chat: message is not UTF-8")
	}
	m := Message{Peer: peer, Outgoing: true, Body: text, Time: time.Now(), State: Pending}
	rand.Read(m.ID[:])
	if err := s.cfg.Store.Enqueue(ctx, m); err != nil {
		return Message{}, err
	}
	m.Time = timeMilli(m.Time.UnixMilli())
	s.publish(Event{Kind: EventMessage, Peer: peer, Message: m})
	if err := s.Flush(ctx, peer); err != nil {
		s.log.Debug("chat: message queued", "peer", peer, "id", m.ID, "err", err)
	}
	if cur, err := s.cfg.Store.Message(ctx, peer, true, m.ID); err == nil {
		m = cur
	}
	return m, nil
}

// Flush delivers peer's outbox and pending read receipts over the peer's
// session. The daemon calls it when a session to peer comes up; Send calls
// it too. Messages not acknowledged stay in the outbox.
func (s *Service) Flush(ctx context.Context, peer string) error {
	p := s.peer(peer)
	p.deliver.Lock()
	defer p.deliver.Unlock()
	msgs, err := s.cfg.Store.Outbox(ctx, peer)
	if err != nil {
		return err
	}
	receipts, err := s.cfg.Store.PendingReceipts(ctx, peer)
	if err != nil {
		return err
	}
	if len(msgs) == 0 && len(receipts) == 0 {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, s.cfg.DeliveryTimeout)
	defer cancel()
	conn, err := s.open(ctx, peer)
	if err != nil {
		return err
	}
	defer conn.Close()
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	defer stop()

	// Read the answers while writing, so that neither side's buffers
	// decide whether a long outbox goes through.
	acks := make(chan error, 1)
	go func() { acks <- s.readFrames(ctx, conn, peer, nil) }()

	var frame []byte
	for _, m := range msgs {
		frame, err = appendFrame(frame[:0], frameMsg, msgBody{ID: m.ID, TS: m.Time.UnixMilli(), Body: m.Body})
		if err == nil {
			_, err = conn.Write(frame)
		}
		if err != nil {
			conn.Close()
			<-acks
			return fmt.Errorf("chat: deliver to %s: %w", peer, err)
		}
		s.advance(ctx, peer, m.ID, Sent)
	}
	for _, id := range receipts {
		frame, _ = appendFrame(frame[:0], frameAck, ackBody{ID: id, State: "read"})
		if _, err := conn.Write(frame); err != nil {
			conn.Close()
			<-acks
			return fmt.Errorf("chat: deliver to %s: %w", peer, err)
		}
	}
	appmux.CloseWrite(conn)
	if err := <-acks; err != nil {
		if ctx.Err() != nil {
			err = ctx.Err()
		}
		return fmt.Errorf("chat: deliver to %s: %w", peer, err)
	}
	// The peer's FIN: it processed every frame, receipts included.
	return s.cfg.Store.ReceiptsDelivered(ctx, peer, receipts)
}

// MarkRead marks every message from peer as read and sends the read
// receipts (now, or with the next Flush).
func (s *Service) MarkRead(ctx context.Context, peer string) error {
	ids, err := s.cfg.Store.MarkRead(ctx, peer)
	if err != nil || len(ids) == 0 {
		return err
	}
	return s.Flush(ctx, peer)
}

// Typing tells peer that the user is typing, at most once per
// TypingInterval; a UI calls it on every keystroke. It is best effort: an
// offline peer is not told.
func (s *Service) Typing(ctx context.Context, peer string) error {
	now := time.Now()
	s.mu.Lock()
	if now.Sub(s.lastTyping[peer]) < s.cfg.TypingInterval {
		s.mu.Unlock()
		return nil
	}
	s.lastTyping[peer] = now
	s.mu.Unlock()
	conn, err := s.open(ctx, peer)
	if err != nil {
		return err
	}
	defer conn.Close()
	frame, _ := appendFrame(nil, frameTyping, struct{}{})
	_, err = conn.Write(frame)
	return err
}

func (s *Service) open(ctx context.Context, peer string) (net.Conn, error) {
	sess, err := s.cfg.Session(ctx, peer)
	if err != nil {
		return nil, err
	}
	return appmux.Open(ctx, sess, appmux.Chat)
}

// HandleStream answers one chat stream from peer whose appmux header has
// been read: it stores the messages (once each), acknowledges them,
// applies acknowledgements and typing indicators, and publishes events. It
// closes conn.
func (s *Service) HandleStream(ctx context.Context, conn net.Conn, peer string) error {
	defer conn.Close()
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	defer stop()
	conn.SetReadDeadline(time.Now().Add(s.cfg.DeliveryTimeout))
	if err := s.readFrames(ctx, conn, peer, conn); err != nil {
		return err
	}
	return appmux.CloseWrite(conn)
}

// readFrames processes frames from conn until EOF. MSG frames are stored
// and, when reply is set, acknowledged on it.
func (s *Service) readFrames(ctx context.Context, conn net.Conn, peer string, reply io.Writer) error {
	var out []byte
	for {
		typ, body, err := readFrame(conn)
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
		switch typ {
		case frameMsg:
			var b msgBody
			if err := json.Unmarshal(body, &b); err != nil {
				return fmt.Errorf("%w: %v", errMalformed, err)
			}
			if err := b.check(); err != nil {
				return err
			}
			if err := s.receive(ctx, peer, Message{ID: b.ID, Time: timeMilli(b.TS), Body: b.Body}); err != nil {
				return err
			}
			if reply == nil {
				continue
			}
			out, _ = appendFrame(out[:0], frameAck, ackBody{ID: b.ID, State: "delivered"})
			if _, err := reply.Write(out); err != nil {
				return err
			}
		case frameAck:
			var b ackBody
			if err := json.Unmarshal(body, &b); err != nil {
				return fmt.Errorf("%w: %v", errMalformed, err)
			}
			switch b.State {
			case "delivered":
				s.advance(ctx, peer, b.ID, Delivered)
			case "read":
				s.advance(ctx, peer, b.ID, Read)
			default:
				// A newer peer's state: ignore it.
			}
		case frameTyping:
			s.publish(Event{Kind: EventTyping, Peer: peer})
		default:
			// Unknown frames are skipped: a newer peer may send more.
		}
	}
}

// receive stores an incoming message and publishes it if it is new.
func (s *Service) receive(ctx context.Context, peer string, m Message) error {
	m.Peer, m.Outgoing, m.State = peer, false, Delivered
	m.Stored = time.Now()
	isNew, err := s.cfg.Store.Receive(ctx, m)
	if err != nil {
		return err
	}
	if isNew {
		s.publish(Event{Kind: EventMessage, Peer: peer, Message: m})
	}
	return nil
}

func (s *Service) advance(ctx context.Context, peer string, id ID, st State) {
	changed, err := s.cfg.Store.Advance(ctx, peer, id, st)
	if err != nil {
		s.log.Warn("chat: cannot update message state", "peer", peer, "id", id, "err", err)
		return
	}
	if !changed {
		return
	}
	m, err := s.cfg.Store.Message(ctx, peer, true, id)
	if err != nil {
		return
	}
	s.publish(Event{Kind: EventState, Peer: peer, Message: m})
}

// Sealed is an outgoing message sealed for the mailbox.
type Sealed struct {
	ID   ID
	Blob []byte
}

// SealOutbox seals peer's undelivered messages to the peer's device key
// for the directory's mailbox and marks them Sent. They stay in the outbox:
// the peer's acknowledgement on a later session takes them out, and the
// peer stores a message it received both ways once.
func (s *Service) SealOutbox(ctx context.Context, peer string, recipient transport.PublicKey, sender transport.PrivateKey) ([]Sealed, error) {
	msgs, err := s.cfg.Store.Outbox(ctx, peer)
	if err != nil {
		return nil, err
	}
	var l []Sealed
	for _, m := range msgs {
		blob, err := Seal(recipient, sender, m)
		if err != nil {
			return nil, err
		}
		l = append(l, Sealed{ID: m.ID, Blob: blob})
		s.advance(ctx, peer, m.ID, Sent)
	}
	return l, nil
}

// ErrWrongSender is returned by ReceiveSealed for a blob sealed by another
// device than the one the directory named.
var ErrWrongSender = errors.New("chat: sealed message is not from the expected device")

// ReceiveSealed opens a mailbox blob that the directory says peer's device
// from sent, and stores the message (once, however often it arrives, and
// whether or not it also came over a session).
func (s *Service) ReceiveSealed(ctx context.Context, peer string, from transport.PublicKey, key transport.PrivateKey, blob []byte) (Message, error) {
	sender, m, err := Unseal(key, blob)
	if err != nil {
		return Message{}, err
	}
	if sender != from {
		return Message{}, ErrWrongSender
	}
	if err := s.receive(ctx, peer, m); err != nil {
		return Message{}, err
	}
	return s.cfg.Store.Message(ctx, peer, false, m.ID)
}

func timeMilli(ms int64) time.Time { return time.UnixMilli(ms) }
