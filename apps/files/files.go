// Package files offers and transfers files between devices: `parley send
// bob FILE`, `parley files accept ID`.
//
// The sender offers a file (ID, name, size) on a stream; the receiver keeps
// the offer until it is accepted, by the user or automatically, and then
// asks for the bytes from an offset on a new stream (GET): the sender seeks
// there and sends the rest, then the SHA-256 of the whole file. The receiver
// appends to NAME.ID.partial in its download directory, so that an
// interrupted transfer resumes where the partial file ends, and verifies the
// hash before it renames the file into place under a name that replaces no
// existing file. Neither side holds more than a fixed buffer of the file in
// memory, whatever its size; resuming re-reads the prefix on both sides to
// hash it rather than trusting saved hash state. Transfers are recorded as
// JSON files so that a restarted daemon can resume them. The wire format is
// in docs/protocol.md §7.3.
package files

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/parley-p2p/parley/apps/appmux"
)

const (
	// bufferSize is the one buffer each transfer copies through.
	bufferSize = 64 << 10
	// requestTimeout bounds reading a request and answering an offer.
	requestTimeout = 15 * time.Second
	// maxPendingOffers bounds the incoming offers kept per service.
	maxPendingOffers = 1000
	// progressEvery throttles Progress callbacks.
	progressEvery = 200 * time.Millisecond
)

// ErrChecksum is returned by Accept when the received file does not match
// the sender's SHA-256. The partial file is removed, so accepting again
// starts over.
var ErrChecksum = errors.New("files: SHA-256 mismatch, the download will restart from the beginning")

// ErrUnknown is returned for a transfer ID the service does not know.
var ErrUnknown = errors.New("files: no such transfer")

// ErrBusy is returned by Accept for a transfer already being received.
var ErrBusy = errors.New("files: transfer already in progress")

// Direction says which way a transfer goes.
type Direction uint8

const (
	Outgoing Direction = iota + 1
	Incoming
)

func (d Direction) String() string {
	switch d {
	case Outgoing:
		return "outgoing"
	case Incoming:
		return "incoming"
	}
	return fmt.Sprintf("direction(%d)", uint8(d))
}

// State is a transfer's state.
//
//	incoming: Offered ─Accept→ Receiving ─verified→ Done
//	             │                 │  ╰─interrupted: stays Receiving (Accept resumes)
//	             │                 ╰─SHA-256 mismatch→ Failed ─Accept→ Receiving (from 0)
//	             ╰─Decline→ Declined
//	outgoing: Offered ─GET→ Sending ─receiver verified→ Done
//	             ╰─peer declined→ Declined       (an interrupted GET returns to Offered)
type State uint8

const (
	Offered State = iota + 1
	Receiving
	Sending
	Done
	Declined
	Failed
)

func (s State) String() string {
	switch s {
	case Offered:
		return "offered"
	case Receiving:
		return "receiving"
	case Sending:
		return "sending"
	case Done:
		return "done"
	case Declined:
		return "declined"
	case Failed:
		return "failed"
	}
	return fmt.Sprintf("state(%d)", uint8(s))
}

// Transfer is the record of one offered file, on either side.
type Transfer struct {
	ID        ID        `json:"id"`
	Peer      string    `json:"peer"`
	Direction Direction `json:"direction"`
	Name      string    `json:"name"` // the offered name
	Size      int64     `json:"size"`
	State     State     `json:"state"`
	// Path is, outgoing, the file offered; incoming, where it was saved
	// once Done.
	Path string `json:"path,omitempty"`
	// ModTime is, outgoing, the file's modification time when offered: a
	// file that changed since is not sent.
	ModTime time.Time `json:"mod_time,omitzero"`
	Error   string    `json:"error,omitempty"`
	Created time.Time `json:"created"`
}

// Progress reports a transfer under way, on either side.
type Progress struct {
	ID        ID
	Peer      string
	Direction Direction
	Done      int64         // bytes of the file present at the receiver, counting a resumed prefix
	Size      int64         // the file's size
	Rate      float64       // bytes per second moved in this attempt
	ETA       time.Duration // time left at Rate; 0 when unknown or done
}

