package bench

import (
	"bufio"
	"encoding/xml"
	"fmt"
	"io"
	"math"
	"slices"
	"strings"
)

// Series is one line of a chart.
type Series struct {
	Name  string
	Color string // any SVG colour
	X, Y  []float64
}

// Chart is a line chart rendered as plain SVG (no dependency): axes with
// ticks, one polyline with point markers per series, a legend.
type Chart struct {
	Title, XLabel, YLabel string
	// LogX spaces the x axis logarithmically (concurrency 1, 4, 16, 64 at
	// equal steps).
	LogX          bool
	Width, Height int // default 720 x 420
	Series        []Series
}

// Plot area margins.
const (
	marginLeft   = 80
	marginRight  = 170
	marginTop    = 50
	marginBottom = 60
)

// WriteSVG renders the chart.
func (c Chart) WriteSVG(w io.Writer) error {
	if c.Width <= 0 {
		c.Width = 720
	}
	if c.Height <= 0 {
		c.Height = 420
	}
	var xs []float64
	ymax := 0.0
	for _, s := range c.Series {
		if len(s.X) != len(s.Y) {
			return fmt.Errorf("series %q has %d x and %d y values", s.Name, len(s.X), len(s.Y))
		}
		for i, x := range s.X {
			if c.LogX && x <= 0 {
				return fmt.Errorf("series %q: x = %v on a log axis", s.Name, x)
			}
			if !slices.Contains(xs, x) {
				xs = append(xs, x)
			}
			if y := s.Y[i]; !math.IsNaN(y) && !math.IsInf(y, 0) {
				ymax = max(ymax, y)
			}
		}
	}
	slices.Sort(xs)
	step := niceStep(ymax / 5)
	top := step * math.Ceil(ymax/step)
	if top <= 0 {
		top, step = 1, 0.2
	}
	pw := float64(c.Width - marginLeft - marginRight)
	ph := float64(c.Height - marginTop - marginBottom)
	fx := func(x float64) float64 {
		if len(xs) < 2 {
			return marginLeft + pw/2
		}
		lo, hi, v := xs[0], xs[len(xs)-1], x
		if c.LogX {
			lo, hi, v = math.Log(lo), math.Log(hi), math.Log(x)
		}
		return marginLeft + (v-lo)/(hi-lo)*pw
	}
	fy := func(y float64) float64 { return marginTop + ph - y/top*ph }

	b := bufio.NewWriter(w)
	p := func(format string, a ...any) { fmt.Fprintf(b, format, a...) }
	p(`<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" viewBox="0 0 %d %d" font-family="sans-serif" font-size="12">`+"\n",
		c.Width, c.Height, c.Width, c.Height)
	p(`<rect width="100%%" height="100%%" fill="white"/>` + "\n")
	p(`<text x="%d" y="28" font-size="16" font-weight="bold">%s</text>`+"\n", marginLeft, esc(c.Title))
	// Horizontal grid and y ticks.
	for y := 0.0; y <= top+step/2; y += step {
		yy := fy(y)
		p(`<line x1="%d" y1="%.1f" x2="%.1f" y2="%.1f" stroke="#ddd"/>`+"\n", marginLeft, yy, marginLeft+pw, yy)
		p(`<text x="%d" y="%.1f" text-anchor="end">%s</text>`+"\n", marginLeft-8, yy+4, tickLabel(y))
	}
	// X ticks at the data's x values.
	for _, x := range xs {
		xx := fx(x)
		p(`<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f" stroke="#ddd"/>`+"\n", xx, float64(marginTop), xx, marginTop+ph)
		p(`<text x="%.1f" y="%.1f" text-anchor="middle">%s</text>`+"\n", xx, marginTop+ph+18, tickLabel(x))
	}
	// Axes and labels.
	p(`<line x1="%d" y1="%.1f" x2="%.1f" y2="%.1f" stroke="black"/>`+"\n", marginLeft, marginTop+ph, marginLeft+pw, marginTop+ph)
	p(`<line x1="%d" y1="%d" x2="%d" y2="%.1f" stroke="black"/>`+"\n", marginLeft, marginTop, marginLeft, marginTop+ph)
	p(`<text x="%.1f" y="%d" text-anchor="middle">%s</text>`+"\n", marginLeft+pw/2, c.Height-15, esc(c.XLabel))
	p(`<text x="18" y="%.1f" text-anchor="middle" transform="rotate(-90 18 %.1f)">%s</text>`+"\n", marginTop+ph/2, marginTop+ph/2, esc(c.YLabel))
	// Series.
	for i, s := range c.Series {
		var pts []string
		for k := range s.X {
			if math.IsNaN(s.Y[k]) || math.IsInf(s.Y[k], 0) {
				continue
			}
			pts = append(pts, fmt.Sprintf("%.1f,%.1f", fx(s.X[k]), fy(s.Y[k])))
		}
		p(`<polyline fill="none" stroke="%s" stroke-width="2" points="%s"/>`+"\n", esc(s.Color), strings.Join(pts, " "))
		for _, pt := range pts {
			x, y, _ := strings.Cut(pt, ",")
			p(`<circle cx="%s" cy="%s" r="4" fill="%s"/>`+"\n", x, y, esc(s.Color))
		}
		ly := marginTop + 10 + i*22
		lx := c.Width - marginRight + 15
		p(`<line x1="%d" y1="%d" x2="%d" y2="%d" stroke="%s" stroke-width="3"/>`+"\n", lx, ly, lx+24, ly, esc(s.Color))
		p(`<text x="%d" y="%d">%s</text>`+"\n", lx+30, ly+4, esc(s.Name))
	}
	p("</svg>\n")
	return b.Flush()
}

// niceStep rounds raw up to 1, 2 or 5 times a power of ten.
func niceStep(raw float64) float64 {
	if raw <= 0 || math.IsNaN(raw) || math.IsInf(raw, 0) {
		return 1
	}
	exp := math.Pow(10, math.Floor(math.Log10(raw)))
	for _, m := range []float64{1, 2, 5, 10} {
		if m*exp >= raw {
			return m * exp
		}
	}
	return 10 * exp
}

func tickLabel(v float64) string {
	if v == math.Trunc(v) {
		return fmt.Sprintf("%.0f", v)
	}
	return strings.TrimRight(strings.TrimRight(fmt.Sprintf("%.2f", v), "0"), ".")
}

func esc(s string) string {
	var sb strings.Builder
	_ = xml.EscapeText(&sb, []byte(s))
	return sb.String()
}
