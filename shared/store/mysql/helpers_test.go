package mysql_test

import (
	"crypto/sha256"
	"encoding/hex"

	"github.com/backbone-sync/backbone/shared/store"
)

func auditFor(e store.Event) store.Audit {
	h := sha256.Sum256([]byte(e.ID))
	return store.Audit{Fingerprint: hex.EncodeToString(h[:]), RecordType: e.RecordType, RecordID: e.RecordID, Outcome: store.OutcomeAccepted, Stage: store.StageMerge}
}

func deadLetterFor(e store.Event) store.DeadLetter {
	return store.DeadLetter{MessageID: "dl-" + e.ID, Subscription: "s", Stage: "merge", Reason: "r", Data: []byte("{}")}
}
