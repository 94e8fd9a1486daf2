package congestion

import "fmt"

// BBRMode returns the state of a BBR controller ("" for other kinds), for
// the simulation in sim_test.go.
func BBRMode(c Controller) string {
	if b, ok := c.(*bbr); ok {
		return b.mode.String()
	}
	return ""
}

func BBRDebug(c Controller) string {
	if b, ok := c.(*bbr); ok {
		return fmt.Sprintf("%v bw=%d minRTT=%v cwnd=%d pacing=%d round=%d fullBW=%d cnt=%d hi=%d", b.mode, b.btlBw.Get(), b.minRTT, b.cwnd, b.pacingRate, b.roundCount, b.fullBW, b.fullBWCount, b.inflightHi)
	}
	return ""
}
