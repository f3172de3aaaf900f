package netsuite

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"
)

// tba signs requests with Token-Based Authentication: OAuth 1.0a (RFC 5849)
// with HMAC-SHA256, as NetSuite requires.
//
// It is written here rather than taken from github.com/dghubble/oauth1
// v0.7.3 because that package cannot be tested to the byte: its clock is
// unexported (the timestamp cannot be injected), and it keeps only the first
// value of a repeated parameter, so it cannot reproduce the RFC 5849 §3.4.1
// worked example. The signer is a few dozen lines; the test checks it against
// that example and against an independent verifier.
type tba struct {
	realm                       string // NetSuite account id, uppercase with '_' (123456_SB1)
	consumerKey, consumerSecret string
	tokenID, tokenSecret        string
	now                         func() time.Time
	nonce                       func() string
}

// Realm normalises a NetSuite account id for the OAuth realm: NetSuite wants
// the form of its account id (123456_SB1), while the URL host uses the
// lowercase, hyphenated form (123456-sb1); operators paste either.
func Realm(accountID string) string {
	return strings.ToUpper(strings.ReplaceAll(strings.TrimSpace(accountID), "-", "_"))
}

// newNonce returns 32 hex characters from crypto/rand: unique per request,
// and alphanumeric so no intermediary can re-encode it differently.
func newNonce() string {
	b := make([]byte, 16)
	_, _ = rand.Read(b) // never fails (crypto/rand panics instead on broken systems)
	return hex.EncodeToString(b)
}

const (
	tbaSignatureMethod = "HMAC-SHA256"
	oauthVersion       = "1.0"
)

func (s *tba) authorize(_ context.Context, req *http.Request) error {
	_, h := s.sign(req, nil)
	req.Header.Set("Authorization", h)
	return nil
}

// invalidate: TBA has nothing cached.
func (s *tba) invalidate() {}

func (s *tba) secrets() []string {
	return []string{s.consumerSecret, s.tokenSecret, s.tokenID, s.consumerKey,
		percentEncode(s.consumerSecret), percentEncode(s.tokenSecret), percentEncode(s.tokenID), percentEncode(s.consumerKey)}
}

// sign returns the signature base string and the Authorization header of
// req. The realm is sent but not signed (RFC 5849 §3.4.1.3.1). form is the
// request's form-encoded body, which is signed; the sink's bodies are JSON,
// which is not, so it passes nil.
func (s *tba) sign(req *http.Request, form url.Values) (base, header string) {
	oauth := []param{
		{"oauth_consumer_key", s.consumerKey},
		{"oauth_token", s.tokenID},
		{"oauth_signature_method", tbaSignatureMethod},
		{"oauth_timestamp", strconv.FormatInt(s.now().Unix(), 10)},
		{"oauth_nonce", s.nonce()},
		{"oauth_version", oauthVersion},
	}
	base = signatureBaseString(req.Method, req.URL, form, oauth)
	sig := hmacSHA256(base, s.consumerSecret, s.tokenSecret)
	var b strings.Builder
	b.WriteString(`OAuth realm="`)
	b.WriteString(percentEncode(s.realm))
	b.WriteByte('"')
	for _, p := range append(oauth, param{"oauth_signature", sig}) {
		b.WriteString(`, `)
		b.WriteString(p.key)
		b.WriteString(`="`)
		b.WriteString(percentEncode(p.value))
		b.WriteByte('"')
	}
	return base, b.String()
}

type param struct{ key, value string }

// signatureBaseString is RFC 5849 §3.4.1: the uppercase method, the encoded
// base string URI and the encoded normalised parameters (query, form body
// and oauth_* parameters; repeated names kept, sorted by name then value
// after encoding). oauth must not contain realm or oauth_signature.
func signatureBaseString(method string, u *url.URL, form url.Values, oauth []param) string {
	var ps []param
	add := func(vs url.Values) {
		for k, list := range vs {
			for _, v := range list {
				ps = append(ps, param{percentEncode(k), percentEncode(v)})
			}
		}
	}
	// ParseQuery decodes '+' as a space, as §3.4.1.3.1 requires; a malformed
	// pair is skipped, as the request carries it unsigned either way.
	q, _ := url.ParseQuery(u.RawQuery)
	add(q)
	add(form)
	for _, p := range oauth {
		ps = append(ps, param{percentEncode(p.key), percentEncode(p.value)})
	}
	slices.SortFunc(ps, func(a, b param) int {
		if c := strings.Compare(a.key, b.key); c != 0 {
			return c
		}
		return strings.Compare(a.value, b.value)
	})
	pairs := make([]string, len(ps))
	for i, p := range ps {
		pairs[i] = p.key + "=" + p.value
	}
	return strings.ToUpper(method) + "&" + percentEncode(baseStringURI(u)) + "&" + percentEncode(strings.Join(pairs, "&"))
}

// baseStringURI is RFC 5849 §3.4.1.2: lowercase scheme and host, the port
// only when not the scheme's default, and the path exactly as sent on the
// wire (EscapedPath), without query.
func baseStringURI(u *url.URL) string {
	scheme := strings.ToLower(u.Scheme)
	host := strings.ToLower(u.Hostname())
	if strings.Contains(host, ":") {
		host = "[" + host + "]" // IPv6 literal
	}
	if port := u.Port(); port != "" && !(scheme == "http" && port == "80") && !(scheme == "https" && port == "443") {
		host += ":" + port
	}
	path := u.EscapedPath()
	if path == "" {
		path = "/"
	}
	return scheme + "://" + host + path
}

// hmacSHA256 is the HMAC-SHA256 signature method: key is the encoded consumer
// secret and token secret joined by '&' (RFC 5849 §3.4.2), output base64.
func hmacSHA256(base, consumerSecret, tokenSecret string) string {
	mac := hmac.New(sha256.New, []byte(percentEncode(consumerSecret)+"&"+percentEncode(tokenSecret)))
	mac.Write([]byte(base))
	return base64.StdEncoding.EncodeToString(mac.Sum(nil))
}

// percentEncode is RFC 5849 §3.6: every byte but ALPHA, DIGIT, '-', '.', '_'
// and '~' becomes %XX with uppercase hex.
func percentEncode(s string) string {
	const hexDigits = "0123456789ABCDEF"
	var b strings.Builder
	b.Grow(len(s))
	for i := 0; i < len(s); i++ {
		c := s[i]
		if unreserved(c) {
			b.WriteByte(c)
			continue
		}
		b.WriteByte('%')
		b.WriteByte(hexDigits[c>>4])
		b.WriteByte(hexDigits[c&15])
	}
	return b.String()
}

func unreserved(c byte) bool {
	return 'A' <= c && c <= 'Z' || 'a' <= c && c <= 'z' || '0' <= c && c <= '9' ||
		c == '-' || c == '.' || c == '_' || c == '~'
}
