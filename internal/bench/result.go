package bench

import (
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"
)

// Mode keys.
const (
	ModeRaw   = "a"
	ModeMerge = "b"
	ModeFull  = "c"
)

// Mode is one of the three measured paths at every concurrency.
type Mode struct {
	Key  string `json:"key"`
	Name string `json:"name"`
	// Measures says exactly what one event is and what its latency spans.
	Measures   string      `json:"measures"`
	Points     []Point     `json:"points"`
	Statements *Statements `json:"statements,omitempty"`
	// Verified is the check that every acknowledged event was stored.
	Verified string `json:"verified,omitempty"`
}

// Point returns the point at concurrency c.
func (m Mode) Point(c int) (Point, bool) {
	for _, p := range m.Points {
		if p.Concurrency == c {
			return p, true
		}
	}
	return Point{}, false
}

// Peak returns the point with the highest throughput.
func (m Mode) Peak() (Point, bool) {
	if len(m.Points) == 0 {
		return Point{}, false
	}
	return slices.MaxFunc(m.Points, func(a, b Point) int {
		switch {
		case a.EventsPerSec < b.EventsPerSec:
			return -1
		case a.EventsPerSec > b.EventsPerSec:
			return 1
		}
		return 0
	}), true
}

// Ratio compares b and c with a at one concurrency.
type Ratio struct {
	Concurrency int     `json:"concurrency"`
	BOverA      float64 `json:"b_over_a"`
	COverA      float64 `json:"c_over_a"`
}

// Target is one goal of the issue, checked against this run's figures.
type Target struct {
	Name   string  `json:"name"`
	Want   string  `json:"want"`
	Got    float64 `json:"got"`
	Unit   string  `json:"unit,omitempty"`
	OK     bool    `json:"ok"`
	Detail string  `json:"detail,omitempty"`
}

// Result is the whole run.
type Result struct {
	Started  time.Time `json:"started"`
	Seconds  float64   `json:"seconds"`
	Quick    bool      `json:"quick"`
	Machine  Machine   `json:"machine"`
	WarmupMS int64     `json:"warmup_ms"`
	WindowMS int64     `json:"window_ms"`
	Modes    []Mode    `json:"modes"`
	Ratios   []Ratio   `json:"ratios"`
	// RawDrift is mode (a) in its two windows at each concurrency, before
	// and after b and c: how far the machine drifted meanwhile.
	RawDrift []Drift `json:"raw_limit_drift,omitempty"`
	// Decomposition splits (b) at the reference concurrency: the merge's
	// SQL alone, with and without its outbox flag update, and a's
	// transaction plus only the projection row, and plus the outbox flag.
	Decomposition []NamedPoint `json:"decomposition,omitempty"`
	OpenLoop      *OpenResult  `json:"open_loop,omitempty"`
	Scale         *Scale       `json:"scale,omitempty"`
	Storage       *Storage     `json:"storage,omitempty"`
	Serve         *ServeResult `json:"serve,omitempty"`
	Burst         *Burst       `json:"burst,omitempty"`
	Targets       []Target     `json:"targets"`
	Notes         []string     `json:"notes,omitempty"`
	Errors        []string     `json:"errors,omitempty"`
	Profiles      []string     `json:"profiles,omitempty"`
}

// Burst is the coalescing figure (SPEC §7): NetSuite requests per stored
// version when VersionsPerRecord versions of each record arrive while
// NetSuite takes DelayMS per request.
type Burst struct {
	Records            int     `json:"records"`
	VersionsPerRecord  int     `json:"versions_per_record"`
	DelayMS            int64   `json:"delay_ms"`
	NetSuiteRequests   int     `json:"netsuite_requests"`
	RequestsPerVersion float64 `json:"requests_per_version"`
}

// TargetBurstPerVersion is the burst figure's goal.
const TargetBurstPerVersion = 0.1

// Diagnosis keys of the decomposition that the targets read: a's
// transaction plus the projection row, and plus the outbox flag too.
const (
	DiagRawHead     = "p"
	DiagRawHeadFlag = "q"
)

// NamedPoint is a diagnostic measurement.
type NamedPoint struct {
	Key      string `json:"key,omitempty"`
	Name     string `json:"name"`
	Measures string `json:"measures"`
	Point    Point  `json:"point"`
}

