// Package stress is the verification run behind `backbone stress`: the
// predecessor's stress command, done right. Every step that runs counts in
// the denominator, and any failure fails the run (fail-closed).
package stress

import (
	"context"
	"crypto/sha256"
	"database/sql"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/uuid"

	"github.com/backbone-sync/backbone/shared/event"
	"github.com/backbone-sync/backbone/shared/store"
	"github.com/backbone-sync/backbone/shared/store/mysql"
)

// RecordType is the record type of everything stress writes. The store is
// append-only, so these rows stay: the type makes them easy to tell apart,
// and it is reserved (event.Reserved), so none of them can ever reach a
// target.
const RecordType = event.StressRecordType

// Reserved reports whether recordType is stress's (event.Reserved).
func Reserved(recordType string) bool { return event.Reserved(recordType) }

// Options configure a run.
type Options struct {
	Appends     int // total appends, default 1000
	Records     int // distinct records they spread over, default Appends/10
	Concurrency int // default 16
	// Probe, when set, is step 4: an end-to-end check through Pub/Sub.
	Probe func(ctx context.Context) error
	// Progress receives one line per step as it starts and ends.
	Progress func(line string)
}

// StepResult is one step's outcome.
type StepResult struct {
	Name     string        `json:"name"`
	OK       bool          `json:"ok"`
	Detail   string        `json:"detail"`
	Duration time.Duration `json:"duration_ns"`
}

// Summary is the whole run, for --json.
type Summary struct {
	OK            bool         `json:"ok"`
	Steps         []StepResult `json:"steps"`
	Appends       int          `json:"appends"`
	AppendsPerSec float64      `json:"appends_per_sec"`
	RunID         string       `json:"run_id"`
}

// Run performs the steps in order and stops at the first failure of the
// privilege check (it fails fast: nothing is written as an over-privileged
// user). Later steps run even if one fails, so the report is complete.
func Run(ctx context.Context, s store.Store, db *sql.DB, o Options) Summary {
	if o.Appends <= 0 {
		o.Appends = 1000
	}
	if o.Records <= 0 {
		o.Records = max(1, o.Appends/10)
	}
	if o.Concurrency <= 0 {
		o.Concurrency = 16
	}
	if o.Progress == nil {
		o.Progress = func(string) {}
	}
	total := 3
	if o.Probe != nil {
		total = 4
	}
	sum := Summary{OK: true, RunID: uuid.NewString()[:8], Appends: o.Appends}
	step := func(name string, fn func() (string, error)) bool {
		k := len(sum.Steps) + 1
		o.Progress(fmt.Sprintf("[%d/%d] %s ...", k, total, name))
		start := time.Now()
		detail, err := fn()
		r := StepResult{Name: name, OK: err == nil, Detail: detail, Duration: time.Since(start)}
		if err != nil {
			r.Detail = err.Error()
			sum.OK = false
		}
		sum.Steps = append(sum.Steps, r)
		status := "ok"
		if !r.OK {
			status = "FAILED"
		}
		o.Progress(fmt.Sprintf("[%d/%d] %s: %s (%s) %s", k, total, name, status, r.Duration.Round(time.Millisecond), r.Detail))
		return r.OK
	}
	if !step("least-privilege check", func() (string, error) { return CheckPrivileges(ctx, db) }) {
		return sum
	}
	var written []store.Event
	step(fmt.Sprintf("%d concurrent appends over %d records", o.Appends, o.Records), func() (string, error) {
		start := time.Now()
		evs, err := appendConcurrently(ctx, s, sum.RunID, o)
		written = evs
		if secs := time.Since(start).Seconds(); secs > 0 {
			sum.AppendsPerSec = float64(len(evs)) / secs
		}
		return fmt.Sprintf("%d appended, %.0f/s", len(evs), sum.AppendsPerSec), err
	})
	step("integrity check", func() (string, error) { return checkIntegrity(ctx, s, sum.RunID, o, written) })
	if o.Probe != nil {
		step("end-to-end Pub/Sub probe", func() (string, error) {
			if err := o.Probe(ctx); err != nil {
				return "", err
			}
			return "raw event merged through Pub/Sub (stress records are withheld from events.merged, so no target sees it)", nil
		})
	}
	return sum
}

