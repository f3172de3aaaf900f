package bench

import (
	"context"
	"encoding/json"
	"encoding/xml"
	"errors"
	"io"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

func msDurations(vals ...int) []time.Duration {
	out := make([]time.Duration, len(vals))
	for i, v := range vals {
		out[i] = time.Duration(v) * time.Millisecond
	}
	return out
}

func TestPercentileNearestRank(t *testing.T) {
	t.Parallel()
	hundred := make([]time.Duration, 100)
	for i := range hundred {
		hundred[i] = time.Duration(i+1) * time.Millisecond
	}
	cases := []struct {
		name   string
		sorted []time.Duration
		p      float64
		want   time.Duration
	}{
		{"p50 of 1..100", hundred, 50, 50 * time.Millisecond},
		{"p99 of 1..100", hundred, 99, 99 * time.Millisecond},
		{"p100 of 1..100", hundred, 100, 100 * time.Millisecond},
		{"p99.5 rounds up to the 100th", hundred, 99.5, 100 * time.Millisecond},
		{"p99 of 10 samples is the max", msDurations(1, 2, 3, 4, 5, 6, 7, 8, 9, 10), 99, 10 * time.Millisecond},
		{"p50 of 10 samples is the 5th", msDurations(1, 2, 3, 4, 5, 6, 7, 8, 9, 10), 50, 5 * time.Millisecond},
		{"p0 is the min", msDurations(3, 4), 0, 3 * time.Millisecond},
		{"one sample", msDurations(7), 99, 7 * time.Millisecond},
		{"no samples", nil, 50, 0},
	}
	for _, c := range cases {
		if got := Percentile(c.sorted, c.p); got != c.want {
			t.Errorf("%s: Percentile(p%v) = %v, want %v", c.name, c.p, got, c.want)
		}
	}
}

func TestSummarize(t *testing.T) {
	t.Parallel()
	// Unsorted on purpose: Summarize sorts.
	l := Summarize(msDurations(9, 1, 5, 3, 7, 2, 4, 6, 8, 10))
	want := Latency{Count: 10, MeanMS: 5.5, P50MS: 5, P90MS: 9, P99MS: 10, MaxMS: 10}
	if l != want {
		t.Fatalf("Summarize = %+v, want %+v", l, want)
	}
	if z := Summarize(nil); z != (Latency{}) {
		t.Fatalf("Summarize(nil) = %+v, want zero", z)
	}
	// Microsecond rounding of the milliseconds.
	if l := Summarize([]time.Duration{1234567 * time.Nanosecond}); l.P50MS != 1.235 {
		t.Fatalf("1.234567 ms summarised as %v, want 1.235", l.P50MS)
	}
}

func TestPoolCombinesWindows(t *testing.T) {
	t.Parallel()
	a := Point{Concurrency: 4, Events: 3, Succeeded: 4, WindowSeconds: 1, samples: msDurations(1, 2, 3),
		CPU: CPU{SelfMSPerEvent: 1, ServerMSPerEvent: 2, SelfCores: 0.5, OtherCores: 1}}
	b := Point{Concurrency: 4, Events: 1, Succeeded: 2, Errors: 1, FirstError: "boom", WindowSeconds: 1, samples: msDurations(10),
		CPU: CPU{SelfMSPerEvent: 5, ServerMSPerEvent: 2, SelfCores: 1.5, OtherCores: 0}}
	p := Pool(a, b)
	if p.Events != 4 || p.Succeeded != 6 || p.Errors != 1 || p.FirstError != "boom" {
		t.Fatalf("counts: %+v", p)
	}
	if p.EventsPerSec != 2 || p.WindowSeconds != 2 {
		t.Fatalf("throughput %v over %vs, want 2/s over 2s", p.EventsPerSec, p.WindowSeconds)
	}
	if p.Latency.Count != 4 || p.Latency.MaxMS != 10 || p.Latency.P50MS != 2 {
		t.Fatalf("latency %+v", p.Latency)
	}
	// CPU per event weighted by events: (1*3 + 5*1)/4 = 2; cores averaged
	// over time.
	if p.CPU.SelfMSPerEvent != 2 || p.CPU.ServerMSPerEvent != 2 || p.CPU.SelfCores != 1 || p.CPU.OtherCores != 0.5 {
		t.Fatalf("cpu %+v", p.CPU)
	}
}

func TestStreamAdvancesOnlyStoredRecords(t *testing.T) {
	t.Parallel()
	s := NewStream("w0", "suitex", 2)
	e1 := s.Next()
	s.Done(true)
	e2 := s.Next()
	s.Done(false) // failed: r1 stays at version 0
	e3 := s.Next()
	s.Done(true)
	e4 := s.Next()
	if e1.RecordID != "w0-r0" || e1.Base != 0 || e2.RecordID != "w0-r1" || e2.Base != 0 {
		t.Fatalf("first round: %+v %+v", e1, e2)
	}
	if e3.RecordID != "w0-r0" || e3.Base != 1 {
		t.Fatalf("r0 after one stored event: %+v", e3)
	}
	if e4.RecordID != "w0-r1" || e4.Base != 0 {
		t.Fatalf("r1 after a failed event must still be at 0: %+v", e4)
	}
	var raw map[string]any
	if err := json.Unmarshal(e3.Raw("id-1"), &raw); err != nil {
		t.Fatal(err)
	}
	if raw["id"] != "id-1" || raw["source"] != "suitex" || raw["base_version"] != 1.0 || raw["record_type"] != RecordType {
		t.Fatalf("raw event %v", raw)
	}
}

func TestClosedLoopCountsAndErrors(t *testing.T) {
	t.Parallel()
	r := NewRunner(Timing{Warmup: 10 * time.Millisecond, Window: 60 * time.Millisecond}, 0)
	var calls atomic.Int64
	p := r.Closed(context.Background(), 3, func(w int) Op {
		return func(context.Context) error {
			n := calls.Add(1)
			time.Sleep(time.Millisecond)
			if w == 2 && n%2 == 0 {
				return errors.New("worker 2 fails every other call")
			}
			return nil
		}
	}, nil)
	if p.Concurrency != 3 || p.Events != p.Latency.Count {
		t.Fatalf("events %d, latency samples %d", p.Events, p.Latency.Count)
	}
	if p.Events == 0 || p.Succeeded < p.Events {
		t.Fatalf("succeeded %d, in window %d", p.Succeeded, p.Events)
	}
	if int64(p.Succeeded+p.Errors) != calls.Load() {
		t.Fatalf("succeeded %d + errors %d != calls %d", p.Succeeded, p.Errors, calls.Load())
	}
	if p.Errors > 0 && p.FirstError == "" {
		t.Fatal("errors without a first error")
	}
}

func TestRunNDoesExactlyN(t *testing.T) {
	t.Parallel()
	var calls atomic.Int64
	n, err := RunN(context.Background(), 7, 100, func(int) Op {
		return func(context.Context) error { calls.Add(1); return nil }
	})
	if err != nil || n != 100 || calls.Load() != 100 {
		t.Fatalf("RunN: %d succeeded, %d calls, err %v", n, calls.Load(), err)
	}
	n, err = RunN(context.Background(), 2, 10, func(int) Op {
		return func(context.Context) error { return errors.New("no") }
	})
	if err == nil || n != 0 {
		t.Fatalf("failing ops: %d succeeded, err %v", n, err)
	}
}

func TestOpenLoopStages(t *testing.T) {
	t.Parallel()
	r := NewRunner(Timing{Warmup: 0, Window: 50 * time.Millisecond}, 0)
	res := r.Open(context.Background(), 200, time.Second, []string{"first", "second"}, func(context.Context) ([]time.Time, error) {
		t1 := time.Now()
		return []time.Time{t1, t1.Add(time.Millisecond)}, nil
	}, nil)
	if res.Sent == 0 || res.Completed != res.Sent || res.Errors != 0 {
		t.Fatalf("sent %d, completed %d, errors %d", res.Sent, res.Completed, res.Errors)
	}
	f, s := res.Stages["first"], res.Stages["second"]
	if f.Count != res.Completed || s.Count != res.Completed {
		t.Fatalf("stage counts %d, %d; completed %d", f.Count, s.Count, res.Completed)
	}
	if s.MaxMS < f.MaxMS || s.P50MS < f.P50MS {
		t.Fatalf("the later stage must not be faster: %+v vs %+v", s, f)
	}
	if bad := r.Open(context.Background(), 0, time.Second, nil, nil, nil); bad.Errors != 1 {
		t.Fatalf("rate 0 must be refused: %+v", bad)
	}
}

func TestClassify(t *testing.T) {
	t.Parallel()
	cases := map[string]string{
		"SELECT 1": "SELECT",
		"  select x from t where id = 1 for update":       "SELECT … FOR UPDATE",
		"/* hint */ INSERT INTO events (id) VALUES ('x')": "INSERT",
		"UPDATE events SET processed = 1":                 "UPDATE",
		"SET TRANSACTION ISOLATION LEVEL READ COMMITTED":  "SET TRANSACTION",
		"SET time_zone='+00:00'":                          "SET",
		"START TRANSACTION":                               "START TRANSACTION",
		"COMMIT":                                          "COMMIT",
		"rollback":                                        "ROLLBACK",
		"":                                                "(empty)",
		// Two known simplifications, pinned so that a change is
		// deliberate: a parenthesised statement has no leading keyword,
		// and FOR UPDATE is found anywhere in the text.
		"(SELECT 1) UNION (SELECT 2)":                     "(empty)",
		"SELECT a FROM t WHERE note = 'FOR UPDATE later'": "SELECT … FOR UPDATE",
	}
	for q, want := range cases {
		if got := classify([]byte(q)); got != want {
			t.Errorf("classify(%q) = %q, want %q", q, got, want)
		}
	}
}

func TestCountsSubAndPerEvent(t *testing.T) {
	t.Parallel()
	before := Counts{Statements: 10, Commits: 1, ByKind: map[string]int64{"SELECT": 4, "INSERT": 6}}
	after := Counts{Statements: 30, Commits: 5, ByKind: map[string]int64{"SELECT": 12, "INSERT": 14, "COMMIT": 4}}
	d := after.Sub(before)
	if d.Statements != 20 || d.Commits != 4 || d.ByKind["SELECT"] != 8 || d.ByKind["COMMIT"] != 4 {
		t.Fatalf("Sub: %+v", d)
	}
	st, err := PerEvent(d, 4)
	if err != nil {
		t.Fatal(err)
	}
	if st.PerEvent != 5 || st.CommitsPerEvent != 1 || st.ByKind["SELECT"] != 2 || st.Events != 4 {
		t.Fatalf("PerEvent: %+v", st)
	}
	if _, err := PerEvent(Counts{Opaque: 1}, 4); err == nil {
		t.Fatal("a TLS connection makes the count untrustworthy: want an error")
	}
	if _, err := PerEvent(d, 0); err == nil {
		t.Fatal("zero events: want an error")
	}
}

// svgDoc is the part of the SVG the tests read back.
type svgDoc struct {
	XMLName   xml.Name `xml:"svg"`
	Polylines []struct {
		Points string `xml:"points,attr"`
	} `xml:"polyline"`
	Circles []struct {
		CX string `xml:"cx,attr"`
	} `xml:"circle"`
	Texts []string `xml:"text"`
}

func parseSVG(t *testing.T, r io.Reader) svgDoc {
	t.Helper()
	var doc svgDoc
	if err := xml.NewDecoder(r).Decode(&doc); err != nil {
		t.Fatalf("not well-formed SVG: %v", err)
	}
	return doc
}

func TestChartSVG(t *testing.T) {
	t.Parallel()
	ch := Chart{Title: "throughput <a & b>", XLabel: "concurrency", YLabel: "events/s", LogX: true, Series: []Series{
		{Name: "a: raw <limit>", Color: "#1f77b4", X: []float64{1, 4, 16, 64}, Y: []float64{700, 1000, 1300, 1100}},
		{Name: "b", Color: "red", X: []float64{1, 4, 16, 64}, Y: []float64{200, 400, 600, math.NaN()}},
	}}
	var sb strings.Builder
	if err := ch.WriteSVG(&sb); err != nil {
		t.Fatal(err)
	}
	doc := parseSVG(t, strings.NewReader(sb.String()))
	if len(doc.Polylines) != 2 {
		t.Fatalf("%d polylines, want 2", len(doc.Polylines))
	}
	if n := len(strings.Fields(doc.Polylines[1].Points)); n != 3 {
		t.Fatalf("the NaN point must be left out: %d points", n)
	}
	texts := strings.Join(doc.Texts, "|")
	for _, want := range []string{"throughput <a & b>", "a: raw <limit>", "concurrency", "events/s", "1500"} {
		if !strings.Contains(texts, want) {
			t.Errorf("text %q missing from %q", want, texts)
		}
	}
	// Log x axis: 1, 4, 16, 64 are equally spaced.
	var xs []float64
	for _, c := range doc.Circles[:4] {
		x, err := strconv.ParseFloat(c.CX, 64)
		if err != nil {
			t.Fatal(err)
		}
		xs = append(xs, x)
	}
	for i := 2; i < len(xs); i++ {
		if d1, d2 := xs[i]-xs[i-1], xs[1]-xs[0]; math.Abs(d1-d2) > 0.2 {
			t.Fatalf("log x axis not evenly spaced: %v", xs)
		}
	}

	if err := (Chart{Series: []Series{{Name: "x", X: []float64{1}, Y: nil}}}).WriteSVG(io.Discard); err == nil {
		t.Error("mismatched x and y: want an error")
	}
	if err := (Chart{LogX: true, Series: []Series{{Name: "x", X: []float64{0}, Y: []float64{1}}}}).WriteSVG(io.Discard); err == nil {
		t.Error("x = 0 on a log axis: want an error")
	}
}

func TestNiceStep(t *testing.T) {
	t.Parallel()
	for raw, want := range map[float64]float64{0.3: 0.5, 1: 1, 140: 200, 260: 500, 999: 1000, 0: 1} {
		if got := niceStep(raw); math.Abs(got-want) > 1e-9 {
			t.Errorf("niceStep(%v) = %v, want %v", raw, got, want)
		}
	}
}

func testResult() *Result {
	pt := func(c int, eps float64) Point {
		return Point{Concurrency: c, EventsPerSec: eps, Events: int(eps), Latency: Latency{Count: int(eps), P50MS: 1, P99MS: 2, MaxMS: 3}}
	}
	withDB := func(p Point, ms float64) Point { p.CPU.OwnServerMSPerEvent = ms; return p }
	r := &Result{Started: time.Date(2026, 3, 13, 20, 0, 0, 0, time.UTC), Machine: Machine{NProc: 2, CPUModel: "Test CPU", Server: "10.11-MariaDB"},
		Modes: []Mode{
			{Key: ModeRaw, Name: "raw limit", Points: []Point{pt(1, 500), withDB(pt(16, 1000), 0.4)}, Statements: &Statements{PerEvent: 7, CommitsPerEvent: 1, ByKind: map[string]float64{"SELECT": 2}}},
			{Key: ModeMerge, Name: "merge path", Points: []Point{pt(1, 200), withDB(pt(16, 750), 0.5)}, Statements: &Statements{PerEvent: 7.5, CommitsPerEvent: 1.2}},
			{Key: ModeFull, Name: "full path", Points: []Point{pt(1, 50), pt(16, 400)}},
		},
		Scale: &Scale{Points: []ScalePoint{
			{PriorEvents: 10, Latency: Latency{MeanMS: 2, P50MS: 2}, DeliveryLatency: Latency{Count: 5, MeanMS: 3, P50MS: 3}},
			{PriorEvents: 10000, Latency: Latency{MeanMS: 2.6, P50MS: 2}, DeliveryLatency: Latency{Count: 5, MeanMS: 3.3, P50MS: 3}}},
			Ratio: 1.3, RatioP50: 1, DeliveryRatio: 1.1, DeliveryRatioP50: 1},
		OpenLoop: &OpenResult{TargetRate: 200, Sent: 10, Completed: 10, Stages: map[string]Latency{"raw_to_merged": {Count: 10, P99MS: 20}, "raw_to_delivered": {Count: 10, P99MS: 30}}},
		Serve:    &ServeResult{StartupMS: []float64{20, 30}, StartupMedianMS: 20, StartupMaxMS: 30, PeakRSSMiB: 70, Concurrency: 100},
		Decomposition: []NamedPoint{
			{Key: "m", Name: "merge SQL alone", Point: withDB(pt(16, 800), 0.48)},
			{Key: DiagRawHead, Name: "raw limit + projection row", Point: withDB(pt(16, 900), 0.46)},
			{Key: DiagRawHeadFlag, Name: "raw limit + projection row + outbox flag", Point: withDB(pt(16, 850), 0.5)},
		},
	}
	r.ComputeRatios()
	r.EvaluateTargets()
	return r
}

func TestRatiosAndTargets(t *testing.T) {
	t.Parallel()
	r := testResult()
	if len(r.Ratios) != 2 || r.Ratios[1].Concurrency != 16 || r.Ratios[1].BOverA != 0.75 || r.Ratios[1].COverA != 0.4 {
		t.Fatalf("ratios %+v", r.Ratios)
	}
	got := map[string]bool{}
	for _, tg := range r.Targets {
		got[tg.Name] = tg.OK
	}
	want := map[string]bool{
		"b/a at concurrency 16":                                       true,  // 0.75 >= 0.70
		"c/b at concurrency 16":                                       false, // 400/750 = 0.53 < 0.60
		"database CPU per merged event, b/a at concurrency 16":        true,  // 0.5/0.4 = 1.25 <= 1.3
		"SQL statements per merged event (b)":                         true,  // 7.5 <= 7.5
		"durable commits per merged event (b)":                        false, // 1.2 > 1.10
		"merge cost at 10000 prior events / at 10":                    false, // 1.3 > 1.2
		"delivery cost at 10000 prior events / at 10":                 true,  // 1.1 <= 1.2
		"p99 raw to merged at half of peak throughput":                true,  // 20 < 50
		"peak RSS of serve (Merge) under 100 concurrent requests":     false, // 70 >= 64
		"start-up of serve (process start to listening port), median": true,
	}
	if len(got) != len(want) {
		t.Fatalf("targets %+v", r.Targets)
	}
	for name, ok := range want {
		if v, present := got[name]; !present || v != ok {
			t.Errorf("target %q: ok = %v (present %v), want %v", name, v, present, ok)
		}
	}
	// The database CPU target states the floor of p and q over a.
	for _, tg := range r.Targets {
		if tg.Name == "database CPU per merged event, b/a at concurrency 16" {
			if want := "0.500 / 0.400 ms; floor: a+projection row p/a = 1.15 (0.460 ms), + outbox flag q/a = 1.25 (0.500 ms)"; tg.Detail != want {
				t.Errorf("database CPU detail %q, want %q", tg.Detail, want)
			}
		}
	}
}

func TestResultWrite(t *testing.T) {
	t.Parallel()
	r := testResult()
	r.Errors = []string{"c at concurrency 64: 64 errors"}
	dir := filepath.Join(t.TempDir(), "out")
	if err := r.Write(dir); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(filepath.Join(dir, "bench.json"))
	if err != nil {
		t.Fatal(err)
	}
	var back Result
	if err := json.Unmarshal(b, &back); err != nil {
		t.Fatalf("bench.json does not decode: %v", err)
	}
	if len(back.Modes) != 3 || back.Modes[0].Points[1].EventsPerSec != 1000 || len(back.Targets) != len(r.Targets) || back.Ratios[1].BOverA != 0.75 {
		t.Fatalf("bench.json round trip lost data: %s", b)
	}
	f, err := os.Open(filepath.Join(dir, "bench.svg"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if doc := parseSVG(t, f); len(doc.Polylines) != 3 {
		t.Fatalf("bench.svg has %d series, want 3", len(doc.Polylines))
	}
	md, err := os.ReadFile(filepath.Join(dir, "bench.md"))
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"Test CPU", "| a | 16 | 1000 |", "| 16 | 0.75 | 0.40 |", "**no**", "SELECT 2.00", "**error:** c at concurrency 64",
		"| p: raw limit + projection row | 16 | 900 |", "| q: raw limit + projection row + outbox flag | 16 | 850 |", "floor: a+projection row p/a = 1.15"} {
		if !strings.Contains(string(md), want) {
			t.Errorf("bench.md lacks %q:\n%s", want, md)
		}
	}
}

func TestMemoryMiBReadsStatus(t *testing.T) {
	t.Parallel()
	if v := memoryMiB(os.Getpid(), "VmHWM"); v <= 0 {
		t.Fatalf("VmHWM of this process = %v", v)
	}
	if v := memoryMiB(os.Getpid(), "NoSuchField"); v != 0 {
		t.Fatalf("unknown field = %v, want 0", v)
	}
}

func TestStatCPUParsesCommWithSpaces(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "stat")
	// Field 2 holds a name with spaces and a ')': fields count from the
	// last ')'. utime 150 + stime 50 ticks = 2 s.
	line := "42 (a) b (c)) S 1 2 3 4 5 6 7 8 9 10 150 50 0 0 20 0 1 0\n"
	if err := os.WriteFile(path, []byte(line), 0o600); err != nil {
		t.Fatal(err)
	}
	if got := statCPU(path); got != 2*time.Second {
		t.Fatalf("statCPU = %v, want 2s", got)
	}
}