// Drift compares mode (a)'s window before b and c with its window after.
type Drift struct {
	Concurrency        int     `json:"concurrency"`
	BeforeEventsPerSec float64 `json:"before_events_per_sec"`
	AfterEventsPerSec  float64 `json:"after_events_per_sec"`
	ChangePct          float64 `json:"change_pct"`
}

// NewDrift compares before with after.
func NewDrift(before, after Point) Drift {
	d := Drift{Concurrency: before.Concurrency, BeforeEventsPerSec: before.EventsPerSec, AfterEventsPerSec: after.EventsPerSec}
	if before.EventsPerSec > 0 {
		d.ChangePct = round3((after.EventsPerSec - before.EventsPerSec) / before.EventsPerSec * 100)
	}
	return d
}

// Diagnosis returns the decomposition's point with key k.
func (r *Result) Diagnosis(k string) (NamedPoint, bool) {
	for _, d := range r.Decomposition {
		if d.Key == k {
			return d, true
		}
	}
	return NamedPoint{}, false
}

// Mode returns the mode with key k.
func (r *Result) Mode(k string) (Mode, bool) {
	for _, m := range r.Modes {
		if m.Key == k {
			return m, true
		}
	}
	return Mode{}, false
}

// ComputeRatios fills r.Ratios from the modes.
func (r *Result) ComputeRatios() {
	a, okA := r.Mode(ModeRaw)
	if !okA {
		return
	}
	b, _ := r.Mode(ModeMerge)
	c, _ := r.Mode(ModeFull)
	r.Ratios = nil
	for _, pa := range a.Points {
		if pa.EventsPerSec <= 0 {
			continue
		}
		ra := Ratio{Concurrency: pa.Concurrency}
		if pb, ok := b.Point(pa.Concurrency); ok {
			ra.BOverA = round3(pb.EventsPerSec / pa.EventsPerSec)
		}
		if pc, ok := c.Point(pa.Concurrency); ok {
			ra.COverA = round3(pc.EventsPerSec / pa.EventsPerSec)
		}
		r.Ratios = append(r.Ratios, ra)
	}
}

// RefConcurrency is where the ratio targets are read.
const RefConcurrency = 16

// Target thresholds of the issue.
const (
	TargetBOverA       = 0.70
	TargetCOverB       = 0.60
	TargetDBCPUOverA   = 1.3 // the database CPU per merged event, b over a
	TargetStatements   = 7.5 // per merged event (b)
	TargetCommits      = 1.10
	TargetScaleRatio   = 1.2
	TargetOpenLoopP99  = 50.0 // ms
	TargetRSSMiB       = 64.0
	TargetStartupMS    = 300.0
	openLoopStageCheck = "raw_to_merged"
)

