package bench

import (
	"fmt"
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
		done := slices.Clone(e.fanoutDone)
		slices.Sort(done)
		pts := [][2]float64{{0, 0}}
		for i, d := range done {
			pts = append(pts, [2]float64{d.Seconds(), float64(i + 1)})
		}
		svg := lineChart("Fan-out: followers done over time", "seconds", "followers with the closure", pts, nil)
		if err := os.WriteFile(filepath.Join(dir, "fanout.svg"), []byte(svg), 0o644); err != nil {
			return err
		}
	}
	return nil
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
