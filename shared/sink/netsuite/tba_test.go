package netsuite

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"
)

// The worked example of RFC 5849 §3.4.1.1: the request
//
//	POST /request?b5=%3D%253D&a3=a&c%40=&a2=r%20b HTTP/1.1
//	Host: example.com
//	Content-Type: application/x-www-form-urlencoded
//	Authorization: OAuth realm="Example", oauth_consumer_key="9djdj82h48djs9d2",
//	  oauth_token="kkk9d7dh3k39sjv7", oauth_signature_method="HMAC-SHA1",
//	  oauth_timestamp="137131201", oauth_nonce="7d8f3e4a", ...
//
//	c2&a3=2+q
//
// and its signature base string, verbatim from the RFC (line breaks removed).
const (
	rfcURL      = "http://example.com/request?b5=%3D%253D&a3=a&c%40=&a2=r%20b"
	rfcBody     = "c2&a3=2+q"
	rfcBase     = "POST&http%3A%2F%2Fexample.com%2Frequest&a2%3Dr%2520b%26a3%3D2%2520q%26a3%3Da%26b5%3D%253D%25253D%26c%2540%3D%26c2%3D%26oauth_consumer_key%3D9djdj82h48djs9d2%26oauth_nonce%3D7d8f3e4a%26oauth_signature_method%3DHMAC-SHA1%26oauth_timestamp%3D137131201%26oauth_token%3Dkkk9d7dh3k39sjv7"
	rfcConsumer = "9djdj82h48djs9d2"
	rfcToken    = "kkk9d7dh3k39sjv7"
	// Client and token secrets of the RFC's examples (§1.2, §3.1).
	rfcConsumerSecret = "j49sk3j29djd"
	rfcTokenSecret    = "dh893hdasih9"
)

// independentHMACSHA256 computes the signature without the signer's code:
// the secrets here contain only unreserved characters, so the key is
// literally "secret&secret".
func independentHMACSHA256(base string) string {
	mac := hmac.New(sha256.New, []byte(rfcConsumerSecret+"&"+rfcTokenSecret))
	mac.Write([]byte(base))
	return base64.StdEncoding.EncodeToString(mac.Sum(nil))
}

func TestRFC5849WorkedExampleBaseStringAndHMACSHA256(t *testing.T) {
	t.Parallel()
	u, err := url.Parse(rfcURL)
	if err != nil {
		t.Fatal(err)
	}
	form, err := url.ParseQuery(rfcBody)
	if err != nil {
		t.Fatal(err)
	}
	base := signatureBaseString("POST", u, form, []param{
		{"oauth_consumer_key", rfcConsumer},
		{"oauth_token", rfcToken},
		{"oauth_signature_method", "HMAC-SHA1"},
		{"oauth_timestamp", "137131201"},
		{"oauth_nonce", "7d8f3e4a"},
	})
	if base != rfcBase {
		t.Fatalf("base string differs from RFC 5849 §3.4.1.1:\n got %s\nwant %s", base, rfcBase)
	}
	if got, want := hmacSHA256(base, rfcConsumerSecret, rfcTokenSecret), independentHMACSHA256(rfcBase); got != want {
		t.Fatalf("HMAC-SHA256 signature %s, independent computation %s", got, want)
	}
}

