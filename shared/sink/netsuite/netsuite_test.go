package netsuite_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/backbone-sync/backbone/internal/fake/netsuitefake"
	"github.com/backbone-sync/backbone/shared/config"
	"github.com/backbone-sync/backbone/shared/event"
	"github.com/backbone-sync/backbone/shared/failure"
	"github.com/backbone-sync/backbone/shared/logging"
	"github.com/backbone-sync/backbone/shared/logging/logtest"
	"github.com/backbone-sync/backbone/shared/sink"
	"github.com/backbone-sync/backbone/shared/sink/netsuite"
	"github.com/backbone-sync/backbone/shared/sink/targettest"
	"github.com/backbone-sync/backbone/shared/store"
	"github.com/backbone-sync/backbone/shared/store/mysql/mysqltest"
)

// TBA credentials of the tests: distinct, recognisable values so a leak is
// found by a plain substring search.
const (
	account        = "123456-sb1"
	realm          = "123456_SB1"
	consumerKey    = "ck-4b1d5e0a9c8f7e6d5c4b3a291807f6e5"
	consumerSecret = "cs-SECRET-8e7d6c5b4a39281706f5e4d3c2b1a0f9"
	tokenID        = "tk-0f1e2d3c4b5a69788796a5b4c3d2e1f0"
	tokenSecret    = "ts-SECRET-a1b2c3d4e5f60718293a4b5c6d7e8f90"
)

func tbaSecrets() []string { return []string{consumerKey, consumerSecret, tokenID, tokenSecret} }

type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) Advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

func tbaFake() *netsuitefake.Server {
	return &netsuitefake.Server{Account: realm, ConsumerKey: consumerKey, ConsumerSecret: consumerSecret,
		TokenID: tokenID, TokenSecret: tokenSecret}
}

func tbaConfig(base string) config.NetSuite {
	return config.NetSuite{AccountID: account, BaseURL: base, Auth: "tba", ConsumerKey: consumerKey,
		ConsumerSecret: consumerSecret, TokenID: tokenID, TokenSecret: tokenSecret, Timeout: 5 * time.Second}
}

func newTarget(t *testing.T, cfg config.NetSuite, opts ...netsuite.Option) *netsuite.Target {
	t.Helper()
	tgt, err := netsuite.New(cfg, opts...)
	if err != nil {
		t.Fatal(err)
	}
	return tgt
}

func mergedEvent(rid, source string, version uint64, changes string) event.Merged {
	var c map[string]json.RawMessage
	if err := json.Unmarshal([]byte(changes), &c); err != nil {
		panic(err)
	}
	return event.Merged{ID: uuid.NewString(), RecordType: "customer", RecordID: rid, Source: source,
		Timestamp: event.NewTime(time.Now()), BaseVersion: version - 1, Version: version, Changes: c}
}

// delivery is what the Runner hands the target for ev (the upsert does not
// use the idempotency key).
func delivery(ev event.Merged) sink.Delivery {
	return sink.Delivery{Merged: ev, IdempotencyKey: ev.ID + ":0000000000000000"}
}

func TestTBASignaturePassesTheFakeNetSuite(t *testing.T) {
	t.Parallel()
	d := mysqltest.New(t)
	fake := tbaFake()
	srv := fake.Start(t)
	r := sink.NewRunner(config.Sandbox, newTarget(t, tbaConfig(srv.URL)), d.Store, nil)
	ctx := context.Background()

	v1 := mergedEvent("C-1001", "suitex", 1, `{"email":"ada@example.com","phone":"+1 555 0100","company_name":"Acme"}`)
	targettest.StoreMerged(t, d.Store, v1)
	if out, err := r.Deliver(ctx, targettest.Message(t, v1)); err != nil || out != store.OutcomeDelivered {
		t.Fatalf("v1: %q %v (fake refused: %v)", out, err, fake.AuthFailures())
	}
	v2 := mergedEvent("C-1001", "suitex", 2, `{"phone":null}`)
	targettest.StoreMerged(t, d.Store, v2)
	if out, err := r.Deliver(ctx, targettest.Message(t, v2)); err != nil || out != store.OutcomeDelivered {
		t.Fatalf("v2: %q %v (fake refused: %v)", out, err, fake.AuthFailures())
	}
	rec := fake.Record("customer", "C-1001")
	if string(rec["email"]) != `"ada@example.com"` || string(rec["companyName"]) != `"Acme"` {
		t.Fatalf("record %v", rec)
	}
	if _, ok := rec["phone"]; ok {
		t.Fatalf("null did not clear phone: %v", rec)
	}
	reqs := fake.Requests()
	if len(reqs) != 2 || reqs[0].Method != http.MethodPut || reqs[0].RawPath != "/services/rest/record/v1/customer/eid:C-1001" {
		t.Fatalf("requests %+v", reqs)
	}
	// The second upsert carries only what NetSuite lacked: v2's phone.
	if string(reqs[1].Body) != `{"phone":null}` {
		t.Fatalf("second upsert %s", reqs[1].Body)
	}
	h := reqs[0].Header.Get("Authorization")
	if !strings.HasPrefix(h, `OAuth realm="`+realm+`"`) || !strings.Contains(h, `oauth_signature_method="HMAC-SHA256"`) {
		t.Fatalf("Authorization %s", h)
	}
	if ct := reqs[0].Header.Get("Content-Type"); ct != "application/json" {
		t.Fatalf("Content-Type %q", ct)
	}
	if len(fake.AuthFailures()) != 0 {
		t.Fatalf("fake refused: %v", fake.AuthFailures())
	}
}

