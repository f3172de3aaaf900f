// Package bench is the measurement engine behind `backbone bench`: closed-
// and open-loop load generators with exact latency percentiles, the raw
// database limit (the merge transaction's SQL with no backbone around it), a
// MySQL-protocol proxy that counts the statements and durable commits a
// workload sends, CPU accounting of this process and of the database server,
// the history-length scale curve of the merge engine, the memory and start-up
// of a `backbone serve` subprocess, and the JSON result and SVG chart.
//
// It knows nothing of how the functions are wired: cmd/backbone builds the
// Merge handler and the dev stack and hands this package closures.
package bench

import (
	"math"
	"slices"
	"time"
)

// Latency summarises a set of durations. Percentiles are exact (nearest
// rank over every sample, no histogram buckets), in milliseconds.
type Latency struct {
	Count  int     `json:"count"`
	MeanMS float64 `json:"mean_ms"`
	P50MS  float64 `json:"p50_ms"`
	P90MS  float64 `json:"p90_ms"`
	P99MS  float64 `json:"p99_ms"`
	MaxMS  float64 `json:"max_ms"`
}

// Summarize computes the summary of ds. It sorts ds in place.
func Summarize(ds []time.Duration) Latency {
	if len(ds) == 0 {
		return Latency{}
	}
	slices.Sort(ds)
	var sum time.Duration
	for _, d := range ds {
		sum += d
	}
	return Latency{
		Count:  len(ds),
		MeanMS: ms(sum / time.Duration(len(ds))),
		P50MS:  ms(Percentile(ds, 50)),
		P90MS:  ms(Percentile(ds, 90)),
		P99MS:  ms(Percentile(ds, 99)),
		MaxMS:  ms(ds[len(ds)-1]),
	}
}

// Percentile returns the nearest-rank p-th percentile of sorted: the
// smallest sample such that at least p% of the samples are ≤ it. It is
// always one of the samples (no interpolation), so a p99 over 100 samples is
// the 99th smallest, and over 10 samples it is the maximum.
func Percentile(sorted []time.Duration, p float64) time.Duration {
	n := len(sorted)
	if n == 0 {
		return 0
	}
	if p <= 0 {
		return sorted[0]
	}
	rank := int(math.Ceil(p / 100 * float64(n)))
	rank = min(max(rank, 1), n)
	return sorted[rank-1]
}

// ms converts to milliseconds rounded to the microsecond.
func ms(d time.Duration) float64 {
	return math.Round(float64(d)/float64(time.Microsecond)) / 1000
}

// round3 rounds to three decimals (JSON readability).
func round3(f float64) float64 { return math.Round(f*1000) / 1000 }
