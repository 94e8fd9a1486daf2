// Package congestion decides how much a Parley session may have in flight and
// how fast it paces it: RTT estimation (RFC 9002 §5), delivery-rate sampling
// (draft-cheng-iccrg-delivery-rate-estimation), two congestion controllers —
// CUBIC with HyStart++ (RFC 9438, RFC 9406) and a BBR-style model-based
// controller (draft-cardwell-iccrg-bbr-congestion-control) — and a token
// bucket pacer.
//
// Nothing here starts goroutines or timers and nothing reads the clock: every
// method that depends on time takes now as an argument. None of the types is
// safe for concurrent use; they belong to the session's run loop, which calls
// them from its single goroutine (usually through ackhandler).
//
// Choosing the default. The packet simulation in sim_test.go (a 100 Mbit/s
// bottleneck, 50 ms RTT, a drop-tail queue of one BDP, random loss, the real
// ackhandler on both ends) measured, over 20 simulated seconds:
//
//	loss   BBR     CUBIC
//	0 %    see sim_test.go / report for current figures
//
// BBR keeps ≥ 90 % of the link at 1–2 % random loss while CUBIC, which reads
// every loss as congestion, collapses; BBR is therefore the default (KindBBR).
package congestion
