package main

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/backbone-sync/backbone/shared/config"
	"github.com/backbone-sync/backbone/shared/logging/logtest"
	"github.com/backbone-sync/backbone/shared/message"
	"github.com/backbone-sync/backbone/shared/publish/pubsubtest"
	"github.com/backbone-sync/backbone/shared/store/mysql/mysqltest"
)

// buildBinary builds cmd/backbone once per test that needs the real process.
func buildBinary(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "backbone")
	out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput()
	if err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

func testPort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// TestServeIsTheDeployedEntryPoint runs `backbone serve` as Cloud Run does:
// FUNCTION_TARGET selects the function, served at / on PORT, and a Pub/Sub
// push request is merged, stored and published.
func TestServeIsTheDeployedEntryPoint(t *testing.T) {
	t.Parallel()
	bin := buildBinary(t)
	db := mysqltest.New(t)
	_, worker := db.Worker(t)
	ps := pubsubtest.New(t, config.Sandbox, true)
	port := testPort(t)
	cmd := exec.Command(bin, "serve")
	cmd.Env = append(os.Environ(), "BACKBONE_ENV=sandbox", "GCP_PROJECT="+pubsubtest.Project, "PUBSUB_EMULATOR_HOST="+ps.Addr(),
		"EVENT_STORE_DSN="+worker.DSN, "FUNCTION_TARGET=Merge", fmt.Sprintf("PORT=%d", port))
	stderr := &logtest.Buffer{}
	cmd.Stderr = stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = cmd.Process.Kill(); _ = cmd.Wait() }()
	url := fmt.Sprintf("http://127.0.0.1:%d/", port)
	deadline := time.Now().Add(20 * time.Second)
	for {
		if c, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", port)); err == nil {
			c.Close()
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("serve did not listen: %s", stderr.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
	raw := `{"record_type":"customer","record_id":"S-1","source":"netsuite","timestamp":"2026-03-13T20:00:00.123456Z","base_version":0,"changes":{"email":"a@example.com"}}`
	body := message.PushBody(message.Message{Data: []byte(raw), ID: "push-1", Attributes: map[string]string{"env": "sandbox"},
		OrderingKey: "customer:S-1", Subscription: pubsubtest.SubPath(ps.Names.MergeSub)})
	resp, err := http.Post(url, "application/json", bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNoContent {
		t.Fatalf("status %d: %s", resp.StatusCode, stderr.String())
	}
	hist, err := db.Store.History(context.Background(), "customer", "S-1")
	if err != nil || len(hist) != 1 || !hist[0].Processed {
		t.Fatalf("history %+v, %v", hist, err)
	}
	merged := ps.Drain(t, ps.Names.SuiteXSub)
	if len(merged) != 1 || merged[0].Attributes["event_id"] != hist[0].ID || merged[0].OrderingKey != "customer:S-1" {
		t.Errorf("merged messages %+v", merged)
	}
	// The logs are Cloud Logging JSON.
	if !strings.Contains(stderr.String(), `"severity":"INFO"`) {
		t.Errorf("logs are not Cloud Logging JSON: %s", stderr.String())
	}
	// Another path is not a function (with FUNCTION_TARGET set, only /).
	resp, err = http.Get(url)
	if err == nil {
		resp.Body.Close()
		if message.Acked(resp.StatusCode) {
			t.Errorf("GET acked with %d", resp.StatusCode)
		}
	}
}

func TestServeRefusesBadConfiguration(t *testing.T) {
	t.Parallel()
	bin := buildBinary(t)
	for _, c := range []struct {
		env  []string
		want string
	}{
		{[]string{"BACKBONE_ENV=prod"}, "BACKBONE_ENV"},
		{[]string{}, "BACKBONE_ENV"},
		{[]string{"BACKBONE_ENV=sandbox", "FUNCTION_TARGET=merge"}, "FUNCTION_TARGET"},
		{[]string{"BACKBONE_ENV=sandbox", "FUNCTION_TARGET=Merge"}, "EVENT_STORE_DSN"},
		{[]string{"BACKBONE_ENV=sandbox", "FUNCTION_TARGET=SuiteXSink", "EVENT_STORE_DSN=root@tcp(127.0.0.1:1)/x"}, "SUITEX_SIGNING_SECRET"},
	} {
		cmd := exec.Command(bin, "serve")
		cmd.Env = append([]string{"PATH=" + os.Getenv("PATH"), "HOME=" + os.Getenv("HOME")}, c.env...)
		out, err := cmd.CombinedOutput()
		// A missing or invalid setting is a usage error (SPEC §8).
		if err == nil || cmd.ProcessState.ExitCode() != 2 || !strings.Contains(string(out), c.want) {
			t.Errorf("env %v: exit %v, output %q; want exit 2 naming %s", c.env, err, out, c.want)
		}
	}
}