// Config configures a Service. Dir is required; the zero value of every
// other field works.
type Config struct {
	// Dir is where received files are saved, and their partial files kept.
	Dir string
	// StateDir holds one JSON record per transfer. "" means Dir/.parley.
	StateDir string
	// Session returns the session to peer to open streams on (the daemon
	// connects if needed). Required for Send and Accept.
	Session func(ctx context.Context, peer string) (appmux.Opener, error)
	// AutoAccept, if set, is asked when an offer arrives; true starts the
	// download at once (for contacts the user chose).
	AutoAccept func(t Transfer) bool
	// OnOffer, if set, is told of every new incoming offer.
	OnOffer func(t Transfer)
	// Progress, if set, is called while bytes move, at most every 200 ms
	// per transfer and once at the end, on the copying goroutine: it must
	// not block.
	Progress func(Progress)
	// Logger receives the service's logs; nil means slog.Default().
	Logger *slog.Logger
}

// Service sends and receives files. Its methods are safe for concurrent
// use.
type Service struct {
	cfg Config
	log *slog.Logger

	ctx    context.Context // ends at Close: stops automatic downloads
	cancel context.CancelFunc
	wg     sync.WaitGroup // automatic downloads

	mu        sync.Mutex // protects the fields below
	transfers map[ID]*Transfer
	active    map[ID]bool // transfers with a copy under way
}

// New opens a service on cfg's directories, loading the recorded transfers.
func New(cfg Config) (*Service, error) {
	if cfg.Dir == "" {
		return nil, errors.New("files: Config.Dir is required")
	}
	if cfg.StateDir == "" {
		cfg.StateDir = filepath.Join(cfg.Dir, ".parley")
	}
	for _, d := range []string{cfg.Dir, cfg.StateDir} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return nil, fmt.Errorf("files: %w", err)
		}
	}
	s := &Service{
		cfg:       cfg,
		log:       cfg.Logger,
		transfers: make(map[ID]*Transfer),
		active:    make(map[ID]bool),
	}
	if s.log == nil {
		s.log = slog.Default()
	}
	s.ctx, s.cancel = context.WithCancel(context.Background())
	if err := s.load(); err != nil {
		return nil, err
	}
	return s, nil
}

// Close stops automatic downloads and waits for them. Partial files stay
// for a later Accept.
func (s *Service) Close() error {
	s.cancel()
	s.wg.Wait()
	return nil
}

// Transfers returns every recorded transfer, oldest first.
func (s *Service) Transfers() []Transfer {
	s.mu.Lock()
	defer s.mu.Unlock()
	l := make([]Transfer, 0, len(s.transfers))
	for _, t := range s.transfers {
		l = append(l, *t)
	}
	slices.SortFunc(l, func(a, b Transfer) int { return a.Created.Compare(b.Created) })
	return l
}

// Transfer returns the record of id.
func (s *Service) Transfer(id ID) (Transfer, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	t, ok := s.transfers[id]
	if !ok {
		return Transfer{}, false
	}
	return *t, true
}

// Send offers the file at path to peer. It returns once the peer has
// recorded the offer; the bytes move when the peer accepts.
func (s *Service) Send(ctx context.Context, peer, path string) (Transfer, error) {
	abs, err := filepath.Abs(path)
	if err != nil {
		return Transfer{}, err
	}
	fi, err := os.Stat(abs)
	if err != nil {
		return Transfer{}, fmt.Errorf("files: %w", err)
	}
	if !fi.Mode().IsRegular() {
		return Transfer{}, fmt.Errorf("files: %s is not a regular file", path)
	}
	if err := ValidName(fi.Name()); err != nil {
		return Transfer{}, err
	}
	t := &Transfer{
		Peer:      peer,
		Direction: Outgoing,
		Name:      fi.Name(),
		Size:      fi.Size(),
		State:     Offered,
		Path:      abs,
		ModTime:   fi.ModTime(),
		Created:   time.Now(),
	}
	rand.Read(t.ID[:])
	s.mu.Lock()
	s.transfers[t.ID] = t
	err = s.saveLocked(t)
	s.mu.Unlock()
	if err != nil {
		return Transfer{}, err
	}
	err = s.offer(ctx, t)
	if err != nil {
		s.setState(t.ID, Failed, err.Error())
	}
	rec, _ := s.Transfer(t.ID)
	return rec, err
}

