// Package sinktest holds fake NetSuite and SuiteX servers that check
// requests the way the real systems do: the fake NetSuite recomputes the
// OAuth 1.0a HMAC-SHA256 signature from the request it received and verifies
// OAuth 2.0 JWT assertions with the public key; the fake SuiteX recomputes
// X-Backbone-Signature and enforces the idempotency key. Their checks are
// written independently of the sink packages (no code shared with
// shared/sink/netsuite or shared/sink/suitex), so a test that passes against
// them shows the sinks agree with the protocol, not merely with themselves.
// Tests use them through Start; `backbone dev` can serve them as local
// stand-ins.
package sinktest

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/hmac"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"math/big"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// NetSuite paths the fake serves.
const (
	nsRecordPrefix = "/services/rest/record/v1/"
	nsTokenPath    = "/services/rest/auth/oauth2/v1/token"
)

// NetSuite is a fake NetSuite REST record service. Set the credentials of
// the auth mode under test; a request is accepted with either valid TBA or a
// bearer token the fake issued.
type NetSuite struct {
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
	Hook func(req NetSuiteRequest, apply func()) (status int, respBody string)

	mu           sync.Mutex
	records      map[string]map[string]json.RawMessage
	requests     []NetSuiteRequest
	nonces       map[string]bool
	tokens       map[string]time.Time
	tokenFetches int
	authFailures []string
}

// NetSuiteRequest is an authenticated record request the fake received.
type NetSuiteRequest struct {
	Method     string
	RawPath    string // as sent on the wire
	Type       string
	ExternalID string // decoded
	Body       []byte
	Header     http.Header
}

// Start serves f on a local httptest server, closed when the test ends.
func (f *NetSuite) Start(t testing.TB) *httptest.Server {
	t.Helper()
	s := httptest.NewServer(f)
	t.Cleanup(s.Close)
	return s
}

func (f *NetSuite) now() time.Time {
	if f.Now != nil {
		return f.Now()
	}
	return time.Now()
}

// Requests returns the authenticated record requests received so far.
func (f *NetSuite) Requests() []NetSuiteRequest {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]NetSuiteRequest(nil), f.requests...)
}

// TokenFetches counts successful token requests.
func (f *NetSuite) TokenFetches() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.tokenFetches
}

// RevokeTokens invalidates every access token issued so far, as an
// administrator revoking the integration's tokens would.
func (f *NetSuite) RevokeTokens() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.tokens = nil
}

// AuthFailures lists why requests were refused as unauthenticated.
func (f *NetSuite) AuthFailures() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.authFailures...)
}

// Record returns a record's fields after the upserts so far (nil if none).
func (f *NetSuite) Record(netsuiteType, externalID string) map[string]json.RawMessage {
	f.mu.Lock()
	defer f.mu.Unlock()
	r, ok := f.records[netsuiteType+"/"+externalID]
	if !ok {
		return nil
	}
	out := make(map[string]json.RawMessage, len(r))
	for k, v := range r {
		out[k] = v
	}
	return out
}

// NetSuiteError renders NetSuite's REST error document.
func NetSuiteError(status int, code, detail string) string {
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

func writeJSON(w http.ResponseWriter, status int, body string) {
	w.Header().Set("Content-Type", "application/vnd.oracle.resource+json; type=error")
	w.WriteHeader(status)
	_, _ = io.WriteString(w, body)
}

// ServeHTTP serves the token endpoint and the record service.
func (f *NetSuite) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(io.LimitReader(r.Body, 1<<20))
	if err != nil {
		writeJSON(w, 400, NetSuiteError(400, "INVALID_CONTENT", err.Error()))
		return
	}
	rawPath, _, _ := strings.Cut(r.RequestURI, "?")
	switch {
	case rawPath == nsTokenPath && r.Method == http.MethodPost:
		f.serveToken(w, r, body)
	case strings.HasPrefix(rawPath, nsRecordPrefix):
		f.serveRecord(w, r, rawPath, body)
	default:
		writeJSON(w, 404, NetSuiteError(404, "NONEXISTENT_ID", "no such resource "+rawPath))
	}
}

