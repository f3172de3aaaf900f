package netsuite

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/sha512"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/backbone-sync/backbone/shared/failure"
	"github.com/backbone-sync/backbone/shared/sink"
	"github.com/backbone-sync/backbone/shared/store"
)

// TokenPath is NetSuite's OAuth 2.0 token endpoint, relative to the base URL.
const TokenPath = "/services/rest/auth/oauth2/v1/token"

// Scopes the access token is requested for.
var Scopes = []string{"restlets", "rest_webservices"}

// OAuth 2.0 client credentials constants (RFC 7523 §2.2).
const (
	grantClientCredentials = "client_credentials"
	assertionTypeJWTBearer = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
)

// assertionLifetime is the JWT's exp - iat: it is used at once, and NetSuite
// refuses more than an hour.
const assertionLifetime = 5 * time.Minute

// defaultTokenLifetime applies when the token response has no expires_in;
// NetSuite issues 60-minute tokens.
const defaultTokenLifetime = time.Hour

// refreshMargin is how long before expiry a cached token is replaced, so a
// token never expires between being read and NetSuite checking it.
const refreshMargin = 2 * time.Minute

// oauth2 is the OAuth 2.0 client credentials flow (NETSUITE_AUTH=oauth2),
// which NetSuite requires for new integrations from 2027.1: a JWT assertion
// signed with the private key of the certificate mapped to the integration
// (kid = NETSUITE_CERTIFICATE_ID) buys an access token, cached until shortly
// before it expires.
type oauth2 struct {
	tokenURL string
	clientID string
	certID   string
	key      crypto.Signer
	alg      string
	client   *http.Client
	now      func() time.Time

	// fetching is a one-slot semaphore: one token request at a time, and
	// waiters give up with their context (a mutex could not).
	fetching chan struct{}

	mu        sync.Mutex
	token     string
	refreshAt time.Time
	fetches   int
}

func (o *oauth2) cached() (string, bool) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.token != "" && o.now().Before(o.refreshAt) {
		return o.token, true
	}
	return "", false
}

func (o *oauth2) authorize(ctx context.Context, req *http.Request) error {
	tok, err := o.accessToken(ctx)
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+tok)
	return nil
}

// invalidate drops the cached token: NetSuite refused it (revoked, or the
// integration's certificate rotated), so the next request fetches a new one.
func (o *oauth2) invalidate() {
	o.mu.Lock()
	o.token, o.refreshAt = "", time.Time{}
	o.mu.Unlock()
}

func (o *oauth2) secrets() []string {
	o.mu.Lock()
	defer o.mu.Unlock()
	return []string{o.token}
}

// accessToken returns the cached token or fetches one; concurrent callers
// share a single fetch.
func (o *oauth2) accessToken(ctx context.Context) (string, error) {
	if tok, ok := o.cached(); ok {
		return tok, nil
	}
	select {
	case o.fetching <- struct{}{}:
	case <-ctx.Done():
		return "", sink.TransportFailure(store.StageNetSuite, "wait for access token", ctx.Err())
	}
	defer func() { <-o.fetching }()
	if tok, ok := o.cached(); ok {
		return tok, nil
	}
	return o.fetch(ctx)
}

// tokenResponse is RFC 6749 §5.1; NetSuite sends expires_in as a string.
type tokenResponse struct {
	AccessToken string          `json:"access_token"`
	ExpiresIn   json.RawMessage `json:"expires_in"`
	TokenType   string          `json:"token_type"`
}

type tokenError struct {
	Error       string `json:"error"`
	Description string `json:"error_description"`
}

