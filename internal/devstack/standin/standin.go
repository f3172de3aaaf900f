// Package standin runs local stand-ins for NetSuite and SuiteX, for
// `backbone dev` and the end-to-end tests: they accept what the sinks send,
// check the parts a real target would reject (SuiteX's signature, NetSuite's
// OAuth header and URL shape), record every delivery, log it, and can be
// switched into an outage.
package standin

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Delivery is one request a stand-in accepted.
type Delivery struct {
	Target     string
	Key        string // SuiteX: Idempotency-Key ({event id}:{16 hex digest of the changes}); NetSuite: type/eid
	EventID    string
	RecordType string
	RecordID   string
	Version    uint64
	Source     string
	Body       json.RawMessage
	At         time.Time
	Duplicate  bool // SuiteX: the idempotency key was seen before (answered 409)
}

// Target is one stand-in.
type Target struct {
	name string
	log  *slog.Logger

	mu         sync.Mutex
	deliveries []Delivery
	keys       map[string]bool
	down       int // status to answer while down (0 = up)
	failNext   int // requests still to fail (FailNext), after which the target is up
	failStatus int // status FailNext answers with
	downHits   int // requests answered with the outage status
	rejected   int
	onDelivery func(Delivery)
	delay      time.Duration // SetDelay
}

// SetDelay makes every request take at least d before it is answered: a
// slow target (the bench's burst figure), without failing anything.
func (t *Target) SetDelay(d time.Duration) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.delay = d
}

// wait sleeps the configured delay.
func (t *Target) wait() {
	t.mu.Lock()
	d := t.delay
	t.mu.Unlock()
	if d > 0 {
		time.Sleep(d)
	}
}

func newTarget(name string, log *slog.Logger) *Target {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Target{name: name, log: log.With("standin", name), keys: map[string]bool{}}
}

// SetDown makes the target answer status to everything (503 for an outage);
// 0 brings it back.
func (t *Target) SetDown(status int) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.down = status
}

// FailNext makes the next n requests fail with status (503: a transient
// outage, 400: a permanent refusal), after which the target answers
// normally again without anyone calling SetDown. A flaky target that
// recovers by itself is what Retry exists for; timing a SetDown(0) from a
// test could not say how many attempts failed. SetDown, while set, takes
// precedence; FailNext(0, 0) cancels what is left.
func (t *Target) FailNext(n, status int) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.failNext, t.failStatus = max(n, 0), status
}

// OnDelivery registers a callback run for each accepted delivery.
func (t *Target) OnDelivery(fn func(Delivery)) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.onDelivery = fn
}

// Deliveries returns a copy of what was accepted so far.
func (t *Target) Deliveries() []Delivery {
	t.mu.Lock()
	defer t.mu.Unlock()
	return append([]Delivery(nil), t.deliveries...)
}

// Rejected counts requests refused as malformed or unsigned.
func (t *Target) Rejected() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.rejected
}

func (t *Target) refuse(w http.ResponseWriter, status int, why string) {
	t.mu.Lock()
	t.rejected++
	t.mu.Unlock()
	t.log.Warn("request refused", "status", status, "why", why)
	http.Error(w, why, status)
}

// downStatus returns the outage status, if any (SetDown, else a pending
// FailNext), and counts the hit.
func (t *Target) downStatus() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.down != 0 {
		t.downHits++
		return t.down
	}
	if t.failNext > 0 && t.failStatus != 0 {
		t.failNext--
		t.downHits++
		return t.failStatus
	}
	return 0
}

// OutageHits counts the requests answered with the outage status (SetDown
// or FailNext).
func (t *Target) OutageHits() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.downHits
}

func (t *Target) record(d Delivery) {
	t.mu.Lock()
	d.Duplicate = t.keys[d.Key]
	t.keys[d.Key] = true
	t.deliveries = append(t.deliveries, d)
	cb := t.onDelivery
	t.mu.Unlock()
	t.log.Info("received", "key", d.Key, "event_id", d.EventID, "record", d.RecordType+":"+d.RecordID, "version", d.Version, "source", d.Source, "duplicate", d.Duplicate)
	if cb != nil {
		cb(d)
	}
}

// merged is the part of a merged event the stand-ins read.
type merged struct {
	ID         string          `json:"id"`
	RecordType string          `json:"record_type"`
	RecordID   string          `json:"record_id"`
	Source     string          `json:"source"`
	Version    uint64          `json:"version"`
	Changes    json.RawMessage `json:"changes"`
}