// EvaluateTargets checks the targets against the figures present.
func (r *Result) EvaluateTargets() {
	r.Targets = nil
	ratioAt := func(c int) (Ratio, bool) {
		for _, x := range r.Ratios {
			if x.Concurrency == c {
				return x, true
			}
		}
		return Ratio{}, false
	}
	if x, ok := ratioAt(RefConcurrency); ok {
		if x.BOverA > 0 {
			r.Targets = append(r.Targets, Target{Name: fmt.Sprintf("b/a at concurrency %d", RefConcurrency), Want: fmt.Sprintf(">= %.2f", TargetBOverA),
				Got: x.BOverA, OK: x.BOverA >= TargetBOverA})
		}
	}
	a, _ := r.Mode(ModeRaw)
	b, _ := r.Mode(ModeMerge)
	c, _ := r.Mode(ModeFull)
	pa, okA := a.Point(RefConcurrency)
	pb, okB := b.Point(RefConcurrency)
	if pc, ok := c.Point(RefConcurrency); ok && okB && pb.EventsPerSec > 0 {
		x := round3(pc.EventsPerSec / pb.EventsPerSec)
		r.Targets = append(r.Targets, Target{Name: fmt.Sprintf("c/b at concurrency %d", RefConcurrency), Want: fmt.Sprintf(">= %.2f", TargetCOverB),
			Got: x, OK: x >= TargetCOverB, Detail: fmt.Sprintf("%.0f/%.0f events/s", pc.EventsPerSec, pb.EventsPerSec)})
	}
	if okA && okB && pa.CPU.OwnServerMSPerEvent > 0 && pb.CPU.OwnServerMSPerEvent > 0 {
		x := round3(pb.CPU.OwnServerMSPerEvent / pa.CPU.OwnServerMSPerEvent)
		detail := fmt.Sprintf("%.3f / %.3f ms", pb.CPU.OwnServerMSPerEvent, pa.CPU.OwnServerMSPerEvent)
		// The floor the merge's mandated statements put on the ratio: a's
		// transaction plus only the projection row, then plus the outbox flag.
		var floor []string
		for _, f := range []struct{ key, what string }{{DiagRawHead, "a+projection row"}, {DiagRawHeadFlag, "+ outbox flag"}} {
			if d, ok := r.Diagnosis(f.key); ok && d.Point.CPU.OwnServerMSPerEvent > 0 {
				floor = append(floor, fmt.Sprintf("%s %s/a = %.2f (%.3f ms)", f.what, f.key, d.Point.CPU.OwnServerMSPerEvent/pa.CPU.OwnServerMSPerEvent, d.Point.CPU.OwnServerMSPerEvent))
			}
		}
		if len(floor) > 0 {
			detail += "; floor: " + strings.Join(floor, ", ")
		}
		r.Targets = append(r.Targets, Target{Name: fmt.Sprintf("database CPU per merged event, b/a at concurrency %d", RefConcurrency),
			Want: fmt.Sprintf("<= %.1f", TargetDBCPUOverA), Got: x, OK: x <= TargetDBCPUOverA, Detail: detail})
	}
	if st := b.Statements; st != nil && st.PerEvent > 0 {
		r.Targets = append(r.Targets,
			Target{Name: "SQL statements per merged event (b)", Want: fmt.Sprintf("<= %.1f", TargetStatements), Got: st.PerEvent, OK: st.PerEvent <= TargetStatements},
			Target{Name: "durable commits per merged event (b)", Want: fmt.Sprintf("<= %.2f", TargetCommits), Got: st.CommitsPerEvent, OK: st.CommitsPerEvent <= TargetCommits})
	}
	if s := r.Scale; s != nil && len(s.Points) >= 2 {
		first, last := s.Points[0], s.Points[len(s.Points)-1]
		r.Targets = append(r.Targets, Target{Name: fmt.Sprintf("merge cost at %d prior events / at %d", last.PriorEvents, first.PriorEvents),
			Want: fmt.Sprintf("<= %.1f", TargetScaleRatio), Got: s.Ratio, OK: s.Ratio > 0 && s.Ratio <= TargetScaleRatio,
			Detail: fmt.Sprintf("means %.3f / %.3f ms; medians ratio %.3f", last.Latency.MeanMS, first.Latency.MeanMS, s.RatioP50)})
		if first.DeliveryLatency.Count > 0 {
			r.Targets = append(r.Targets, Target{Name: fmt.Sprintf("delivery cost at %d prior events / at %d", last.PriorEvents, first.PriorEvents),
				Want: fmt.Sprintf("<= %.1f", TargetScaleRatio), Got: s.DeliveryRatio, OK: s.DeliveryRatio > 0 && s.DeliveryRatio <= TargetScaleRatio,
				Detail: fmt.Sprintf("means %.3f / %.3f ms; medians ratio %.3f", last.DeliveryLatency.MeanMS, first.DeliveryLatency.MeanMS, s.DeliveryRatioP50)})
		}
	}
	if s := r.Storage; s != nil && s.Events > 0 {
		want := StorageTarget(s.MeanChangesBytes)
		r.Targets = append(r.Targets, Target{Name: fmt.Sprintf("bytes stored per event, %d events of a %d-field record", s.Events, s.Fields),
			Want: fmt.Sprintf("<= %d×changes+%d = %.0f", TargetStorageFactor, TargetStorageBytes, want), Got: s.PageBytesPerEvent, Unit: "bytes",
			OK: s.PageBytesPerEvent > 0 && s.PageBytesPerEvent <= want,
			Detail: fmt.Sprintf("B-tree pages in use; changes %.1f bytes on average; records %.1f, values %.1f, allocated %.1f bytes/event",
				s.MeanChangesBytes, s.RecordBytesPerEvent, s.LogicalBytesPerEvent, s.BytesPerEvent)})
	}
	if o := r.OpenLoop; o != nil {
		if l, ok := o.Stages[openLoopStageCheck]; ok {
			d := fmt.Sprintf("at %.0f events/s (half of peak c); raw to delivered p99 %.3f ms", o.TargetRate, o.Stages["raw_to_delivered"].P99MS)
			r.Targets = append(r.Targets, Target{Name: "p99 raw to merged at half of peak throughput", Want: fmt.Sprintf("< %.0f", TargetOpenLoopP99),
				Got: l.P99MS, Unit: "ms", OK: l.Count > 0 && o.Errors == 0 && l.P99MS < TargetOpenLoopP99, Detail: d})
		}
	}
	if bu := r.Burst; bu != nil {
		r.Targets = append(r.Targets, Target{Name: fmt.Sprintf("NetSuite requests per stored version, %d versions per record arriving while NetSuite is slow", bu.VersionsPerRecord),
			Want: fmt.Sprintf("<= %.1f", TargetBurstPerVersion), Got: bu.RequestsPerVersion, OK: bu.RequestsPerVersion > 0 && bu.RequestsPerVersion <= TargetBurstPerVersion,
			Detail: fmt.Sprintf("%d requests for %d versions of %d records; NetSuite answering in %d ms", bu.NetSuiteRequests, bu.Records*bu.VersionsPerRecord, bu.Records, bu.DelayMS)})
	}
	if s := r.Serve; s != nil {
		r.Targets = append(r.Targets, Target{Name: fmt.Sprintf("peak RSS of serve (Merge) under %d concurrent requests", s.Concurrency),
			Want: fmt.Sprintf("< %.0f", TargetRSSMiB), Got: s.PeakRSSMiB, Unit: "MiB", OK: s.PeakRSSMiB > 0 && s.PeakRSSMiB < TargetRSSMiB,
			Detail: fmt.Sprintf("%d requests, %d errors; idle RSS %.1f MiB", s.Load.Succeeded, s.Load.Errors, s.RSSIdleMiB)})
		r.Targets = append(r.Targets, Target{Name: "start-up of serve (process start to listening port), median", Want: fmt.Sprintf("< %.0f", TargetStartupMS),
			Got: s.StartupMedianMS, Unit: "ms", OK: s.StartupMedianMS > 0 && s.StartupMedianMS < TargetStartupMS,
			Detail: fmt.Sprintf("max of %d starts %.1f ms", len(s.StartupMS), s.StartupMaxMS)})
	}
}

