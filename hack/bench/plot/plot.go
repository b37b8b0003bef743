// Package plot draws the benchmark's figures as SVG with gonum.org/v1/plot. It is a
// package of its own so that the plotting library is linked into the bench only, never
// into the operator's binaries.
package plot

import (
	"fmt"
	"image/color"
	"io"
	"math"
	"os"
	"strings"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"
	"gonum.org/v1/plot/vg/vgimg"
	"gonum.org/v1/plot/vg/vgsvg"
)

// Sample is one second of a run's timeline.
type Sample struct {
	Seconds float64
	// Phase is what the bench was doing (cold-start, steady, warm-restart, ...).
	Phase string
	// RSSMiB and CPUCores are the measured process's (the manager, or the baseline loop
	// in its phase).
	RSSMiB   float64
	CPUCores float64
	// ControlPlaneCores is the API server's and etcd's CPU together: what bounds a cold
	// start on a machine they share with the manager.
	ControlPlaneCores float64
	// TokenRequests is the identity server's token requests in that second.
	TokenRequests float64
	// StalestSecondsToExpiry is the shortest time left on any output Secret's token;
	// NaN while there is none. Below zero, a pod holds an expired token.
	StalestSecondsToExpiry float64
	// Ready is how many grants were Ready.
	Ready int
}

// Row is one N of the scaling series.
type Row struct {
	N                 int
	ManagerCPUPer1000 float64
	LoopCPUPer1000    float64
	WritesPerRotation float64
	ReadsPerRotation  float64
	// KiBPerGrant is measured once the cold start's transients are gone (the settled
	// phase); KiBPerGrantAfterColdStart over the steady window, while client-go still
	// holds the cold start's Events.
	KiBPerGrant               float64
	KiBPerGrantAfterColdStart float64
	ColdStartSeconds          float64
	WarmRestartSeconds        float64
	// TokensExpiredEarlier counts routine renewals that came after the token expired:
	// in the steady window and after it, until the round of fresh tokens.
	TokensExpiredEarlier int
}

var (
	managerColor = color.RGBA{R: 0x1f, G: 0x77, B: 0xb4, A: 0xff}
	loopColor    = color.RGBA{R: 0xff, G: 0x7f, B: 0x0e, A: 0xff}
	goalColor    = color.RGBA{R: 0xd6, G: 0x27, B: 0x28, A: 0xff}
	phaseColor   = color.RGBA{R: 0xbb, G: 0xbb, B: 0xbb, A: 0xff}
)

// Timeline writes four stacked panels over time: RSS, CPU (the measured process's, and
// the control plane's), token requests per second and the stalest output Secret's seconds
// to expiry, with the phases marked.
func Timeline(path, title string, samples []Sample) error {
	get := func(f func(Sample) float64) plotter.XYs {
		xys := make(plotter.XYs, 0, len(samples))
		for _, s := range samples {
			if v := f(s); !math.IsNaN(v) {
				xys = append(xys, plotter.XY{X: s.Seconds, Y: v})
			}
		}
		return xys
	}
	panels := []struct {
		ylabel string
		data   plotter.XYs
		zero   bool
		// controlPlane, when set, is drawn beside data, with a legend.
		controlPlane plotter.XYs
	}{
		{ylabel: "RSS (MiB)", data: get(func(s Sample) float64 { return s.RSSMiB })},
		{
			ylabel: "CPU (cores)", data: get(func(s Sample) float64 { return s.CPUCores }),
			controlPlane: get(func(s Sample) float64 { return s.ControlPlaneCores }),
		},
		{ylabel: "token requests/s", data: get(func(s Sample) float64 { return s.TokenRequests })},
		{ylabel: "stalest Secret: s to expiry", data: get(func(s Sample) float64 { return s.StalestSecondsToExpiry }), zero: true},
	}
	plots := make([][]*plot.Plot, len(panels))
	for i, pn := range panels {
		p := plot.New()
		if i == 0 {
			p.Title.Text = title
		}
		if i == len(panels)-1 {
			p.X.Label.Text = "seconds"
		}
		p.Y.Label.Text = pn.ylabel
		p.Y.Min = 0
		if err := addPhases(p, samples, i == 0); err != nil {
			return err
		}
		if pn.zero {
			if err := addHorizontal(p, samples, 0, goalColor); err != nil {
				return err
			}
		}
		l, err := addLine(p, pn.data, managerColor)
		if err != nil {
			return err
		}
		cp, err := addLine(p, pn.controlPlane, loopColor)
		if err != nil {
			return err
		}
		if l != nil && cp != nil {
			p.Legend.Top = true
			p.Legend.Add("measured process", l)
			p.Legend.Add("API server + etcd", cp)
		}
		plots[i] = []*plot.Plot{p}
	}
	return writeTiles(path, plots, 10*vg.Inch, 11*vg.Inch)
}

