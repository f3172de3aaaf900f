package config

import (
	"slices"
	"testing"
)

// TestVariablesAreWhatLoadReads records every name Load asks for, over a few
// environments that take different branches, and requires the set to equal
// Variables exactly: a variable added to Load but not to Variables (or one
// left in Variables after Load stopped reading it) fails here.
func TestVariablesAreWhatLoadReads(t *testing.T) {
	t.Parallel()
	envs := []map[string]string{
		{},
		{"BACKBONE_ENV": "sandbox", "GCP_PROJECT": "p", "CLOUD_SQL_INSTANCE": "p:r:i", "DB_USER": "u", "DB_NAME": "d"},
		{"BACKBONE_ENV": "production", "EVENT_STORE_DSN": "root@tcp(127.0.0.1:3306)/x", "NETSUITE_AUTH": "oauth2",
			"BACKBONE_SOURCES": "netsuite,suitex", "DB_MAX_OPEN_CONNS": "4", "PORT": "9090"},
	}
	read := map[string]bool{}
	for _, env := range envs {
		_, _ = Load(func(k string) string {
			read[k] = true
			return env[k]
		})
	}
	for k := range read {
		if !slices.Contains(Variables, k) {
			t.Errorf("Load reads %s but Variables does not list it", k)
		}
	}
	seen := map[string]bool{}
	for _, k := range Variables {
		if seen[k] {
			t.Errorf("Variables lists %s twice", k)
		}
		seen[k] = true
		if !read[k] {
			t.Errorf("Variables lists %s but Load never reads it", k)
		}
	}
}