// Chart is throughput against concurrency for the three modes.
func (r *Result) Chart() Chart {
	colors := map[string]string{ModeRaw: "#1f77b4", ModeMerge: "#ff7f0e", ModeFull: "#2ca02c"}
	ch := Chart{
		Title:  fmt.Sprintf("backbone bench: throughput (%s, %d cores)", r.Machine.Server, r.Machine.NProc),
		XLabel: "concurrency (requests in flight)", YLabel: "events/s", LogX: true,
	}
	for _, m := range r.Modes {
		s := Series{Name: m.Key + ": " + m.Name, Color: colors[m.Key]}
		for _, p := range m.Points {
			s.X = append(s.X, float64(p.Concurrency))
			s.Y = append(s.Y, p.EventsPerSec)
		}
		ch.Series = append(ch.Series, s)
	}
	return ch
}

// Write writes bench.json, bench.svg and bench.md into dir.
func (r *Result) Write(dir string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("results directory: %w", err)
	}
	b, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return fmt.Errorf("encode result: %w", err)
	}
	if err := os.WriteFile(filepath.Join(dir, "bench.json"), append(b, '\n'), 0o644); err != nil {
		return err
	}
	var svg strings.Builder
	if err := r.Chart().WriteSVG(&svg); err != nil {
		return fmt.Errorf("chart: %w", err)
	}
	if err := os.WriteFile(filepath.Join(dir, "bench.svg"), []byte(svg.String()), 0o644); err != nil {
		return err
	}
	var md strings.Builder
	r.Markdown(&md)
	return os.WriteFile(filepath.Join(dir, "bench.md"), []byte(md.String()), 0o644)
}

