package console

import (
	"fmt"
	"html/template"
	"strings"

	"github.com/backbone-sync/backbone/internal/health"
)

// Chart geometry, in SVG user units.
const (
	chartW, chartH = 720, 160
	chartPad       = 24
)

// chartSeries are drawn in this order, each a polyline.
var chartSeries = []struct {
	name, color string
	value       func(health.Bucket) int
}{
	{"merged", "#3367d6", func(b health.Bucket) int { return b.Merged }},
	{"delivered", "#0b8043", func(b health.Bucket) int { return b.Delivered }},
	{"failed/refused", "#c5221f", func(b health.Bucket) int { return b.Failed }},
	{"stale/echo", "#9aa0a6", func(b health.Bucket) int { return b.Skipped }},
}

// chartSVG draws the last hour per minute. Every value is a number the
// code computed, so the markup is safe to emit as is.
func chartSVG(buckets []health.Bucket) template.HTML {
	peak := 1
	for _, b := range buckets {
		for _, s := range chartSeries {
			peak = max(peak, s.value(b))
		}
	}
	var sb strings.Builder
	fmt.Fprintf(&sb, `<svg class="chart" role="img" aria-label="throughput and outcomes, last hour, per minute" viewBox="0 0 %d %d" width="%d" height="%d">`,
		chartW, chartH+20, chartW, chartH+20)
	fmt.Fprintf(&sb, `<line x1="%d" y1="%d" x2="%d" y2="%d" stroke="#ccc"/>`, chartPad, chartH-chartPad, chartW-chartPad, chartH-chartPad)
	fmt.Fprintf(&sb, `<text x="2" y="%d" font-size="10">%d/min</text>`, chartPad-6, peak)
	n := max(len(buckets)-1, 1)
	for _, s := range chartSeries {
		var pts []string
		for i, b := range buckets {
			x := chartPad + i*(chartW-2*chartPad)/n
			y := chartH - chartPad - s.value(b)*(chartH-2*chartPad)/peak
			pts = append(pts, fmt.Sprintf("%d,%d", x, y))
		}
		fmt.Fprintf(&sb, `<polyline fill="none" stroke="%s" stroke-width="2" points="%s"/>`, s.color, strings.Join(pts, " "))
	}
	for i, s := range chartSeries {
		x := chartPad + i*150
		fmt.Fprintf(&sb, `<rect x="%d" y="%d" width="10" height="10" fill="%s"/><text x="%d" y="%d" font-size="11">%s</text>`,
			x, chartH+2, s.color, x+14, chartH+11, s.name)
	}
	if len(buckets) > 0 {
		fmt.Fprintf(&sb, `<text x="%d" y="%d" font-size="10">%s</text><text x="%d" y="%d" font-size="10" text-anchor="end">%s UTC</text>`,
			chartPad, chartH-8, buckets[0].Start.Format("15:04"), chartW-chartPad, chartH-8, buckets[len(buckets)-1].Start.Format("15:04"))
	}
	sb.WriteString(`</svg>`)
	return template.HTML(sb.String())
}
