package bench

import (
	"fmt"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
)

// writePlots draws what the run measured as SVG charts in dir: the sync
// rate against the number of seeders, and fan-out completion over time.
func (e *Env) writePlots(dir string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	if len(e.swarmRates) > 0 {
		var xs []int
		for k := range e.swarmRates {
			xs = append(xs, k)
		}
		slices.Sort(xs)
		var pts [][2]float64
		for _, k := range xs {
			pts = append(pts, [2]float64{float64(k), e.swarmRates[k]})
		}
		ideal := [][2]float64{{1, e.swarmRates[1]}, {float64(xs[len(xs)-1]), e.swarmRates[1] * float64(xs[len(xs)-1])}}
		svg := lineChart("Sync rate vs seeders (100 Mbit/s links)", "seeders", "MB/s", pts, ideal)
		if err := os.WriteFile(filepath.Join(dir, "swarm.svg"), []byte(svg), 0o644); err != nil {
			return err
		}
	}
	if len(e.fanoutDone) > 0 {
		pts := [][2]float64{{0, 0}}
		for i, d := range e.fanoutDone {
			pts = append(pts, [2]float64{d.Seconds(), float64(i + 1)})
		}
		one := e.fanoutOne.Seconds()
		svg := chart{Title: fmt.Sprintf("Fan-out: %d followers done over time (%s links)", len(e.fanoutDone), rateString(float64(e.fanoutRate())/8)),
			XLabel: "seconds", YLabel: "followers with the closure",
			Series: []series{{Name: "the room", Points: pts},
				{Name: "one follower alone", Points: [][2]float64{{one, 0}, {one, float64(len(e.fanoutDone))}}, Dashed: true}}}.svg()
		if err := os.WriteFile(filepath.Join(dir, "fanout.svg"), []byte(svg), 0o644); err != nil {
			return err
		}
	}
	if len(e.simRuns) > 1 {
		one := e.simRuns[0].Done[0].Seconds()
		var p50, p99, last, up [][2]float64
		var done []series
		for _, r := range e.simRuns[1:] {
			x := float64(r.N)
			d, _ := r.at(50)
			p50 = append(p50, [2]float64{x, d.Seconds() / one})
			d, _ = r.at(99)
			p99 = append(p99, [2]float64{x, d.Seconds() / one})
			d, _ = r.at(100)
			last = append(last, [2]float64{x, d.Seconds() / one})
			up = append(up, [2]float64{x, float64(r.Upload) / float64(e.simNarBytes)})
			pts := [][2]float64{{0, 0}}
			for i, d := range r.Done {
				pts = append(pts, [2]float64{d.Seconds() / one, 100 * float64(i+1) / float64(r.N)})
			}
			if r.stopped() {
				pts = append(pts, [2]float64{r.Wall.Seconds() / one, 100 * float64(len(r.Done)) / float64(r.N)})
			}
			done = append(done, series{Name: fmt.Sprintf("%d followers", r.N), Points: pts})
		}
		svg := chart{Title: "Simulated room: ratios vs followers", XLabel: "followers (log scale)", YLabel: "× one follower's time, × the closure", LogX: true,
			Series: []series{{Name: "median done", Points: p50}, {Name: "p99 done", Points: p99}, {Name: "last done", Points: last},
				{Name: "seeder upload ÷ closure", Points: up, Dashed: true}}}.svg()
		if err := os.WriteFile(filepath.Join(dir, "sim.svg"), []byte(svg), 0o644); err != nil {
			return err
		}
		svg = chart{Title: "Simulated room: followers done over time", XLabel: "time ÷ one follower's time", YLabel: "% of followers with the closure",
			Series: done}.svg()
		if err := os.WriteFile(filepath.Join(dir, "sim-completion.svg"), []byte(svg), 0o644); err != nil {
			return err
		}
	}
	return nil
}

// series is one line of a chart.
type series struct {
	Name   string
	Points [][2]float64
	Dashed bool
}

// chart is an SVG line chart of several series, with a legend.
type chart struct {
	Title, XLabel, YLabel string
	LogX                  bool // x on a log2 scale (x > 0)
	Series                []series
}

var chartColors = []string{"#1f6feb", "#d1242f", "#1a7f37", "#8250df", "#bf8700", "#57606a"}