func (s *Service) offer(ctx context.Context, t *Transfer) error {
	conn, err := s.open(ctx, t.Peer)
	if err != nil {
		return err
	}
	defer conn.Close()
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	defer stop()
	req, err := appendRequest(nil, typeOffer, offerMsg{ID: t.ID, Name: t.Name, Size: t.Size})
	if err != nil {
		return err
	}
	if _, err := conn.Write(req); err != nil {
		return s.ctxErr(ctx, err)
	}
	conn.SetReadDeadline(time.Now().Add(requestTimeout))
	if err := readResponse(conn); err != nil {
		return s.ctxErr(ctx, fmt.Errorf("offer %s: %w", t.Name, err))
	}
	return nil
}

func (s *Service) open(ctx context.Context, peer string) (net.Conn, error) {
	if s.cfg.Session == nil {
		return nil, errors.New("files: Config.Session is not set")
	}
	sess, err := s.cfg.Session(ctx, peer)
	if err != nil {
		return nil, err
	}
	return appmux.Open(ctx, sess, appmux.File)
}

func (s *Service) ctxErr(ctx context.Context, err error) error {
	if ctx.Err() != nil {
		return ctx.Err()
	}
	return err
}

// Decline declines an incoming offer and tells the sender (if it can).
func (s *Service) Decline(ctx context.Context, id ID) error {
	s.mu.Lock()
	t, ok := s.transfers[id]
	if !ok || t.Direction != Incoming {
		s.mu.Unlock()
		return ErrUnknown
	}
	if s.active[id] {
		s.mu.Unlock()
		return ErrBusy
	}
	peer := t.Peer
	t.State = Declined
	err := s.saveLocked(t)
	s.mu.Unlock()
	os.Remove(s.partialPath(t))
	if err != nil {
		return err
	}
	conn, err := s.open(ctx, peer)
	if err != nil {
		return err
	}
	defer conn.Close()
	req, _ := appendRequest(nil, typeDecline, declineMsg{ID: id})
	if _, err := conn.Write(req); err != nil {
		return err
	}
	conn.SetReadDeadline(time.Now().Add(requestTimeout))
	return readResponse(conn)
}

// HandleStream answers one file stream from peer whose appmux header has
// been read: an offer, a request for bytes, or a decline. It closes conn.
func (s *Service) HandleStream(ctx context.Context, conn net.Conn, peer string) error {
	defer conn.Close()
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	defer stop()
	conn.SetReadDeadline(time.Now().Add(requestTimeout))
	typ, body, err := readRequest(conn)
	if err != nil {
		if errors.Is(err, errBadRequest) {
			conn.Write(appendResponse(nil, StatusBadRequest, err.Error()))
		}
		return err
	}
	conn.SetReadDeadline(time.Time{})
	reply := func(st Status, reason string) error {
		_, err := conn.Write(appendResponse(nil, st, reason))
		return err
	}
	switch typ {
	case typeOffer:
		var m offerMsg
		if err := json.Unmarshal(body, &m); err != nil || m.Size < 0 {
			return reply(StatusBadRequest, "malformed offer")
		}
		st, reason := s.takeOffer(peer, m)
		return reply(st, reason)
	case typeGet:
		var m getMsg
		if err := json.Unmarshal(body, &m); err != nil {
			return reply(StatusBadRequest, "malformed get")
		}
		return s.serveGet(conn, peer, m)
	case typeDecline:
		var m declineMsg
		if err := json.Unmarshal(body, &m); err != nil {
			return reply(StatusBadRequest, "malformed decline")
		}
		s.mu.Lock()
		t, ok := s.transfers[m.ID]
		if ok && t.Direction == Outgoing && t.Peer == peer {
			t.State = Declined
			s.saveLocked(t)
		}
		s.mu.Unlock()
		return reply(StatusOK, "")
	default:
		return reply(StatusBadRequest, fmt.Sprintf("unknown request type %d", typ))
	}
}