func TestFakeNetSuiteRejectsAWrongSignature(t *testing.T) {
	t.Parallel()
	d := mysqltest.New(t)
	fake := tbaFake()
	srv := fake.Start(t)

	// A sink with the wrong token secret signs wrongly: 401, permanent,
	// reason NetSuite's error code.
	cfg := tbaConfig(srv.URL)
	cfg.TokenSecret = "ts-wrong-0000000000000000"
	r := sink.NewRunner(config.Sandbox, newTarget(t, cfg), d.Store, nil)
	c2 := mergedEvent("C-2", "suitex", 1, `{"a":1}`)
	targettest.StoreMerged(t, d.Store, c2)
	out, err := r.Deliver(context.Background(), targettest.Message(t, c2))
	f, ok := failure.As(err)
	if !ok || out != store.OutcomeFailed || f.Retryable || f.Reason != "INVALID_LOGIN" {
		t.Fatalf("wrong secret: %q %v", out, err)
	}
	if got := fake.AuthFailures(); len(got) != 1 || got[0] != "signature mismatch" {
		t.Fatalf("fake saw %v", got)
	}

	// A correctly signed request, then the same request with one character
	// of the signature changed, then the correct one replayed.
	good := newTarget(t, tbaConfig(srv.URL))
	if err := good.Deliver(context.Background(), delivery(mergedEvent("C-3", "suitex", 1, `{"a":1}`))); err != nil {
		t.Fatalf("good signature refused: %v", err)
	}
	sent := fake.Requests()[0]
	send := func(auth string) int {
		req, _ := http.NewRequest(http.MethodPut, srv.URL+sent.RawPath, bytes.NewReader(sent.Body))
		req.Header.Set("Authorization", auth)
		req.Header.Set("Content-Type", "application/json")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	auth := sent.Header.Get("Authorization")
	i := strings.Index(auth, `oauth_signature="`) + len(`oauth_signature="`)
	flip := byte('A')
	if auth[i] == 'A' {
		flip = 'B'
	}
	tampered := auth[:i] + string(flip) + auth[i+1:]
	if code := send(tampered); code != 401 {
		t.Fatalf("tampered signature answered %d", code)
	}
	if code := send(auth); code != 401 {
		t.Fatalf("replayed nonce answered %d", code)
	}
	got := fake.AuthFailures()
	if len(got) != 3 || got[1] != "signature mismatch" || got[2] != "nonce reused" {
		t.Fatalf("fake saw %v", got)
	}
}

func TestRecordIDIsOnePercentEncodedSegment(t *testing.T) {
	t.Parallel()
	fake := tbaFake()
	srv := fake.Start(t)
	tgt := newTarget(t, tbaConfig(srv.URL+"/")) // a trailing slash on the base URL is fine
	for rid, raw := range map[string]string{
		"C/1 ?#%é:x+y": "C%2F1%20%3F%23%25%C3%A9%3Ax%2By",
		"a&b=c;d,e":    "a%26b%3Dc%3Bd%2Ce",
		"😀-4byte~ok":   "%F0%9F%98%80-4byte~ok",
		"..":           "..",
	} {
		if err := tgt.Deliver(context.Background(), delivery(mergedEvent(rid, "suitex", 1, `{"a":1}`))); err != nil {
			t.Fatalf("%q: %v (fake: %v)", rid, err, fake.AuthFailures())
		}
		reqs := fake.Requests()
		last := reqs[len(reqs)-1]
		if last.ExternalID != rid || last.RawPath != "/services/rest/record/v1/customer/eid:"+raw {
			t.Errorf("%q sent as %s (decoded %q)", rid, last.RawPath, last.ExternalID)
		}
	}
	if len(fake.AuthFailures()) != 0 {
		t.Fatalf("fake refused: %v", fake.AuthFailures())
	}
}

// Every answer a target can give, through the Runner and the real store.
func TestNetSuiteClassification(t *testing.T) {
	t.Parallel()
	d := mysqltest.New(t)
	var logs logtest.Buffer
	log := logging.New(&logs, slog.LevelDebug)
	release := make(chan struct{})
	t.Cleanup(func() { close(release) })
	fake := tbaFake()
	fake.Respond = func(r *http.Request, body []byte) (int, string) {
		rid := r.URL.Path[strings.LastIndex(r.URL.Path, "eid:")+4:]
		switch rid {
		case "R-200":
			return 200, `{}`
		case "R-204":
			return 0, "" // the fake's own upsert: 204
		case "R-400":
			return 400, netsuitefake.Error(400, "INVALID_VALUE", "Invalid value for the resource or sub-resource field 'email'.")
		case "R-400-echo":
			// A target that echoes the request's headers back in its error.
			return 400, fmt.Sprintf(`{"title":"Bad Request","status":400,"echo":%q}`, r.Header.Get("Authorization")+" "+consumerSecret+" "+tokenSecret)
		case "R-401":
			return 401, netsuitefake.Error(401, "INVALID_LOGIN", "Invalid login attempt.")
		case "R-404":
			return 404, ""
		case "R-409":
			return 409, netsuitefake.Error(409, "CONFLICT", "conflict")
		case "R-429":
			return 429, netsuitefake.Error(429, "CONCURRENCY_LIMIT_EXCEEDED", "Concurrent request limit exceeded. Request blocked.")
		case "R-400-conc":
			return 400, netsuitefake.Error(400, "CONCURRENCY_LIMIT_EXCEEDED", "Concurrent request limit exceeded.")
		case "R-500":
			return 500, strings.Repeat("<html>internal error</html>", 500)
		case "R-503":
			return 503, "Service Unavailable"
		case "R-timeout":
			select {
			case <-r.Context().Done():
			case <-release:
			}
			return 504, ""
		}
		return 418, ""
	}
	srv := fake.Start(t)
	cfg := tbaConfig(srv.URL)
	cfg.Timeout = 400 * time.Millisecond
	r := sink.NewRunner(config.Sandbox, newTarget(t, cfg), d.Store, log)

	refused := sink.NewRunner(config.Sandbox, newTarget(t, tbaConfig(targettest.ClosedURL(t))), d.Store, log)

	targettest.RunClassification(t, targettest.Classification{Store: d.Store, Stage: store.StageNetSuite, Logs: &logs, Secrets: tbaSecrets(),
		Event: func(rid string) event.Merged { return mergedEvent(rid, "suitex", 1, `{"email":"ada@example.com"}`) },
		Answers: []targettest.Answer{
			{RecordID: "R-200", Runner: r, Outcome: store.OutcomeDelivered, Audited: store.OutcomeDelivered},
			{RecordID: "R-204", Runner: r, Outcome: store.OutcomeDelivered, Audited: store.OutcomeDelivered},
			{RecordID: "R-400", Runner: r, Outcome: store.OutcomeFailed, Audited: store.OutcomeRefused, Reason: "INVALID_VALUE", Detail: "Invalid value for the resource"},
			{RecordID: "R-400-echo", Runner: r, Outcome: store.OutcomeFailed, Audited: store.OutcomeRefused, Reason: "http_400", Detail: sink.Redacted},
			{RecordID: "R-401", Runner: r, Outcome: store.OutcomeFailed, Audited: store.OutcomeRefused, Reason: "INVALID_LOGIN", Detail: "HTTP 401"},
			{RecordID: "R-404", Runner: r, Outcome: store.OutcomeFailed, Audited: store.OutcomeRefused, Reason: "http_404", Detail: "HTTP 404"},
			{RecordID: "R-409", Runner: r, Outcome: store.OutcomeFailed, Audited: store.OutcomeRefused, Reason: "CONFLICT", Detail: "HTTP 409"},
			{RecordID: "R-429", Runner: r, Outcome: store.OutcomeFailed, Audited: store.OutcomeRefused, Reason: "CONCURRENCY_LIMIT_EXCEEDED", Retryable: true, Detail: "HTTP 429"},
			{RecordID: "R-400-conc", Runner: r, Outcome: store.OutcomeFailed, Audited: store.OutcomeRefused, Reason: "CONCURRENCY_LIMIT_EXCEEDED", Retryable: true, Detail: "HTTP 400"},
			{RecordID: "R-500", Runner: r, Outcome: store.OutcomeFailed, Audited: store.OutcomeFailed, Reason: "http_500", Retryable: true, Detail: "more bytes"},
			{RecordID: "R-503", Runner: r, Outcome: store.OutcomeFailed, Audited: store.OutcomeFailed, Reason: "http_503", Retryable: true, Detail: "Service Unavailable"},
			{RecordID: "R-timeout", Runner: r, Outcome: store.OutcomeFailed, Audited: store.OutcomeFailed, Reason: sink.ReasonTimeout, Retryable: true},
			{RecordID: "R-refused", Runner: refused, Outcome: store.OutcomeFailed, Audited: store.OutcomeRefused, Reason: sink.ReasonConnectionRefused, Retryable: true},
		}})
}

// OAuth 2.0 client credentials.

const (
	clientID      = "client-5d1f0c2e-7b9a-4e3d-8c6f-1a2b3c4d5e6f"
	certificateID = "cert-Xy8Q2mP0aL7"
)

var (
	keyOnce sync.Once
	rsaKey  *rsa.PrivateKey
	keyPEM  string
)

func testKey(t *testing.T) (*rsa.PrivateKey, string) {
	t.Helper()
	keyOnce.Do(func() {
		k, err := rsa.GenerateKey(rand.Reader, 2048)
		if err != nil {
			panic(err)
		}
		der, _ := x509.MarshalPKCS8PrivateKey(k)
		rsaKey, keyPEM = k, string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}))
	})
	return rsaKey, keyPEM
}

