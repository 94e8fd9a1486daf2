package transportbench

import (
	"fmt"
	"image/color"
	"os"
	"time"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"
	"gonum.org/v1/plot/vg/vgimg"
)

// gridLosses are the grid's loss rates, plotted evenly spaced so that 0 and
// 0.1 % do not crowd each other.
var gridLosses = []float64{0, 0.001, 0.01, 0.02, 0.05}

// seriesStyle gives each transport a colour and dash pattern that stays
// apart in greyscale too.
var seriesStyle = map[string]struct {
	c    color.Color
	dash []vg.Length
}{
	NameParleyGrid:     {color.RGBA{R: 0x1f, G: 0x5f, B: 0xbf, A: 0xff}, nil},
	NameParleyGrid1452: {color.RGBA{R: 0x2c, G: 0xa0, B: 0x2c, A: 0xff}, []vg.Length{vg.Points(2), vg.Points(2)}},
	NameQUIC:           {color.RGBA{R: 0xd6, G: 0x27, B: 0x28, A: 0xff}, []vg.Length{vg.Points(6), vg.Points(3)}},
}

// PlotGrid draws goodput (% of the link rate) against loss, one panel per
// link (rate × RTT) and one line per transport, as a PNG at path.
func PlotGrid(results []GridResult, path string) error {
	type link struct {
		rate int
		rtt  time.Duration
	}
	links := []link{{100, 10 * time.Millisecond}, {100, 50 * time.Millisecond}, {1000, 10 * time.Millisecond}, {1000, 50 * time.Millisecond}}
	var names []string
	seen := map[string]bool{}
	for _, r := range results {
		if !seen[r.Transport] {
			seen[r.Transport] = true
			names = append(names, r.Transport)
		}
	}
	ticks := make([]plot.Tick, len(gridLosses))
	for i, l := range gridLosses {
		ticks[i] = plot.Tick{Value: float64(i), Label: fmt.Sprintf("%g", l*100)}
	}
	plots := make([][]*plot.Plot, 2)
	for i, lk := range links {
		p := plot.New()
		p.Title.Text = fmt.Sprintf("%d Mbit/s, RTT %v", lk.rate, lk.rtt)
		p.X.Label.Text = "random loss each way (%)"
		p.Y.Label.Text = "goodput (% of link rate)"
		p.X.Tick.Marker = plot.ConstantTicks(ticks)
		p.X.Min, p.X.Max = -0.2, float64(len(gridLosses)-1)+0.2
		p.Y.Min, p.Y.Max = 0, 100
		p.Add(plotter.NewGrid())
		// Right, a third of the way up: Parley's lines stay above
		// it and quic-go's fall below it before 2 % loss.
		p.Legend.Top = false
		p.Legend.Left = false
		p.Legend.XOffs = -vg.Millimeter * 3
		p.Legend.YOffs = vg.Inch * 1.1
		for _, name := range names {
			var pts plotter.XYs
			for j, l := range gridLosses {
				for _, r := range results {
					if r.Transport == name && r.Point.RateMbps == lk.rate && r.Point.RTT == lk.rtt && r.Point.Loss == l && r.Error == "" {
						pts = append(pts, plotter.XY{X: float64(j), Y: r.Share * 100})
					}
				}
			}
			if len(pts) == 0 {
				continue
			}
			line, scatter, err := plotter.NewLinePoints(pts)
			if err != nil {
				return err
			}
			if st, ok := seriesStyle[name]; ok {
				line.Color, scatter.Color = st.c, st.c
				line.Dashes = st.dash
			}
			line.Width = vg.Points(1.5)
			p.Add(line, scatter)
			p.Legend.Add(name, line, scatter)
		}
		plots[i/2] = append(plots[i/2], p)
	}
	const w, h = 10 * vg.Inch, 7.5 * vg.Inch
	img := vgimg.New(w, h)
	dc := draw.New(img)
	tiles := draw.Tiles{Rows: 2, Cols: 2, PadX: vg.Millimeter * 4, PadY: vg.Millimeter * 4, PadTop: vg.Millimeter * 2, PadBottom: vg.Millimeter * 2, PadLeft: vg.Millimeter * 2, PadRight: vg.Millimeter * 2}
	canvases := plot.Align(plots, tiles, dc)
	for i := range plots {
		for j := range plots[i] {
			plots[i][j].Draw(canvases[i][j])
		}
	}
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if _, err := (vgimg.PngCanvas{Canvas: img}).WriteTo(f); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}