// takeOffer records an incoming offer. An offer retried with a known ID is
// acknowledged again and changes nothing.
func (s *Service) takeOffer(peer string, m offerMsg) (Status, string) {
	if err := ValidName(m.Name); err != nil {
		return StatusBadName, err.Error()
	}
	s.mu.Lock()
	if t, ok := s.transfers[m.ID]; ok {
		s.mu.Unlock()
		if t.Peer != peer || t.Direction != Incoming {
			return StatusBadRequest, "transfer ID in use"
		}
		return StatusOK, ""
	}
	pending := 0
	for _, t := range s.transfers {
		if t.Direction == Incoming && t.State == Offered {
			pending++
		}
	}
	if pending >= maxPendingOffers {
		s.mu.Unlock()
		return StatusRefused, "too many pending offers"
	}
	t := &Transfer{ID: m.ID, Peer: peer, Direction: Incoming, Name: m.Name, Size: m.Size, State: Offered, Created: time.Now()}
	s.transfers[t.ID] = t
	err := s.saveLocked(t)
	rec := *t
	s.mu.Unlock()
	if err != nil {
		s.log.Warn("files: cannot record offer", "id", rec.ID, "err", err)
		return StatusRefused, "cannot record the offer"
	}
	s.log.Info("files: offer", "id", rec.ID, "peer", peer, "name", rec.Name, "size", rec.Size)
	if s.cfg.OnOffer != nil {
		s.cfg.OnOffer(rec)
	}
	if s.cfg.AutoAccept != nil && s.cfg.AutoAccept(rec) {
		s.wg.Go(func() {
			if _, err := s.Accept(s.ctx, rec.ID); err != nil {
				s.log.Info("files: automatic download failed", "id", rec.ID, "err", err)
			}
		})
	}
	return StatusOK, ""
}

// serveGet sends the file from the requested offset, then its SHA-256, and
// waits for the receiver's verdict.
func (s *Service) serveGet(conn net.Conn, peer string, m getMsg) error {
	reply := func(st Status, reason string) error {
		conn.Write(appendResponse(nil, st, reason))
		return &StatusError{Status: st, Reason: reason}
	}
	s.mu.Lock()
	t, ok := s.transfers[m.ID]
	if !ok || t.Direction != Outgoing || t.Peer != peer || t.State == Declined {
		s.mu.Unlock()
		return reply(StatusUnknown, "")
	}
	if s.active[m.ID] {
		s.mu.Unlock()
		return reply(StatusRefused, "already sending")
	}
	s.active[m.ID] = true
	rec := *t
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		delete(s.active, m.ID)
		s.mu.Unlock()
	}()

	f, err := os.Open(rec.Path)
	if err != nil {
		return reply(StatusChanged, "the file is gone")
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil || fi.Size() != rec.Size || !fi.ModTime().Equal(rec.ModTime) {
		return reply(StatusChanged, "the file changed since it was offered")
	}
	if m.Offset < 0 || m.Offset > rec.Size {
		return reply(StatusBadRequest, "offset out of range")
	}
	s.setState(rec.ID, Sending, "")
	final := Offered // unless the receiver confirms
	defer func() { s.setState(rec.ID, final, "") }()

	buf := make([]byte, bufferSize)
	h := sha256.New()
	if err := hashPrefix(h, f, m.Offset, buf); err != nil {
		return reply(StatusChanged, "cannot read the file")
	}
	remaining := rec.Size - m.Offset
	hdr := appendResponse(nil, StatusOK, "")
	hdr = binary.BigEndian.AppendUint64(hdr, uint64(remaining))
	if _, err := conn.Write(hdr); err != nil {
		return err
	}
	p := s.newProgress(rec, m.Offset)
	src := io.NewSectionReader(f, m.Offset, remaining)
	n, err := copyHashed(conn, src, h, buf, p)
	if err != nil {
		return fmt.Errorf("send %s: %w", rec.ID, err)
	}
	if n != remaining {
		return fmt.Errorf("send %s: the file shrank while sending", rec.ID)
	}
	if _, err := conn.Write(h.Sum(nil)); err != nil {
		return err
	}
	appmux.CloseWrite(conn)
	var verdict [1]byte
	conn.SetReadDeadline(time.Now().Add(requestTimeout))
	if _, err := io.ReadFull(conn, verdict[:]); err != nil {
		return fmt.Errorf("send %s: no verdict: %w", rec.ID, err)
	}
	if verdict[0] != verdictOK {
		return fmt.Errorf("send %s: %w", rec.ID, ErrChecksum)
	}
	final = Done
	return nil
}

// The receiver's last byte on a GET stream.
const (
	verdictOK       = 0
	verdictMismatch = 1
)

