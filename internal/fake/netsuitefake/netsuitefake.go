// Package netsuitefake is a fake NetSuite REST record service: the upsert
// by external id (PUT /services/rest/record/v1/{type}/eid:{id}) and the
// OAuth 2.0 token endpoint. It checks requests the way NetSuite does: it
// recomputes the OAuth 1.0a HMAC-SHA256 signature from the request it
// received and refuses a replayed nonce, and it verifies OAuth 2.0 JWT
// assertions with the public key. Its checks are written independently of
// shared/sink/netsuite (no code shared), so a sink that passes against it
// agrees with the protocol, not merely with itself. Tests start it with
// Start; `backbone dev` serves it as the local NetSuite.
package netsuitefake

import (
	"crypto"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/backbone-sync/backbone/internal/fake"
)

// Paths the fake serves.
const (
	recordPrefix = "/services/rest/record/v1/"
	tokenPath    = "/services/rest/auth/oauth2/v1/token"
)

// Server is the fake. Set the credentials of the auth mode in use; a record
// request is accepted with valid TBA or with a bearer token the fake
// issued. The embedded System holds NetSuite's records, its availability
// and the log of accepted deliveries and refusals.
type Server struct {
	fake.System

	// TBA: the realm expected is Account (e.g. 123456_SB1).
	Account                     string
	ConsumerKey, ConsumerSecret string
	TokenID, TokenSecret        string

	// OAuth 2.0 client credentials.
	ClientID, CertificateID string
	PublicKey               crypto.PublicKey
	// TokenTTL is the expires_in of issued tokens (default one hour).
	TokenTTL time.Duration

	// Now is the fake's clock (token expiry, JWT iat/exp); default time.Now.
	Now func() time.Time

	// Respond, when set, answers an authenticated record request instead of
	// the upsert; a zero status falls through to the upsert.
	Respond func(r *http.Request, body []byte) (status int, respBody string)

	// Hook, when set, runs for every authenticated upsert with a function
	// that applies it: a zero status applies it (unless the hook did) and
	// answers 204; any other status is the answer, and the upsert took
	// effect only if the hook applied it (a timeout after the apply, a 5xx
	// half-way). Tests make the system act while a request is in flight.
	Hook func(req Request, apply func()) (status int, respBody string)

	// Log, when set, gets a line for every delivery accepted and every
	// request refused: `backbone dev` shows what NetSuite receives.
	Log *slog.Logger

	mu           sync.Mutex
	requests     []Request
	nonces       map[string]bool
	tokens       map[string]time.Time
	tokenFetches int
	authFailures []string
}

// Request is an authenticated record request the fake received.
type Request struct {
	Method     string
	RawPath    string // as sent on the wire
	Type       string
	ExternalID string // decoded
	Body       []byte
	Header     http.Header
}

// Start serves s on a local httptest server, closed when the test ends.
func (s *Server) Start(c fake.Cleaner) *httptest.Server { return fake.Serve(c, s) }

func (s *Server) now() time.Time {
	if s.Now != nil {
		return s.Now()
	}
	return time.Now()
}

func (s *Server) log() *slog.Logger {
	if s.Log == nil {
		return slog.New(slog.DiscardHandler)
	}
	return s.Log.With("fake", "netsuite")
}

// Requests returns the authenticated record requests received so far.
func (s *Server) Requests() []Request {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Request(nil), s.requests...)
}

// TokenFetches counts successful token requests.
func (s *Server) TokenFetches() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.tokenFetches
}

// RevokeTokens invalidates every access token issued so far, as an
// administrator revoking the integration's tokens would.
func (s *Server) RevokeTokens() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.tokens = nil
}

// AuthFailures lists why requests were refused as unauthenticated (Refused
// lists every refusal).
func (s *Server) AuthFailures() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.authFailures...)
}

// Error renders NetSuite's REST error document.
func Error(status int, code, detail string) string {
	b, _ := json.Marshal(map[string]any{
		"type":   "https://www.rfc-editor.org/rfc/rfc9110.html#section-15",
		"title":  http.StatusText(status),
		"status": status,
		"o:errorDetails": []map[string]string{{
			"detail": detail, "o:errorCode": code,
		}},
	})
	return string(b)
}

func writeError(w http.ResponseWriter, status int, body string) {
	w.Header().Set("Content-Type", "application/vnd.oracle.resource+json; type=error")
	w.WriteHeader(status)
	_, _ = io.WriteString(w, body)
}

