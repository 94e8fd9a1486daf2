// Package ackhandler is the loss-recovery half of Parley's transport: it
// remembers what each sent packet carried, processes the peer's ACK ranges,
// measures RTT, declares packets lost by packet and time thresholds (RFC 9002
// §6.1), arms the probe timeout (§6.2), detects persistent congestion (§7.6),
// and on the receiving side decides what to acknowledge and when (RFC 9000
// §13.2).
//
// It does not know the wire format: ACK frames arrive and leave as []Range,
// and the frames a packet carried are opaque Frame records the session
// defines. It takes now as an argument everywhere and starts no goroutines or
// timers; the session's run loop arms one timer at the earliest of
// SentPacketHandler.LossDetectionDeadline, NextSendTime and
// ReceivedPacketTracker.AckDeadline. Nothing here is safe for concurrent use:
// the session loop owns every value.
//
// One turn of the session loop, in outline:
//
//	on a packet:   if tracker.ReceivedPacket(pn, now, elicits) { drop }
//	               for an ACK frame: sph.ReceivedAck(now, ranges, delay)
//	               tracker.IgnoreBelow(sph.LowestUnconfirmedAck())
//	on the timer:  if now ≥ sph.LossDetectionDeadline():
//	                   probes = sph.OnLossDetectionTimeout(now)
//	                   (no new data for them? sph.QueueProbePacket())
//	to send:       while sph.SendAllowed(now) && sph.NextSendTime(now) ≤ now:
//	                   pn := sph.NextPacketNumber()
//	                   add tracker.AppendAckRanges(...) if tracker.HasNewAck()
//	                   send; sph.SentPacket(now, pn, size, elicits, frames)
//	                   (and sph.RecordAckFrame(pn, largest) if it carried one)
//	               nothing left to send: sph.OnAppLimited()
//	then:          arm the timer at the earliest of LossDetectionDeadline,
//	               NextSendTime (if SendAllowed) and tracker.AckDeadline.
package ackhandler
