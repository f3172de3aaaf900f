// Package migrations holds the event store's SQL migrations, embedded in the
// binary so `backbone migrate` needs no files on disk.
package migrations

import "embed"

// FS holds the goose migration files (NNNNN_name.sql).
//
//go:embed *.sql
var FS embed.FS
