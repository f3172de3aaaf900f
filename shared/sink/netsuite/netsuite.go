// Package netsuite is the NetSuite target of the sink machinery (SPEC §7):
// an upsert by external ID through the REST record service,
//
//	PUT {NETSUITE_BASE_URL}/services/rest/record/v1/{type}/eid:{record_id}
//
// with the merged event's effective changes, mapped by Mapping, as the body.
// It authenticates with Token-Based Authentication (OAuth 1.0a, HMAC-SHA256,
// the default) or, with NETSUITE_AUTH=oauth2, with OAuth 2.0 client
// credentials (a JWT assertion signed with the integration certificate's
// private key). Answers are classified as SPEC §7 says: 2xx delivered; 429,
// 5xx, timeouts and CONCURRENCY_LIMIT_EXCEEDED retryable; every other 4xx
// permanent, with NetSuite's o:errorCode as the failure's reason.
package netsuite

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/backbone-sync/backbone/shared/config"
	"github.com/backbone-sync/backbone/shared/event"
	"github.com/backbone-sync/backbone/shared/failure"
	"github.com/backbone-sync/backbone/shared/sink"
	"github.com/backbone-sync/backbone/shared/store"
)

// RecordPath is the REST record service, relative to the base URL.
const RecordPath = "/services/rest/record/v1/"

// Auth modes (NETSUITE_AUTH).
const (
	AuthTBA    = "tba"
	AuthOAuth2 = "oauth2"
)

// concurrencyCodes are NetSuite error codes for its account-wide request and
// concurrency limits: whatever status carries them, waiting helps.
var concurrencyCodes = map[string]bool{
	"CONCURRENCY_LIMIT_EXCEEDED": true, // REST web services
	"WS_CONCURRENCY_EXCEEDED":    true, // the same limit as SOAP reports it
	"SSS_REQUEST_LIMIT_EXCEEDED": true, // SuiteScript / RESTlet governance
}

// authenticator adds credentials to a request.
type authenticator interface {
	authorize(ctx context.Context, req *http.Request) error
	// invalidate forgets cached credentials after NetSuite refused them.
	invalidate()
	secrets() []string
}

// Target delivers merged events to NetSuite.
type Target struct {
	base    string // NETSUITE_BASE_URL without trailing '/'
	mode    string
	auth    authenticator
	mapping Mapping
	client  *http.Client
	static  []string // secrets known at start-up
	// versionField is NETSUITE_VERSION_FIELD ("" = not sent).
	versionField   string
	maxConcurrency int
}

var (
	_ sink.Target       = (*Target)(nil)
	_ sink.SecretHolder = (*Target)(nil)
	_ sink.Limited      = (*Target)(nil)
)

type options struct {
	client *http.Client
	now    func() time.Time
	nonce  func() string
}

// Option adjusts a Target; tests inject the HTTP client, clock and nonces.
type Option func(*options)

// WithHTTPClient replaces the client built by sink.NewHTTPClient.
func WithHTTPClient(c *http.Client) Option { return func(o *options) { o.client = c } }

// WithClock replaces time.Now (TBA timestamps, JWT iat/exp, token expiry).
func WithClock(now func() time.Time) Option { return func(o *options) { o.now = now } }

// WithNonce replaces the TBA nonce source.
func WithNonce(nonce func() string) Option { return func(o *options) { o.nonce = nonce } }

