package wire_test

import (
	"fmt"

	"github.com/parley-p2p/parley/transport/internal/wire"
)

// A sender fills a packet with frames using Length and the STREAM helpers;
// the receiver walks the decrypted payload with ParseFrameType and the
// per-type parsers, reusing one AckFrame so that ACKs parse without
// allocating.
func ExampleParseFrameType() {
	// Sender: an ACK, then as much of a stream as fits in a 40-byte payload
	// less 3 bytes, then padding to the end.
	ack := wire.AckFrame{Ranges: []wire.AckRange{{Smallest: 5, Largest: 9}, {Smallest: 1, Largest: 2}}}
	payload := ack.Append(make([]byte, 0, 40))
	room := cap(payload) - len(payload) - 3 // leave 3 bytes to show padding
	data := []byte("a long message that will not fit in one small packet")
	n := min(len(data), wire.MaxStreamDataLen(4, 0, room))
	sf := wire.StreamFrame{StreamID: 4, Data: data[:n]}
	payload = sf.Append(payload)
	payload = wire.AppendPadding(payload, cap(payload)-len(payload))

	// Receiver.
	var (
		rcvAck       wire.AckFrame
		ackEliciting bool
	)
	p := payload
	for len(p) > 0 {
		t, err := wire.ParseFrameType(p)
		if err != nil {
			fmt.Println("close session:", wire.FrameEncodingError, err)
			return
		}
		switch t {
		case wire.FramePadding:
			n = wire.PaddingLen(p)
			fmt.Printf("PADDING x%d\n", n)
		case wire.FrameAck:
			n, err = wire.ParseAckFrame(p, &rcvAck)
			fmt.Printf("ACK largest=%d acks 3: %t, acks 7: %t\n", rcvAck.LargestAcked(), rcvAck.Acks(3), rcvAck.Acks(7))
		case wire.FrameStream, wire.FrameStreamFin:
			var f wire.StreamFrame
			f, n, err = wire.ParseStreamFrame(p)
			fmt.Printf("STREAM %d offset %d: %q\n", f.StreamID, f.Offset, f.Data)
		default:
			err = wire.ErrUnknownFrame // a real receiver handles every type
		}
		if err != nil {
			fmt.Println("close session:", wire.FrameEncodingError, err)
			return
		}
		ackEliciting = ackEliciting || t.IsAckEliciting()
		p = p[n:]
	}
	fmt.Println("ack-eliciting:", ackEliciting)
	// Output:
	// ACK largest=9 acks 3: false, acks 7: true
	// STREAM 4 offset 0: "a long message that will n"
	// PADDING x3
	// ack-eliciting: true
}
