package health

import (
	"context"
	"fmt"
	"strings"
	"time"

	"cloud.google.com/go/monitoring/apiv3/v2"
	"cloud.google.com/go/monitoring/apiv3/v2/monitoringpb"
	"google.golang.org/api/iterator"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// Monitoring reads subscription backlogs from Cloud Monitoring: Pub/Sub's
// admin API has no backlog call, and its metrics are what the alert
// policies in deploy/monitoring watch too.
type Monitoring struct {
	Project string
	client  *monitoring.MetricClient
}

// NewMonitoring opens a Cloud Monitoring client with the default
// credentials.
func NewMonitoring(ctx context.Context, project string) (*Monitoring, error) {
	c, err := monitoring.NewMetricClient(ctx)
	if err != nil {
		return nil, fmt.Errorf("cloud monitoring client: %w", err)
	}
	return &Monitoring{Project: project, client: c}, nil
}

// Close releases the client.
func (m *Monitoring) Close() error { return m.client.Close() }

// Metrics of a subscription's backlog.
const (
	metricUndelivered = "pubsub.googleapis.com/subscription/num_undelivered_messages"
	metricOldestAge   = "pubsub.googleapis.com/subscription/oldest_unacked_message_age"
)

// Backlogs returns the newest point of both metrics in the last 10
// minutes (Pub/Sub samples them every minute).
func (m *Monitoring) Backlogs(ctx context.Context, subs []string) (map[string]Backlog, error) {
	out := map[string]Backlog{}
	quoted := make([]string, len(subs))
	for i, s := range subs {
		quoted[i] = fmt.Sprintf("%q", s)
	}
	now := time.Now()
	for _, metric := range []string{metricUndelivered, metricOldestAge} {
		it := m.client.ListTimeSeries(ctx, &monitoringpb.ListTimeSeriesRequest{
			Name: "projects/" + m.Project,
			Filter: fmt.Sprintf(`metric.type = %q AND resource.type = "pubsub_subscription" AND resource.labels.subscription_id = one_of(%s)`,
				metric, strings.Join(quoted, ", ")),
			Interval: &monitoringpb.TimeInterval{StartTime: timestamppb.New(now.Add(-10 * time.Minute)), EndTime: timestamppb.New(now)},
			View:     monitoringpb.ListTimeSeriesRequest_FULL,
		})
		for {
			ts, err := it.Next()
			if err == iterator.Done {
				break
			}
			if err != nil {
				return nil, fmt.Errorf("read %s: %w", metric, err)
			}
			sub := ts.GetResource().GetLabels()["subscription_id"]
			if len(ts.GetPoints()) == 0 || sub == "" {
				continue
			}
			v := ts.GetPoints()[0].GetValue().GetInt64Value() // newest first
			b := out[sub]
			if metric == metricUndelivered {
				b.Undelivered = v
			} else {
				b.OldestUnackedAge = time.Duration(v) * time.Second
			}
			out[sub] = b
		}
	}
	return out, nil
}
