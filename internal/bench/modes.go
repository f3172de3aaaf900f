package bench

import (
	"context"
	"fmt"
	"slices"
	"sync/atomic"

	"github.com/backbone-sync/backbone/internal/devstack"
	"github.com/backbone-sync/backbone/shared/store/mysql"
)

// Descriptions of what one event is in each mode (also in bench.json).
const (
	measuresRaw = "one READ COMMITTED transaction per event with plain database/sql: SELECT … FOR UPDATE of the record's newest event, " +
		"the dedup probe by fingerprint, INSERT events, INSERT event_audit_log, COMMIT; latency from BEGIN to COMMIT returned. " +
		"Measured in two half windows at each concurrency, before and after b and c, pooled."
	measuresMerge = "one Pub/Sub push request (a raw event in a push envelope) POSTed to the Merge function — message.HTTP around " +
		"functions/merge, wired as `serve` wires it (pool of 32 connections, as `dev`) — on an in-process HTTP server; the merge " +
		"publishes to an in-process pstest topic; latency from sending the request to the 204 ack (merge committed, merged event " +
		"published, processed = 1)"
	measuresFull = "one raw event published to events.raw.{env} (pubsub/v2 client, ordering key) through the dev stack — embedded " +
		"pstest, push bridge, the five functions on an in-process HTTP server, stand-in targets — until the OTHER system's stand-in " +
		"has received it (an event from netsuite is delivered to SuiteX only and vice versa: echo suppression; workers alternate " +
		"sources, so both targets receive). Latency from the publish call to that delivery. The source's own sink also runs (it " +
		"audits skipped_echo) and is waited for before the stack stops, but not timed. A fresh stack per concurrency level."
)

// modes measures a, b and c level by level, so that the three figures
// of one concurrency are taken within seconds of each other (the machine is
// shared: its load drifts over a run), then counts their statements and runs
// the open loop.
func (b *benchmark) modes(ctx context.Context) error {
	ma := Mode{Key: ModeRaw, Name: "raw limit", Measures: measuresRaw}
	mb := Mode{Key: ModeMerge, Name: "merge path", Measures: measuresMerge}
	mc := Mode{Key: ModeFull, Name: "full path", Measures: measuresFull}
	defer func() { b.res.Modes = append(b.res.Modes, ma, mb, mc) }()

	// (a): its database and pool.
	_, aDSN, err := b.scratchDB(ctx, "a")
	if err != nil {
		return err
	}
	aDB, err := openPlain(aDSN, slices.Max(b.o.Concurrency))
	if err != nil {
		return err
	}
	defer aDB.Close()
	raw := NewRawLimit(aDB).
		// The decomposition's outbox flag goes through the store's own
		// MarkProcessed (group-committed), so it costs what it costs there.
		WithFlag(mysql.New(aDB, func() error { return nil }).MarkProcessed)

	// (b): its database, an emulator with topics only, the Merge server.
	bRoot, bDSN, err := b.scratchDB(ctx, "b")
	if err != nil {
		return err
	}
	srv, ps, err := b.topicsOnly(ctx)
	if err != nil {
		return err
	}
	defer srv.Close()
	defer ps.Close()
	client := pushClient()
	var msgSeq atomic.Int64

	// (c): its database; the stacks are started per level.
	cName, cRoot, err := b.scratch.Name("c")
	if err != nil {
		return err
	}
	b.scratch.Granted(cName, mysql.GrantStatements(cName, devstack.WorkerName(cName), "%"))
	cDB, err := openPlain(cRoot, 2)
	if err != nil {
		return err
	}
	defer cDB.Close()

	half := Timing{Warmup: b.timing.Warmup, Window: b.timing.Window / 2}
	totals := map[string]int{}
	for _, conc := range b.o.Concurrency {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		b.printf("\nconcurrency %d\n", conc)
		rawOps := func(tag string) func(int) Op {
			return func(w int) Op { return raw.Op(fmt.Sprintf("a%d%s-w%d", conc, tag, w), w) }
		}
		a1 := b.runner.ClosedFor(ctx, half, conc, rawOps("x"), nil)
		releaseIdle(aDB)

		// A Merge server per level: its pool closes with it, so it holds no
		// connections while the other modes run (the server's
		// max_connections is shared with everything else on it).
		ms, err := b.startMergeServer(ctx, bDSN, ps, srv.Addr)
		if err != nil {
			return err
		}
		prof, done := b.profileFor("b", conc)
		pb := b.runner.Closed(ctx, conc, func(w int) Op {
			return b.pushOp(client, ms.url, fmt.Sprintf("b%d-w%d", conc, w), w, &msgSeq)
		}, prof)
		done()
		ms.stop()

		pc, err := b.fullLevel(ctx, cRoot, cDB, conc)
		if err != nil {
			b.fail("c at concurrency %d: %v", conc, err)
		}

		a2 := b.runner.ClosedFor(ctx, half, conc, rawOps("y"), nil)
		releaseIdle(aDB)
		pa := Pool(a1, a2)
		b.res.RawDrift = append(b.res.RawDrift, NewDrift(a1, a2))
		b.printPoint("a", pa)
		b.printf("         (a before b and c: %.0f events/s, after: %.0f)\n", a1.EventsPerSec, a2.EventsPerSec)
		b.printPoint("b", pb)
		b.printPoint("c", pc)
		if conc == RefConcurrency && !b.o.Quick {
			totals["a"] += b.decompose(ctx, raw, conc)
			releaseIdle(aDB)
		}
		ma.Points, mb.Points, mc.Points = append(ma.Points, pa), append(mb.Points, pb), append(mc.Points, pc)
		totals["a"] += pa.Succeeded
		totals["b"] += pb.Succeeded
		totals["c"] += pc.Succeeded
	}

	// Open loop at half of c's peak, on its own stack.
	if peak, ok := mc.Peak(); ok && peak.EventsPerSec > 0 {
		if err := b.openLoop(ctx, cRoot, cDB, peak.EventsPerSec/2); err != nil {
			b.fail("open loop: %v", err)
		}
	}

	// Verification: every acknowledged event is stored (and, for c,
	// delivered), before the counted passes add their own.
	if stored, err := countRows(ctx, aDB, "SELECT COUNT(*) FROM events"); err != nil {
		return err
	} else {
		ma.Verified = fmt.Sprintf("%d events stored = %d transactions committed", stored, totals["a"])
		if stored != totals["a"] {
			b.fail("a: verification: %s", ma.Verified)
		}
	}
	bDB, err := openPlain(bRoot, 2)
	if err != nil {
		return err
	}
	defer bDB.Close()
	if stored, err := countRows(ctx, bDB, "SELECT COUNT(*) FROM events WHERE processed = 1"); err != nil {
		return err
	} else {
		mb.Verified = fmt.Sprintf("%d events stored and published (processed = 1) = %d push requests acked", stored, totals["b"])
		if stored != totals["b"] {
			b.fail("b: verification: %s (an ack without a merge is a failure parked on the error topic)", mb.Verified)
		}
	}
	stored, err := countRows(ctx, cDB, "SELECT COUNT(*) FROM events WHERE record_id LIKE 'c%' AND processed = 1")
	if err != nil {
		return err
	}
	delivered, err := countRows(ctx, cDB, "SELECT COUNT(*) FROM event_audit_log WHERE record_id LIKE 'c%' AND processing_outcome = 'delivered'")
	if err != nil {
		return err
	}
	mc.Verified = fmt.Sprintf("%d events stored and published, %d audited delivered; %d events received by the other stand-in", stored, delivered, totals["c"])
	if stored != totals["c"] || delivered != totals["c"] {
		b.fail("c: verification: %s", mc.Verified)
	}

	// Counted passes.
	b.printf("\nSQL statements per event (counted passes through the wire-protocol proxy, concurrency %d)\n", RefConcurrency)
	if st, err := b.countedRaw(ctx, aDSN); err != nil {
		b.fail("a: counted pass: %v", err)
	} else {
		ma.Statements = &st
		b.printStatements("a", st)
	}
	if st, err := b.countedMerge(ctx, bDSN, ps, srv.Addr, client, &msgSeq); err != nil {
		b.fail("b: counted pass: %v", err)
	} else {
		mb.Statements = &st
		b.printStatements("b", st)
	}
	if st, err := b.countedFull(ctx, cRoot, cDB); err != nil {
		b.fail("c: counted pass: %v", err)
	} else {
		mc.Statements = &st
		b.printStatements("c", st)
	}
	return nil
}