func oauth2Setup(t *testing.T) (*netsuitefake.Server, config.NetSuite, *clock) {
	t.Helper()
	k, p := testKey(t)
	clk := &clock{t: time.Date(2026, 3, 13, 20, 0, 0, 0, time.UTC)}
	fake := &netsuitefake.Server{ClientID: clientID, CertificateID: certificateID, PublicKey: &k.PublicKey, Now: clk.Now}
	srv := fake.Start(t)
	cfg := config.NetSuite{AccountID: account, BaseURL: srv.URL, Auth: "oauth2", ClientID: clientID,
		CertificateID: certificateID, PrivateKey: p, Timeout: 5 * time.Second}
	return fake, cfg, clk
}

func TestOAuth2TokenIsFetchedOnceAndReusedUntilNearExpiry(t *testing.T) {
	t.Parallel()
	fake, cfg, clk := oauth2Setup(t)
	tgt := newTarget(t, cfg, netsuite.WithClock(clk.Now))
	ctx := context.Background()

	// Concurrent first deliveries share one token request.
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for i := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs <- tgt.Deliver(ctx, delivery(mergedEvent(fmt.Sprintf("C-%d", i), "suitex", 1, `{"a":1}`)))
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatalf("deliver: %v (fake: %v)", err, fake.AuthFailures())
		}
	}
	if n := fake.TokenFetches(); n != 1 {
		t.Fatalf("%d token fetches for 8 concurrent deliveries, want 1", n)
	}
	// 50 minutes into a 60-minute token: reused.
	clk.Advance(50 * time.Minute)
	if err := tgt.Deliver(ctx, delivery(mergedEvent("C-50", "suitex", 1, `{"a":1}`))); err != nil {
		t.Fatal(err)
	}
	if n := fake.TokenFetches(); n != 1 {
		t.Fatalf("token refetched after 50 minutes (%d fetches)", n)
	}
	// 58.5 minutes: within the refresh margin, a new token is fetched before
	// NetSuite would refuse the old one.
	clk.Advance(8*time.Minute + 30*time.Second)
	if err := tgt.Deliver(ctx, delivery(mergedEvent("C-58", "suitex", 1, `{"a":1}`))); err != nil {
		t.Fatal(err)
	}
	if n := fake.TokenFetches(); n != 2 {
		t.Fatalf("%d token fetches near expiry, want 2", n)
	}
	if got := fake.AuthFailures(); len(got) != 0 {
		t.Fatalf("fake refused: %v", got)
	}
	if h := fake.Requests()[0].Header.Get("Authorization"); !strings.HasPrefix(h, "Bearer nsat_") {
		t.Fatalf("Authorization %q", h)
	}
}