func (f *NetSuite) refuse(w http.ResponseWriter, why string) {
	f.mu.Lock()
	f.authFailures = append(f.authFailures, why)
	f.mu.Unlock()
	writeJSON(w, 401, NetSuiteError(401, "INVALID_LOGIN",
		"Invalid login attempt. For more details, see the Login Audit Trail in the NetSuite UI at Setup > Users/Roles > User Management > View Login Audit Trail."))
}

func (f *NetSuite) serveRecord(w http.ResponseWriter, r *http.Request, rawPath string, body []byte) {
	if why := f.authenticate(r, rawPath); why != "" {
		f.refuse(w, why)
		return
	}
	rest := strings.TrimPrefix(rawPath, nsRecordPrefix)
	typ, eidSeg, ok := strings.Cut(rest, "/")
	if !ok || !strings.HasPrefix(eidSeg, "eid:") || strings.Contains(eidSeg, "/") {
		writeJSON(w, 404, NetSuiteError(404, "NONEXISTENT_ID", "expected {type}/eid:{external id}, got "+rest))
		return
	}
	eid, err := url.PathUnescape(strings.TrimPrefix(eidSeg, "eid:"))
	if err != nil {
		writeJSON(w, 400, NetSuiteError(400, "INVALID_ID", err.Error()))
		return
	}
	f.mu.Lock()
	f.requests = append(f.requests, NetSuiteRequest{Method: r.Method, RawPath: rawPath, Type: typ,
		ExternalID: eid, Body: body, Header: r.Header.Clone()})
	f.mu.Unlock()
	if f.Respond != nil {
		if status, rb := f.Respond(r, body); status != 0 {
			writeJSON(w, status, rb)
			return
		}
	}
	if r.Method != http.MethodPut {
		writeJSON(w, 405, NetSuiteError(405, "INVALID_METHOD", r.Method))
		return
	}
	var fields map[string]json.RawMessage
	if err := json.Unmarshal(body, &fields); err != nil {
		writeJSON(w, 400, NetSuiteError(400, "INVALID_CONTENT", "body is not a JSON object"))
		return
	}
	applied := false
	apply := func() {
		if !applied {
			applied = true
			f.upsert(typ, eid, fields)
		}
	}
	if f.Hook != nil {
		req := NetSuiteRequest{Method: r.Method, RawPath: rawPath, Type: typ, ExternalID: eid, Body: body, Header: r.Header.Clone()}
		if status, rb := f.Hook(req, apply); status != 0 {
			writeJSON(w, status, rb)
			return
		}
	}
	apply()
	w.WriteHeader(http.StatusNoContent)
}

// upsert applies fields to a record: null clears a field.
func (f *NetSuite) upsert(typ, eid string, fields map[string]json.RawMessage) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.records == nil {
		f.records = map[string]map[string]json.RawMessage{}
	}
	applyFields(f.records, typ+"/"+eid, fields)
}

// applyFields applies fields to the record under key, creating it: null
// clears a field (both systems' semantics).
func applyFields(records map[string]map[string]json.RawMessage, key string, fields map[string]json.RawMessage) {
	rec := records[key]
	if rec == nil {
		rec = map[string]json.RawMessage{}
		records[key] = rec
	}
	for k, v := range fields {
		if string(v) == "null" {
			delete(rec, k)
		} else {
			rec[k] = v
		}
	}
}

// Edit changes a record as a NetSuite user would: the change the system
// makes itself, beside the upserts it receives.
func (f *NetSuite) Edit(netsuiteType, externalID string, fields map[string]json.RawMessage) {
	f.upsert(netsuiteType, externalID, fields)
}

// authenticate returns why the request is refused, or "".
func (f *NetSuite) authenticate(r *http.Request, rawPath string) string {
	h := r.Header.Get("Authorization")
	switch {
	case strings.HasPrefix(h, "Bearer "):
		tok := strings.TrimPrefix(h, "Bearer ")
		f.mu.Lock()
		exp, ok := f.tokens[tok]
		f.mu.Unlock()
		if !ok {
			return "unknown bearer token"
		}
		if !f.now().Before(exp) {
			return "expired bearer token"
		}
		return ""
	case strings.HasPrefix(h, "OAuth "):
		return f.verifyTBA(r, rawPath, h)
	}
	return "no Authorization header"
}