// SuiteX returns a SuiteX stand-in checking X-Backbone-Signature with secret.
func SuiteX(secret string, log *slog.Logger) (*Target, http.Handler) {
	t := newTarget("suitex", log)
	mux := http.NewServeMux()
	mux.HandleFunc("POST /v1/events", func(w http.ResponseWriter, r *http.Request) {
		t.wait()
		if s := t.downStatus(); s != 0 {
			http.Error(w, "stand-in outage", s)
			return
		}
		body, err := io.ReadAll(io.LimitReader(r.Body, 1<<20))
		if err != nil {
			t.refuse(w, http.StatusBadRequest, "read body")
			return
		}
		if !validSignature(r.Header.Get("X-Backbone-Signature"), secret, body) {
			t.refuse(w, http.StatusUnauthorized, "bad X-Backbone-Signature")
			return
		}
		var m merged
		if err := json.Unmarshal(body, &m); err != nil || m.ID == "" {
			t.refuse(w, http.StatusBadRequest, "body is not a merged event")
			return
		}
		// SPEC §7: {event id of N}:{first 16 hex of the SHA-256 of the
		// canonical changes sent}.
		key := r.Header.Get("Idempotency-Key")
		if digest, ok := strings.CutPrefix(key, m.ID+":"); !ok || !isHex16(digest) {
			t.refuse(w, http.StatusBadRequest, "Idempotency-Key must be the event id, a colon and 16 hex digits")
			return
		}
		d := Delivery{Target: "suitex", Key: key, EventID: m.ID, RecordType: m.RecordType, RecordID: m.RecordID,
			Version: m.Version, Source: m.Source, Body: body, At: time.Now()}
		t.record(d)
		if t.wasDuplicate(key) {
			w.WriteHeader(http.StatusConflict)
			return
		}
		w.WriteHeader(http.StatusCreated)
	})
	return t, mux
}

// isHex16 says whether s is 16 lowercase hex digits.
func isHex16(s string) bool {
	if len(s) != 16 {
		return false
	}
	for _, c := range s {
		if (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return false
		}
	}
	return true
}

func (t *Target) wasDuplicate(key string) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.deliveries[len(t.deliveries)-1].Duplicate
}

// validSignature checks "t={unix},v1={hex hmac(secret, t.body)}" (SPEC §7).
func validSignature(h, secret string, body []byte) bool {
	var ts, sig string
	for _, part := range strings.Split(h, ",") {
		k, v, _ := strings.Cut(strings.TrimSpace(part), "=")
		switch k {
		case "t":
			ts = v
		case "v1":
			sig = v
		}
	}
	if _, err := strconv.ParseInt(ts, 10, 64); err != nil || sig == "" {
		return false
	}
	mac := hmac.New(sha256.New, []byte(secret))
	mac.Write([]byte(ts + "." + string(body)))
	want := hex.EncodeToString(mac.Sum(nil))
	return hmac.Equal([]byte(want), []byte(sig))
}

// NetSuite returns a NetSuite stand-in for the REST record service upsert
// (PUT /services/rest/record/v1/{type}/eid:{id}). It checks the request is an
// OAuth 1.0a HMAC-SHA256 request with the account's realm, or carries a
// bearer token; it does not recompute the signature (the sink's tests do).
func NetSuite(accountID string, log *slog.Logger) (*Target, http.Handler) {
	t := newTarget("netsuite", log)
	mux := http.NewServeMux()
	mux.HandleFunc("POST /services/rest/auth/oauth2/v1/token", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_, _ = io.WriteString(w, `{"access_token":"standin-token","token_type":"Bearer","expires_in":3600}`)
	})
	mux.HandleFunc("PUT /services/rest/record/v1/{type}/{eid}", func(w http.ResponseWriter, r *http.Request) {
		t.wait()
		if s := t.downStatus(); s != 0 {
			w.Header().Set("Content-Type", "application/vnd.oracle.resource+json; type=error")
			w.WriteHeader(s)
			fmt.Fprintf(w, `{"o:errorDetails":[{"detail":"stand-in outage","o:errorCode":"UNEXPECTED_ERROR"}]}`)
			return
		}
		auth := r.Header.Get("Authorization")
		okAuth := strings.HasPrefix(auth, "Bearer ") ||
			(strings.HasPrefix(auth, "OAuth ") && strings.Contains(auth, `oauth_signature_method="HMAC-SHA256"`) &&
				strings.Contains(auth, `realm="`+accountID+`"`) && strings.Contains(auth, "oauth_signature="))
		if !okAuth {
			t.refuse(w, http.StatusUnauthorized, "missing or malformed Authorization")
			return
		}
		eid, ok := strings.CutPrefix(r.PathValue("eid"), "eid:")
		if !ok || eid == "" {
			t.refuse(w, http.StatusBadRequest, "path must end in eid:{external id}")
			return
		}
		if u, err := url.PathUnescape(eid); err == nil {
			eid = u
		}
		body, err := io.ReadAll(io.LimitReader(r.Body, 1<<20))
		if err != nil || !json.Valid(body) {
			t.refuse(w, http.StatusBadRequest, "body is not JSON")
			return
		}
		d := Delivery{Target: "netsuite", Key: r.PathValue("type") + "/" + eid, RecordType: r.PathValue("type"), RecordID: eid, Body: body, At: time.Now()}
		// The sink may pass the backbone's event id and version along in
		// headers; the stand-in records them when present.
		d.EventID = r.Header.Get("X-Backbone-Event-Id")
		d.Version, _ = strconv.ParseUint(r.Header.Get("X-Backbone-Version"), 10, 64)
		t.record(d)
		w.WriteHeader(http.StatusNoContent)
	})
	return t, mux
}