// New builds the NetSuite target from its configuration. Call
// config.Config.RequireNetSuite first for one message naming every missing
// variable; New checks again what it cannot work without and parses the
// record mapping and (oauth2) the private key, so a bad value stops the
// function at start-up. Errors never contain a secret.
func New(cfg config.NetSuite, opts ...Option) (*Target, error) {
	o := options{now: time.Now, nonce: newNonce}
	for _, opt := range opts {
		opt(&o)
	}
	if o.client == nil {
		o.client = sink.NewHTTPClient(cfg.Timeout)
	}
	base := strings.TrimRight(strings.TrimSpace(cfg.BaseURL), "/")
	u, err := url.Parse(base)
	if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
		return nil, fmt.Errorf("NETSUITE_BASE_URL=%q is not valid: accepted is an absolute http(s) URL such as https://123456.suitetalk.api.netsuite.com", cfg.BaseURL)
	}
	if u.RawQuery != "" || u.Fragment != "" {
		return nil, fmt.Errorf("NETSUITE_BASE_URL=%q is not valid: it must not have a query or fragment", cfg.BaseURL)
	}
	if strings.TrimSpace(cfg.AccountID) == "" {
		return nil, errors.New("NETSUITE_ACCOUNT_ID is not set: required by the NetSuite sink")
	}
	mapping, err := ParseMapping(cfg.Mapping)
	if err != nil {
		return nil, err
	}
	t := &Target{base: base, mapping: mapping, client: o.client, mode: cfg.Auth,
		versionField: strings.TrimSpace(cfg.VersionField), maxConcurrency: max(1, cfg.MaxConcurrency)}
	switch cfg.Auth {
	case AuthTBA, "":
		t.mode = AuthTBA
		if err := requireSet(map[string]string{
			"NETSUITE_CONSUMER_KEY": cfg.ConsumerKey, "NETSUITE_CONSUMER_SECRET": cfg.ConsumerSecret,
			"NETSUITE_TOKEN_ID": cfg.TokenID, "NETSUITE_TOKEN_SECRET": cfg.TokenSecret,
		}); err != nil {
			return nil, err
		}
		s := &tba{realm: Realm(cfg.AccountID), consumerKey: cfg.ConsumerKey, consumerSecret: cfg.ConsumerSecret,
			tokenID: cfg.TokenID, tokenSecret: cfg.TokenSecret, now: o.now, nonce: o.nonce}
		t.auth = s
	case AuthOAuth2:
		if err := requireSet(map[string]string{
			"NETSUITE_CLIENT_ID": cfg.ClientID, "NETSUITE_CERTIFICATE_ID": cfg.CertificateID,
			"NETSUITE_PRIVATE_KEY": cfg.PrivateKey,
		}); err != nil {
			return nil, err
		}
		key, alg, err := ParsePrivateKey(cfg.PrivateKey)
		if err != nil {
			return nil, err
		}
		t.auth = &oauth2{tokenURL: base + TokenPath, clientID: cfg.ClientID, certID: cfg.CertificateID,
			key: key, alg: alg, client: o.client, now: o.now, fetching: make(chan struct{}, 1)}
		t.static = pemSecrets(cfg.PrivateKey)
	default:
		return nil, fmt.Errorf("NETSUITE_AUTH=%q is not valid: accepted values are tba, oauth2", cfg.Auth)
	}
	return t, nil
}

func requireSet(vars map[string]string) error {
	var missing []string
	for k, v := range vars {
		if v == "" {
			missing = append(missing, k)
		}
	}
	if len(missing) == 0 {
		return nil
	}
	slices.Sort(missing)
	return fmt.Errorf("%s is not set: required by the NetSuite sink", strings.Join(missing, ", "))
}

// Name is the target's stage and source name.
func (t *Target) Name() string { return store.StageNetSuite }

// Secrets lists the credentials to keep out of every text.
func (t *Target) Secrets() []string { return append(t.auth.secrets(), t.static...) }

// Mapping returns the effective record mapping (defaults included).
func (t *Target) Mapping() Mapping { return t.mapping }

// RecordURL is the upsert URL of a record: the type and the external ID are
// each one path segment, every byte outside RFC 3986's unreserved set
// percent-encoded, so the path NetSuite decodes is exactly the id and the
// path the TBA signature covers is exactly the one sent.
func (t *Target) RecordURL(netsuiteType, recordID string) string {
	return t.base + RecordPath + percentEncode(netsuiteType) + "/eid:" + percentEncode(recordID)
}

