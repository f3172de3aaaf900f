package sinktest

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// SuiteX is a fake SuiteX events endpoint (POST /v1/events). It verifies
// X-Backbone-Signature (t={unix},v1={hex HMAC-SHA256(secret, t + "." +
// body)}) within Tolerance of its clock, requires Idempotency-Key to be the
// event's id, a colon and 16 lowercase hex digits, answers 201 for a new key
// (and applies the event's changes to its copy of the record) and 409 for a
// key it has seen, without applying it, as SuiteX does.
type SuiteX struct {
	Secret string
	// Tolerance is how far t may be from Now (default 5 minutes).
	Tolerance time.Duration
	Now       func() time.Time

	// Respond, when set, answers a verified request instead of the fake's
	// own logic; a zero status falls through.
	Respond func(r *http.Request, body []byte) (status int, respBody string)

	// Hook, when set, runs for every verified request with a new key, with
	// a function that applies it: a zero status applies it (unless the
	// hook did) and answers 201; any other status is the answer, and the
	// event took effect only if the hook applied it.
	Hook func(req SuiteXRequest, apply func()) (status int, respBody string)

	mu       sync.Mutex
	events   map[string][]byte
	records  map[string]map[string]json.RawMessage
	requests []SuiteXRequest
	refused  []string
}

// Record returns SuiteX's copy of a record: the changes of every event it
// applied, in order, and its own edits (nil if none).
func (f *SuiteX) Record(recordType, recordID string) map[string]json.RawMessage {
	f.mu.Lock()
	defer f.mu.Unlock()
	r, ok := f.records[recordType+"/"+recordID]
	if !ok {
		return nil
	}
	out := make(map[string]json.RawMessage, len(r))
	for k, v := range r {
		out[k] = v
	}
	return out
}

// Edit changes a record as a SuiteX user would.
func (f *SuiteX) Edit(recordType, recordID string, fields map[string]json.RawMessage) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.applyLocked(recordType, recordID, fields)
}

func (f *SuiteX) applyLocked(recordType, recordID string, fields map[string]json.RawMessage) {
	if f.records == nil {
		f.records = map[string]map[string]json.RawMessage{}
	}
	applyFields(f.records, recordType+"/"+recordID, fields)
}

// SuiteXRequest is a verified request the fake received.
type SuiteXRequest struct {
	IdempotencyKey string
	Signature      string
	Body           []byte
}

// Start serves f on a local httptest server, closed when the test ends.
func (f *SuiteX) Start(t testing.TB) *httptest.Server {
	t.Helper()
	s := httptest.NewServer(f)
	t.Cleanup(s.Close)
	return s
}

// Requests returns the verified requests received so far.
func (f *SuiteX) Requests() []SuiteXRequest {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]SuiteXRequest(nil), f.requests...)
}

// Refused lists why requests were refused.
func (f *SuiteX) Refused() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.refused...)
}

// Event returns the body stored under an idempotency key.
func (f *SuiteX) Event(key string) []byte {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.events[key]
}

func (f *SuiteX) refuse(w http.ResponseWriter, status int, why string) {
	f.mu.Lock()
	f.refused = append(f.refused, why)
	f.mu.Unlock()
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	b, _ := json.Marshal(map[string]string{"error": why})
	_, _ = w.Write(b)
}

// ServeHTTP serves POST /v1/events.
func (f *SuiteX) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path != "/v1/events" {
		f.refuse(w, 404, "no route "+r.URL.Path)
		return
	}
	if r.Method != http.MethodPost {
		f.refuse(w, 405, "method "+r.Method)
		return
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, 1<<20))
	if err != nil {
		f.refuse(w, 400, "read body")
		return
	}
	sig := r.Header.Get("X-Backbone-Signature")
	if why := f.verify(sig, body); why != "" {
		f.refuse(w, 401, why)
		return
	}
	key := r.Header.Get("Idempotency-Key")
	var ev struct {
		ID         string                     `json:"id"`
		RecordType string                     `json:"record_type"`
		RecordID   string                     `json:"record_id"`
		Changes    map[string]json.RawMessage `json:"changes"`
	}
	if err := json.Unmarshal(body, &ev); err != nil || ev.ID == "" {
		f.refuse(w, 400, "body is not an event with an id")
		return
	}
	if digest, ok := strings.CutPrefix(key, ev.ID+":"); !ok || !isHex16(digest) {
		f.refuse(w, 400, "Idempotency-Key must be the event id, a colon and 16 hex digits")
		return
	}
	f.mu.Lock()
	f.requests = append(f.requests, SuiteXRequest{IdempotencyKey: key, Signature: sig, Body: body})
	f.mu.Unlock()
	if f.Respond != nil {
		if status, rb := f.Respond(r, body); status != 0 {
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(status)
			_, _ = io.WriteString(w, rb)
			return
		}
	}
	f.mu.Lock()
	_, seen := f.events[key]
	f.mu.Unlock()
	if seen {
		w.WriteHeader(http.StatusConflict)
		return
	}
	applied := false
	apply := func() {
		f.mu.Lock()
		defer f.mu.Unlock()
		if _, dup := f.events[key]; applied || dup {
			return // a concurrent request with this key applied it
		}
		applied = true
		if f.events == nil {
			f.events = map[string][]byte{}
		}
		f.events[key] = body
		f.applyLocked(ev.RecordType, ev.RecordID, ev.Changes)
	}
	if f.Hook != nil {
		req := SuiteXRequest{IdempotencyKey: key, Signature: sig, Body: body}
		if status, rb := f.Hook(req, apply); status != 0 {
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(status)
			_, _ = io.WriteString(w, rb)
			return
		}
	}
	apply()
	w.WriteHeader(http.StatusCreated)
}

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

// verify checks the signature header against body; "" when valid.
func (f *SuiteX) verify(header string, body []byte) string {
	var ts, v1 string
	for _, part := range strings.Split(header, ",") {
		k, v, _ := strings.Cut(part, "=")
		switch k {
		case "t":
			ts = v
		case "v1":
			v1 = v
		}
	}
	if ts == "" || v1 == "" {
		return "X-Backbone-Signature must be t=...,v1=..."
	}
	sec, err := strconv.ParseInt(ts, 10, 64)
	if err != nil {
		return "t is not unix seconds"
	}
	now := time.Now()
	if f.Now != nil {
		now = f.Now()
	}
	tol := f.Tolerance
	if tol <= 0 {
		tol = 5 * time.Minute
	}
	if d := now.Sub(time.Unix(sec, 0)); d > tol || d < -tol {
		return "t is outside the tolerance"
	}
	mac := hmac.New(sha256.New, []byte(f.Secret))
	mac.Write([]byte(ts + "." + string(body)))
	got, err := hex.DecodeString(v1)
	if err != nil || !hmac.Equal(got, mac.Sum(nil)) {
		return "signature mismatch"
	}
	return ""
}
