package event

import "strings"

// StressRecordType is the record type of everything `backbone stress`
// writes. It is reserved: no stored event of it may ever reach a target, by
// any path (a merge, an outbox flush, a redrive or replay). The merge's one
// publish step withholds it and the sinks refuse it, so a stress run is safe
// against production.
const StressRecordType = "backbone_stress"

// Reserved reports whether recordType is reserved for stress: the type
// itself, or it followed by "_" (the probe's backbone_stress_probe).
func Reserved(recordType string) bool {
	return recordType == StressRecordType || strings.HasPrefix(recordType, StressRecordType+"_")
}
