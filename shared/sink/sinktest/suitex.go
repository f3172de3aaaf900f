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
// body)}) within Tolerance of its clock, requires Idempotency-Key to equal
// the event's id, answers 201 for a new key and 409 for a key it has seen.
type SuiteX struct {
	Secret string
	// Tolerance is how far t may be from Now (default 5 minutes).
	Tolerance time.Duration
	Now       func() time.Time

	// Respond, when set, answers a verified request instead of the fake's
	// own logic; a zero status falls through.
	Respond func(r *http.Request, body []byte) (status int, respBody string)

	mu       sync.Mutex
	events   map[string][]byte
	requests []SuiteXRequest
	refused  []string
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
		ID string `json:"id"`
	}
	if err := json.Unmarshal(body, &ev); err != nil || ev.ID == "" {
		f.refuse(w, 400, "body is not an event with an id")
		return
	}
	if key == "" || key != ev.ID {
		f.refuse(w, 400, "Idempotency-Key must be the event id")
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
	if !seen {
		if f.events == nil {
			f.events = map[string][]byte{}
		}
		f.events[key] = body
	}
	f.mu.Unlock()
	if seen {
		w.WriteHeader(http.StatusConflict)
		return
	}
	w.WriteHeader(http.StatusCreated)
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
