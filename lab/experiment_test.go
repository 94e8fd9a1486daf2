package lab_test

import (
	"fmt"
	"os"
	"strings"
	"testing"

	"github.com/parley-p2p/parley/lab"
)

// TestSimultaneousExperiment measures how often two hosts behind EIM
// routers connect when both start probing at the same moment, the usual
// hole-punching recipe, with bare and with firewalled routers. The timing
// is up to the scheduler, so it only runs with LAB_EXPERIMENT=1. Measured
// on this kernel (6.18), 15 trials each: bare routers 1/15 (strict) and
// 0/15 (any source), firewalled 15/15 and 15/15.
func TestSimultaneousExperiment(t *testing.T) {
	if os.Getenv("LAB_EXPERIMENT") != "1" {
		t.Skip("set LAB_EXPERIMENT=1 to run the simultaneous-punch experiment")
	}
	const trials = 15
	for _, rc := range []lab.RouterConfig{bareEIM, firewalledEIM} {
		for _, mode := range []string{"strict", "any"} {
			connected := 0
			for i := range trials {
				t.Run(fmt.Sprintf("firewall=%v/%s/%d", rc.Firewall, mode, i), func(t *testing.T) {
					var flags []string
					if mode == "strict" {
						flags = []string{"-strict"}
					}
					stun, a, b := topology(t, fmt.Sprintf("sim%d", i), rc, rc)
					pa, pb := punchers(t, stun, a, b, flags...)
					pa.send("GO")
					pb.send("GO")
					if strings.HasPrefix(pa.outcome(), "CONNECTED") && strings.HasPrefix(pb.outcome(), "CONNECTED") {
						connected++
					}
				})
			}
			t.Logf("firewall=%v %s: simultaneous punch connected %d/%d", rc.Firewall, mode, connected, trials)
			if rc.Firewall && connected != trials {
				t.Errorf("firewalled routers: %d/%d connected, want all", connected, trials)
			}
		}
	}
}