// refuse answers a malformed request with NetSuite's error document.
func (s *Server) refuse(w http.ResponseWriter, status int, code, why string) {
	s.Refuse(why)
	s.log().Warn("request refused", "status", status, "why", why)
	writeError(w, status, Error(status, code, why))
}

// refuseLogin answers an unauthenticated request as NetSuite does.
func (s *Server) refuseLogin(w http.ResponseWriter, why string) {
	s.mu.Lock()
	s.authFailures = append(s.authFailures, why)
	s.mu.Unlock()
	s.Refuse(why)
	s.log().Warn("request refused", "status", http.StatusUnauthorized, "why", why)
	writeError(w, http.StatusUnauthorized, Error(http.StatusUnauthorized, "INVALID_LOGIN",
		"Invalid login attempt. For more details, see the Login Audit Trail in the NetSuite UI at Setup > Users/Roles > User Management > View Login Audit Trail."))
}

// ServeHTTP serves the token endpoint and the record service.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(io.LimitReader(r.Body, 1<<20))
	if err != nil {
		s.refuse(w, http.StatusBadRequest, "INVALID_CONTENT", err.Error())
		return
	}
	rawPath, _, _ := strings.Cut(r.RequestURI, "?")
	switch {
	case rawPath == tokenPath && r.Method == http.MethodPost:
		s.serveToken(w, r, body)
	case strings.HasPrefix(rawPath, recordPrefix):
		s.serveRecord(w, r, rawPath, body)
	default:
		s.refuse(w, http.StatusNotFound, "NONEXISTENT_ID", "no such resource "+rawPath)
	}
}

func (s *Server) serveRecord(w http.ResponseWriter, r *http.Request, rawPath string, body []byte) {
	// A system that is down answers before it looks at the request.
	if status := s.Outage(); status != 0 {
		writeError(w, status, Error(status, "UNEXPECTED_ERROR", "injected outage"))
		return
	}
	if why := s.authenticate(r, rawPath); why != "" {
		s.refuseLogin(w, why)
		return
	}
	rest := strings.TrimPrefix(rawPath, recordPrefix)
	typ, eidSeg, ok := strings.Cut(rest, "/")
	if !ok || !strings.HasPrefix(eidSeg, "eid:") || strings.Contains(eidSeg, "/") {
		s.refuse(w, http.StatusNotFound, "NONEXISTENT_ID", "expected {type}/eid:{external id}, got "+rest)
		return
	}
	eid, err := url.PathUnescape(strings.TrimPrefix(eidSeg, "eid:"))
	if err != nil {
		s.refuse(w, http.StatusBadRequest, "INVALID_ID", err.Error())
		return
	}
	req := Request{Method: r.Method, RawPath: rawPath, Type: typ, ExternalID: eid, Body: body, Header: r.Header.Clone()}
	s.mu.Lock()
	s.requests = append(s.requests, req)
	s.mu.Unlock()
	if s.Respond != nil {
		if status, rb := s.Respond(r, body); status != 0 {
			writeError(w, status, rb)
			return
		}
	}
	if r.Method != http.MethodPut {
		s.refuse(w, http.StatusMethodNotAllowed, "INVALID_METHOD", r.Method)
		return
	}
	var fields map[string]json.RawMessage
	if err := json.Unmarshal(body, &fields); err != nil {
		s.refuse(w, http.StatusBadRequest, "INVALID_CONTENT", "body is not a JSON object")
		return
	}
	applied := false
	apply := func() {
		if !applied {
			applied = true
			s.Edit(typ, eid, fields)
		}
	}
	if s.Hook != nil {
		if status, rb := s.Hook(req, apply); status != 0 {
			writeError(w, status, rb)
			return
		}
	}
	apply()
	// NetSuite ignores the backbone's headers; the fake records them, so a
	// delivery can be tied to the event and version it carried.
	d := fake.Delivery{Target: "netsuite", Key: typ + "/" + eid, EventID: r.Header.Get("X-Backbone-Event-Id"),
		RecordType: typ, RecordID: eid, Body: body, At: time.Now()}
	d.Version, _ = strconv.ParseUint(r.Header.Get("X-Backbone-Version"), 10, 64)
	s.Accept(d)
	s.log().Info("received", "key", d.Key, "event_id", d.EventID, "record", typ+":"+eid, "version", d.Version)
	w.WriteHeader(http.StatusNoContent)
}
