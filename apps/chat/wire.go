package chat

import (
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"unicode/utf8"
)

// A chat stream, after its appmux header, is a sequence of frames in each
// direction (docs/protocol.md §7.2):
//
//	type (1) | length (2, big endian) | JSON body (length bytes)
//
//	MSG    (1) {"id": "<32 hex>", "ts": <Unix ms>, "body": "<UTF-8>"}
//	ACK    (2) {"id": "<32 hex>", "state": "delivered" | "read"}
//	TYPING (3) {}
//
// The side that opens the stream sends its frames and half-closes; the
// other answers each MSG with ACK delivered once the message is stored
// (stored before, for a copy it already had), processes ACK and TYPING
// without answering, and closes when it has read the FIN. Reading the
// answerer's FIN therefore tells the opener that every frame it sent was
// processed.
const (
	frameHeaderLen = 3

	frameMsg    byte = 1
	frameAck    byte = 2
	frameTyping byte = 3

	// MaxBody is the longest message body in bytes: a sealed message must
	// fit the directory's 64 KiB mailbox blob with room to spare.
	MaxBody = 16 << 10
)

// ID is a message's 128-bit random identifier. It is shown exactly once
// however often the message is retried or relayed.
type ID [16]byte

func (id ID) String() string { return hex.EncodeToString(id[:]) }

// ParseID parses the 32-hex-digit form of an ID.
func ParseID(s string) (ID, error) {
	var id ID
	if len(s) != 32 {
		return id, fmt.Errorf("chat: bad message ID %q", s)
	}
	if _, err := hex.Decode(id[:], []byte(s)); err != nil {
		return id, fmt.Errorf("chat: bad message ID %q", s)
	}
	return id, nil
}

func (id ID) MarshalText() ([]byte, error) { return []byte(id.String()), nil }

func (id *ID) UnmarshalText(b []byte) error {
	v, err := ParseID(string(b))
	*id = v
	return err
}

// msgBody is the body of MSG frames and of sealed mailbox messages.
type msgBody struct {
	ID   ID     `json:"id"`
	TS   int64  `json:"ts"`
	Body string `json:"body"`
}

type ackBody struct {
	ID    ID     `json:"id"`
	State string `json:"state"` // "delivered" | "read"
}

var errMalformed = errors.New("chat: malformed frame")

func (m *msgBody) check() error {
	if len(m.Body) > MaxBody {
		return fmt.Errorf("%w: body of %d bytes", errMalformed, len(m.Body))
	}
	if !utf8.ValidString(m.Body) {
		return fmt.Errorf("%w: body is not UTF-8", errMalformed)
	}
	return nil
}

func appendFrame(b []byte, typ byte, body any) ([]byte, error) {
	j, err := json.Marshal(body)
	if err != nil {
		return nil, err
	}
	if len(j) > 0xffff {
		return nil, fmt.Errorf("chat: frame of %d bytes", len(j))
	}
	b = append(b, typ)
	b = binary.BigEndian.AppendUint16(b, uint16(len(j)))
	return append(b, j...), nil
}

// readFrame reads one frame. It returns io.EOF at a clean end between
// frames and never panics on any input.
func readFrame(r io.Reader) (typ byte, body []byte, err error) {
	var h [frameHeaderLen]byte
	if _, err := io.ReadFull(r, h[:]); err != nil {
		if err == io.ErrUnexpectedEOF {
			return 0, nil, fmt.Errorf("%w: truncated header", errMalformed)
		}
		return 0, nil, err
	}
	body = make([]byte, binary.BigEndian.Uint16(h[1:]))
	if _, err := io.ReadFull(r, body); err != nil {
		if err == io.EOF || err == io.ErrUnexpectedEOF {
			return 0, nil, fmt.Errorf("%w: truncated body", errMalformed)
		}
		return 0, nil, err
	}
	return h[0], body, nil
}
