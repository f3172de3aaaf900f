// Package suitexfake is a fake SuiteX events endpoint (POST /v1/events).
// It verifies X-Backbone-Signature (t={unix},v1={hex HMAC-SHA256(secret,
// t + "." + body)}) within Tolerance of its clock, requires Idempotency-Key
// to be the event's id, a colon and 16 lowercase hex digits, answers 201
// for a new key (and applies the event's changes to its copy of the
// record) and 409 for a key it has seen, without applying it, as SuiteX
// does. Its checks are written independently of shared/sink/suitex. Tests
// start it with Start; `backbone dev` serves it as the local SuiteX.
package suitexfake

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/backbone-sync/backbone/internal/fake"
)

// Server is the fake. The embedded System holds SuiteX's records, its
// availability and the log of accepted deliveries and refusals.
type Server struct {
	fake.System

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
	Hook func(req Request, apply func()) (status int, respBody string)

	// Log, when set, gets a line for every delivery accepted and every
	// request refused: `backbone dev` shows what SuiteX receives.
	Log *slog.Logger

	mu       sync.Mutex
	events   map[string][]byte
	requests []Request
}

// Request is a verified request the fake received.
type Request struct {
	IdempotencyKey string
	Signature      string
	Body           []byte
}

// Start serves s on a local httptest server, closed when the test ends.
func (s *Server) Start(c fake.Cleaner) *httptest.Server { return fake.Serve(c, s) }

func (s *Server) log() *slog.Logger {
	if s.Log == nil {
		return slog.New(slog.DiscardHandler)
	}
	return s.Log.With("fake", "suitex")
}

// Requests returns the verified requests received so far.
func (s *Server) Requests() []Request {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Request(nil), s.requests...)
}

// Event returns the body stored under an idempotency key.
func (s *Server) Event(key string) []byte {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.events[key]
}

func (s *Server) refuse(w http.ResponseWriter, status int, why string) {
	s.Refuse(why)
	s.log().Warn("request refused", "status", status, "why", why)
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	b, _ := json.Marshal(map[string]string{"error": why})
	_, _ = w.Write(b)
}

func writeJSON(w http.ResponseWriter, status int, body string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_, _ = io.WriteString(w, body)
}

// ServeHTTP serves POST /v1/events.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path != "/v1/events" {
		s.refuse(w, 404, "no route "+r.URL.Path)
		return
	}
	if r.Method != http.MethodPost {
		s.refuse(w, 405, "method "+r.Method)
		return
	}
	// A system that is down answers before it looks at the request.
	if status := s.Outage(); status != 0 {
		http.Error(w, "injected outage", status)
		return
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, 1<<20))
	if err != nil {
		s.refuse(w, 400, "read body")
		return
	}
	sig := r.Header.Get("X-Backbone-Signature")
	if why := s.verify(sig, body); why != "" {
		s.refuse(w, 401, why)
		return
	}
	key := r.Header.Get("Idempotency-Key")
	var ev struct {
		ID         string                     `json:"id"`
		RecordType string                     `json:"record_type"`
		RecordID   string                     `json:"record_id"`
		Source     string                     `json:"source"`
		Version    uint64                     `json:"version"`
		Changes    map[string]json.RawMessage `json:"changes"`
	}
	if err := json.Unmarshal(body, &ev); err != nil || ev.ID == "" {
		s.refuse(w, 400, "body is not an event with an id")
		return
	}
	// SPEC §7: {event id of N}:{first 16 hex of the SHA-256 of the
	// canonical changes sent}.
	if digest, ok := strings.CutPrefix(key, ev.ID+":"); !ok || !isHex16(digest) {
		s.refuse(w, 400, "Idempotency-Key must be the event id, a colon and 16 hex digits")
		return
	}
	req := Request{IdempotencyKey: key, Signature: sig, Body: body}
	s.mu.Lock()
	s.requests = append(s.requests, req)
	s.mu.Unlock()
	if s.Respond != nil {
		if status, rb := s.Respond(r, body); status != 0 {
			writeJSON(w, status, rb)
			return
		}
	}
	d := fake.Delivery{Target: "suitex", Key: key, EventID: ev.ID, RecordType: ev.RecordType, RecordID: ev.RecordID,
		Version: ev.Version, Source: ev.Source, Body: body}
	s.mu.Lock()
	_, seen := s.events[key]
	s.mu.Unlock()
	if seen {
		s.accept(d, true)
		w.WriteHeader(http.StatusConflict)
		return
	}
	applied := false
	apply := func() {
		s.mu.Lock()
		if _, dup := s.events[key]; applied || dup {
			s.mu.Unlock()
			return // a concurrent request with this key applied it
		}
		applied = true
		if s.events == nil {
			s.events = map[string][]byte{}
		}
		s.events[key] = body
		s.mu.Unlock()
		s.Edit(ev.RecordType, ev.RecordID, ev.Changes)
	}
	if s.Hook != nil {
		if status, rb := s.Hook(req, apply); status != 0 {
			writeJSON(w, status, rb)
			return
		}
	}
	apply()
	s.accept(d, !applied)
	w.WriteHeader(http.StatusCreated)
}

// accept logs a delivery; duplicate: its key had been applied before.
func (s *Server) accept(d fake.Delivery, duplicate bool) {
	d.At, d.Duplicate = time.Now(), duplicate
	s.Accept(d)
	s.log().Info("received", "key", d.Key, "event_id", d.EventID, "record", d.RecordType+":"+d.RecordID,
		"version", d.Version, "source", d.Source, "duplicate", d.Duplicate)
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
func (s *Server) verify(header string, body []byte) string {
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
	if s.Now != nil {
		now = s.Now()
	}
	tol := s.Tolerance
	if tol <= 0 {
		tol = 5 * time.Minute
	}
	if d := now.Sub(time.Unix(sec, 0)); d > tol || d < -tol {
		return "t is outside the tolerance"
	}
	mac := hmac.New(sha256.New, []byte(s.Secret))
	mac.Write([]byte(ts + "." + string(body)))
	got, err := hex.DecodeString(v1)
	if err != nil || !hmac.Equal(got, mac.Sum(nil)) {
		return "signature mismatch"
	}
	return ""
}
