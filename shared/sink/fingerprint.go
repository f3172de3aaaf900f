package sink

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"

	"github.com/gowebpki/jcs"

	"github.com/backbone-sync/backbone/shared/event"
)

// Fingerprint is the fingerprint of a sink audit row: the lowercase hex
// SHA-256 of the RFC 8785 (JCS) canonical JSON of the merged event's
// {base_version, changes, record_id, record_type, source} — the same recipe
// as a raw event's fingerprint (SPEC §3), applied to what was delivered.
func Fingerprint(ev event.Merged) (string, error) {
	doc := struct {
		BaseVersion uint64                     `json:"base_version"`
		Changes     map[string]json.RawMessage `json:"changes"`
		RecordID    string                     `json:"record_id"`
		RecordType  string                     `json:"record_type"`
		Source      string                     `json:"source"`
	}{ev.BaseVersion, ev.Changes, ev.RecordID, ev.RecordType, ev.Source}
	if doc.Changes == nil {
		doc.Changes = map[string]json.RawMessage{}
	}
	raw, err := json.Marshal(doc)
	if err != nil {
		return "", fmt.Errorf("fingerprint of event %s: %w", ev.ID, err)
	}
	canon, err := jcs.Transform(raw)
	if err != nil {
		return "", fmt.Errorf("fingerprint of event %s: canonical JSON: %w", ev.ID, err)
	}
	sum := sha256.Sum256(canon)
	return hex.EncodeToString(sum[:]), nil
}