// Accept downloads an incoming transfer, resuming from its partial file,
// and returns the record with the saved file's Path. It blocks until the
// file is complete and verified, or fails; failing leaves the partial file
// for the next Accept (except after ErrChecksum).
func (s *Service) Accept(ctx context.Context, id ID) (Transfer, error) {
	s.mu.Lock()
	t, ok := s.transfers[id]
	switch {
	case !ok || t.Direction != Incoming:
		s.mu.Unlock()
		return Transfer{}, ErrUnknown
	case t.State == Done:
		rec := *t
		s.mu.Unlock()
		return rec, nil
	case t.State == Declined:
		s.mu.Unlock()
		return Transfer{}, fmt.Errorf("files: transfer %s was declined", id)
	case s.active[id]:
		s.mu.Unlock()
		return Transfer{}, ErrBusy
	}
	s.active[id] = true
	rec := *t
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		delete(s.active, id)
		s.mu.Unlock()
	}()
	s.setState(id, Receiving, "")
	path, err := s.download(ctx, rec)
	switch {
	case errors.Is(err, ErrChecksum):
		s.setState(id, Failed, err.Error())
	case err != nil:
		err = s.ctxErr(ctx, err)
	default:
		s.mu.Lock()
		t.State, t.Path, t.Error = Done, path, ""
		s.saveLocked(t)
		s.mu.Unlock()
		s.log.Info("files: received", "id", id, "path", path)
	}
	rec, _ = s.Transfer(id)
	return rec, err
}