// grantRE pulls the privilege list out of a SHOW GRANTS line.
var grantRE = regexp.MustCompile(`^GRANT (.+?) ON (\S+) TO `)

// CheckPrivileges fails unless the connected user holds at most the
// sync_worker set: SELECT, INSERT, and UPDATE (processed) only, on one schema.
func CheckPrivileges(ctx context.Context, db *sql.DB) (string, error) {
	rows, err := db.QueryContext(ctx, "SHOW GRANTS")
	if err != nil {
		return "", fmt.Errorf("show grants: %w", err)
	}
	defer rows.Close()
	var problems []string
	schemas := map[string]bool{}
	for rows.Next() {
		var g string
		if err := rows.Scan(&g); err != nil {
			return "", err
		}
		m := grantRE.FindStringSubmatch(g)
		if m == nil {
			continue
		}
		privs, on := m[1], m[2]
		if privs == "USAGE" {
			continue
		}
		if on == "*.*" {
			problems = append(problems, "server-wide grant: "+privs)
			continue
		}
		schemas[strings.SplitN(on, ".", 2)[0]] = true
		for _, p := range splitPrivs(privs) {
			switch {
			case p == "SELECT" || p == "INSERT":
			case p == "UPDATE (`processed`)" || p == "UPDATE (processed)":
			case p == "UPDATE" && projection(on):
				// The projection tables are the mutable ones (SPEC §4).
			default:
				problems = append(problems, fmt.Sprintf("%s on %s", p, on))
			}
		}
	}
	if err := rows.Err(); err != nil {
		return "", err
	}
	if len(schemas) > 1 {
		problems = append(problems, fmt.Sprintf("grants on %d schemas", len(schemas)))
	}
	if len(problems) > 0 {
		return "", fmt.Errorf("the connected user has more than the sync_worker grants: %s (connect as sync_worker; see backbone grants)", strings.Join(problems, "; "))
	}
	return "SELECT, INSERT, UPDATE (processed) only", nil
}

// splitPrivs splits "SELECT, INSERT, UPDATE (`processed`)" on the commas
// that are not inside a column list.
func splitPrivs(s string) []string {
	var out []string
	depth, start := 0, 0
	for i, r := range s {
		switch r {
		case '(':
			depth++
		case ')':
			depth--
		case ',':
			if depth == 0 {
				out = append(out, strings.TrimSpace(s[start:i]))
				start = i + 1
			}
		}
	}
	return append(out, strings.TrimSpace(s[start:]))
}

func recordID(runID string, k int) string { return fmt.Sprintf("%s-%05d", runID, k) }

func appendConcurrently(ctx context.Context, s store.Store, runID string, o Options) ([]store.Event, error) {
	var (
		mu      sync.Mutex
		written []store.Event
		next    atomic.Int64
		errs    []error
		wg      sync.WaitGroup
	)
	base := time.Now().UTC().Truncate(time.Microsecond)
	for w := 0; w < o.Concurrency; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1)) - 1
				if i >= o.Appends || ctx.Err() != nil {
					return
				}
				rid := recordID(runID, i%o.Records)
				var ev store.Event
				err := s.InTx(ctx, func(ctx context.Context, tx store.Tx) error {
					h, _, err := tx.LockRecord(ctx, RecordType, rid, store.Probe{})
					if err != nil {
						return err
					}
					changes, _ := json.Marshal(map[string]any{"n": i, "note": "stress 😀 'quoted' \\"})
					ev = store.Event{ID: uuid.NewString(), RecordType: RecordType, RecordID: rid, Source: "stress",
						// Distinct microseconds per append, to check they survive.
						Timestamp: base.Add(time.Duration(i)*time.Microsecond + 1), BaseVersion: h.Version, Changes: changes}
					sum := sha256.Sum256(changes)
					return tx.AppendEvent(ctx, ev, store.Audit{Fingerprint: hex.EncodeToString(sum[:]), RecordType: RecordType,
						RecordID: rid, Outcome: store.OutcomeAccepted, Stage: "stress"})
				})
				mu.Lock()
				if err != nil {
					errs = append(errs, fmt.Errorf("append %d: %w", i, err))
				} else {
					ev.Timestamp = ev.Timestamp.Truncate(time.Microsecond)
					written = append(written, ev)
				}
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	if len(errs) > 0 {
		return written, fmt.Errorf("%d of %d appends failed, first: %w", len(errs), o.Appends, errs[0])
	}
	return written, markProcessed(ctx, s, written, o.Concurrency)
}