// decompose measures the merge's SQL with no backbone around it, with and
// without the outbox flag, and a's transaction with only what the merge must
// add to it (the projection row, then also the outbox flag: the floor of the
// merge's database CPU over a's), in the raw-limit database; it returns how
// many events it stored there.
func (b *benchmark) decompose(ctx context.Context, raw *RawLimit, conc int) int {
	stored := 0
	for _, v := range []struct {
		key, name, measures string
		variant             Variant
	}{
		{"m", "merge SQL alone", "every statement the merge sends for an accepted event (store/mysql's lock of the projection row with the outbox flag and both " +
			"duplicate probes as subqueries, two inserts, the projection row with the state document, COMMIT), then the outbox flag through the store's " +
			"MarkProcessed; plain database/sql, no HTTP, JSON, publish or engine", VariantMergeSQL},
		{"n", "merge SQL without the outbox flag", "the same without setting processed = 1", VariantMergeSQLNoFlag},
		{DiagRawHead, "raw limit + projection row", "exactly a's transaction (its lock of the record's newest event, its dedup probe, both inserts), plus " +
			"before COMMIT the projection row as the store writes it (INSERT … ON DUPLICATE KEY UPDATE the first time the worker sees the record, " +
			"UPDATE by primary key after) with m's state document; processed stays 0", VariantRawHead},
		{DiagRawHeadFlag, "raw limit + projection row + outbox flag", "the same, then the outbox flag after the commit through the store's " +
			"MarkProcessed, as m sets it", VariantRawHeadFlag},
	} {
		r := raw.WithVariant(v.variant)
		p := b.runner.Closed(ctx, conc, func(w int) Op { return r.Op(fmt.Sprintf("%s%d-w%d", v.key, conc, w), w) }, nil)
		b.printPoint(v.key, p)
		b.printf("         (%s)\n", v.name)
		b.res.Decomposition = append(b.res.Decomposition, NamedPoint{Key: v.key, Name: v.name, Measures: v.measures, Point: p})
		stored += p.Succeeded
	}
	return stored
}

// countedRaw counts a's statements per event through the proxy.
func (b *benchmark) countedRaw(ctx context.Context, workerDSN string) (Statements, error) {
	proxy, pdsn, err := b.viaProxy(workerDSN)
	if err != nil {
		return Statements{}, err
	}
	defer proxy.Close()
	db, err := openPlain(pdsn, RefConcurrency)
	if err != nil {
		return Statements{}, err
	}
	defer db.Close()
	raw := NewRawLimit(db)
	before := proxy.Counts()
	n, err := RunN(ctx, RefConcurrency, b.sizes.countEvents, func(w int) Op { return raw.Op(fmt.Sprintf("acount-w%d", w), w) })
	if err != nil {
		return Statements{}, err
	}
	return PerEvent(proxy.Counts().Sub(before), n)
}