// addLine draws xys in c; nil, and nothing drawn, without points.
func addLine(p *plot.Plot, xys plotter.XYs, c color.Color) (*plotter.Line, error) {
	if len(xys) == 0 {
		return nil, nil
	}
	l, err := plotter.NewLine(xys)
	if err != nil {
		return nil, err
	}
	l.Color = c
	p.Add(l)
	return l, nil
}

// addPhases draws a grey vertical line where each phase starts, named on the top panel.
func addPhases(p *plot.Plot, samples []Sample, named bool) error {
	var labels plotter.XYLabels
	prev := ""
	for _, s := range samples {
		if s.Phase == prev {
			continue
		}
		prev = s.Phase
		l, err := plotter.NewLine(plotter.XYs{{X: s.Seconds, Y: 0}, {X: s.Seconds, Y: 0}})
		if err != nil {
			return err
		}
		l.Color, l.Dashes = phaseColor, []vg.Length{vg.Points(2), vg.Points(2)}
		p.Add(vertical{Line: l, x: s.Seconds})
		labels.XYs = append(labels.XYs, plotter.XY{X: s.Seconds, Y: 0})
		labels.Labels = append(labels.Labels, " "+s.Phase)
	}
	if !named || len(labels.XYs) == 0 {
		return nil
	}
	lb, err := plotter.NewLabels(labels)
	if err != nil {
		return err
	}
	for i := range lb.TextStyle {
		lb.TextStyle[i].Rotation = math.Pi / 2
		lb.TextStyle[i].Color = color.Gray{Y: 0x70}
	}
	p.Add(lb)
	return nil
}

// vertical is a line from the bottom to the top of the plot at x, whatever the data.
type vertical struct {
	*plotter.Line
	x float64
}

func (v vertical) Plot(c draw.Canvas, p *plot.Plot) {
	x := p.X.Norm(v.x)*float64(c.Max.X-c.Min.X) + float64(c.Min.X)
	c.StrokeLines(v.LineStyle, []vg.Point{{X: vg.Length(x), Y: c.Min.Y}, {X: vg.Length(x), Y: c.Max.Y}})
}

func (v vertical) DataRange() (xmin, xmax, ymin, ymax float64) {
	return v.x, v.x, math.Inf(1), math.Inf(-1)
}

func addHorizontal(p *plot.Plot, samples []Sample, y float64, c color.Color) error {
	if len(samples) == 0 {
		return nil
	}
	l, err := plotter.NewLine(plotter.XYs{{X: samples[0].Seconds, Y: y}, {X: samples[len(samples)-1].Seconds, Y: y}})
	if err != nil {
		return err
	}
	l.Color = c
	p.Add(l)
	return nil
}

