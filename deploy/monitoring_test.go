package deploy_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"cloud.google.com/go/monitoring/apiv3/v2/monitoringpb"
	"google.golang.org/protobuf/encoding/protojson"
)

// TestAlertPoliciesDecode: gcloud reads a policy file only once it holds
// credentials, so the replay cannot check the files' content; here each
// one, rendered as monitoring.sh renders it, must decode strictly as the
// API's AlertPolicy.
func TestAlertPoliciesDecode(t *testing.T) {
	t.Parallel()
	for _, f := range []string{"dlq-backlog.json", "oldest-unacked.json", "outbox.json"} {
		b, err := os.ReadFile(filepath.Join(repoRoot(t), "deploy", "monitoring", f))
		if err != nil {
			t.Fatal(err)
		}
		var p monitoringpb.AlertPolicy
		if err := (protojson.UnmarshalOptions{}).Unmarshal(b, &p); err != nil {
			t.Errorf("%s: %v", f, err)
			continue
		}
		if len(p.Conditions) != 1 || p.Conditions[0].GetConditionThreshold() == nil || !strings.HasPrefix(p.DisplayName, "backbone ENV:") {
			t.Errorf("%s: %v", f, &p)
		}
	}
}