func TestOAuth2RevokedTokenIsReplacedOnce(t *testing.T) {
	t.Parallel()
	fake, cfg, clk := oauth2Setup(t)
	tgt := newTarget(t, cfg, netsuite.WithClock(clk.Now))
	ctx := context.Background()
	if err := tgt.Deliver(ctx, delivery(mergedEvent("C-1", "suitex", 1, `{"a":1}`))); err != nil {
		t.Fatal(err)
	}
	fake.RevokeTokens()
	if err := tgt.Deliver(ctx, delivery(mergedEvent("C-2", "suitex", 1, `{"a":1}`))); err != nil {
		t.Fatalf("after revocation: %v", err)
	}
	if n := fake.TokenFetches(); n != 2 {
		t.Fatalf("%d token fetches, want 2", n)
	}
	if n := len(fake.Requests()); n != 2 {
		// The refused request is not recorded (refused before routing).
		t.Fatalf("%d record requests accepted, want 2", n)
	}
}

func TestOAuth2TokenEndpointRefusalIsPermanent(t *testing.T) {
	t.Parallel()
	d := mysqltest.New(t)
	fake, cfg, clk := oauth2Setup(t)
	cfg.CertificateID = "cert-not-mapped"
	var logs bytes.Buffer
	tgt := newTarget(t, cfg, netsuite.WithClock(clk.Now))
	r := sink.NewRunner(config.Sandbox, tgt, d.Store, logging.New(&logs, slog.LevelDebug))
	c1 := mergedEvent("C-1", "suitex", 1, `{"a":1}`)
	targettest.StoreMerged(t, d.Store, c1)
	out, err := r.Deliver(context.Background(), targettest.Message(t, c1))
	f, ok := failure.As(err)
	if !ok || out != store.OutcomeFailed || f.Retryable || f.Reason != "oauth2_invalid_grant" || !strings.Contains(f.Detail, "kid") {
		t.Fatalf("%q %v", out, err)
	}
	if len(fake.Requests()) != 0 {
		t.Fatal("record request sent without a token")
	}
	_, p := testKey(t)
	for _, line := range strings.Split(p, "\n") {
		if len(line) > 8 && !strings.HasPrefix(line, "-----") && (strings.Contains(logs.String(), line) || strings.Contains(f.Detail, line)) {
			t.Fatal("private key material in logs or failure")
		}
	}
}

