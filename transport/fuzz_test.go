package transport

import (
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/parley-p2p/parley/transport/internal/handshake"
	"github.com/parley-p2p/parley/transport/internal/wire"
)

// fuzzSession builds a session in the established state whose run loop is
// not running, so the fuzz function can drive its frame handler directly
// (single-threaded, as the loop would).
func fuzzSession(t testing.TB, initiator bool) *Session {
	pc, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pc.Close() })
	ep := &Endpoint{pc: pc, cfg: (*Config)(nil).withDefaults()}
	ep.log = ep.cfg.Logger
	ep.reader, ep.writer, ep.offload = newBatchIO(pc)
	ep.hsWorkers = make(chan struct{}, 1)
	s := newSession(ep, initiator, wire.ConnID{1}, PublicKey{2}, netip.MustParseAddrPort("127.0.0.1:9"))
	s.installKeys(handshake.Keys{}, time.Now())
	s.applyPeerParams(wire.HandshakeParams{SenderCID: wire.ConnID{3}, InitialMaxData: 1 << 20, InitialMaxStreamData: 1 << 16, MaxStreams: 8, MaxDatagramSize: 1200, MaxUDPPayloadSize: 1232})
	s.state = stateEstablished
	s.cur.validated = true
	return s
}

// FuzzSessionFrames feeds arbitrary (authenticated) frame payloads to a
// session: whatever a broken or hostile peer sends, the session must not
// panic; at worst it closes with a protocol error.
func FuzzSessionFrames(f *testing.F) {
	var seeds [][]byte
	sf := wire.StreamFrame{StreamID: 1, Offset: 0, Data: []byte("hello"), Fin: true}
	seeds = append(seeds, sf.Append(nil))
	ack := wire.AckFrame{Ranges: []wire.AckRange{{Smallest: 0, Largest: 0}}}
	seeds = append(seeds, ack.Append(nil))
	rs := wire.ResetStreamFrame{StreamID: 3, ErrorCode: 1, FinalSize: 10}
	seeds = append(seeds, rs.Append(nil))
	md := wire.MaxStreamDataFrame{StreamID: 0, Maximum: 1 << 30}
	seeds = append(seeds, md.Append(nil))
	dg := wire.DatagramFrame{Data: []byte("x")}
	seeds = append(seeds, dg.Append(nil))
	cl := wire.CloseFrame{ErrorCode: 0x200, Reason: "bye"}
	seeds = append(seeds, cl.Append(nil))
	pc := wire.PathChallengeFrame{}
	seeds = append(seeds, pc.Append(nil), []byte{0x01, 0x00, 0x00}, []byte{0x08, 0x05, 0x80, 0xff, 0x05, 1, 2, 3, 4, 5})
	for _, s := range seeds {
		f.Add(s, false)
		f.Add(s, true)
	}
	f.Fuzz(func(t *testing.T, payload []byte, initiator bool) {
		s := fuzzSession(t, initiator)
		from := netip.MustParseAddrPort("127.0.0.1:9")
		now := time.Now()
		// Twice: the second pass meets the state the first one left.
		for i := 0; i < 2 && s.state == stateEstablished; i++ {
			s.handleFrames(payload, from, now)
		}
		// Whatever happened, the sender side must still be consistent.
		if s.state == stateEstablished {
			s.sendPackets(now.Add(time.Second))
		}
	})
}