// Series writes the scaling series as four panels over N: CPU per 1,000 rotations
// (manager and loop), memory per grant, time to all Ready, writes and reads per
// rotation, each with its goal.
func Series(path string, rows []Row) error {
	xs := func(f func(Row) float64) plotter.XYs {
		out := make(plotter.XYs, len(rows))
		for i, r := range rows {
			out[i] = plotter.XY{X: float64(r.N), Y: f(r)}
		}
		return out
	}
	type line struct {
		name string
		data plotter.XYs
		c    color.Color
		goal bool
	}
	constant := func(v float64) plotter.XYs { return xs(func(Row) float64 { return v }) }
	panels := []struct {
		title, ylabel string
		lines         []line
	}{
		{"CPU per 1,000 rotations (goal: manager ≤ 1.5× loop)", "CPU seconds", []line{
			{"manager", xs(func(r Row) float64 { return r.ManagerCPUPer1000 }), managerColor, false},
			{"bare loop", xs(func(r Row) float64 { return r.LoopCPUPer1000 }), loopColor, false},
			{"1.5× loop", xs(func(r Row) float64 { return 1.5 * r.LoopCPUPer1000 }), goalColor, true},
		}},
		{"manager memory per grant (goal ≤ 15 KiB)", "KiB", []line{
			{"settled", xs(func(r Row) float64 { return r.KiBPerGrant }), managerColor, false},
			{"minutes after a cold start", xs(func(r Row) float64 { return r.KiBPerGrantAfterColdStart }), loopColor, false},
			{"goal", constant(15), goalColor, true},
		}},
		{"time until all grants are Ready (goal ≤ 60 s at 10,000)", "seconds", []line{
			{"cold start", xs(func(r Row) float64 { return r.ColdStartSeconds }), managerColor, false},
			{"warm restart", xs(func(r Row) float64 { return r.WarmRestartSeconds }), loopColor, false},
			{"goal", constant(60), goalColor, true},
		}},
		{"API requests per rotation (goal: 4 writes)", "requests", []line{
			{"writes", xs(func(r Row) float64 { return r.WritesPerRotation }), managerColor, false},
			{"reads", xs(func(r Row) float64 { return r.ReadsPerRotation }), loopColor, false},
			{"goal", constant(4), goalColor, true},
		}},
	}
	plots := [][]*plot.Plot{make([]*plot.Plot, 2), make([]*plot.Plot, 2)}
	for i, pn := range panels {
		p := plot.New()
		p.Title.Text = pn.title
		p.X.Label.Text = "grants (N)"
		p.Y.Label.Text = pn.ylabel
		p.Y.Min = 0
		p.Legend.Top = true
		// Head room for the legend above the highest line.
		top := 0.0
		for _, ln := range pn.lines {
			for _, xy := range ln.data {
				top = math.Max(top, xy.Y)
			}
		}
		p.Y.Max = 1.4 * top
		for _, ln := range pn.lines {
			l, s, err := plotter.NewLinePoints(ln.data)
			if err != nil {
				return err
			}
			l.Color, s.Color = ln.c, ln.c
			if ln.goal {
				l.Dashes = []vg.Length{vg.Points(4), vg.Points(3)}
				p.Add(l)
			} else {
				p.Add(l, s)
			}
			p.Legend.Add(ln.name, l)
		}
		plots[i/2][i%2] = p
	}
	return writeTiles(path, plots, 12*vg.Inch, 9*vg.Inch)
}

// writeTiles draws plots as a grid into path: SVG, or PNG when path ends in .png.
func writeTiles(path string, plots [][]*plot.Plot, w, h vg.Length) error {
	var c interface {
		vg.CanvasSizer
		io.WriterTo
	} = vgsvg.New(w, h)
	if strings.HasSuffix(path, ".png") {
		c = vgimg.PngCanvas{Canvas: vgimg.New(w, h)}
	}
	dc := draw.New(c)
	t := draw.Tiles{Rows: len(plots), Cols: len(plots[0]), PadX: vg.Centimeter, PadY: vg.Centimeter / 2,
		PadTop: vg.Centimeter / 2, PadBottom: vg.Centimeter / 2, PadLeft: vg.Centimeter / 2, PadRight: vg.Centimeter / 2}
	canvases := plot.Align(plots, t, dc)
	for i := range plots {
		for j := range plots[i] {
			if plots[i][j] != nil {
				plots[i][j].Draw(canvases[i][j])
			}
		}
	}
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if _, err := c.WriteTo(f); err != nil {
		f.Close()
		return fmt.Errorf("writing %s: %w", path, err)
	}
	return f.Close()
}
