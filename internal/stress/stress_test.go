package stress_test

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/backbone-sync/backbone/internal/stress"
	"github.com/backbone-sync/backbone/shared/store/mysql/mysqltest"
)

func TestHealthyRunAsSyncWorker(t *testing.T) {
	t.Parallel()
	d := mysqltest.New(t)
	w, _ := d.Worker(t)
	var lines []string
	sum := stress.Run(context.Background(), w, w.DB(), stress.Options{Appends: 200, Records: 10, Concurrency: 8,
		Progress: func(l string) { lines = append(lines, l) }})
	if !sum.OK || len(sum.Steps) != 3 {
		t.Fatalf("summary %+v", sum)
	}
	for _, l := range lines {
		if !strings.Contains(l, "/3]") {
			t.Errorf("line %q: denominator must be 3 without the probe", l)
		}
	}
	if !strings.Contains(sum.Steps[2].Detail, "200 events") {
		t.Errorf("integrity detail %q", sum.Steps[2].Detail)
	}
}

func TestFailsFastForOverPrivilegedUser(t *testing.T) {
	t.Parallel()
	d := mysqltest.New(t) // root: has DELETE and everything else
	sum := stress.Run(context.Background(), d.Store, d.Root, stress.Options{Appends: 10})
	if sum.OK || len(sum.Steps) != 1 || !strings.Contains(sum.Steps[0].Detail, "ALL PRIVILEGES") {
		t.Fatalf("summary %+v", sum)
	}
	if n, _ := d.Store.History(context.Background(), stress.RecordType, sum.RunID+"-00000"); len(n) != 0 {
		t.Error("wrote events as an over-privileged user")
	}
}

func TestDeleteGrantFails(t *testing.T) {
	t.Parallel()
	d := mysqltest.New(t)
	w, _ := d.Worker(t)
	var user string
	if err := w.DB().QueryRow("SELECT SUBSTRING_INDEX(CURRENT_USER(), '@', 1)").Scan(&user); err != nil {
		t.Fatal(err)
	}
	if _, err := d.Root.Exec("GRANT DELETE ON `" + d.Name + "`.events TO '" + user + "'@'%'"); err != nil {
		t.Fatal(err)
	}
	if _, err := stress.CheckPrivileges(context.Background(), w.DB()); err == nil || !strings.Contains(err.Error(), "DELETE") {
		t.Errorf("DELETE grant not caught: %v", err)
	}
}

func TestProbeCountsAndFails(t *testing.T) {
	t.Parallel()
	d := mysqltest.New(t)
	w, _ := d.Worker(t)
	var lines []string
	sum := stress.Run(context.Background(), w, w.DB(), stress.Options{Appends: 20, Records: 2,
		Probe:    func(context.Context) error { return errors.New("no merged event within 5s") },
		Progress: func(l string) { lines = append(lines, l) }})
	if sum.OK || len(sum.Steps) != 4 || sum.Steps[3].OK {
		t.Fatalf("summary %+v", sum)
	}
	for _, l := range lines {
		if !strings.Contains(l, "/4]") {
			t.Errorf("line %q: denominator must be 4 with the probe", l)
		}
	}
}