// Deliver upserts the event's changes. A 401 in OAuth 2.0 mode drops the
// cached token and tries once more with a fresh one: a token revoked before
// its expiry should not cost a trip through Retry.
func (t *Target) Deliver(ctx context.Context, d sink.Delivery) error {
	ev := d.Merged
	nsType, body, err := t.mapping.Apply(ev.RecordType, ev.Changes)
	if err != nil {
		var me *mappingError
		if errors.As(err, &me) {
			return failure.Permanent(store.StageNetSuite, me.reason, me.detail)
		}
		return failure.Permanent(store.StageNetSuite, "mapping_error", err.Error())
	}
	if body == nil {
		// Every changed field is unmapped: NetSuite has nothing to learn
		// from this version, and an empty upsert could create a blank record.
		return nil
	}
	if t.versionField != "" {
		// So NetSuite's adapter can report the version it holds as its
		// base_version (SPEC §7). Sent verbatim: it names a NetSuite field.
		if body, err = withField(body, t.versionField, strconv.FormatUint(ev.Version, 10)); err != nil {
			return failure.Permanent(store.StageNetSuite, "invalid_changes", err.Error())
		}
	}
	rawURL := t.RecordURL(nsType, ev.RecordID)
	what := http.MethodPut + " " + RecordPath + nsType + "/eid:" + ev.RecordID
	for attempt := 0; ; attempt++ {
		resp, err := t.put(ctx, rawURL, body, what, ev)
		if err != nil {
			return err
		}
		if resp.OK() {
			return nil
		}
		if resp.Status == http.StatusUnauthorized && t.mode == AuthOAuth2 && attempt == 0 {
			t.auth.invalidate()
			continue
		}
		return classify(resp, what)
	}
}

// withField sets one more field on a JSON object body.
func withField(body []byte, name, value string) ([]byte, error) {
	var m map[string]json.RawMessage
	if err := json.Unmarshal(body, &m); err != nil {
		return nil, fmt.Errorf("upsert body: %w", err)
	}
	m[name] = json.RawMessage(value)
	return json.Marshal(m)
}

// MaxConcurrency is the backbone's share of NetSuite's account-wide
// concurrency limit (NETSUITE_MAX_CONCURRENCY), enforced by the sink
// machinery across every instance and Retry.
func (t *Target) MaxConcurrency() int { return t.maxConcurrency }

func (t *Target) put(ctx context.Context, rawURL string, body []byte, what string, ev event.Merged) (*sink.Response, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPut, rawURL, bytes.NewReader(body))
	if err != nil {
		return nil, failure.Permanent(store.StageNetSuite, sink.ReasonBadRequest, what+": "+err.Error())
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/json")
	// NetSuite ignores these; they let logs, proxies and the local stand-in
	// tie an upsert to the backbone event and version it carries (an upsert
	// by external id has no other trace of it).
	req.Header.Set(HeaderEventID, ev.ID)
	req.Header.Set(HeaderVersion, strconv.FormatUint(ev.Version, 10))
	if err := t.auth.authorize(ctx, req); err != nil {
		return nil, err
	}
	resp, err := sink.Do(t.client, req)
	if err != nil {
		return nil, sink.TransportFailure(store.StageNetSuite, what, err)
	}
	return resp, nil
}

// Headers that identify the delivered event.
const (
	HeaderEventID = "X-Backbone-Event-Id"
	HeaderVersion = "X-Backbone-Version"
)

// errorBody is NetSuite's REST error document (RFC 7807 plus o:errorDetails).
type errorBody struct {
	Title   string `json:"title"`
	Status  int    `json:"status"`
	Details []struct {
		Detail string `json:"detail"`
		Code   string `json:"o:errorCode"`
		Path   string `json:"o:errorPath"`
	} `json:"o:errorDetails"`
}

// classify turns a non-2xx answer into a failure: the first o:errorCode is
// the reason (http_{status} without one); concurrency codes are retryable
// whatever the status.
func classify(resp *sink.Response, what string) *failure.Failure {
	var eb errorBody
	_ = json.Unmarshal(resp.Body, &eb)
	var reason string
	var msgs []string
	retry := false
	for _, d := range eb.Details {
		code := reasonCode(d.Code)
		if reason == "" {
			reason = code
		}
		if concurrencyCodes[d.Code] {
			retry = true
		}
		m := d.Detail
		if code != "" {
			m = code + ": " + m
		}
		if d.Path != "" {
			m += " (" + d.Path + ")"
		}
		msgs = append(msgs, m)
	}
	detail := fmt.Sprintf("%s: HTTP %d", what, resp.Status)
	if len(msgs) > 0 {
		detail += ": " + sink.Snippet([]byte(strings.Join(msgs, "; ")))
	} else if s := sink.Snippet(resp.Body); s != "" {
		detail += ": " + s
	}
	f := sink.StatusFailure(store.StageNetSuite, resp.Status, reason, retry, detail)
	if resp.Status == http.StatusTooManyRequests || retry {
		f.RetryAfter = sink.RetryAfter(resp.Header)
	}
	return f
}
