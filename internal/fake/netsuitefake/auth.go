package netsuitefake

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
	"math/big"
	"net/http"
	"net/url"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"
)

// authenticate returns why the request is refused, or "".
func (s *Server) authenticate(r *http.Request, rawPath string) string {
	h := r.Header.Get("Authorization")
	switch {
	case strings.HasPrefix(h, "Bearer "):
		tok := strings.TrimPrefix(h, "Bearer ")
		s.mu.Lock()
		exp, ok := s.tokens[tok]
		s.mu.Unlock()
		if !ok {
			return "unknown bearer token"
		}
		if !s.now().Before(exp) {
			return "expired bearer token"
		}
		return ""
	case strings.HasPrefix(h, "OAuth "):
		return s.verifyTBA(r, rawPath, h)
	}
	return "no Authorization header"
}

// verifyTBA checks an OAuth 1.0a HMAC-SHA256 header the way RFC 5849 says a
// server does, with its own encoding and base string.
func (s *Server) verifyTBA(r *http.Request, rawPath, h string) string {
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
	case params["realm"] != s.Account:
		return fmt.Sprintf("realm %q, want the account id", params["realm"])
	case params["oauth_consumer_key"] != s.ConsumerKey:
		return "unknown consumer key"
	case params["oauth_token"] != s.TokenID:
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
	mac := hmac.New(sha256.New, []byte(oauthEscape(s.ConsumerSecret)+"&"+oauthEscape(s.TokenSecret)))
	mac.Write([]byte(base))
	got, err := base64.StdEncoding.DecodeString(params["oauth_signature"])
	if err != nil || !hmac.Equal(got, mac.Sum(nil)) {
		return "signature mismatch"
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.nonces == nil {
		s.nonces = map[string]bool{}
	}
	nk := params["oauth_timestamp"] + "/" + params["oauth_nonce"]
	if s.nonces[nk] {
		return "nonce reused"
	}
	s.nonces[nk] = true
	return ""
}

// oauthEscape is RFC 3986 unreserved-only encoding, built on the standard
// library's query escaping: QueryEscape leaves exactly ALPHA DIGIT - . _ ~
// alone and writes a space as '+', which OAuth wants as %20.
func oauthEscape(s string) string {
	return strings.ReplaceAll(url.QueryEscape(s), "+", "%20")
}

func (s *Server) serveToken(w http.ResponseWriter, r *http.Request, body []byte) {
	oauthErr := func(status int, code, desc string) {
		s.Refuse("token: " + desc)
		s.log().Warn("token request refused", "status", status, "error", code, "why", desc)
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
	if why := s.verifyJWT(form.Get("client_assertion"), scheme+"://"+r.Host+tokenPath); why != "" {
		s.mu.Lock()
		s.authFailures = append(s.authFailures, "token: "+why)
		s.mu.Unlock()
		oauthErr(400, "invalid_grant", why)
		return
	}
	tb := make([]byte, 24)
	_, _ = rand.Read(tb)
	tok := "nsat_" + hex.EncodeToString(tb)
	ttl := s.TokenTTL
	if ttl <= 0 {
		ttl = time.Hour
	}
	s.mu.Lock()
	if s.tokens == nil {
		s.tokens = map[string]time.Time{}
	}
	s.tokens[tok] = s.now().Add(ttl)
	s.tokenFetches++
	s.mu.Unlock()
	w.Header().Set("Content-Type", "application/json")
	// NetSuite sends expires_in as a string.
	_ = json.NewEncoder(w).Encode(map[string]string{
		"access_token": tok, "expires_in": strconv.Itoa(int(ttl / time.Second)), "token_type": "bearer",
	})
}

// verifyJWT checks a client assertion: signature with the public key (PS256
// or ES256), kid, iss, aud, scope and times.
func (s *Server) verifyJWT(jwt, aud string) string {
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
	if hdr.Kid != s.CertificateID {
		return "kid is not the certificate id"
	}
	if hdr.Typ != "JWT" {
		return "typ is not JWT"
	}
	digest := sha256.Sum256([]byte(parts[0] + "." + parts[1]))
	switch hdr.Alg {
	case "PS256":
		pub, ok := s.PublicKey.(*rsa.PublicKey)
		if !ok || rsa.VerifyPSS(pub, crypto.SHA256, digest[:], sig, &rsa.PSSOptions{SaltLength: rsa.PSSSaltLengthEqualsHash}) != nil {
			return "PS256 signature does not verify"
		}
	case "ES256":
		pub, ok := s.PublicKey.(*ecdsa.PublicKey)
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
	now := s.now().Unix()
	switch {
	case c.Iss != s.ClientID:
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
