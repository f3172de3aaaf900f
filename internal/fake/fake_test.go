package fake_test

import (
	"encoding/json"
	"net/http"
	"testing"

	"github.com/backbone-sync/backbone/internal/fake"
)

func TestOutageFailNextRecoversBySelf(t *testing.T) {
	var s fake.System
	s.FailNext(2, http.StatusServiceUnavailable)
	got := []int{s.Outage(), s.Outage(), s.Outage()}
	if got[0] != 503 || got[1] != 503 || got[2] != 0 || s.OutageHits() != 2 {
		t.Fatalf("answers %v, %d hits; want 503, 503, up, 2 hits", got, s.OutageHits())
	}
	s.FailNext(5, http.StatusBadRequest)
	s.SetDown(http.StatusServiceUnavailable)
	if st := s.Outage(); st != 503 {
		t.Fatalf("SetDown while FailNext is pending: %d, want 503", st)
	}
	s.SetDown(0)
	s.FailNext(0, 0)
	if st := s.Outage(); st != 0 {
		t.Fatalf("after SetDown(0) and FailNext(0, 0): %d, want up", st)
	}
}

func TestEditNullClearsAField(t *testing.T) {
	var s fake.System
	if s.Record("customer", "C-1") != nil {
		t.Fatal("a record before any edit")
	}
	s.Edit("customer", "C-1", map[string]json.RawMessage{"a": json.RawMessage(`1`), "b": json.RawMessage(`2`)})
	s.Edit("customer", "C-1", map[string]json.RawMessage{"a": json.RawMessage(`null`)})
	rec := s.Record("customer", "C-1")
	if _, ok := rec["a"]; ok || string(rec["b"]) != "2" {
		t.Fatalf("record %v", rec)
	}
	rec["b"] = json.RawMessage(`3`) // a copy: the system's record is unchanged
	if string(s.Record("customer", "C-1")["b"]) != "2" {
		t.Fatal("Record returned the system's own map")
	}
}

func TestAcceptRunsTheCallback(t *testing.T) {
	var s fake.System
	var seen []string
	s.OnDelivery(func(d fake.Delivery) { seen = append(seen, d.EventID) })
	s.Accept(fake.Delivery{Target: "suitex", EventID: "e1"})
	s.Refuse("bad signature")
	if len(seen) != 1 || seen[0] != "e1" || len(s.Deliveries()) != 1 || len(s.Refused()) != 1 {
		t.Fatalf("callback saw %v, deliveries %v, refused %v", seen, s.Deliveries(), s.Refused())
	}
}
