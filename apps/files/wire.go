package files

import (
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
)

// The wire format of a file stream, after its appmux header
// (docs/protocol.md §7.3):
//
//	request:  version (1) = 1 | type (1) | length (2, big endian) | JSON body
//	response: status (1) | reason length (1) | reason (UTF-8)
//
// A GET answered with StatusOK continues with
//
//	remaining (8, big endian) | remaining bytes of the file | SHA-256 of the whole file (32)
const (
	version = 1

	requestHeaderLen  = 4
	responseHeaderLen = 2
	maxReasonLen      = 255
	remainingLen      = 8
	sumLen            = 32
)

// Request types.
const (
	typeOffer   byte = 1 // sender → receiver: offer{id, name, size}
	typeGet     byte = 2 // receiver → sender: get{id, offset}
	typeDecline byte = 3 // receiver → sender: decline{id}
)

// Status is the answer to a request. The values are wire constants.
type Status byte

const (
	StatusOK         Status = 0
	StatusUnknown    Status = 1 // no such transfer (or not for this peer)
	StatusChanged    Status = 2 // the file changed or vanished since it was offered
	StatusBadRequest Status = 3 // malformed request, unknown version or type
	StatusBadName    Status = 4 // the offered name is not a safe file name
	StatusRefused    Status = 5 // the receiver refuses offers (too many pending)
)

func (s Status) String() string {
	switch s {
	case StatusOK:
		return "ok"
	case StatusUnknown:
		return "unknown transfer"
	case StatusChanged:
		return "file changed"
	case StatusBadRequest:
		return "bad request"
	case StatusBadName:
		return "bad file name"
	case StatusRefused:
		return "refused"
	}
	return fmt.Sprintf("status %d", byte(s))
}

// StatusError is a peer's refusal of a request.
type StatusError struct {
	Status Status
	Reason string // from the peer; escape before display
}

func (e *StatusError) Error() string {
	if e.Reason == "" {
		return "files: peer answered " + e.Status.String()
	}
	return fmt.Sprintf("files: peer answered %v: %q", e.Status, e.Reason)
}

// ID names a transfer: 128 random bits, in hex on the wire and in file names.
type ID [16]byte

func (id ID) String() string { return hex.EncodeToString(id[:]) }

// ParseID parses the 32-hex-digit form of an ID.
func ParseID(s string) (ID, error) {
	var id ID
	if len(s) != 2*len(id) {
		return id, fmt.Errorf("files: bad transfer ID %q", s)
	}
	if _, err := hex.Decode(id[:], []byte(s)); err != nil {
		return id, fmt.Errorf("files: bad transfer ID %q", s)
	}
	return id, nil
}

func (id ID) MarshalText() ([]byte, error) { return []byte(id.String()), nil }

func (id *ID) UnmarshalText(b []byte) error {
	v, err := ParseID(string(b))
	*id = v
	return err
}

type offerMsg struct {
	ID   ID     `json:"id"`
	Name string `json:"name"`
	Size int64  `json:"size"`
}

type getMsg struct {
	ID     ID    `json:"id"`
	Offset int64 `json:"offset"`
}

type declineMsg struct {
	ID ID `json:"id"`
}

var errBadRequest = errors.New("files: malformed request")

func appendRequest(b []byte, typ byte, body any) ([]byte, error) {
	j, err := json.Marshal(body)
	if err != nil {
		return nil, err
	}
	if len(j) > 0xffff {
		return nil, errors.New("files: request too large")
	}
	b = append(b, version, typ)
	b = binary.BigEndian.AppendUint16(b, uint16(len(j)))
	return append(b, j...), nil
}

// readRequest reads a request's header and body; it never panics on any
// input. A version it does not know is errBadRequest.
func readRequest(r io.Reader) (typ byte, body []byte, err error) {
	var h [requestHeaderLen]byte
	if _, err := io.ReadFull(r, h[:]); err != nil {
		return 0, nil, unexpected(err)
	}
	if h[0] != version {
		return 0, nil, fmt.Errorf("%w: version %d", errBadRequest, h[0])
	}
	body = make([]byte, binary.BigEndian.Uint16(h[2:]))
	if _, err := io.ReadFull(r, body); err != nil {
		return 0, nil, unexpected(err)
	}
	return h[1], body, nil
}

func appendResponse(b []byte, s Status, reason string) []byte {
	if len(reason) > maxReasonLen {
		reason = reason[:maxReasonLen]
	}
	b = append(b, byte(s), byte(len(reason)))
	return append(b, reason...)
}

// readResponse reads a response and turns a refusal into a *StatusError.
func readResponse(r io.Reader) error {
	var h [responseHeaderLen]byte
	if _, err := io.ReadFull(r, h[:]); err != nil {
		return fmt.Errorf("read response: %w", unexpected(err))
	}
	reason := make([]byte, h[1])
	if _, err := io.ReadFull(r, reason); err != nil {
		return fmt.Errorf("read response: %w", unexpected(err))
	}
	if s := Status(h[0]); s != StatusOK {
		return &StatusError{Status: s, Reason: string(reason)}
	}
	return nil
}

func unexpected(err error) error {
	if err == io.EOF {
		return io.ErrUnexpectedEOF
	}
	return err
}