func (o *oauth2) fetch(ctx context.Context) (string, error) {
	issued := o.now()
	assertion, err := o.assertion(issued)
	if err != nil {
		return "", failure.Permanent(store.StageNetSuite, "oauth2_assertion", err.Error())
	}
	form := url.Values{
		"grant_type":            {grantClientCredentials},
		"client_assertion_type": {assertionTypeJWTBearer},
		"client_assertion":      {assertion},
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, o.tokenURL, strings.NewReader(form.Encode()))
	if err != nil {
		return "", failure.Permanent(store.StageNetSuite, sink.ReasonBadRequest, "token request: "+err.Error())
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Accept", "application/json")
	resp, err := sink.Do(o.client, req)
	if err != nil {
		return "", sink.TransportFailure(store.StageNetSuite, "token request to "+TokenPath, err)
	}
	if !resp.OK() {
		var te tokenError
		_ = json.Unmarshal(resp.Body, &te)
		reason := ""
		if code := reasonCode(te.Error); code != "" {
			reason = "oauth2_" + code
		} else {
			reason = "oauth2_" + sink.StatusReason(resp.Status)
		}
		detail := fmt.Sprintf("token request to %s: HTTP %d", TokenPath, resp.Status)
		if te.Error != "" {
			msg := te.Error
			if te.Description != "" {
				msg += ": " + te.Description
			}
			detail += ": " + sink.Snippet([]byte(msg))
		} else if s := sink.Snippet(resp.Body); s != "" {
			detail += ": " + s
		}
		return "", sink.StatusFailure(store.StageNetSuite, resp.Status, reason, false, detail)
	}
	var tr tokenResponse
	if err := json.Unmarshal(resp.Body, &tr); err != nil || tr.AccessToken == "" {
		return "", failure.Retryable(store.StageNetSuite, "oauth2_invalid_token_response",
			fmt.Sprintf("token response from %s (HTTP %d) has no access_token", TokenPath, resp.Status))
	}
	lifetime := parseExpiresIn(tr.ExpiresIn)
	margin := min(refreshMargin, lifetime/4)
	o.mu.Lock()
	o.token = tr.AccessToken
	o.refreshAt = issued.Add(lifetime - margin)
	o.fetches++
	o.mu.Unlock()
	return tr.AccessToken, nil
}

// parseExpiresIn reads a number or a numeric string of seconds.
func parseExpiresIn(raw json.RawMessage) time.Duration {
	s := strings.Trim(strings.TrimSpace(string(raw)), `"`)
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil || n <= 0 {
		return defaultTokenLifetime
	}
	return time.Duration(n) * time.Second
}

// reasonCode turns an external error code into a reason fragment: letters,
// digits and '_' only, at most 64 bytes.
func reasonCode(s string) string {
	var b strings.Builder
	for _, r := range s {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9', r == '_':
			b.WriteRune(r)
		case r == '-' || r == '.' || r == ' ':
			b.WriteByte('_')
		}
		if b.Len() >= 64 {
			break
		}
	}
	return b.String()
}

// assertion builds the signed JWT (RFC 7523) NetSuite's client credentials
// flow expects: header alg/kid/typ, claims iss = client id, scope, aud = the
// token endpoint, iat and exp.
func (o *oauth2) assertion(now time.Time) (string, error) {
	header, err := json.Marshal(map[string]string{"alg": o.alg, "kid": o.certID, "typ": "JWT"})
	if err != nil {
		return "", err
	}
	claims, err := json.Marshal(map[string]any{
		"iss":   o.clientID,
		"scope": Scopes,
		"aud":   o.tokenURL,
		"iat":   now.Unix(),
		"exp":   now.Add(assertionLifetime).Unix(),
	})
	if err != nil {
		return "", err
	}
	enc := base64.RawURLEncoding
	signingInput := enc.EncodeToString(header) + "." + enc.EncodeToString(claims)
	sig, err := signJWS(o.key, o.alg, []byte(signingInput))
	if err != nil {
		return "", fmt.Errorf("sign client assertion: %w", err)
	}
	return signingInput + "." + enc.EncodeToString(sig), nil
}