// Markdown writes the figures as tables (for the README and bench.md).
func (r *Result) Markdown(w io.Writer) {
	m := r.Machine
	fmt.Fprintf(w, "Machine: %d × %s, %d MiB; %s (innodb_flush_log_at_trx_commit=%s); %s %s; load average at start %s. Run of %s, %s per point after %s warm-up.\n\n",
		m.NProc, m.CPUModel, m.MemoryMiB, m.Server, m.ServerVar["innodb_flush_log_at_trx_commit"], m.GoVersion, m.OS, m.LoadAvg,
		r.Started.UTC().Format("2006-01-02 15:04 MST"), time.Duration(r.WindowMS)*time.Millisecond, time.Duration(r.WarmupMS)*time.Millisecond)
	fmt.Fprintln(w, "| mode | concurrency | events/s | p50 ms | p99 ms | max ms | CPU ms/event: bench / db own (db all) | other load (cores) | errors |")
	fmt.Fprintln(w, "|---|---:|---:|---:|---:|---:|---:|---:|---:|")
	for _, mo := range r.Modes {
		for _, p := range mo.Points {
			fmt.Fprintf(w, "| %s | %d | %.0f | %.2f | %.2f | %.2f | %.2f / %.2f (%.2f) | %.2f | %d |\n", mo.Key, p.Concurrency, p.EventsPerSec,
				p.Latency.P50MS, p.Latency.P99MS, p.Latency.MaxMS, p.CPU.SelfMSPerEvent, p.CPU.OwnServerMSPerEvent, p.CPU.ServerMSPerEvent, p.CPU.OtherCores, p.Errors)
		}
	}
	if len(r.Decomposition) > 0 {
		fmt.Fprintln(w)
		fmt.Fprintln(w, "| diagnosis | concurrency | events/s | p50 ms | p99 ms | CPU ms/event: bench / db own | other load (cores) | errors |")
		fmt.Fprintln(w, "|---|---:|---:|---:|---:|---:|---:|---:|")
		for _, d := range r.Decomposition {
			p := d.Point
			name := d.Name
			if d.Key != "" {
				name = d.Key + ": " + d.Name
			}
			fmt.Fprintf(w, "| %s | %d | %.0f | %.2f | %.2f | %.2f / %.2f | %.2f | %d |\n", name, p.Concurrency, p.EventsPerSec,
				p.Latency.P50MS, p.Latency.P99MS, p.CPU.SelfMSPerEvent, p.CPU.OwnServerMSPerEvent, p.CPU.OtherCores, p.Errors)
		}
	}
	if len(r.RawDrift) > 0 {
		var parts []string
		for _, d := range r.RawDrift {
			parts = append(parts, fmt.Sprintf("at %d %.0f → %.0f (%+.0f%%)", d.Concurrency, d.BeforeEventsPerSec, d.AfterEventsPerSec, d.ChangePct))
		}
		fmt.Fprintf(w, "\nMode a is measured in two half windows at each concurrency, before and after b and c, and pooled; its drift between them, events/s: %s.\n", strings.Join(parts, "; "))
	}
	fmt.Fprintln(w)
	fmt.Fprintln(w, "| mode | SQL statements / event | durable commits / event | statements |")
	fmt.Fprintln(w, "|---|---:|---:|---|")
	for _, mo := range r.Modes {
		if mo.Statements == nil {
			continue
		}
		fmt.Fprintf(w, "| %s: %s | %.2f | %.2f | %s |\n", mo.Key, mo.Name, mo.Statements.PerEvent, mo.Statements.CommitsPerEvent, kinds(mo.Statements.ByKind))
	}
	if len(r.Ratios) > 0 {
		fmt.Fprintln(w)
		fmt.Fprintln(w, "| concurrency | b/a | c/a |")
		fmt.Fprintln(w, "|---:|---:|---:|")
		for _, x := range r.Ratios {
			fmt.Fprintf(w, "| %d | %.2f | %.2f |\n", x.Concurrency, x.BOverA, x.COverA)
		}
	}
	if s := r.Scale; s != nil {
		fmt.Fprintln(w)
		fmt.Fprintln(w, "| prior events | merges | mean ms | p50 ms | p99 ms | statements / merge | delivery mean ms | delivery p50 ms | delivery p99 ms |")
		fmt.Fprintln(w, "|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
		for _, p := range s.Points {
			fmt.Fprintf(w, "| %d | %d | %.3f | %.3f | %.3f | %.2f | %.3f | %.3f | %.3f |\n", p.PriorEvents, p.Latency.Count, p.Latency.MeanMS, p.Latency.P50MS, p.Latency.P99MS,
				p.Statements.PerEvent, p.DeliveryLatency.MeanMS, p.DeliveryLatency.P50MS, p.DeliveryLatency.P99MS)
		}
	}
	if s := r.Storage; s != nil {
		fmt.Fprintln(w)
		fmt.Fprintf(w, "Storage: %d events on one %d-field record (%s), changes %.1f bytes on average; per event %.1f bytes of B-tree pages in use "+
			"(the buffer pool's pages of the tables), %.1f of records in them (row headers and index entries included), %.1f of values (sum of LENGTH()); "+
			"%.1f allocated (DATA_LENGTH + INDEX_LENGTH after ANALYZE TABLE, extents reserved ahead included); "+
			"redo log %.1f bytes/event (the server's Innodb_os_log_written over the merges, whatever else ran on the server included); "+
			"projection state %d bytes (LENGTH(state) of the record's row in record_heads afterwards, rewritten by every merge).\n\n",
			s.Events, s.Fields, s.Sources, s.MeanChangesBytes, s.PageBytesPerEvent, s.RecordBytesPerEvent, s.LogicalBytesPerEvent, s.BytesPerEvent,
			s.RedoBytesPerEvent, s.ProjectionStateBytes)
		fmt.Fprintln(w, "| table | rows added | allocated: data + index bytes | pages in use, bytes | records, bytes | values, bytes | pages in use / event |")
		fmt.Fprintln(w, "|---|---:|---:|---:|---:|---:|---:|")
		for _, t := range s.Tables {
			per := 0.0
			if s.Events > 0 {
				per = float64(t.PageBytes) / float64(s.Events)
			}
			fmt.Fprintf(w, "| %s | %d | %d + %d | %d | %d | %d | %.1f |\n", t.Table, t.Rows, t.DataBytes, t.IndexBytes, t.PageBytes, t.RecordBytes, t.LogicalBytes, per)
		}
	}
	if o := r.OpenLoop; o != nil {
		fmt.Fprintln(w)
		fmt.Fprintf(w, "Open loop at %.0f events/s (half of peak c), %d events: ", o.TargetRate, o.Sent)
		var parts []string
		for _, k := range slices.Sorted(maps.Keys(o.Stages)) {
			l := o.Stages[k]
			parts = append(parts, fmt.Sprintf("%s p50 %.2f ms, p99 %.2f ms, max %.2f ms", strings.ReplaceAll(k, "_", " "), l.P50MS, l.P99MS, l.MaxMS))
		}
		fmt.Fprintf(w, "%s; %d errors.\n", strings.Join(parts, "; "), o.Errors)
	}
	if s := r.Serve; s != nil {
		fmt.Fprintln(w)
		fmt.Fprintf(w, "`backbone serve` (FUNCTION_TARGET=Merge): start-up median %.1f ms (max %.1f ms over %d starts); peak RSS (VmHWM) %.1f MiB under %d concurrent requests (%d requests, %.0f/s, %.2f ms of serve's CPU per request, %d errors).\n",
			s.StartupMedianMS, s.StartupMaxMS, len(s.StartupMS), s.PeakRSSMiB, s.Concurrency, s.Load.Succeeded, s.Load.EventsPerSec, s.Load.CPU.ServerMSPerEvent, s.Load.Errors)
	}
	if len(r.Errors) > 0 || len(r.Notes) > 0 {
		fmt.Fprintln(w)
		for _, e := range r.Errors {
			fmt.Fprintf(w, "- **error:** %s\n", e)
		}
		for _, n := range r.Notes {
			fmt.Fprintf(w, "- note: %s\n", n)
		}
	}
	if len(r.Targets) > 0 {
		fmt.Fprintln(w)
		fmt.Fprintln(w, "| target | want | got | met | detail |")
		fmt.Fprintln(w, "|---|---|---:|---|---|")
		for _, t := range r.Targets {
			met := "yes"
			if !t.OK {
				met = "**no**"
			}
			got := fmt.Sprintf("%.3f", t.Got)
			if t.Unit != "" {
				got += " " + t.Unit
			}
			fmt.Fprintf(w, "| %s | %s | %s | %s | %s |\n", t.Name, t.Want, got, met, t.Detail)
		}
	}
}

func kinds(m map[string]float64) string {
	var parts []string
	for _, k := range slices.Sorted(maps.Keys(m)) {
		if m[k] != 0 {
			parts = append(parts, fmt.Sprintf("%s %.2f", k, m[k]))
		}
	}
	return strings.Join(parts, ", ")
}
