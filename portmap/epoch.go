package portmap

import "time"

// epoch follows a PCP or NAT-PMP server's epoch time: the seconds since it
// started or last lost its mappings, which it puts in every response (RFC
// 6887 §8.5, RFC 6886 §3.6). A server that restarts, or whose external
// address changes, counts from zero again; a client that sees the count
// fall behind its own clock concludes that its mappings are gone and maps
// again at once, without waiting for its renewal.
//
// The client's clock is Go's monotonic clock, which on Linux stops while
// the machine sleeps: after a suspend the server seems to have run ahead,
// which the PCP rule also takes for a loss. A laptop that wakes up renews,
// which it should anyway.
type epoch struct {
	seen   bool      // a response has been seen
	server uint32    // the epoch time it carried
	client time.Time // when it came
}

// observe records the epoch time server of a response from p's server
// received at now, and reports whether it follows from the last one; false
// means that the server has lost its state. The first response always
// follows. The rules are the RFCs':
//
//   - PCP (RFC 6887 §8.5): the epoch went back by more than a second, or
//     with client_delta and server_delta the seconds that passed here and
//     there since the last response, client_delta+2 < server_delta -
//     server_delta/16 or server_delta+2 < client_delta - client_delta/16.
//   - NAT-PMP (RFC 6886 §3.6): the epoch is more than 2 s behind the last
//     one plus 7/8 of the time that passed here.
//
// The small slack lets packets be reordered or a server's clock be coarse
// without a needless renewal.
func (e *epoch) observe(p Protocol, server uint32, now time.Time) bool {
	prev := *e
	*e = epoch{seen: true, server: server, client: now}
	if !prev.seen {
		return true
	}
	sd := time.Duration(int64(server)-int64(prev.server)) * time.Second
	cd := now.Sub(prev.client)
	const slack = 2 * time.Second
	if p == NATPMP {
		return sd >= cd*7/8-slack
	}
	if sd < -time.Second {
		return false
	}
	return cd+slack >= sd-sd/16 && sd+slack >= cd-cd/16
}
