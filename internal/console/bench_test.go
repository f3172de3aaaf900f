package console

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/backbone-sync/backbone/internal/health"
	"github.com/backbone-sync/backbone/shared/config"
	"github.com/backbone-sync/backbone/shared/record"
	"github.com/backbone-sync/backbone/shared/store"
	"github.com/backbone-sync/backbone/shared/store/mysql/mysqltest"
)

// Seed size: 100,000 events over 10,000 records, each with its merge row
// and a delivery row per target, spread over the last day.
const (
	benchRecords  = 10000
	benchVersions = 10
)

// v7At is a UUIDv7 of time t, as the store writes them.
func v7At(t time.Time) string {
	ms := uint64(t.UnixMilli())
	r := make([]byte, 10)
	_, _ = rand.Read(r)
	h := hex.EncodeToString(r)
	return fmt.Sprintf("%08x-%04x-7%s-8%s-%s", ms>>16, ms&0xffff, h[:3], h[3:6], h[6:18])
}

// seed inserts the rows in bulk, INSERT ... VALUES batches, as
// shared/merge's seedHistory does.
func seed(b *testing.B, d *mysqltest.DB) {
	b.Helper()
	ctx := context.Background()
	now := time.Now().UTC()
	const batch = 500
	var evRows, auRows []string
	var evArgs, auArgs []any
	flush := func() {
		if len(evRows) > 0 {
			if _, err := d.Root.ExecContext(ctx, "INSERT INTO events (id, record_type, record_id, source, `timestamp`, base_version, changes, processed, created_at) VALUES "+strings.Join(evRows, ","), evArgs...); err != nil {
				b.Fatal(err)
			}
		}
		if len(auRows) > 0 {
			if _, err := d.Root.ExecContext(ctx, "INSERT INTO event_audit_log (id, event_id, fingerprint, record_type, record_id, processing_outcome, stage, version, source, created_at) VALUES "+strings.Join(auRows, ","), auArgs...); err != nil {
				b.Fatal(err)
			}
		}
		evRows, auRows, evArgs, auArgs = nil, nil, nil, nil
	}
	// Each record's projection row, as the merge keeps it.
	var headRows []string
	var headArgs []any
	flushHeads := func() {
		if len(headRows) > 0 {
			if _, err := d.Root.ExecContext(ctx, "INSERT INTO record_heads (record_type, record_id, version, event_id, state) VALUES "+strings.Join(headRows, ","), headArgs...); err != nil {
				b.Fatal(err)
			}
		}
		headRows, headArgs = nil, nil
	}
	n := 0
	for r := range benchRecords {
		rid := fmt.Sprintf("R-%05d", r)
		st := record.Empty()
		for v := range benchVersions {
			at := now.Add(-time.Duration(benchRecords*benchVersions-n) * 800 * time.Millisecond)
			n++
			id := v7At(at)
			src := []string{"netsuite", "suitex"}[v%2]
			evRows = append(evRows, "(?, 'customer', ?, ?, ?, ?, ?, 1, ?)")
			evArgs = append(evArgs, id, rid, src, at, v, fmt.Sprintf(`{"n":%d}`, v), at)
			fp := strings.Repeat("0", 28) + strings.ReplaceAll(id, "-", "")
			auRows = append(auRows, "(?, ?, ?, 'customer', ?, 'accepted', 'merge', ?, ?, ?)", "(?, ?, ?, 'customer', ?, 'delivered', 'netsuite', ?, NULL, ?)",
				"(?, ?, ?, 'customer', ?, 'delivered', 'suitex', ?, NULL, ?)")
			auArgs = append(auArgs, v7At(at), id, fp, rid, v+1, src, at, v7At(at), id, fp, rid, v+1, at, v7At(at), id, fp, rid, v+1, at)
			st = st.Apply(store.Event{ID: id, RecordType: "customer", RecordID: rid, Source: src, Timestamp: at, BaseVersion: uint64(v)},
				map[string]json.RawMessage{"n": json.RawMessage(fmt.Sprint(v))})
			if len(evRows) == batch {
				flush()
			}
		}
		state, err := json.Marshal(st)
		if err != nil {
			b.Fatal(err)
		}
		headRows = append(headRows, "('customer', ?, ?, ?, ?)")
		headArgs = append(headArgs, rid, st.Version, st.EventID, string(state))
		if len(headRows) == batch {
			flushHeads()
		}
	}
	flush()
	flushHeads()
}

func p99(ds []time.Duration) time.Duration {
	sort.Slice(ds, func(i, j int) bool { return ds[i] < ds[j] })
	return ds[(len(ds)*99)/100]
}

// BenchmarkConsolePages: the pages with 100,000 events in the store,
// reporting each page's p99. The health page serves the snapshot the
// console recomputes at most every Refresh (BenchmarkHealthSnapshot
// measures that computation).
func BenchmarkConsolePages(b *testing.B) {
	d := mysqltest.New(b)
	seed(b, d)
	c, err := New(Options{Env: config.Sandbox, Store: d.Store, Identity: Fixed("bench"), Operators: []string{"bench"}, Refresh: 15 * time.Second})
	if err != nil {
		b.Fatal(err)
	}
	// As `backbone console` runs it: the health figures are refreshed in
	// the background, and pages serve the newest snapshot.
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go c.Run(ctx)
	for {
		c.mu.Lock()
		ready := c.snap != nil
		c.mu.Unlock()
		if ready {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	srv := httptest.NewServer(c)
	defer srv.Close()
	for _, p := range []string{"/console/", "/console/records?q=customer:R-04242", "/console/dead-letters", "/console/dead-letters?stage=suitex&since=24h"} {
		b.Run(p, func(b *testing.B) {
			var lat []time.Duration
			for b.Loop() {
				start := time.Now()
				resp, err := http.Get(srv.URL + p)
				if err != nil {
					b.Fatal(err)
				}
				resp.Body.Close()
				if resp.StatusCode != http.StatusOK {
					b.Fatalf("%s: %d", p, resp.StatusCode)
				}
				lat = append(lat, time.Since(start))
			}
			b.ReportMetric(float64(p99(lat).Microseconds())/1000, "p99-ms")
		})
	}
}

// BenchmarkHealthSnapshot: the status figures computed afresh.
func BenchmarkHealthSnapshot(b *testing.B) {
	d := mysqltest.New(b)
	seed(b, d)
	var lat []time.Duration
	for b.Loop() {
		start := time.Now()
		if _, err := health.Take(context.Background(), d.Store, health.Options{Env: config.Sandbox}); err != nil {
			b.Fatal(err)
		}
		lat = append(lat, time.Since(start))
	}
	b.ReportMetric(float64(p99(lat).Microseconds())/1000, "p99-ms")
}
