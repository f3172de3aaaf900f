package devstack

import (
	"fmt"
	"io"

	"github.com/backbone-sync/backbone/internal/console"
	"github.com/backbone-sync/backbone/shared/store/mysql"
	"github.com/backbone-sync/backbone/shared/topology"
)

// PrintBanner says where everything is, and how a second shell reaches it.
func (s *Stack) PrintBanner(w io.Writer) {
	env := s.Config.Env
	fmt.Fprintf(w, "backbone dev is running (%s)\n\n", env)
	made := s.changes.Count(topology.ActionCreate) + s.changes.Count(topology.ActionUpdate) + s.changes.Count(topology.ActionRecreate)
	kind := "external emulator"
	switch {
	case s.pstest != nil:
		kind = "pstest, bridged push"
	case s.Gcloud != nil:
		kind = "gcloud emulator, real push; Retry's subscription bridged"
	}
	fmt.Fprintf(w, "  Pub/Sub emulator   %s  (%s; project %s; topology provisioned: %d topics/subscriptions created or repaired)\n", s.Emulator, kind, s.Project, made)
	worker := "the worker user"
	if mc, err := mysql.ParseDSN(s.WorkerDSN); err == nil {
		worker = mc.User
	}
	fmt.Fprintf(w, "  event store        %s  (functions connect as %s, with the sync_worker grants)\n", s.DSN, worker)
	fmt.Fprintf(w, "  functions          %s/{Merge,NetSuiteSink,SuiteXSink,Retry,DLQArchive}\n", s.FuncURL)
	fmt.Fprintf(w, "  console            %s%s/  (you are an operator as %s)\n", s.FuncURL, console.Prefix, s.user)
	fmt.Fprintf(w, "  NetSuite           %s%s\n", s.Config.NetSuite.BaseURL, fakeNote(s.NetSuite != nil))
	fmt.Fprintf(w, "  SuiteX             %s%s\n", s.Config.SuiteX.BaseURL, fakeNote(s.SuiteX != nil))
	fmt.Fprintf(w, "\nFrom another shell (make build first; go run hides exit codes):\n\n")
	fmt.Fprintf(w, "  export BACKBONE_ENV=%s GCP_PROJECT=%s PUBSUB_EMULATOR_HOST=%s EVENT_STORE_DSN='%s'\n", env, s.Project, s.Emulator, s.DSN)
	fmt.Fprintf(w, "  export WORKER_DSN='%s'   # least privilege: the functions' user\n", s.WorkerDSN)
	fmt.Fprintf(w, "  bin/backbone publish examples/customer-create.json\n")
	fmt.Fprintf(w, "  bin/backbone trace customer:C-1001\n")
	fmt.Fprintf(w, "  bin/backbone dlq list\n")
	fmt.Fprintf(w, "  bin/backbone stress --dsn \"$WORKER_DSN\" --n 200\n\nCtrl-C stops it.\n")
}

func fakeNote(local bool) string {
	if local {
		return "  (local fake: logs what it receives)"
	}
	return ""
}
