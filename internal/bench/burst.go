package bench

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/google/uuid"

	"github.com/backbone-sync/backbone/shared/event"
	"github.com/backbone-sync/backbone/shared/publish"
	"github.com/backbone-sync/backbone/shared/store"
)

// The burst figure (SPEC §7 coalescing): versions of a record stored while
// its delivery is slow cost one request, not one per version.
const (
	burstRecords  = 10
	burstVersions = 20
	// A slow NetSuite: REST upserts of a second and more are common, and
	// the figure is about versions arriving faster than the target answers.
	burstDelay = time.Second
)

// burst publishes burstVersions chained versions of each of
// burstRecords records from SuiteX as fast as it can, against a NetSuite
// stand-in that takes burstDelay per request, and counts NetSuite's
// requests per stored version once every record reached NetSuite whole.
func (b *benchmark) burst(ctx context.Context) error {
	rootDSN, _, err := b.scratchDB(ctx, "burst")
	if err != nil {
		return err
	}
	f, err := b.startFull(ctx, rootDSN)
	if err != nil {
		return err
	}
	defer f.stop()
	f.d.NetSuite.SetDelay(burstDelay)
	prefix := "burst-" + b.scratch.RunID + "-"
	start := time.Now().UTC()
	for v := range burstVersions {
		for r := range burstRecords {
			changes := map[string]json.RawMessage{
				"n":                     json.RawMessage(strconv.Itoa(v)),
				fmt.Sprintf("f%d", v%5): json.RawMessage(strconv.Itoa(v)),
			}
			data, err := json.Marshal(event.Raw{ID: uuid.NewString(), RecordType: RecordType, RecordID: fmt.Sprintf("%s%d", prefix, r),
				Source: store.StageSuiteX, Timestamp: event.NewTime(start.Add(time.Duration(v) * time.Millisecond)), BaseVersion: uint64(v), Changes: changes})
			if err != nil {
				return err
			}
			if _, err := f.pub.Publish(ctx, b.o.Env.Names().RawTopic, publish.Message{Data: data,
				OrderingKey: publish.OrderingKey(RecordType, fmt.Sprintf("%s%d", prefix, r))}); err != nil {
				return fmt.Errorf("burst: publish: %w", err)
			}
		}
	}
	// Done when NetSuite received version burstVersions of every record,
	// and then nothing more for a while (the later merged messages find
	// nothing missing).
	deadline := time.Now().Add(60 * time.Second)
	var requests, settledAt int
	for {
		ds := f.d.NetSuite.Deliveries()
		full := map[string]bool{}
		requests = 0
		for _, d := range ds {
			if !strings.HasPrefix(d.RecordID, prefix) {
				continue
			}
			requests++
			if d.Version == burstVersions {
				full[d.RecordID] = true
			}
		}
		if len(full) == burstRecords {
			if requests == settledAt {
				break
			}
			settledAt = requests
			time.Sleep(time.Second)
			continue
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("burst: %d of %d records reached NetSuite at version %d within 60s", len(full), burstRecords, burstVersions)
		}
		time.Sleep(50 * time.Millisecond)
	}
	stored := burstRecords * burstVersions
	b.res.Burst = &Burst{Records: burstRecords, VersionsPerRecord: burstVersions, DelayMS: burstDelay.Milliseconds(),
		NetSuiteRequests: requests, RequestsPerVersion: float64(requests) / float64(stored)}
	b.printf("burst: %d versions of %d records from SuiteX against a NetSuite answering in %s: %d NetSuite requests, %.3f per stored version\n",
		burstVersions, burstRecords, burstDelay, requests, b.res.Burst.RequestsPerVersion)
	return nil
}
