// Package health computes the backbone's figures at a glance (SPEC §8
// `status`, the console's health page): subscription backlogs where Pub/Sub
// reports them, the outbox, recent dead letters, per-target delivery, and
// the records whose targets have not converged by SPEC §7's rule. Every
// query is bounded: time windows are primary-key ranges of the audit log
// (its ids are time-ordered UUIDv7 and SPEC §4 allows it no index on
// created_at), and the convergence check reads at most MaxRecords records.
package health

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"sort"
	"time"

	"github.com/backbone-sync/backbone/internal/stress"
	"github.com/backbone-sync/backbone/shared/config"
	"github.com/backbone-sync/backbone/shared/sink"
	"github.com/backbone-sync/backbone/shared/store"
)

// Store is what the figures read: the event store's queries for the
// known-state rule, and its database for the aggregates.
type Store interface {
	sink.StateReader
	EventByID(ctx context.Context, id string) (store.Event, error)
	DB() *sql.DB
}

// Backlog is one subscription's backlog as Pub/Sub reports it.
type Backlog struct {
	Undelivered      int64
	OldestUnackedAge time.Duration
}

// BacklogSource reports subscription backlogs (Cloud Monitoring in GCP).
// Absent subscriptions are left out of the map.
type BacklogSource interface {
	Backlogs(ctx context.Context, subscriptions []string) (map[string]Backlog, error)
}

// Options configure a snapshot. Zero values take the defaults.
type Options struct {
	Env config.Env
	// Targets are the delivery stages (default netsuite, suitex).
	Targets []string
	// FailureWindow is the window of the failure rate (default 15m).
	FailureWindow time.Duration
	// ConvergenceWindow: only records with activity this recent are checked
	// (default 24h); MaxRecords caps them (default 500), newest first.
	ConvergenceWindow time.Duration
	MaxRecords        int
	// Backlogs is nil on an emulator: backlogs are then "n/a".
	Backlogs BacklogSource
	// BacklogNote says why backlogs are n/a (shown when Backlogs is nil).
	BacklogNote string
	Now         func() time.Time
}

