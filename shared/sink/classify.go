package sink

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"
	"unicode/utf8"

	"github.com/backbone-sync/backbone/shared/failure"
)

// Reasons for failures that have no HTTP status.
const (
	ReasonTimeout           = "timeout"
	ReasonConnectionRefused = "connection_refused"
	ReasonConnectionReset   = "connection_reset"
	ReasonDNS               = "dns_error"
	ReasonCanceled          = "canceled"
	ReasonNetwork           = "network_error"
	ReasonBadRequest        = "bad_request" // the sink could not even build the request
)

// MaxDetailBody is how much of a response body goes into a failure's detail.
const MaxDetailBody = 1024

// RetryableStatus reports whether a target's non-success status can clear up
// by itself (SPEC §7: 429 and 5xx). 408 is a timeout by definition and is
// treated like one. Every other 4xx (and 3xx, which the sink never follows)
// is permanent: sending the same request again gets the same answer.
func RetryableStatus(status int) bool {
	return status == 429 || status == 408 || status >= 500
}

// StatusReason is the reason code of a status without a more precise one.
func StatusReason(status int) string { return "http_" + strconv.Itoa(status) }

// StatusFailure classifies a non-success status. reason may be empty
// (StatusReason is used); retryable forces a retry for answers the target
// documents as transient whatever their status (NetSuite's
// CONCURRENCY_LIMIT_EXCEEDED).
func StatusFailure(stage string, status int, reason string, retryable bool, detail string) *failure.Failure {
	if reason == "" {
		reason = StatusReason(status)
	}
	var f *failure.Failure
	if retryable || RetryableStatus(status) {
		f = failure.Retryable(stage, reason, detail)
	} else {
		f = failure.Permanent(stage, reason, detail)
	}
	// A 4xx is the target refusing the request before acting on it; a 5xx
	// or 408 may come after a partial or complete apply.
	f.NotApplied = status >= 400 && status < 500 && status != 408
	return f
}

// TransportFailure classifies an error that left no HTTP status: every one is
// retryable (a timeout, a refused or reset connection, DNS, TLS: the target
// may be back, or the operator may fix its address, before Retry gives up),
// with a reason saying which.
func TransportFailure(stage, what string, err error) *failure.Failure {
	reason := TransportReason(err)
	f := failure.Retryable(stage, reason, what+": "+err.Error())
	// A connection that was never made cannot have delivered anything; a
	// timeout or a reset may come after the target applied the request.
	f.NotApplied = reason == ReasonConnectionRefused || reason == ReasonDNS
	return f
}

// TransportReason names the kind of transport error.
func TransportReason(err error) string {
	var ne net.Error
	var dns *net.DNSError
	switch {
	case errors.Is(err, context.DeadlineExceeded), errors.As(err, &ne) && ne.Timeout():
		return ReasonTimeout
	case errors.Is(err, syscall.ECONNREFUSED):
		return ReasonConnectionRefused
	case errors.Is(err, syscall.ECONNRESET), errors.Is(err, syscall.EPIPE):
		return ReasonConnectionReset
	case errors.As(err, &dns):
		return ReasonDNS
	case errors.Is(err, context.Canceled):
		return ReasonCanceled
	}
	return ReasonNetwork
}

// Snippet returns at most MaxDetailBody bytes of a response body, cut at a
// UTF-8 boundary, marked when cut.
func Snippet(body []byte) string {
	s := strings.TrimSpace(string(body))
	if len(s) <= MaxDetailBody {
		return s
	}
	return truncate(s, MaxDetailBody)
}

// truncate cuts s to at most n bytes at a rune boundary and says so.
func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	cut := n
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut] + fmt.Sprintf("…[%d more bytes]", len(s)-cut)
}

// Redacted replaces a secret in text.
const Redacted = "[REDACTED]"

// minSecretLen: shorter values are not redacted, because replacing every
// occurrence of a two-letter string would garble the text and hide nothing
// worth hiding.
const minSecretLen = 4

// Redact replaces every occurrence of each secret in s, longest first so a
// secret containing another is removed whole.
func Redact(s string, secrets ...string) string {
	sorted := make([]string, 0, len(secrets))
	for _, v := range secrets {
		if len(v) >= minSecretLen {
			sorted = append(sorted, v)
		}
	}
	slices.SortFunc(sorted, func(a, b string) int { return len(b) - len(a) })
	for _, v := range sorted {
		s = strings.ReplaceAll(s, v, Redacted)
	}
	return s
}

// RetryAfter reads a Retry-After header (seconds or an HTTP date); 0 when
// absent or unreadable.
func RetryAfter(h http.Header) time.Duration {
	v := strings.TrimSpace(h.Get("Retry-After"))
	if v == "" {
		return 0
	}
	if secs, err := strconv.Atoi(v); err == nil {
		return max(0, time.Duration(secs)*time.Second)
	}
	if t, err := http.ParseTime(v); err == nil {
		return max(0, time.Until(t))
	}
	return 0
}