// verifyTBA checks an OAuth 1.0a HMAC-SHA256 header the way RFC 5849 says a
// server does, with its own encoding and base string.
func (f *NetSuite) verifyTBA(r *http.Request, rawPath, h string) string {
	params := map[string]string{}
	for _, part := range strings.Split(strings.TrimPrefix(h, "OAuth "), ",") {
		k, v, ok := strings.Cut(strings.TrimSpace(part), "=")
		if !ok || len(v) < 2 || v[0] != '"' || v[len(v)-1] != '"' {
			return "malformed Authorization parameter " + part
		}
		dv, err := url.PathUnescape(v[1 : len(v)-1])
		if err != nil {
			return "bad percent-encoding in " + k
		}
		params[k] = dv
	}
	switch {
	case params["realm"] != f.Account:
		return fmt.Sprintf("realm %q, want the account id", params["realm"])
	case params["oauth_consumer_key"] != f.ConsumerKey:
		return "unknown consumer key"
	case params["oauth_token"] != f.TokenID:
		return "unknown token"
	case params["oauth_signature_method"] != "HMAC-SHA256":
		return "signature method " + params["oauth_signature_method"] + ", want HMAC-SHA256"
	case params["oauth_version"] != "" && params["oauth_version"] != "1.0":
		return "oauth_version " + params["oauth_version"]
	case params["oauth_nonce"] == "" || params["oauth_timestamp"] == "":
		return "nonce and timestamp are required"
	}
	if _, err := strconv.ParseInt(params["oauth_timestamp"], 10, 64); err != nil {
		return "timestamp is not an integer"
	}
	// Signed parameters: every oauth_* but the signature, plus the query
	// (realm is never signed).
	type kv struct{ k, v string }
	var signed []kv
	for k, v := range params {
		if k != "realm" && k != "oauth_signature" {
			signed = append(signed, kv{oauthEscape(k), oauthEscape(v)})
		}
	}
	if _, q, ok := strings.Cut(r.RequestURI, "?"); ok && q != "" {
		for _, pair := range strings.Split(q, "&") {
			k, v, _ := strings.Cut(pair, "=")
			dk, err1 := url.QueryUnescape(k)
			dv, err2 := url.QueryUnescape(v)
			if err1 != nil || err2 != nil {
				return "bad query encoding"
			}
			signed = append(signed, kv{oauthEscape(dk), oauthEscape(dv)})
		}
	}
	sort.Slice(signed, func(i, j int) bool {
		if signed[i].k != signed[j].k {
			return signed[i].k < signed[j].k
		}
		return signed[i].v < signed[j].v
	})
	norm := make([]string, len(signed))
	for i, p := range signed {
		norm[i] = p.k + "=" + p.v
	}
	scheme := "http"
	if r.TLS != nil {
		scheme = "https"
	}
	base := r.Method + "&" + oauthEscape(scheme+"://"+strings.ToLower(r.Host)+rawPath) + "&" + oauthEscape(strings.Join(norm, "&"))
	mac := hmac.New(sha256.New, []byte(oauthEscape(f.ConsumerSecret)+"&"+oauthEscape(f.TokenSecret)))
	mac.Write([]byte(base))
	got, err := base64.StdEncoding.DecodeString(params["oauth_signature"])
	if err != nil || !hmac.Equal(got, mac.Sum(nil)) {
		return "signature mismatch"
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.nonces == nil {
		f.nonces = map[string]bool{}
	}
	nk := params["oauth_timestamp"] + "/" + params["oauth_nonce"]
	if f.nonces[nk] {
		return "nonce reused"
	}
	f.nonces[nk] = true
	return ""
}

// oauthEscape is RFC 3986 unreserved-only encoding, built on the standard
// library's query escaping: QueryEscape leaves exactly ALPHA DIGIT - . _ ~
// alone and writes a space as '+', which OAuth wants as %20.
func oauthEscape(s string) string {
	return strings.ReplaceAll(url.QueryEscape(s), "+", "%20")
}

func (f *NetSuite) serveToken(w http.ResponseWriter, r *http.Request, body []byte) {
	oauthErr := func(status int, code, desc string) {
		b, _ := json.Marshal(map[string]string{"error": code, "error_description": desc})
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(status)
		_, _ = w.Write(b)
	}
	form, err := url.ParseQuery(string(body))
	if err != nil || r.Header.Get("Content-Type") != "application/x-www-form-urlencoded" {
		oauthErr(400, "invalid_request", "expected a form body")
		return
	}
	if form.Get("grant_type") != "client_credentials" {
		oauthErr(400, "unsupported_grant_type", form.Get("grant_type"))
		return
	}
	if form.Get("client_assertion_type") != "urn:ietf:params:oauth:client-assertion-type:jwt-bearer" {
		oauthErr(400, "invalid_request", "client_assertion_type")
		return
	}
	scheme := "http"
	if r.TLS != nil {
		scheme = "https"
	}
	if why := f.verifyJWT(form.Get("client_assertion"), scheme+"://"+r.Host+nsTokenPath); why != "" {
		f.mu.Lock()
		f.authFailures = append(f.authFailures, "token: "+why)
		f.mu.Unlock()
		oauthErr(400, "invalid_grant", why)
		return
	}
	tb := make([]byte, 24)
	_, _ = rand.Read(tb)
	tok := "nsat_" + hex.EncodeToString(tb)
	ttl := f.TokenTTL
	if ttl <= 0 {
		ttl = time.Hour
	}
	f.mu.Lock()
	if f.tokens == nil {
		f.tokens = map[string]time.Time{}
	}
	f.tokens[tok] = f.now().Add(ttl)
	f.tokenFetches++
	f.mu.Unlock()
	w.Header().Set("Content-Type", "application/json")
	// NetSuite sends expires_in as a string.
	_ = json.NewEncoder(w).Encode(map[string]string{
		"access_token": tok, "expires_in": strconv.Itoa(int(ttl / time.Second)), "token_type": "bearer",
	})
}

// verifyJWT checks a client assertion: signature with the public key (PS256
// or ES256), kid, iss, aud, scope and times.
func (f *NetSuite) verifyJWT(jwt, aud string) string {
	parts := strings.Split(jwt, ".")
	if len(parts) != 3 {
		return "assertion is not a compact JWS"
	}
	dec := base64.RawURLEncoding
	hb, err1 := dec.DecodeString(parts[0])
	cb, err2 := dec.DecodeString(parts[1])
	sig, err3 := dec.DecodeString(parts[2])
	if err1 != nil || err2 != nil || err3 != nil {
		return "assertion is not base64url"
	}
	var hdr struct{ Alg, Kid, Typ string }
	if err := json.Unmarshal(hb, &hdr); err != nil {
		return "header is not JSON"
	}
	if hdr.Kid != f.CertificateID {
		return "kid is not the certificate id"
	}
	if hdr.Typ != "JWT" {
		return "typ is not JWT"
	}
	digest := sha256.Sum256([]byte(parts[0] + "." + parts[1]))
	switch hdr.Alg {
	case "PS256":
		pub, ok := f.PublicKey.(*rsa.PublicKey)
		if !ok || rsa.VerifyPSS(pub, crypto.SHA256, digest[:], sig, &rsa.PSSOptions{SaltLength: rsa.PSSSaltLengthEqualsHash}) != nil {
			return "PS256 signature does not verify"
		}
	case "ES256":
		pub, ok := f.PublicKey.(*ecdsa.PublicKey)
		if !ok || len(sig) != 64 || !ecdsa.Verify(pub, digest[:], new(big.Int).SetBytes(sig[:32]), new(big.Int).SetBytes(sig[32:])) {
			return "ES256 signature does not verify"
		}
	default:
		return "alg " + hdr.Alg + " is not accepted"
	}
	var c struct {
		Iss   string   `json:"iss"`
		Aud   string   `json:"aud"`
		Scope []string `json:"scope"`
		Iat   int64    `json:"iat"`
		Exp   int64    `json:"exp"`
	}
	if err := json.Unmarshal(cb, &c); err != nil {
		return "claims are not JSON: " + err.Error()
	}
	now := f.now().Unix()
	switch {
	case c.Iss != f.ClientID:
		return "iss is not the client id"
	case c.Aud != aud:
		return fmt.Sprintf("aud %q is not the token endpoint %q", c.Aud, aud)
	case !slices.Contains(c.Scope, "rest_webservices") || !slices.Contains(c.Scope, "restlets"):
		return "scope lacks restlets, rest_webservices"
	case c.Iat > now+60:
		return "iat is in the future"
	case c.Exp <= now:
		return "assertion expired"
	case c.Exp-c.Iat > 3600:
		return "assertion lives over an hour"
	}
	return ""
}