// The whole signer on the RFC request, with the nonce and clock injected:
// its base string is the RFC's with HMAC-SHA256 as the method and
// oauth_version=1.0 (which NetSuite requires) added, the realm is in the
// header but not signed, and the header carries the independent signature.
func TestSignerOnRFC5849Request(t *testing.T) {
	t.Parallel()
	req, err := http.NewRequest(http.MethodPost, rfcURL, strings.NewReader(rfcBody))
	if err != nil {
		t.Fatal(err)
	}
	form, _ := url.ParseQuery(rfcBody)
	s := &tba{realm: "Example", consumerKey: rfcConsumer, consumerSecret: rfcConsumerSecret,
		tokenID: rfcToken, tokenSecret: rfcTokenSecret,
		now: func() time.Time { return time.Unix(137131201, 0) }, nonce: func() string { return "7d8f3e4a" }}
	base, header := s.sign(req, form)
	want := strings.Replace(rfcBase, "HMAC-SHA1", "HMAC-SHA256", 1) + "%26oauth_version%3D1.0"
	if base != want {
		t.Fatalf("base string:\n got %s\nwant %s", base, want)
	}
	if strings.Contains(base, "realm") || strings.Contains(base, "Example") {
		t.Fatalf("realm is signed: %s", base)
	}
	sig := independentHMACSHA256(want)
	// base64 uses '+', '/' and '=', which the header percent-encodes.
	encSig := strings.NewReplacer("+", "%2B", "/", "%2F", "=", "%3D").Replace(sig)
	for _, part := range []string{
		`OAuth realm="Example"`, `oauth_consumer_key="9djdj82h48djs9d2"`, `oauth_token="kkk9d7dh3k39sjv7"`,
		`oauth_signature_method="HMAC-SHA256"`, `oauth_timestamp="137131201"`, `oauth_nonce="7d8f3e4a"`,
		`oauth_version="1.0"`, `oauth_signature="` + encSig + `"`,
	} {
		if !strings.Contains(header, part) {
			t.Errorf("header lacks %s:\n%s", part, header)
		}
	}
	// Changing the realm changes the header, not the signature.
	s.realm = "Other"
	_, h2 := s.sign(req, form)
	if sigOf(h2) != sigOf(header) || !strings.Contains(h2, `realm="Other"`) {
		t.Fatalf("realm changed the signature: %s vs %s", h2, header)
	}
}

func sigOf(h string) string {
	_, after, _ := strings.Cut(h, `oauth_signature="`)
	v, _, _ := strings.Cut(after, `"`)
	return v
}

func TestPercentEncode(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]string{
		"abcABC123": "abcABC123",
		"-._~":      "-._~",
		"%":         "%25",
		"+":         "%2B",
		"&=*":       "%26%3D%2A",
		"\n":        "%0A",
		" ":         "%20",
		"\u0080":    "%C2%80",
		"C/1:é":     "C%2F1%3A%C3%A9",
		"😀":         "%F0%9F%98%80",
	} {
		if got := percentEncode(in); got != want {
			t.Errorf("percentEncode(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestBaseStringURI(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]string{
		"HTTP://EXAMPLE.COM:80/r%20v/X?id=123":   "http://example.com/r%20v/X",
		"https://www.example.net:8080/?q=1":      "https://www.example.net:8080/",
		"https://Acct.SuiteTalk.example:443/a/b": "https://acct.suitetalk.example/a/b",
		"http://[::1]:8080/p":                    "http://[::1]:8080/p",
		"https://h.example":                      "https://h.example/",
	} {
		u, err := url.Parse(in)
		if err != nil {
			t.Fatal(err)
		}
		if got := baseStringURI(u); got != want {
			t.Errorf("baseStringURI(%s) = %s, want %s", in, got, want)
		}
	}
}

func TestRealmNormalisesAccountID(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]string{"123456-sb1": "123456_SB1", "123456_SB1": "123456_SB1", " 987 ": "987"} {
		if got := Realm(in); got != want {
			t.Errorf("Realm(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestNonceIsUniqueAndAlphanumeric(t *testing.T) {
	t.Parallel()
	seen := map[string]bool{}
	for range 1000 {
		n := newNonce()
		if len(n) != 32 || strings.Trim(n, "0123456789abcdef") != "" || seen[n] {
			t.Fatalf("nonce %q: want 32 unique hex characters", n)
		}
		seen[n] = true
	}
}

func BenchmarkTBASign(b *testing.B) {
	s := &tba{realm: "123456_SB1", consumerKey: rfcConsumer, consumerSecret: rfcConsumerSecret,
		tokenID: rfcToken, tokenSecret: rfcTokenSecret, now: time.Now, nonce: newNonce}
	req, _ := http.NewRequest(http.MethodPut, "https://123456-sb1.suitetalk.api.netsuite.com/services/rest/record/v1/customer/eid:C-1001", nil)
	b.ReportAllocs()
	for b.Loop() {
		s.sign(req, nil)
	}
}
