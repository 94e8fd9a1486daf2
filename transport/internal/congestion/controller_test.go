package congestion

import "testing"

func TestParseKind(t *testing.T) {
	for in, want := range map[string]Kind{"": KindBBR, "bbr": KindBBR, "BBR": KindBBR, " cubic ": KindCUBIC, "CUBIC": KindCUBIC} {
		got, err := ParseKind(in)
		if err != nil || got != want {
			t.Errorf("ParseKind(%q) = %v, %v; want %v", in, got, err, want)
		}
		if back, err := ParseKind(got.String()); err != nil || back != got {
			t.Errorf("ParseKind(%v.String()) = %v, %v", got, back, err)
		}
	}
	for _, in := range []string{"reno", "bbr2", "x"} {
		if _, err := ParseKind(in); err == nil {
			t.Errorf("ParseKind(%q) succeeded", in)
		}
	}
}

func TestNewControllerInitialState(t *testing.T) {
	for _, kind := range []Kind{KindBBR, KindCUBIC} {
		c := NewController(kind, &RTTStats{}, 0)
		if got := c.CongestionWindow(); got != initialWindowPackets*DefaultMaxDatagramSize {
			t.Errorf("%v: initial window %d", kind, got)
		}
		if !c.InSlowStart() {
			t.Errorf("%v: not in slow start at first", kind)
		}
		if c.PacingRate() == 0 {
			t.Errorf("%v: zero initial pacing rate", kind)
		}
		if !c.CanSend(0) || c.CanSend(c.CongestionWindow()) {
			t.Errorf("%v: CanSend wrong at the window's edges", kind)
		}
		c.SetMaxDatagramSize(9000)
		if c.CongestionWindow() < minWindowPackets*9000 {
			t.Errorf("%v: window %d below the minimum after SetMaxDatagramSize", kind, c.CongestionWindow())
		}
	}
}
