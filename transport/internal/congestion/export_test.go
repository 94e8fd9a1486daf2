package congestion

// BBRMode returns the state of a BBR controller ("" for other kinds), for
// the simulation in sim_test.go.
func BBRMode(c Controller) string {
	if b, ok := c.(*bbr); ok {
		return b.mode.String()
	}
	return ""
}
