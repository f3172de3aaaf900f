package event

import (
	"strconv"
	"strings"

	"github.com/gowebpki/jcs"
)

// MaxValueDepth is how deep a change value may nest arrays and objects
// (SPEC §3): `"f": 1` is depth 0, `"f": [1]` depth 1. MariaDB's JSON
// functions stop at depth 32 (a JSON constraint failure on insert, error
// 4025), so the bound keeps every stored document far below any server's.
const MaxValueDepth = 16

// maxDocumentDepth is MaxValueDepth below the top-level object and changes.
const maxDocumentDepth = MaxValueDepth + 2

// More validation reasons (stable codes, SPEC §3).
const (
	ReasonTooDeep      = "too_deep"
	ReasonUnsafeNumber = "unsafe_number"
	ReasonInvalidUTF16 = "invalid_utf16"
)

// prescan walks data once, before any JSON decoder sees it, and refuses
// nesting deeper than maxDocumentDepth and a \u escape that is not a whole
// character (a lone UTF-16 surrogate), which encoding/json would silently
// replace with U+FFFD. It runs first so that a document 20,000 levels deep
// costs one linear pass and gets too_deep, not a decoder's depth error. The
// walk tolerates invalid JSON; the decoders refuse that afterwards.
func prescan(data []byte) error {
	depth := 0
	inString := false
	for i := 0; i < len(data); i++ {
		c := data[i]
		if inString {
			switch c {
			case '"':
				inString = false
			case '\\':
				if i+1 < len(data) && data[i+1] == 'u' {
					n, err := surrogateEscape(data, i)
					if err != nil {
						return err
					}
					i += n - 1
					continue
				}
				i++ // skip the escaped character
			}
			continue
		}
		switch c {
		case '"':
			inString = true
		case '{', '[':
			depth++
			if depth > maxDocumentDepth {
				return invalid(ReasonTooDeep, "changes",
					"data nests more than %d levels of arrays/objects below changes (the limit is %d)", MaxValueDepth, MaxValueDepth)
			}
		case '}', ']':
			depth--
		}
	}
	return nil
}

// surrogateEscape checks the \uXXXX escape at data[i:] and returns how many
// bytes it (and its pair, for a surrogate pair) spans.
func surrogateEscape(data []byte, i int) (int, error) {
	u, ok := hex4(data, i+2)
	if !ok {
		return 2, nil // not an escape the JSON grammar takes: the decoder says so
	}
	switch {
	case u >= 0xD800 && u <= 0xDBFF:
		if lo, ok := hex4(data, i+8); ok && data[i+6] == '\\' && data[i+7] == 'u' && lo >= 0xDC00 && lo <= 0xDFFF {
			return 12, nil
		}
		return 0, invalid(ReasonInvalidUTF16, "", "\\u%04x at byte %d is a high surrogate without its low half: a JSON escape must be a whole character", u, i)
	case u >= 0xDC00 && u <= 0xDFFF:
		return 0, invalid(ReasonInvalidUTF16, "", "\\u%04x at byte %d is a low surrogate without its high half: a JSON escape must be a whole character", u, i)
	}
	return 6, nil
}

func hex4(data []byte, at int) (rune, bool) {
	if at+4 > len(data) {
		return 0, false
	}
	var r rune
	for _, c := range data[at : at+4] {
		var v byte
		switch {
		case c >= '0' && c <= '9':
			v = c - '0'
		case c >= 'a' && c <= 'f':
			v = c - 'a' + 10
		case c >= 'A' && c <= 'F':
			v = c - 'A' + 10
		default:
			return 0, false
		}
		r = r<<4 | rune(v)
	}
	return r, true
}

// checkNumbers refuses a number in the JSON value v whose value differs
// from that of its RFC 8785 form (SPEC §3, I-JSON): an integer beyond
// ±(2^53−1), more digits than a double holds, a magnitude no double holds.
// Such a number would be compared, fingerprinted and delivered as another
// number than the one the source sent. v is valid JSON.
func checkNumbers(field string, v []byte) error {
	inString := false
	for i := 0; i < len(v); i++ {
		c := v[i]
		if inString {
			switch c {
			case '\\':
				i++
			case '"':
				inString = false
			}
			continue
		}
		if c == '"' {
			inString = true
			continue
		}
		if c != '-' && (c < '0' || c > '9') {
			continue
		}
		j := i
		for j < len(v) && strings.IndexByte("0123456789+-.eE", v[j]) >= 0 {
			j++
		}
		lit := string(v[i:j])
		if !safeNumber(lit) {
			return invalid(ReasonUnsafeNumber, "changes",
				"value of field %s has the number %s, which an IEEE double (RFC 8785) cannot hold exactly: send it as a string", quote(field), quote(lit))
		}
		i = j - 1
	}
	return nil
}

// safeNumber reports whether the JSON number lit has the same value as its
// RFC 8785 form: the shortest form of the nearest double, compared as exact
// decimals (so 1, 1.0 and 1e0 are safe; 9007199254740993 and 0.1000000000000000055 are not).
func safeNumber(lit string) bool {
	f, err := strconv.ParseFloat(lit, 64)
	if err != nil { // out of a double's range
		return false
	}
	canon, err := jcs.NumberToJSON(f)
	if err != nil {
		return false
	}
	a, okA := decimalOf(lit)
	b, okB := decimalOf(canon)
	return okA && okB && a == b
}

// decimal is an exact decimal value: sign, significant digits (no leading
// or trailing zeros; empty for zero) and the power of ten of the last digit.
type decimal struct {
	neg    bool
	digits string
	exp    int
}

// decimalOf reads a JSON (or ECMAScript-formatted) number exactly. It
// reports false for an exponent too large to matter (the caller has
// already refused magnitudes out of a double's range).
func decimalOf(s string) (decimal, bool) {
	var d decimal
	if strings.HasPrefix(s, "-") {
		d.neg, s = true, s[1:]
	}
	mant, expPart, hasExp := strings.Cut(strings.ToLower(s), "e")
	exp := 0
	if hasExp {
		expPart = strings.TrimPrefix(expPart, "+")
		if len(strings.TrimLeft(strings.TrimPrefix(expPart, "-"), "0")) > 6 {
			return d, false
		}
		n, err := strconv.Atoi(expPart)
		if err != nil {
			return d, false
		}
		exp = n
	}
	intPart, frac, _ := strings.Cut(mant, ".")
	digits := intPart + frac
	exp -= len(frac)
	digits = strings.TrimLeft(digits, "0")
	for strings.HasSuffix(digits, "0") {
		digits = digits[:len(digits)-1]
		exp++
	}
	if digits == "" {
		return decimal{}, true // zero, whatever its sign
	}
	d.digits, d.exp = digits, exp
	return d, true
}
