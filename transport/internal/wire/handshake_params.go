package wire

import (
	"encoding/binary"
	"math"
	"time"
)

// Handshake parameters, §1.5: the encrypted payload of both handshake
// messages, fixed-size so that the handshake packets are too.
//
//	 0  8  timestamp, Unix nanoseconds (initiation: replay protection;
//	       response: zero)
//	 8  8  sender CID, repeated to bind it to the authenticated handshake
//	16  4  max idle timeout, milliseconds (0 = no preference)
//	20  8  initial max data (connection-level credit), at most 2^62-1
//	28  8  initial max stream data (per-stream credit), at most 2^62-1
//	36  4  max streams the peer may open
//	40  2  max datagram payload size accepted (0 = datagrams off)
//	42  2  max UDP payload size accepted
const HandshakeParamsLen = 44

// HandshakeParams are the parameters each side announces in its handshake
// message.
type HandshakeParams struct {
	Timestamp uint64
	SenderCID ConnID
	// MaxIdleTimeout travels in whole milliseconds; Append rounds a
	// sub-millisecond remainder up (so a tiny timeout does not become 0, "no
	// preference") and clamps to 2^32-1 ms (about 49.7 days). Zero and
	// negative durations encode as 0.
	MaxIdleTimeout time.Duration
	// InitialMaxData and InitialMaxStreamData are byte counts that later
	// MAX_DATA / MAX_STREAM_DATA frames raise; like those frames' varints
	// they are at most MaxVarint, and ParseHandshakeParams rejects larger
	// values.
	InitialMaxData       uint64
	InitialMaxStreamData uint64
	MaxStreams           uint32
	MaxDatagramSize      uint16
	MaxUDPPayloadSize    uint16
}

// ParseHandshakeParams decodes the decrypted handshake payload b, which must
// be exactly HandshakeParamsLen bytes.
func ParseHandshakeParams(b []byte) (HandshakeParams, error) {
	if len(b) != HandshakeParamsLen {
		if len(b) < HandshakeParamsLen {
			return HandshakeParams{}, ErrTruncated
		}
		return HandshakeParams{}, ErrHandshakeParams
	}
	p := HandshakeParams{
		Timestamp:            binary.BigEndian.Uint64(b[0:]),
		SenderCID:            ConnID(b[8:]),
		MaxIdleTimeout:       time.Duration(binary.BigEndian.Uint32(b[16:])) * time.Millisecond,
		InitialMaxData:       binary.BigEndian.Uint64(b[20:]),
		InitialMaxStreamData: binary.BigEndian.Uint64(b[28:]),
		MaxStreams:           binary.BigEndian.Uint32(b[36:]),
		MaxDatagramSize:      binary.BigEndian.Uint16(b[40:]),
		MaxUDPPayloadSize:    binary.BigEndian.Uint16(b[42:]),
	}
	if p.InitialMaxData > MaxVarint || p.InitialMaxStreamData > MaxVarint {
		return HandshakeParams{}, ErrHandshakeParams
	}
	return p, nil
}

// Append appends the HandshakeParamsLen-byte encoding of p to b.
func (p *HandshakeParams) Append(b []byte) []byte {
	b = binary.BigEndian.AppendUint64(b, p.Timestamp)
	b = append(b, p.SenderCID[:]...)
	b = binary.BigEndian.AppendUint32(b, durationToMillis(p.MaxIdleTimeout))
	b = binary.BigEndian.AppendUint64(b, p.InitialMaxData)
	b = binary.BigEndian.AppendUint64(b, p.InitialMaxStreamData)
	b = binary.BigEndian.AppendUint32(b, p.MaxStreams)
	b = binary.BigEndian.AppendUint16(b, p.MaxDatagramSize)
	return binary.BigEndian.AppendUint16(b, p.MaxUDPPayloadSize)
}

func durationToMillis(d time.Duration) uint32 {
	if d <= 0 {
		return 0
	}
	ms := d / time.Millisecond
	if d%time.Millisecond != 0 {
		ms++
	}
	if ms > math.MaxUint32 {
		return math.MaxUint32
	}
	return uint32(ms)
}
