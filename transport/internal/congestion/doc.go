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
// Choosing the default. The packet simulation in sim_test.go drives the real
// ackhandler on both ends over a 100 Mbit/s bottleneck with a 50 ms RTT and a
// one-BDP drop-tail queue, with random loss on the data path. Share of the
// link delivered over 20 simulated seconds (including start-up):
//
//	random loss   BBR      CUBIC
//	0 %           98.1 %   98.7 %
//	1 %           97.6 %    3.2 %
//	2 %           96.1 %    1.7 %
//
// CUBIC reads every loss as congestion and settles where the Mathis formula
// puts any Reno-friendly controller (about 1.2/√p packets per RTT); BBR's
// model ignores random loss. In steady state BBR's queue stays under 17 ms
// (mean 5 ms) even with a 4-BDP buffer that CUBIC keeps 140 ms deep; with
// 10 ms of per-packet jitter (heavy reordering) BBR still delivers 97.7 %.
// BBR is therefore the default (KindBBR). Its fairness against CUBIC on
// shared drop-tail queues is imperfect; see the bbr type.
package congestion