func (o *Options) defaults() {
	if len(o.Targets) == 0 {
		o.Targets = []string{store.StageNetSuite, store.StageSuiteX}
	}
	if o.FailureWindow <= 0 {
		o.FailureWindow = 15 * time.Minute
	}
	if o.ConvergenceWindow <= 0 {
		o.ConvergenceWindow = 24 * time.Hour
	}
	if o.MaxRecords <= 0 {
		o.MaxRecords = 500
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.BacklogNote == "" {
		o.BacklogNote = "the Pub/Sub emulator reports no backlog"
	}
}

// Snapshot is the health at one moment.
type Snapshot struct {
	At            time.Time      `json:"at"`
	Env           string         `json:"env"`
	Subscriptions []Subscription `json:"subscriptions"`
	Outbox        Outbox         `json:"outbox"`
	DeadLetters   DeadLetters    `json:"dead_letters"`
	Targets       []Target       `json:"targets"`
	Unconverged   Unconverged    `json:"unconverged"`
	// Chart is the last hour per minute, oldest first.
	Chart []Bucket `json:"chart"`
}

// Subscription is one subscription's backlog; Backlog is nil when not
// known (Note says why).
type Subscription struct {
	Name                    string   `json:"name"`
	Function                string   `json:"function"`
	Backlog                 *int64   `json:"backlog"`
	OldestUnackedAgeSeconds *float64 `json:"oldest_unacked_age_seconds"`
	Note                    string   `json:"note,omitempty"`
}

// Outbox: events stored but not yet confirmed published (processed = 0).
type Outbox struct {
	Unprocessed      int        `json:"unprocessed"`
	Oldest           *time.Time `json:"oldest,omitempty"`
	OldestAgeSeconds float64    `json:"oldest_age_seconds"`
}

// DeadLetters archived in the last hour and day.
type DeadLetters struct {
	LastHour int               `json:"last_hour"`
	LastDay  int               `json:"last_day"`
	ByReason []DeadLetterGroup `json:"by_stage_and_reason"`
}

// DeadLetterGroup counts one stage and reason.
type DeadLetterGroup struct {
	Stage    string `json:"stage"`
	Reason   string `json:"reason"`
	LastHour int    `json:"last_hour"`
	LastDay  int    `json:"last_day"`
}

// Target is one delivery target's recent record.
type Target struct {
	Name string `json:"name"`
	// LastDelivered is the newest successful delivery within LookBack.
	LastDelivered    *time.Time `json:"last_delivered,omitempty"`
	LastDeliveredAge float64    `json:"last_delivered_age_seconds,omitempty"`
	LookBack         string     `json:"last_delivered_look_back"`
	Window           string     `json:"window"`
	// Outcome counts in Window.
	Sending     int `json:"sending"`
	Delivered   int `json:"delivered"`
	Failed      int `json:"failed"`
	Refused     int `json:"refused"`
	Stale       int `json:"stale"`
	SkippedEcho int `json:"skipped_echo"`
	// FailureRate is (failed + refused) / (delivered + failed + refused);
	// 0 when there were no attempts.
	FailureRate float64 `json:"failure_rate"`
}

// Unconverged are the records some target is missing fields of.
type Unconverged struct {
	// Checked records, those with activity in Window, newest first, at
	// most Cap; Capped says more had activity.
	Checked int    `json:"checked"`
	Cap     int    `json:"cap"`
	Capped  bool   `json:"capped"`
	Window  string `json:"window"`
	Count   int    `json:"count"`
	// Oldest is the unconverged record whose newest version is oldest.
	Oldest *Record `json:"oldest,omitempty"`
	// Records are up to maxListed of them, oldest first.
	Records []Record `json:"records,omitempty"`
	// ages are every unconverged record's, for the thresholds.
	ages []float64
}

// Record is one unconverged record.
type Record struct {
	RecordType string `json:"record_type"`
	RecordID   string `json:"record_id"`
	// Missing maps each target to the fields it lacks.
	Missing map[string][]string `json:"missing"`
	// Since is when the record's newest version was stored.
	Since      time.Time `json:"since"`
	AgeSeconds float64   `json:"age_seconds"`
}

// Bucket is one minute of the chart.
type Bucket struct {
	Start     time.Time `json:"start"`
	Merged    int       `json:"merged"`
	Delivered int       `json:"delivered"`
	Failed    int       `json:"failed"`
	Skipped   int       `json:"skipped"`
}

// maxListed bounds the unconverged records a snapshot lists.
const maxListed = 20

// lastDeliveredLookBack bounds the scan for a target's last success.
const lastDeliveredLookBack = 7 * 24 * time.Hour

// Take computes a snapshot.
func Take(ctx context.Context, s Store, o Options) (*Snapshot, error) {
	o.defaults()
	now := o.Now().UTC()
	snap := &Snapshot{At: now, Env: string(o.Env)}
	db := s.DB()
	var err error
	if snap.Subscriptions, err = subscriptions(ctx, o); err != nil {
		return nil, err
	}
	if snap.Outbox, err = outbox(ctx, db, now); err != nil {
		return nil, err
	}
	if snap.DeadLetters, err = deadLetters(ctx, db, now); err != nil {
		return nil, err
	}
	for _, t := range o.Targets {
		tg, err := target(ctx, db, t, now, o.FailureWindow)
		if err != nil {
			return nil, err
		}
		snap.Targets = append(snap.Targets, tg)
	}
	if snap.Unconverged, err = unconverged(ctx, s, o, now); err != nil {
		return nil, err
	}
	if snap.Chart, err = chart(ctx, db, now); err != nil {
		return nil, err
	}
	return snap, nil
}

func subscriptions(ctx context.Context, o Options) ([]Subscription, error) {
	subs := o.Env.Names().Subscriptions()
	names := make([]string, len(subs))
	for i, s := range subs {
		names[i] = s.Name
	}
	var got map[string]Backlog
	note := o.BacklogNote
	if o.Backlogs != nil {
		var err error
		if got, err = o.Backlogs.Backlogs(ctx, names); err != nil {
			// Say so rather than fail: the store's figures still stand.
			got, note = nil, fmt.Sprintf("backlog unavailable: %v", err)
		} else {
			note = "no data from Cloud Monitoring yet"
		}
	}
	out := make([]Subscription, len(subs))
	for i, s := range subs {
		out[i] = Subscription{Name: s.Name, Function: s.Target}
		if b, ok := got[s.Name]; ok {
			n, age := b.Undelivered, b.OldestUnackedAge.Seconds()
			out[i].Backlog, out[i].OldestUnackedAgeSeconds = &n, &age
		} else {
			out[i].Note = note
		}
	}
	return out, nil
}

func outbox(ctx context.Context, db *sql.DB, now time.Time) (Outbox, error) {
	var (
		o      Outbox
		oldest sql.NullTime
	)
	// idx_events_unprocessed (processed, created_at) answers both.
	if err := db.QueryRowContext(ctx, "SELECT COUNT(*), MIN(created_at) FROM events WHERE processed = 0").Scan(&o.Unprocessed, &oldest); err != nil {
		return o, fmt.Errorf("count the outbox: %w", err)
	}
	if oldest.Valid {
		t := oldest.Time.UTC()
		o.Oldest, o.OldestAgeSeconds = &t, max(0, now.Sub(t).Seconds())
	}
	return o, nil
}

func deadLetters(ctx context.Context, db *sql.DB, now time.Time) (DeadLetters, error) {
	var d DeadLetters
	hour, day := now.Add(-time.Hour), now.Add(-24*time.Hour)
	rows, err := db.QueryContext(ctx, `SELECT stage, reason, SUM(created_at >= ?), COUNT(*) FROM dead_letters
		WHERE created_at >= ? GROUP BY stage, reason ORDER BY COUNT(*) DESC, stage, reason`, hour, day)
	if err != nil {
		return d, fmt.Errorf("count dead letters: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var g DeadLetterGroup
		if err := rows.Scan(&g.Stage, &g.Reason, &g.LastHour, &g.LastDay); err != nil {
			return d, fmt.Errorf("count dead letters: %w", err)
		}
		d.LastHour += g.LastHour
		d.LastDay += g.LastDay
		d.ByReason = append(d.ByReason, g)
	}
	if err := rows.Err(); err != nil {
		return d, fmt.Errorf("count dead letters: %w", err)
	}
	return d, nil
}

// idFloor is the smallest UUIDv7 of time t (as text, which sorts like the
// id column): audit rows written at or after t have ids at or above it.
// Rows with other ids (the archive's derived dead_lettered rows) are
// filtered out by stage, and created_at is checked too.
func idFloor(t time.Time) string {
	ms := uint64(t.UnixMilli())
	return fmt.Sprintf("%08x-%04x", ms>>16, ms&0xffff)
}

func target(ctx context.Context, db *sql.DB, name string, now time.Time, window time.Duration) (Target, error) {
	t := Target{Name: name, Window: window.String(), LookBack: lastDeliveredLookBack.String()}
	since := now.Add(-window)
	rows, err := db.QueryContext(ctx, `SELECT processing_outcome, COUNT(*) FROM event_audit_log
		WHERE id >= ? AND created_at >= ? AND stage = ? GROUP BY processing_outcome`, idFloor(since), since, name)
	if err != nil {
		return t, fmt.Errorf("count %s deliveries: %w", name, err)
	}
	defer rows.Close()
	for rows.Next() {
		var (
			outcome sql.NullString
			n       int
		)
		if err := rows.Scan(&outcome, &n); err != nil {
			return t, fmt.Errorf("count %s deliveries: %w", name, err)
		}
		switch outcome.String {
		case store.OutcomeSending:
			t.Sending = n
		case store.OutcomeDelivered:
			t.Delivered = n
		case store.OutcomeFailed:
			t.Failed = n
		case store.OutcomeRefused:
			t.Refused = n
		case store.OutcomeStale:
			t.Stale = n
		case store.OutcomeSkippedEcho:
			t.SkippedEcho = n
		}
	}
	if err := rows.Err(); err != nil {
		return t, fmt.Errorf("count %s deliveries: %w", name, err)
	}
	if n := t.Delivered + t.Failed + t.Refused; n > 0 {
		t.FailureRate = float64(t.Failed+t.Refused) / float64(n)
	}
	// A backward primary-key scan that stops at the newest success.
	var last time.Time
	back := now.Add(-lastDeliveredLookBack)
	err = db.QueryRowContext(ctx, `SELECT created_at FROM event_audit_log
		WHERE id >= ? AND stage = ? AND processing_outcome = ? AND created_at >= ? ORDER BY id DESC LIMIT 1`,
		idFloor(back), name, store.OutcomeDelivered, back).Scan(&last)
	switch {
	case errors.Is(err, sql.ErrNoRows):
	case err != nil:
		return t, fmt.Errorf("last %s delivery: %w", name, err)
	default:
		last = last.UTC()
		t.LastDelivered, t.LastDeliveredAge = &last, max(0, now.Sub(last).Seconds())
	}
	return t, nil
}

func unconverged(ctx context.Context, s Store, o Options, now time.Time) (Unconverged, error) {
	u := Unconverged{Cap: o.MaxRecords, Window: o.ConvergenceWindow.String()}
	since := now.Add(-o.ConvergenceWindow)
	// Records with merge or delivery activity in the window, newest first.
	rows, err := s.DB().QueryContext(ctx, `SELECT record_type, record_id FROM event_audit_log
		WHERE id >= ? AND created_at >= ? AND stage IN (?, ?, ?)
		GROUP BY record_type, record_id ORDER BY MAX(id) DESC LIMIT ?`,
		idFloor(since), since, store.StageMerge, store.StageNetSuite, store.StageSuiteX, o.MaxRecords+1)
	if err != nil {
		return u, fmt.Errorf("records with recent activity: %w", err)
	}
	type key struct{ rt, rid string }
	var keys []key
	for rows.Next() {
		var k key
		if err := rows.Scan(&k.rt, &k.rid); err != nil {
			rows.Close()
			return u, fmt.Errorf("records with recent activity: %w", err)
		}
		keys = append(keys, k)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return u, fmt.Errorf("records with recent activity: %w", err)
	}
	if len(keys) > o.MaxRecords {
		keys, u.Capped = keys[:o.MaxRecords], true
	}
	var found []Record
	for _, k := range keys {
		if stress.Reserved(k.rt) {
			continue // never delivered (SPEC §8 stress)
		}
		u.Checked++
		head, err := s.Head(ctx, k.rt, k.rid)
		if err != nil {
			return u, fmt.Errorf("head of %s:%s: %w", k.rt, k.rid, err)
		}
		if head.Version == 0 {
			continue // only rejected raw messages: nothing to deliver
		}
		r := Record{RecordType: k.rt, RecordID: k.rid}
		for _, t := range o.Targets {
			miss, err := sink.Missing(ctx, s, k.rt, k.rid, t)
			if err != nil {
				return u, err
			}
			if len(miss) > 0 {
				if r.Missing == nil {
					r.Missing = map[string][]string{}
				}
				r.Missing[t] = miss
			}
		}
		if r.Missing == nil {
			continue
		}
		if ev, err := s.EventByID(ctx, head.NewestID); err == nil {
			r.Since = ev.CreatedAt.UTC()
			r.AgeSeconds = max(0, now.Sub(r.Since).Seconds())
		}
		found = append(found, r)
	}
	sort.SliceStable(found, func(i, j int) bool { return found[i].Since.Before(found[j].Since) })
	u.Count = len(found)
	for _, r := range found {
		u.ages = append(u.ages, r.AgeSeconds)
	}
	if len(found) > 0 {
		oldest := found[0]
		u.Oldest = &oldest
	}
	if len(found) > maxListed {
		found = found[:maxListed]
	}
	u.Records = found
	return u, nil
}

// chartWindow is what the chart covers.
const chartWindow = time.Hour

func chart(ctx context.Context, db *sql.DB, now time.Time) ([]Bucket, error) {
	start := now.Add(-chartWindow).Truncate(time.Minute)
	buckets := make([]Bucket, int(now.Sub(start)/time.Minute)+1)
	for i := range buckets {
		buckets[i].Start = start.Add(time.Duration(i) * time.Minute)
	}
	rows, err := db.QueryContext(ctx, `SELECT TIMESTAMPDIFF(MINUTE, ?, created_at), stage, processing_outcome, COUNT(*)
		FROM event_audit_log WHERE id >= ? AND created_at >= ? AND stage IN (?, ?, ?)
		AND processing_outcome IN (?, ?, ?, ?, ?, ?, ?) GROUP BY 1, 2, 3`,
		start, idFloor(start), start, store.StageMerge, store.StageNetSuite, store.StageSuiteX,
		store.OutcomeAccepted, store.OutcomeMerged, store.OutcomeDelivered, store.OutcomeFailed, store.OutcomeRefused,
		store.OutcomeStale, store.OutcomeSkippedEcho)
	if err != nil {
		return nil, fmt.Errorf("chart: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var (
			minute, n      int
			stage, outcome string
		)
		if err := rows.Scan(&minute, &stage, &outcome, &n); err != nil {
			return nil, fmt.Errorf("chart: %w", err)
		}
		if minute < 0 || minute >= len(buckets) {
			continue
		}
		b := &buckets[minute]
		switch outcome {
		case store.OutcomeAccepted, store.OutcomeMerged:
			b.Merged += n
		case store.OutcomeDelivered:
			b.Delivered += n
		case store.OutcomeFailed, store.OutcomeRefused:
			b.Failed += n
		default:
			b.Skipped += n
		}
	}
	return buckets, rows.Err()
}