// markProcessed flags every written event processed = 1, as the merge does
// after its publish: it exercises the one UPDATE grant, and it leaves
// nothing processed = 0 for an outbox flush to find (which would withhold
// them all the same: Reserved is the lock, this the second one). It runs
// after the appends, not interleaved with them: the flag's UPDATE and a
// writer's FOR UPDATE on the same record's newest row would deadlock each
// other, which is contention this run does not mean to measure.
func markProcessed(ctx context.Context, s store.Store, evs []store.Event, concurrency int) error {
	var (
		next atomic.Int64
		wg   sync.WaitGroup
		mu   sync.Mutex
		errs []error
	)
	for w := 0; w < concurrency; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1)) - 1
				if i >= len(evs) || ctx.Err() != nil {
					return
				}
				if err := s.MarkProcessed(ctx, evs[i].ID); err != nil {
					mu.Lock()
					errs = append(errs, err)
					mu.Unlock()
				}
			}
		}()
	}
	wg.Wait()
	if len(errs) > 0 {
		return fmt.Errorf("%d of %d events not marked processed, first: %w", len(errs), len(evs), errs[0])
	}
	return nil
}

func checkIntegrity(ctx context.Context, s store.Store, runID string, o Options, written []store.Event) (string, error) {
	if len(written) == 0 {
		return "", errors.New("nothing was written")
	}
	want := make(map[string]store.Event, len(written))
	for _, e := range written {
		want[e.ID] = e
	}
	var problems []string
	total := 0
	for k := 0; k < o.Records && k < o.Appends; k++ {
		hist, err := s.History(ctx, RecordType, recordID(runID, k))
		if err != nil {
			return "", err
		}
		total += len(hist)
		seen := map[string]bool{}
		for i, e := range hist {
			if e.BaseVersion != uint64(i) {
				problems = append(problems, fmt.Sprintf("%s: gap at version %d (base %d)", e.RecordID, i, e.BaseVersion))
				break
			}
			if seen[e.ID] {
				problems = append(problems, "duplicate event "+e.ID)
			}
			seen[e.ID] = true
			w, ok := want[e.ID]
			if !ok {
				problems = append(problems, "unexpected event "+e.ID)
				continue
			}
			if !e.Timestamp.Equal(w.Timestamp) {
				problems = append(problems, fmt.Sprintf("event %s timestamp %s stored as %s", e.ID, w.Timestamp.Format(time.RFC3339Nano), e.Timestamp.Format(time.RFC3339Nano)))
			}
			if string(e.Changes) != string(w.Changes) {
				problems = append(problems, fmt.Sprintf("event %s changes differ", e.ID))
			}
			if !e.Processed {
				problems = append(problems, fmt.Sprintf("event %s left processed = 0", e.ID))
			}
		}
	}
	if total != len(written) {
		problems = append(problems, fmt.Sprintf("%d events stored, %d written", total, len(written)))
	}
	if len(problems) > 0 {
		if len(problems) > 5 {
			problems = append(problems[:5], fmt.Sprintf("and %d more", len(problems)-5))
		}
		return "", errors.New(strings.Join(problems, "; "))
	}
	return fmt.Sprintf("%d events, no duplicates, exact microseconds, gap-free chains", total), nil
}

// projection says whether a grant's object (`db`.`table`) is one of the
// projection tables, which sync_worker may update.
func projection(on string) bool {
	_, table, ok := strings.Cut(on, ".")
	if !ok {
		return false
	}
	table = strings.Trim(table, "`")
	for _, t := range mysql.Projections {
		if t == table {
			return true
		}
	}
	return false
}