func (s *Service) download(ctx context.Context, t Transfer) (string, error) {
	partial := s.partialPath(&t)
	f, err := os.OpenFile(partial, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return "", fmt.Errorf("files: %w", err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return "", err
	}
	offset := fi.Size()
	if offset > t.Size {
		if err := f.Truncate(0); err != nil {
			return "", err
		}
		offset = 0
	}
	// Hash the partial file while the sender hashes its copy of the same
	// prefix: a resumed multi-gigabyte transfer waits for one pass over
	// the prefix, not two in turn. The bytes that arrive meanwhile wait in
	// the stream's flow-controlled buffer.
	buf := make([]byte, bufferSize)
	h := sha256.New()
	hashed := make(chan error, 1)
	go func() { hashed <- hashPrefix(h, f, offset, buf) }()
	waitHashed := func() error {
		if err := <-hashed; err != nil {
			return fmt.Errorf("files: read %s: %w", partial, err)
		}
		return nil
	}

	conn, err := s.open(ctx, t.Peer)
	if err != nil {
		waitHashed()
		return "", err
	}
	defer conn.Close()
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	defer stop()
	req, _ := appendRequest(nil, typeGet, getMsg{ID: t.ID, Offset: offset})
	if _, err := conn.Write(req); err != nil {
		waitHashed()
		return "", err
	}
	err = readResponse(conn)
	if herr := waitHashed(); err == nil {
		err = herr
	}
	if err != nil {
		return "", err
	}
	var rem [remainingLen]byte
	if _, err := io.ReadFull(conn, rem[:]); err != nil {
		return "", unexpected(err)
	}
	remaining := int64(binary.BigEndian.Uint64(rem[:]))
	if remaining != t.Size-offset {
		return "", fmt.Errorf("files: peer sends %d bytes from offset %d of %d", remaining, offset, t.Size)
	}
	if _, err := f.Seek(offset, io.SeekStart); err != nil {
		return "", err
	}
	p := s.newProgress(t, offset)
	n, err := copyHashed(f, io.LimitReader(conn, remaining), h, buf, p)
	if err != nil {
		return "", err
	}
	if n != remaining {
		return "", fmt.Errorf("files: transfer cut after %d of %d bytes: %w", offset+n, t.Size, io.ErrUnexpectedEOF)
	}
	var sum [sumLen]byte
	if _, err := io.ReadFull(conn, sum[:]); err != nil {
		return "", unexpected(err)
	}
	if !bytes.Equal(sum[:], h.Sum(nil)) {
		conn.Write([]byte{verdictMismatch})
		f.Close()
		os.Remove(partial)
		return "", ErrChecksum
	}
	if err := f.Sync(); err != nil {
		return "", err
	}
	if err := f.Close(); err != nil {
		return "", err
	}
	path, err := createUnique(partial, s.cfg.Dir, t.Name)
	if err != nil {
		return "", err
	}
	conn.Write([]byte{verdictOK})
	appmux.CloseWrite(conn)
	return path, nil
}

// partialPath is where an incoming transfer's bytes collect: NAME.ID.partial
// (the first 8 hex digits of the ID), so that two offers of one name do not
// mix.
func (s *Service) partialPath(t *Transfer) string {
	return filepath.Join(s.cfg.Dir, fmt.Sprintf("%s.%s.partial", t.Name, t.ID.String()[:8]))
}

// hashPrefix feeds the first n bytes of f to h.
func hashPrefix(h hash.Hash, f *os.File, n int64, buf []byte) error {
	if n == 0 {
		return nil
	}
	got, err := io.CopyBuffer(h, io.NewSectionReader(f, 0, n), buf)
	if err == nil && got != n {
		err = io.ErrUnexpectedEOF
	}
	return err
}

// copyHashed copies src to dst through buf, hashing what it copies and
// reporting progress.
func copyHashed(dst io.Writer, src io.Reader, h hash.Hash, buf []byte, p *progress) (int64, error) {
	var n int64
	for {
		m, rerr := src.Read(buf)
		if m > 0 {
			h.Write(buf[:m])
			if _, err := dst.Write(buf[:m]); err != nil {
				return n, err
			}
			n += int64(m)
			p.add(int64(m))
		}
		if rerr == io.EOF {
			p.finish()
			return n, nil
		}
		if rerr != nil {
			return n, rerr
		}
	}
}

func (s *Service) setState(id ID, st State, reason string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	t, ok := s.transfers[id]
	if !ok || t.State == st {
		return
	}
	s.log.Debug("files: state", "id", id, "from", t.State, "to", st)
	t.State, t.Error = st, reason
	if err := s.saveLocked(t); err != nil {
		s.log.Warn("files: cannot record transfer", "id", id, "err", err)
	}
}

// saveLocked writes t's record atomically (a temporary file renamed over
// the old one).
func (s *Service) saveLocked(t *Transfer) error {
	b, err := json.MarshalIndent(t, "", "\t")
	if err != nil {
		return err
	}
	path := filepath.Join(s.cfg.StateDir, t.ID.String()+".json")
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, b, 0o600); err != nil {
		return fmt.Errorf("files: record transfer: %w", err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("files: record transfer: %w", err)
	}
	return nil
}

func (s *Service) load() error {
	ents, err := os.ReadDir(s.cfg.StateDir)
	if err != nil {
		return fmt.Errorf("files: %w", err)
	}
	for _, e := range ents {
		name, ok := strings.CutSuffix(e.Name(), ".json")
		if !ok {
			continue
		}
		id, err := ParseID(name)
		if err != nil {
			continue
		}
		b, err := os.ReadFile(filepath.Join(s.cfg.StateDir, e.Name()))
		if err != nil {
			return fmt.Errorf("files: %w", err)
		}
		t := new(Transfer)
		if err := json.Unmarshal(b, t); err != nil || t.ID != id {
			s.log.Warn("files: skipping a bad transfer record", "file", e.Name(), "err", err)
			continue
		}
		if t.State == Sending { // the daemon stopped mid-GET
			t.State = Offered
		}
		s.transfers[id] = t
	}
	return nil
}

// progress throttles and computes Progress reports for one attempt.
type progress struct {
	fn           func(Progress)
	p            Progress
	start        time.Time
	startOffset  int64
	lastReported time.Time
}

func (s *Service) newProgress(t Transfer, offset int64) *progress {
	now := time.Now()
	return &progress{
		fn:          s.cfg.Progress,
		p:           Progress{ID: t.ID, Peer: t.Peer, Direction: t.Direction, Done: offset, Size: t.Size},
		start:       now,
		startOffset: offset,
	}
}

func (p *progress) add(n int64) {
	p.p.Done += n
	if p.fn == nil {
		return
	}
	now := time.Now()
	if now.Sub(p.lastReported) < progressEvery {
		return
	}
	p.lastReported = now
	p.report(now)
}

func (p *progress) finish() {
	if p.fn != nil {
		p.report(time.Now())
	}
}

func (p *progress) report(now time.Time) {
	elapsed := now.Sub(p.start).Seconds()
	moved := p.p.Done - p.startOffset
	p.p.Rate, p.p.ETA = 0, 0
	if elapsed > 0 && moved > 0 {
		p.p.Rate = float64(moved) / elapsed
		p.p.ETA = time.Duration(float64(p.p.Size-p.p.Done) / p.p.Rate * float64(time.Second))
	}
	p.fn(p.p)
}
