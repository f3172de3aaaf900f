package mergefunc_test

import (
	"bytes"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/backbone-sync/backbone/functions/netsuite"
	"github.com/backbone-sync/backbone/functions/suitex"
	"github.com/backbone-sync/backbone/internal/fake/netsuitefake"
	"github.com/backbone-sync/backbone/internal/fake/suitexfake"
	"github.com/backbone-sync/backbone/shared/config"
	"github.com/backbone-sync/backbone/shared/failure"
	"github.com/backbone-sync/backbone/shared/message"
	"github.com/backbone-sync/backbone/shared/publish/pubsubtest"
)

// TestAcceptedEdgesReachBothSinks: the accepted edge cases go the whole way,
// merge, merged topic, sink, target, and arrive byte for byte at both fakes:
// four records that only exact identity keeps apart, 200 KB of `<>&` never
// HTML-escaped, a 191-character 4-byte id. (Values are sent in canonical
// form, which SPEC §3 allows the backbone to write, so bytes compare.) Each record gets a field from
// NetSuite (delivered to SuiteX) and one from SuiteX (delivered to NetSuite).
func TestAcceptedEdgesReachBothSinks(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	log := slog.New(slog.NewJSONHandler(io.Discard, nil))

	const secret = "sx-secret-for-the-edge-test"
	sx := &suitexfake.Server{Secret: secret}
	ns := &netsuitefake.Server{Account: "1234567", ConsumerKey: "ck", ConsumerSecret: "cs", TokenID: "tk", TokenSecret: "ts"}
	sxSrv, nsSrv := sx.Start(t), ns.Start(t)
	cfg := config.Config{Env: env,
		SuiteX: config.SuiteX{BaseURL: sxSrv.URL, SigningSecret: secret, Timeout: 10 * time.Second},
		NetSuite: config.NetSuite{AccountID: "1234567", BaseURL: nsSrv.URL, Auth: "tba", ConsumerKey: "ck", ConsumerSecret: "cs",
			TokenID: "tk", TokenSecret: "ts", Timeout: 10 * time.Second}}
	worker, _ := h.db.Worker(t)
	sxRunner, err := suitexfunc.Runner(cfg, worker, log)
	if err != nil {
		t.Fatal(err)
	}
	sxHandler, err := suitexfunc.New(suitexfunc.Deps{Runner: sxRunner, Reporter: failure.NewReporter(cfg.Env, h.ps.Publisher(t)), Log: log})
	if err != nil {
		t.Fatal(err)
	}
	nsRunner, err := netsuitefunc.Runner(cfg, worker, log)
	if err != nil {
		t.Fatal(err)
	}
	nsHandler, err := netsuitefunc.New(netsuitefunc.Deps{Runner: nsRunner, Reporter: failure.NewReporter(cfg.Env, h.ps.Publisher(t)), Log: log})
	if err != nil {
		t.Fatal(err)
	}
	sxFn := httptest.NewServer(message.HTTP(log, pubsubtest.Project, sxHandler))
	nsFn := httptest.NewServer(message.HTTP(log, pubsubtest.Project, nsHandler))
	t.Cleanup(sxFn.Close)
	t.Cleanup(nsFn.Close)

	values := map[string]string{
		"C-1":                    `"C-1"`,
		"c-1":                    `"c-1"`,
		"C-1 ":                   quoteJSON(strings.Repeat("<>&", 200<<10/3)),
		"C-😀":                    `{"n":[1,0.5,"<&>"],"name":"é"}`,
		strings.Repeat("😀", 191): `"long"`,
	}
	for id, v := range values {
		h.pushOK(h.msg([]byte(`{"id":"` + newID() + `","record_type":"customer","record_id":` + quoteJSON(id) +
			`,"source":"netsuite","timestamp":"2026-03-13T20:00:00Z","base_version":0,"changes":{"v":` + v + `}}`)))
		h.pushOK(h.msg([]byte(`{"id":"` + newID() + `","record_type":"customer","record_id":` + quoteJSON(id) +
			`,"source":"suitex","timestamp":"2026-03-13T20:00:01Z","base_version":1,"changes":{"w":` + v + `}}`)))
	}
	if errs := h.errorsByMessage(); len(errs) != 0 {
		t.Fatalf("merge error messages: %v", errs)
	}
	deliver := func(url, sub string) {
		for _, r := range h.ps.Drain(t, sub) {
			m := message.Message{Data: r.Data, Attributes: r.Attributes, ID: r.ID, OrderingKey: r.OrderingKey,
				PublishTime: r.PublishTime, Subscription: pubsubtest.SubPath(sub)}
			resp, err := http.Post(url, "application/json", bytes.NewReader(message.PushBody(m)))
			if err != nil {
				t.Fatal(err)
			}
			_ = resp.Body.Close()
			if !message.Acked(resp.StatusCode) {
				t.Fatalf("%s answered %d", sub, resp.StatusCode)
			}
		}
	}
	deliver(sxFn.URL, h.names.SuiteXSub)
	deliver(nsFn.URL, h.names.NetSuiteSub)
	for _, e := range h.errorsByMessage() {
		t.Errorf("sink error message %s: %.300s (refused by SuiteX: %v)", e.Reason, e.Detail, sx.Refused())
	}
	for id, v := range values {
		if got := sx.Record("customer", id); string(got["v"]) != v || got["w"] != nil {
			t.Errorf("SuiteX's %.20q: v=%.60s w=%.20s, want v byte for byte (%d bytes) and not its own w", id, got["v"], got["w"], len(v))
		}
		if got := ns.Record("customer", id); string(got["w"]) != v || got["v"] != nil {
			t.Errorf("NetSuite's %.20q: w=%.60s v=%.20s, want w byte for byte (%d bytes) and not its own v", id, got["w"], got["v"], len(v))
		}
	}
	for _, r := range sx.Requests() {
		if bytes.Contains(r.Body, []byte(`\u003c`)) || bytes.Contains(r.Body, []byte(`\u0026`)) {
			t.Errorf("SuiteX got an HTML-escaped body")
		}
	}
}
