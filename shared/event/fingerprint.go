package event

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"strconv"

	"github.com/google/uuid"
	"github.com/gowebpki/jcs"
)

// Canonical returns the RFC 8785 (JCS) form of a JSON value: object keys
// sorted by UTF-16 code units, no insignificant whitespace, numbers as
// ECMAScript writes doubles, strings with minimal escaping. It refuses
// duplicate keys and numbers no IEEE double holds.
func Canonical(v json.RawMessage) ([]byte, error) {
	out, err := jcs.Transform(v)
	if err != nil {
		return nil, fmt.Errorf("canonical JSON: %w", err)
	}
	return out, nil
}

// SameJSON reports whether a and b are the same JSON value (SPEC §5 "JSON
// semantic equality"): equal after canonicalisation, so key order,
// whitespace, escapes and number spelling (1, 1.0, 1e0) do not matter.
// Values without a canonical form are compared byte for byte, compacted.
func SameJSON(a, b json.RawMessage) bool {
	ca, errA := Canonical(a)
	cb, errB := Canonical(b)
	if errA == nil && errB == nil {
		return bytes.Equal(ca, cb)
	}
	var ba, bb bytes.Buffer
	if json.Compact(&ba, a) != nil || json.Compact(&bb, b) != nil {
		return bytes.Equal(a, b)
	}
	return bytes.Equal(ba.Bytes(), bb.Bytes())
}

// identity is what a fingerprint covers: the change itself, not its id nor
// its timestamp, so a source that re-sends the same change is a duplicate.
type identity struct {
	BaseVersion uint64                     `json:"base_version"`
	Changes     map[string]json.RawMessage `json:"changes"`
	RecordID    string                     `json:"record_id"`
	RecordType  string                     `json:"record_type"`
	Source      string                     `json:"source"`
}

// CanonicalIdentity returns the RFC 8785 canonical JSON of
// {base_version, changes, record_id, record_type, source}: the bytes the
// fingerprint hashes.
func CanonicalIdentity(r Raw) ([]byte, error) {
	changes := r.Changes
	if changes == nil {
		changes = map[string]json.RawMessage{}
	}
	b, err := json.Marshal(identity{r.BaseVersion, changes, r.RecordID, r.RecordType, r.Source})
	if err != nil {
		return nil, fmt.Errorf("fingerprint of %s:%s: %w", r.RecordType, r.RecordID, err)
	}
	return Canonical(b)
}

// Fingerprint is the lowercase hex SHA-256 of CanonicalIdentity (SPEC §3).
// Every Raw that DecodeRaw returns without error has a canonical form. For
// any other Raw (a change value that is not JSON) the fingerprint still is
// deterministic, hashed over a length-prefixed rendering instead, and can
// never equal a canonical one's by accident of layout.
func Fingerprint(r Raw) string {
	b, err := CanonicalIdentity(r)
	if err != nil {
		var buf bytes.Buffer
		buf.WriteString("non-canonical\x00")
		for _, s := range []string{strconv.FormatUint(r.BaseVersion, 10), r.RecordID, r.RecordType, r.Source} {
			fmt.Fprintf(&buf, "%d:%s", len(s), s)
		}
		for _, k := range sortedKeys(r.Changes) {
			fmt.Fprintf(&buf, "%d:%s%d:%s", len(k), k, len(r.Changes[k]), r.Changes[k])
		}
		b = buf.Bytes()
	}
	return HashHex(b)
}

// HashHex is the lowercase hex SHA-256 of b (also the audit fingerprint of a
// message that cannot be decoded: the hash of its data).
func HashHex(b []byte) string {
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])
}

// idNamespace is the UUIDv5 namespace of derived event ids. Fixed forever:
// changing it would give redeliveries of an id-less event new ids.
const idNamespace = "5d0f8f4e-6a3b-5c71-9f0e-2b8c4a7d1e63"

// DerivedID is the id of a raw event sent without one: a UUIDv5 of its
// fingerprint, so every redelivery of the same change gets the same id.
func DerivedID(fingerprint string) string {
	return uuid.NewSHA1(uuid.MustParse(idNamespace), []byte(fingerprint)).String()
}

func sortedKeys(m map[string]json.RawMessage) []string {
	return slices.Sorted(maps.Keys(m))
}