func TestOAuth2AccessTokenNeverLeaks(t *testing.T) {
	t.Parallel()
	d := mysqltest.New(t)
	fake, cfg, clk := oauth2Setup(t)
	fake.Respond = func(r *http.Request, _ []byte) (int, string) {
		return 400, `{"echo":"` + r.Header.Get("Authorization") + `"}`
	}
	var logs bytes.Buffer
	r := sink.NewRunner(config.Sandbox, newTarget(t, cfg, netsuite.WithClock(clk.Now)), d.Store, logging.New(&logs, slog.LevelDebug))
	ev := mergedEvent("C-leak", "suitex", 1, `{"a":1}`)
	targettest.StoreMerged(t, d.Store, ev)
	_, err := r.Deliver(context.Background(), targettest.Message(t, ev))
	f, ok := failure.As(err)
	if !ok {
		t.Fatal(err)
	}
	tok := strings.TrimPrefix(fake.Requests()[0].Header.Get("Authorization"), "Bearer ")
	rows, _ := d.Store.AuditForEvent(context.Background(), ev.ID)
	if len(tok) < 10 || len(rows) != 3 || rows[2].Outcome != store.OutcomeRefused {
		t.Fatalf("token %q rows %v", tok, rows)
	}
	for where, text := range map[string]string{"failure": f.Detail, "logs": logs.String(), "audit": rows[1].Detail + rows[2].Detail} {
		if strings.Contains(text, tok) {
			t.Errorf("access token in %s: %s", where, text)
		}
	}
	if !strings.Contains(f.Detail, sink.Redacted) {
		t.Fatalf("echo not redacted: %s", f.Detail)
	}
}