func (c chart) svg() string {
	const w, h, m = 640.0, 400.0, 60.0
	tx := func(v float64) float64 {
		if c.LogX {
			return math.Log2(max(v, 1))
		}
		return v
	}
	minX, maxX, maxY := math.Inf(1), math.Inf(-1), 0.0
	for _, s := range c.Series {
		for _, p := range s.Points {
			minX, maxX, maxY = min(minX, tx(p[0])), max(maxX, tx(p[0])), max(maxY, p[1])
		}
	}
	if !c.LogX || minX > maxX {
		minX = 0
	}
	if maxX <= minX {
		maxX = minX + 1
	}
	if maxY == 0 {
		maxY = 1
	}
	maxY *= 1.1
	x := func(v float64) float64 { return m + (tx(v)-minX)/(maxX-minX)*(w-2*m) }
	y := func(v float64) float64 { return h - m - v/maxY*(h-2*m) }
	var b strings.Builder
	fmt.Fprintf(&b, `<svg xmlns="http://www.w3.org/2000/svg" width="%.0f" height="%.0f" font-family="sans-serif" font-size="12">`, w, h)
	fmt.Fprintf(&b, `<rect width="100%%" height="100%%" fill="white"/><text x="%.0f" y="24" text-anchor="middle" font-size="15">%s</text>`, w/2, c.Title)
	fmt.Fprintf(&b, `<line x1="%.0f" y1="%.0f" x2="%.0f" y2="%.0f" stroke="black"/><line x1="%.0f" y1="%.0f" x2="%.0f" y2="%.0f" stroke="black"/>`, m, h-m, w-m, h-m, m, m, m, h-m)
	for i := 0; i <= 4; i++ {
		vx := minX + (maxX-minX)*float64(i)/4
		if c.LogX {
			vx = math.Exp2(vx)
		}
		vy := maxY * float64(i) / 4
		fmt.Fprintf(&b, `<text x="%.1f" y="%.0f" text-anchor="middle">%.3g</text>`, x(vx), h-m+18, vx)
		fmt.Fprintf(&b, `<text x="%.0f" y="%.1f" text-anchor="end">%.3g</text>`, m-6, y(vy)+4, vy)
		fmt.Fprintf(&b, `<line x1="%.0f" y1="%.1f" x2="%.0f" y2="%.1f" stroke="#ddd"/>`, m, y(vy), w-m, y(vy))
	}
	fmt.Fprintf(&b, `<text x="%.0f" y="%.0f" text-anchor="middle">%s</text>`, w/2, h-14, c.XLabel)
	fmt.Fprintf(&b, `<text x="16" y="%.0f" text-anchor="middle" transform="rotate(-90 16 %.0f)">%s</text>`, h/2, h/2, c.YLabel)
	for i, s := range c.Series {
		color := chartColors[i%len(chartColors)]
		var d strings.Builder
		for j, p := range s.Points {
			fmt.Fprintf(&d, "%s%.1f,%.1f ", map[bool]string{true: "M", false: "L"}[j == 0], x(p[0]), y(p[1]))
		}
		dash := ""
		if s.Dashed {
			dash = ` stroke-dasharray="6,4"`
		}
		fmt.Fprintf(&b, `<path d="%s" fill="none" stroke="%s" stroke-width="2"%s/>`, d.String(), color, dash)
		if !s.Dashed {
			for _, p := range s.Points {
				fmt.Fprintf(&b, `<circle cx="%.1f" cy="%.1f" r="3" fill="%s"/>`, x(p[0]), y(p[1]), color)
			}
		}
		fmt.Fprintf(&b, `<text x="%.0f" y="%.0f" fill="%s">%s</text>`, m+10, m+14+16*float64(i), color, s.Name)
	}
	b.WriteString("</svg>\n")
	return b.String()
}

// lineChart draws points (and a dashed reference line) as an SVG chart.
func lineChart(title, xlabel, ylabel string, pts, ref [][2]float64) string {
	const w, h, m = 640.0, 400.0, 60.0
	maxX, maxY := 0.0, 0.0
	for _, p := range append(slices.Clone(pts), ref...) {
		maxX, maxY = max(maxX, p[0]), max(maxY, p[1])
	}
	if maxX == 0 {
		maxX = 1
	}
	if maxY == 0 {
		maxY = 1
	}
	maxY *= 1.1
	x := func(v float64) float64 { return m + v/maxX*(w-2*m) }
	y := func(v float64) float64 { return h - m - v/maxY*(h-2*m) }
	path := func(ps [][2]float64) string {
		var b strings.Builder
		for i, p := range ps {
			cmd := "L"
			if i == 0 {
				cmd = "M"
			}
			fmt.Fprintf(&b, "%s%.1f,%.1f ", cmd, x(p[0]), y(p[1]))
		}
		return b.String()
	}
	var b strings.Builder
	fmt.Fprintf(&b, `<svg xmlns="http://www.w3.org/2000/svg" width="%.0f" height="%.0f" font-family="sans-serif" font-size="12">`, w, h)
	fmt.Fprintf(&b, `<rect width="100%%" height="100%%" fill="white"/><text x="%.0f" y="24" text-anchor="middle" font-size="15">%s</text>`, w/2, title)
	fmt.Fprintf(&b, `<line x1="%.0f" y1="%.0f" x2="%.0f" y2="%.0f" stroke="black"/><line x1="%.0f" y1="%.0f" x2="%.0f" y2="%.0f" stroke="black"/>`, m, h-m, w-m, h-m, m, m, m, h-m)
	for i := 0; i <= 4; i++ {
		vx, vy := maxX*float64(i)/4, maxY*float64(i)/4
		fmt.Fprintf(&b, `<text x="%.1f" y="%.0f" text-anchor="middle">%.3g</text>`, x(vx), h-m+18, vx)
		fmt.Fprintf(&b, `<text x="%.0f" y="%.1f" text-anchor="end">%.3g</text>`, m-6, y(vy)+4, vy)
		fmt.Fprintf(&b, `<line x1="%.0f" y1="%.1f" x2="%.0f" y2="%.1f" stroke="#ddd"/>`, m, y(vy), w-m, y(vy))
	}
	fmt.Fprintf(&b, `<text x="%.0f" y="%.0f" text-anchor="middle">%s</text>`, w/2, h-14, xlabel)
	fmt.Fprintf(&b, `<text x="16" y="%.0f" text-anchor="middle" transform="rotate(-90 16 %.0f)">%s</text>`, h/2, h/2, ylabel)
	if len(ref) > 0 {
		fmt.Fprintf(&b, `<path d="%s" fill="none" stroke="#999" stroke-dasharray="6,4"/>`, path(ref))
		fmt.Fprintf(&b, `<text x="%.0f" y="%.0f" fill="#777">dashed: perfect scaling</text>`, m+10, m+14)
	}
	fmt.Fprintf(&b, `<path d="%s" fill="none" stroke="#1f6feb" stroke-width="2.5"/>`, path(pts))
	for _, p := range pts {
		fmt.Fprintf(&b, `<circle cx="%.1f" cy="%.1f" r="4" fill="#1f6feb"/>`, x(p[0]), y(p[1]))
	}
	b.WriteString("</svg>\n")
	return b.String()
}
