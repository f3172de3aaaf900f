package bench

import (
	"context"
	"testing"

	"github.com/backbone-sync/backbone/shared/config"
	"github.com/backbone-sync/backbone/shared/store/mysql"
)

// TestMeasureScale runs a small history curve on the real server: the
// engine over the production grant set, each merge delivered to the other
// system by its runner, a counted pass through the proxy. Every point has
// its merges and deliveries timed, both ratios are set, every delivery
// wrote its sending and delivered rows, and the statements counted are the
// merge's alone.
func TestMeasureScale(t *testing.T) {
	t.Parallel()
	d, _, p := proxied(t)
	ctx := context.Background()
	worker, wcfg := d.Worker(t)
	via, err := WithAddr(wcfg.DSN, p.Addr())
	if err != nil {
		t.Fatal(err)
	}
	cdb, closeC, err := mysql.Open(ctx, config.DB{DSN: via, MaxOpenConns: 4})
	if err != nil {
		t.Fatal(err)
	}
	counted := mysql.New(cdb, closeC)
	defer counted.Close()
	o := ScaleOptions{Priors: []int{4, 40, 400}, Records: 2, Merges: 6, Counted: 4, Env: config.Sandbox, Sources: config.DefaultSources}
	sc, err := MeasureScale(ctx, d.Root, worker, counted, p, o)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%+v", sc)
	if sc.Warnings != 0 {
		t.Fatalf("%d warnings (first: %s)", sc.Warnings, sc.FirstWarning)
	}
	if len(sc.Points) != len(o.Priors) {
		t.Fatalf("%d points, want %d", len(sc.Points), len(o.Priors))
	}
	for i, pt := range sc.Points {
		if pt.PriorEvents != o.Priors[i] || pt.Records != o.Records {
			t.Errorf("point %d: %d prior events, %d records", i, pt.PriorEvents, pt.Records)
		}
		if pt.Latency.Count != o.Merges || pt.Latency.MeanMS <= 0 {
			t.Errorf("%d prior events: merges %+v, want %d timed", pt.PriorEvents, pt.Latency, o.Merges)
		}
		if pt.DeliveryLatency.Count != o.Merges || pt.DeliveryLatency.MeanMS <= 0 || pt.DeliveryLatency.P50MS <= 0 {
			t.Errorf("%d prior events: deliveries %+v, want %d timed", pt.PriorEvents, pt.DeliveryLatency, o.Merges)
		}
		// A merge makes two durable commits (its transaction, then the
		// processed flag); the delivery's two audit rows, each an
		// autocommit INSERT, would add two more: they must not be counted.
		st := pt.Statements
		if st.Events != o.Counted || st.PerEvent <= 0 || st.CommitsPerEvent < 1 || st.CommitsPerEvent > 2 {
			t.Errorf("%d prior events: statements %+v, want the merge's alone over %d merges", pt.PriorEvents, st, o.Counted)
		}
	}
	if sc.Ratio <= 0 || sc.RatioP50 <= 0 || sc.DeliveryRatio <= 0 || sc.DeliveryRatioP50 <= 0 {
		t.Errorf("ratios: merge %.3f / %.3f, delivery %.3f / %.3f; want all > 0", sc.Ratio, sc.RatioP50, sc.DeliveryRatio, sc.DeliveryRatioP50)
	}
	// Every merge (warm-up: two per record, measured, counted) was
	// delivered to the other system: one sending and one delivered row each.
	merges := len(o.Priors) * (2*o.Records + o.Merges + o.Counted)
	for _, outcome := range []string{"sending", "delivered"} {
		n, err := countRows(ctx, d.Root, "SELECT COUNT(*) FROM event_audit_log WHERE processing_outcome = ? AND message_id LIKE 'scale-merged-%'", outcome)
		if err != nil {
			t.Fatal(err)
		}
		if n != merges {
			t.Errorf("%d %s rows of the runners, want %d", n, outcome, merges)
		}
	}
}
