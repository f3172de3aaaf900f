// Package suitex is the SuiteX target of the sink machinery (SPEC §7):
//
//	POST {SUITEX_BASE_URL}/v1/events
//	Idempotency-Key: {event id of N}:{16 hex of the SHA-256 of the canonical changes sent}
//	X-Backbone-Signature: t={unix seconds},v1={hex HMAC-SHA256(secret, t + "." + body)}
//
// with the merged event of version N, carrying the fields SuiteX is
// missing, and since_version as the JSON body. 2xx and 409 (already applied) are
// delivered; 429, 5xx and timeouts retryable; every other 4xx permanent.
package suitex

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/backbone-sync/backbone/shared/config"
	"github.com/backbone-sync/backbone/shared/event"
	"github.com/backbone-sync/backbone/shared/failure"
	"github.com/backbone-sync/backbone/shared/sink"
	"github.com/backbone-sync/backbone/shared/store"
)

// EventsPath is where SuiteX receives events, relative to the base URL.
const EventsPath = "/v1/events"

// Header names of the SuiteX contract.
const (
	HeaderIdempotencyKey = "Idempotency-Key"
	HeaderSignature      = "X-Backbone-Signature"
)

// Target delivers merged events to SuiteX.
type Target struct {
	url    string
	secret []byte
	client *http.Client
	now    func() time.Time
	raw    string
}

var (
	_ sink.Target       = (*Target)(nil)
	_ sink.SecretHolder = (*Target)(nil)
)

type options struct {
	client *http.Client
	now    func() time.Time
}

// Option adjusts a Target; tests inject the HTTP client and the clock.
type Option func(*options)

// WithHTTPClient replaces the client built by sink.NewHTTPClient.
func WithHTTPClient(c *http.Client) Option { return func(o *options) { o.client = c } }

// WithClock replaces time.Now (the signature's t).
func WithClock(now func() time.Time) Option { return func(o *options) { o.now = now } }

// New builds the SuiteX target. Call config.Config.RequireSuiteX first for
// one message naming every missing variable. Errors never contain a secret.
func New(cfg config.SuiteX, opts ...Option) (*Target, error) {
	o := options{now: time.Now}
	for _, opt := range opts {
		opt(&o)
	}
	if o.client == nil {
		o.client = sink.NewHTTPClient(cfg.Timeout)
	}
	base := strings.TrimRight(strings.TrimSpace(cfg.BaseURL), "/")
	u, err := url.Parse(base)
	if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" || u.RawQuery != "" || u.Fragment != "" {
		return nil, fmt.Errorf("SUITEX_BASE_URL=%q is not valid: accepted is an absolute http(s) URL without query", cfg.BaseURL)
	}
	if cfg.SigningSecret == "" {
		return nil, errors.New("SUITEX_SIGNING_SECRET is not set: required by the SuiteX sink")
	}
	return &Target{url: base + EventsPath, secret: []byte(cfg.SigningSecret), raw: cfg.SigningSecret,
		client: o.client, now: o.now}, nil
}

// Name is the target's stage and source name.
func (t *Target) Name() string { return store.StageSuiteX }

// Secrets lists the credentials to keep out of every text.
func (t *Target) Secrets() []string { return []string{t.raw} }

// Signature is the X-Backbone-Signature value for body signed at ts.
func Signature(secret []byte, ts time.Time, body []byte) string {
	t := strconv.FormatInt(ts.Unix(), 10)
	mac := hmac.New(sha256.New, secret)
	mac.Write([]byte(t))
	mac.Write([]byte("."))
	mac.Write(body)
	return "t=" + t + ",v1=" + hex.EncodeToString(mac.Sum(nil))
}

// request is the SuiteX request body: the merged event of version N with the
// fields SuiteX is missing, and since_version (SPEC §7).
type request struct {
	event.Merged
	SinceVersion uint64 `json:"since_version"`
}

// Deliver posts the delivery. Its Idempotency-Key names the version and the
// fields sent, so SuiteX's 409 means exactly this request was applied.
func (t *Target) Deliver(ctx context.Context, d sink.Delivery) error {
	ev := d.Merged
	body, err := event.Marshal(request{Merged: ev, SinceVersion: d.SinceVersion})
	if err != nil {
		return failure.Permanent(store.StageSuiteX, "invalid_changes", fmt.Sprintf("encode event %s: %v", ev.ID, err))
	}
	what := http.MethodPost + " " + EventsPath
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, t.url, bytes.NewReader(body))
	if err != nil {
		return failure.Permanent(store.StageSuiteX, sink.ReasonBadRequest, what+": "+err.Error())
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/json")
	req.Header.Set(HeaderIdempotencyKey, d.IdempotencyKey)
	req.Header.Set(HeaderSignature, Signature(t.secret, t.now(), body))
	resp, err := sink.Do(t.client, req)
	if err != nil {
		return sink.TransportFailure(store.StageSuiteX, what, err)
	}
	// 409: SuiteX already applied this idempotency key.
	if resp.OK() || resp.Status == http.StatusConflict {
		return nil
	}
	detail := fmt.Sprintf("%s: HTTP %d", what, resp.Status)
	if s := sink.Snippet(resp.Body); s != "" {
		detail += ": " + s
	}
	f := sink.StatusFailure(store.StageSuiteX, resp.Status, "", false, detail)
	if resp.Status == http.StatusTooManyRequests {
		f.RetryAfter = sink.RetryAfter(resp.Header)
	}
	return f
}
