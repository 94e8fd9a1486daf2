package cli

import "testing"

func TestSweepRateConfig(t *testing.T) {
	for _, tt := range []struct {
		flag, cfg int
		err       bool
	}{
		{32768, 32768, false},
		{1000, 1000, false},
		{0, -1, false}, // off: node.Config's zero would mean the default
		{-1, 0, true},
	} {
		cfg, err := sweepRateConfig(tt.flag)
		if (err != nil) != tt.err || (err == nil && cfg != tt.cfg) {
			t.Errorf("--sweep-rate %d: got %d, %v; want %d (error %v)", tt.flag, cfg, err, tt.cfg, tt.err)
		}
	}
}