// signJWS signs input with the JWS algorithm alg (RFC 7518 §3).
func signJWS(key crypto.Signer, alg string, input []byte) ([]byte, error) {
	switch alg {
	case "PS256":
		k, ok := key.(*rsa.PrivateKey)
		if !ok {
			return nil, errors.New("PS256 needs an RSA key")
		}
		sum := sha256.Sum256(input)
		// RFC 7518 §3.5: the salt is as long as the hash.
		return rsa.SignPSS(rand.Reader, k, crypto.SHA256, sum[:], &rsa.PSSOptions{SaltLength: rsa.PSSSaltLengthEqualsHash})
	case "ES256", "ES384", "ES512":
		k, ok := key.(*ecdsa.PrivateKey)
		if !ok {
			return nil, fmt.Errorf("%s needs an EC key", alg)
		}
		var digest []byte
		switch alg {
		case "ES256":
			s := sha256.Sum256(input)
			digest = s[:]
		case "ES384":
			s := sha512.Sum384(input)
			digest = s[:]
		default:
			s := sha512.Sum512(input)
			digest = s[:]
		}
		r, s, err := ecdsa.Sign(rand.Reader, k, digest)
		if err != nil {
			return nil, err
		}
		// JWS wants r || s, each left-padded to the curve's byte size.
		size := (k.Curve.Params().BitSize + 7) / 8
		out := make([]byte, 2*size)
		r.FillBytes(out[:size])
		s.FillBytes(out[size:])
		return out, nil
	}
	return nil, fmt.Errorf("unsupported JWS algorithm %q", alg)
}

// ParsePrivateKey reads NETSUITE_PRIVATE_KEY: a PEM block (PKCS#8, PKCS#1
// RSA or SEC 1 EC), also when the deployment flattened its newlines to "\n".
// It returns the key and its JWS algorithm: PS256 for RSA (NetSuite has deprecated
// RS256's PKCS#1 v1.5 signatures for this flow), ES256/ES384/ES512 for the P-256,
// P-384 and P-521 curves. Errors never quote the key.
func ParsePrivateKey(s string) (crypto.Signer, string, error) {
	s = strings.TrimSpace(s)
	if !strings.Contains(s, "\n") && strings.Contains(s, `\n`) {
		s = strings.ReplaceAll(s, `\n`, "\n")
	}
	block, _ := pem.Decode([]byte(s))
	if block == nil {
		return nil, "", errors.New("NETSUITE_PRIVATE_KEY is not a PEM block (expected -----BEGIN PRIVATE KEY-----)")
	}
	var (
		key any
		err error
	)
	switch block.Type {
	case "RSA PRIVATE KEY":
		key, err = x509.ParsePKCS1PrivateKey(block.Bytes)
	case "EC PRIVATE KEY":
		key, err = x509.ParseECPrivateKey(block.Bytes)
	case "PRIVATE KEY":
		key, err = x509.ParsePKCS8PrivateKey(block.Bytes)
	default:
		return nil, "", fmt.Errorf("NETSUITE_PRIVATE_KEY is a PEM %q block: expected PRIVATE KEY, RSA PRIVATE KEY or EC PRIVATE KEY", block.Type)
	}
	if err != nil {
		return nil, "", fmt.Errorf("NETSUITE_PRIVATE_KEY (%s) does not parse: %w", block.Type, err)
	}
	switch k := key.(type) {
	case *rsa.PrivateKey:
		return k, "PS256", nil
	case *ecdsa.PrivateKey:
		switch k.Curve {
		case elliptic.P256():
			return k, "ES256", nil
		case elliptic.P384():
			return k, "ES384", nil
		case elliptic.P521():
			return k, "ES512", nil
		}
		return nil, "", fmt.Errorf("NETSUITE_PRIVATE_KEY uses curve %s: NetSuite accepts P-256, P-384, P-521", k.Curve.Params().Name)
	}
	return nil, "", fmt.Errorf("NETSUITE_PRIVATE_KEY is a %T key: NetSuite accepts RSA (PS256) and EC (ES256/384/512)", key)
}

// pemSecrets lists what must never appear in text: the PEM whole and each
// line of its base64 body (a partial echo is still a leak).
func pemSecrets(s string) []string {
	out := []string{strings.TrimSpace(s)}
	s = strings.ReplaceAll(s, `\n`, "\n")
	for _, line := range strings.Split(s, "\n") {
		line = strings.TrimSpace(line)
		if line != "" && !strings.HasPrefix(line, "-----") {
			out = append(out, line)
		}
	}
	return out
}
