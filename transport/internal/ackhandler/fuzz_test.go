package ackhandler

import (
	"encoding/binary"
	"testing"
)

// FuzzReceivedAck feeds ACK frames with arbitrary ranges, as a malicious
// peer could send, to a handler with packets in flight: it must return an
// error or process them, never panic, and never report a frame twice or let
// the bytes in flight go negative.
func FuzzReceivedAck(f *testing.F) {
	f.Add([]byte{0, 0, 0, 0, 0, 0, 0, 5, 0, 0, 0, 0, 0, 0, 0, 0})
	f.Add([]byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0, 0, 0, 0, 0})
	f.Fuzz(func(t *testing.T, data []byte) {
		fx := newFixture(t)
		for pn := range uint64(40) {
			if pn == 17 {
				continue // a skipped number
			}
			fx.send(t0, pn)
		}
		now := t0
		for len(data) >= 16 {
			var ranges []Range
			for len(data) >= 16 && len(ranges) < 8 {
				a := binary.BigEndian.Uint64(data)
				b := binary.BigEndian.Uint64(data[8:])
				data = data[16:]
				// Small numbers most of the time, to hit sent ones.
				if a>>63 == 0 {
					a %= 64
				}
				if b>>63 == 0 {
					b %= 64
				}
				ranges = append(ranges, Range{min(a, b), max(a, b)})
			}
			now = now.Add(ms)
			fx.h.ReceivedAck(now, ranges, 0)
			if fx.h.BytesInFlight() < 0 {
				t.Fatalf("bytes in flight %d", fx.h.BytesInFlight())
			}
		}
		fx.h.OnLossDetectionTimeout(now.Add(10e9))
		for pn, n := range fx.cb.acked {
			if n+fx.cb.lost[pn] > 1 {
				t.Fatalf("frame %d reported %d+%d times", pn, n, fx.cb.lost[pn])
			}
		}
	})
}

// FuzzReceivedPacketTracker records arbitrary packet numbers and checks the
// ranges stay well formed and bounded.
func FuzzReceivedPacketTracker(f *testing.F) {
	f.Add([]byte{0, 0, 0, 0, 0, 0, 0, 1, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff})
	f.Fuzz(func(t *testing.T, data []byte) {
		tr := NewReceivedPacketTracker(25*ms, 2)
		for len(data) >= 8 {
			pn := binary.BigEndian.Uint64(data)
			data = data[8:]
			if pn>>63 == 0 {
				pn %= 256
			}
			if pn%97 == 3 {
				tr.IgnoreBelow(pn)
			} else {
				tr.ReceivedPacket(pn, t0, pn%2 == 0)
			}
			ranges, _ := tr.AppendAckRanges(nil, t0)
			if len(ranges) > MaxAckRanges {
				t.Fatalf("%d ranges", len(ranges))
			}
			for i, r := range ranges {
				if r.Smallest > r.Largest || r.Smallest < tr.ignoreBelow {
					t.Fatalf("bad range %v (ignore below %d)", r, tr.ignoreBelow)
				}
				if i > 0 && ranges[i-1].Smallest <= r.Largest+1 {
					t.Fatalf("ranges %v not descending and disjoint", ranges)
				}
			}
		}
	})
}
