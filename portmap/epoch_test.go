package portmap

import (
	"testing"
	"time"
)

// The epoch rules of RFC 6887 §8.5 (PCP) and RFC 6886 §3.6 (NAT-PMP), on
// a clock the test drives: each case is a previous answer at time 0 with
// epoch prev, and the next one after elapsed with epoch cur.
func TestEpoch(t *testing.T) {
	for _, tc := range []struct {
		name      string
		p         Protocol
		prev, cur uint32
		elapsed   time.Duration
		lost      bool
	}{
		{"pcp steady", PCP, 1000, 1060, time.Minute, false},
		{"pcp at once", PCP, 1000, 1000, 0, false},
		{"pcp reordered by 1 s", PCP, 1000, 999, 0, false},
		{"pcp back by 2 s", PCP, 1000, 998, 0, true},
		{"pcp restarted", PCP, 7200, 3, 10 * time.Second, true},
		{"pcp restarted within 2 s of the last answer", PCP, 1, 0, 500 * time.Millisecond, false}, // indistinguishable
		// The server ran much less than we did: it restarted a while ago.
		{"pcp ran 1 s of 60", PCP, 1000, 1001, time.Minute, true},
		// client_delta 10: the server's count must be within 10±2 give or take 1/16.
		{"pcp ran 8 s of 10", PCP, 1000, 1008, 10 * time.Second, false},
		{"pcp ran 7 s of 10", PCP, 1000, 1007, 10 * time.Second, true},
		{"pcp ran 12 s of 10", PCP, 1000, 1012, 10 * time.Second, false},
		{"pcp ran 13 s of 10", PCP, 1000, 1013, 10 * time.Second, true},
		// The server ran far ahead of us: our clock stopped (suspend), or
		// its count is not an epoch we know.
		{"pcp ran an hour of 10 s", PCP, 1000, 4600, 10 * time.Second, true},

		{"nat-pmp steady", NATPMP, 1000, 1060, time.Minute, false},
		// Expected at least 1000 + 7/8 × 60 − 2 = 1050.5.
		{"nat-pmp ran 51 s of 60", NATPMP, 1000, 1051, time.Minute, false},
		{"nat-pmp ran 50 s of 60", NATPMP, 1000, 1050, time.Minute, true},
		{"nat-pmp back by 2 s", NATPMP, 1000, 998, 0, false},
		{"nat-pmp back by 3 s", NATPMP, 1000, 997, 0, true},
		{"nat-pmp restarted", NATPMP, 7200, 0, time.Second, true},
		// NAT-PMP asks only that the count not fall behind.
		{"nat-pmp ran an hour of 10 s", NATPMP, 1000, 4600, 10 * time.Second, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t0 := time.Unix(1_700_000_000, 0)
			var e epoch
			if !e.observe(tc.p, tc.prev, t0) {
				t.Fatal("the first answer counts as lost")
			}
			if lost := !e.observe(tc.p, tc.cur, t0.Add(tc.elapsed)); lost != tc.lost {
				t.Errorf("epoch %d, then %d after %v: lost %v, want %v", tc.prev, tc.cur, tc.elapsed, lost, tc.lost)
			}
			// The next answer is judged against this one, lost or not.
			if !e.observe(tc.p, tc.cur+10, t0.Add(tc.elapsed+10*time.Second)) {
				t.Errorf("an answer that follows the last one counts as lost")
			}
		})
	}
}