func TestNewRejectsBadConfiguration(t *testing.T) {
	t.Parallel()
	_, p := testKey(t)
	good := tbaConfig("https://123456-sb1.suitetalk.api.netsuite.com")
	for name, mutate := range map[string]func(*config.NetSuite){
		"no base":      func(c *config.NetSuite) { c.BaseURL = "" },
		"relative":     func(c *config.NetSuite) { c.BaseURL = "netsuite.example" },
		"query":        func(c *config.NetSuite) { c.BaseURL += "?x=1" },
		"no account":   func(c *config.NetSuite) { c.AccountID = "" },
		"no secret":    func(c *config.NetSuite) { c.TokenSecret = "" },
		"bad mapping":  func(c *config.NetSuite) { c.Mapping = `{"types":` },
		"bad auth":     func(c *config.NetSuite) { c.Auth = "basic" },
		"oauth2 nokey": func(c *config.NetSuite) { c.Auth = "oauth2"; c.ClientID = clientID; c.CertificateID = certificateID },
		"oauth2 badkey": func(c *config.NetSuite) {
			c.Auth, c.ClientID, c.CertificateID, c.PrivateKey = "oauth2", clientID, certificateID, strings.Replace(p, "MII", "XXX", 1)
		},
	} {
		cfg := good
		mutate(&cfg)
		_, err := netsuite.New(cfg)
		if err == nil {
			t.Errorf("%s: accepted", name)
			continue
		}
		for _, s := range append(tbaSecrets(), p) {
			if strings.Contains(err.Error(), s) {
				t.Errorf("%s: error quotes a secret: %v", name, err)
			}
		}
	}
	if _, err := netsuite.New(good); err != nil {
		t.Fatalf("good config: %v", err)
	}
}

func TestUnmappedFieldsOnlySendsNothing(t *testing.T) {
	t.Parallel()
	fake := tbaFake()
	srv := fake.Start(t)
	cfg := tbaConfig(srv.URL)
	cfg.Mapping = `{"types":{"customer":{"only_mapped":true,"fields":{"email":"email"}}}}`
	tgt := newTarget(t, cfg)
	if err := tgt.Deliver(context.Background(), delivery(mergedEvent("C-1", "suitex", 1, `{"internal":"x"}`))); err != nil {
		t.Fatal(err)
	}
	if n := len(fake.Requests()); n != 0 {
		t.Fatalf("%d requests for a change with no mapped field", n)
	}
	if err := tgt.Deliver(context.Background(), delivery(mergedEvent("C-1", "suitex", 2, `{"internal":"x","email":"e@x"}`))); err != nil {
		t.Fatal(err)
	}
	if rec := fake.Record("customer", "C-1"); len(rec) != 1 || string(rec["email"]) != `"e@x"` {
		t.Fatalf("record %v", rec)
	}
}

// TestVersionFieldCarriesTheVersionSent: with NETSUITE_VERSION_FIELD set,
// the upsert also sets that field to the version N it carries, so NetSuite's
// adapter can report a true base_version; unset, nothing extra is sent.
func TestVersionFieldCarriesTheVersionSent(t *testing.T) {
	t.Parallel()
	fake := tbaFake()
	srv := fake.Start(t)
	cfg := tbaConfig(srv.URL)
	cfg.VersionField = "custentity_backbone_version"
	if err := newTarget(t, cfg).Deliver(context.Background(), delivery(mergedEvent("C-v", "suitex", 7, `{"email":"e@x"}`))); err != nil {
		t.Fatal(err)
	}
	if err := newTarget(t, tbaConfig(srv.URL)).Deliver(context.Background(), delivery(mergedEvent("C-nov", "suitex", 3, `{"email":"e@x"}`))); err != nil {
		t.Fatal(err)
	}
	reqs := fake.Requests()
	if len(reqs) != 2 || string(reqs[0].Body) != `{"custentity_backbone_version":7,"email":"e@x"}` || string(reqs[1].Body) != `{"email":"e@x"}` {
		t.Fatalf("upserts %q", []string{string(reqs[0].Body), string(reqs[1].Body)})
	}
	if rec := fake.Record("customer", "C-v"); string(rec["custentity_backbone_version"]) != `7` {
		t.Fatalf("record %v", rec)
	}
	// NETSUITE_MAX_CONCURRENCY is the share the Runner enforces.
	cfg.MaxConcurrency = 7
	if got := newTarget(t, cfg).MaxConcurrency(); got != 7 {
		t.Fatalf("MaxConcurrency %d, want 7", got)
	}
}
