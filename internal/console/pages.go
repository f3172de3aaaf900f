package console

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"html/template"
	"net/http"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/backbone-sync/backbone/internal/health"
	"github.com/backbone-sync/backbone/internal/trace"
	"github.com/backbone-sync/backbone/shared/deadletter"
	"github.com/backbone-sync/backbone/shared/store"
)

// page is what every template gets.
type page struct {
	Title   string
	Nav     string
	Caller  caller
	Env     string
	Refresh int // seconds; 0: no automatic refresh
	Data    any
}

func (c *Console) render(w http.ResponseWriter, r *http.Request, status int, name, title string, data any) {
	p := page{Title: title, Nav: name, Caller: c.caller(r), Env: string(c.o.Env), Data: data}
	if name == "health" {
		p.Refresh = int(c.o.Refresh.Seconds())
	}
	var b strings.Builder
	if err := templates.ExecuteTemplate(&b, name, p); err != nil {
		c.o.Log.ErrorContext(r.Context(), "console template failed", "page", name, "error", err.Error())
		http.Error(w, "the page could not be rendered", http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.WriteHeader(status)
	_, _ = w.Write([]byte(b.String()))
}

// problem is an error page's content.
type problem struct{ Heading, Message string }

// fail answers with a clear page; nothing has changed.
func (c *Console) fail(w http.ResponseWriter, r *http.Request, status int, heading, msg string) {
	c.render(w, r, status, "problem", heading, problem{heading, msg})
}

type healthData struct {
	Snap     *health.Snapshot
	Problems []string
	Chart    template.HTML
	Age      func(float64) string
}

func (c *Console) healthPage(w http.ResponseWriter, r *http.Request) {
	s, err := c.snapshot(r.Context())
	if err != nil {
		c.fail(w, r, http.StatusServiceUnavailable, "Health figures unavailable", err.Error())
		return
	}
	c.render(w, r, http.StatusOK, "health", "Health", healthData{Snap: s, Problems: s.Problems(c.o.Thresholds), Chart: chartSVG(s.Chart), Age: health.Age})
}

func (c *Console) healthJSON(w http.ResponseWriter, r *http.Request) {
	s, err := c.snapshot(r.Context())
	if err != nil {
		http.Error(w, err.Error(), http.StatusServiceUnavailable)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	problems := s.Problems(c.o.Thresholds)
	_ = json.NewEncoder(w).Encode(map[string]any{"healthy": len(problems) == 0, "problems": problems, "snapshot": s})
}

type recordsData struct {
	Query   string
	Type    string
	ID      string
	Version uint64
	Entries []trace.Entry
}

func (c *Console) recordsPage(w http.ResponseWriter, r *http.Request) {
	q := strings.TrimSpace(r.URL.Query().Get("q"))
	d := recordsData{Query: q}
	if q == "" {
		c.render(w, r, http.StatusOK, "records", "Records", d)
		return
	}
	rt, rid, err := deadletter.ParseRecord(q)
	if err != nil {
		c.fail(w, r, http.StatusBadRequest, "Not a record", err.Error()+".")
		return
	}
	d.Type, d.ID = rt, rid
	entries, err := trace.Build(r.Context(), c.o.Store, rt, rid)
	if err != nil {
		c.fail(w, r, http.StatusServiceUnavailable, "History unavailable", err.Error())
		return
	}
	if len(entries) == 0 {
		c.fail(w, r, http.StatusNotFound, "Unknown record", fmt.Sprintf("No history for %s:%s. Record ids are case-sensitive and exact.", rt, rid))
		return
	}
	if h, err := c.o.Store.Head(r.Context(), rt, rid); err == nil {
		d.Version = h.Version
	}
	d.Entries = entries
	c.render(w, r, http.StatusOK, "records", rt+":"+rid, d)
}

// filterForm is the dead-letter filter as the form holds it: the fields
// deadletter parses, and the limit, which the console caps.
type filterForm struct {
	deadletter.FilterText
	Limit string
}

// Values encodes the filter for links.
func (f filterForm) Values() url.Values {
	v := url.Values{}
	for k, s := range map[string]string{"stage": f.Stage, "reason": f.Reason, "record": f.Record, "since": f.Since, "until": f.Until, "limit": f.Limit} {
		if s != "" {
			v.Set(k, s)
		}
	}
	return v
}

var reasonPattern = regexp.MustCompile(`^[a-z0-9_.:-]{1,128}$`)

const maxLimit = 1000

func readFilter(q url.Values, now time.Time) (filterForm, store.DeadLetterFilter, error) {
	ff := filterForm{FilterText: deadletter.FilterText{Stage: q.Get("stage"), Reason: strings.TrimSpace(q.Get("reason")), Record: strings.TrimSpace(q.Get("record")),
		Since: strings.TrimSpace(q.Get("since")), Until: strings.TrimSpace(q.Get("until"))}, Limit: strings.TrimSpace(q.Get("limit"))}
	f, err := ff.Parse(now, "")
	if err != nil {
		return ff, f, err
	}
	// The form refuses what is not a reason code's shape; the command line
	// lets any reason through.
	if ff.Reason != "" && !reasonPattern.MatchString(ff.Reason) {
		return ff, f, fmt.Errorf("reason %q is not a reason code (snake_case, e.g. http_503)", ff.Reason)
	}
	f.Limit = 100
	if ff.Limit != "" {
		n, err := strconv.Atoi(ff.Limit)
		if err != nil || n < 1 || n > maxLimit {
			return ff, f, fmt.Errorf("limit %q: want a number from 1 to %d", ff.Limit, maxLimit)
		}
		f.Limit = n
	}
	return ff, f, nil
}

type deadLettersData struct {
	Filter  filterForm
	Stages  []string
	Letters []deadletter.Summary
	More    bool
}

func (c *Console) deadLettersPage(w http.ResponseWriter, r *http.Request) {
	ff, f, err := readFilter(r.URL.Query(), c.o.Now())
	if err != nil {
		c.fail(w, r, http.StatusBadRequest, "Malformed filter", err.Error()+". Nothing was listed or changed.")
		return
	}
	rows, err := deadletter.List(r.Context(), c.o.Store, f)
	if err != nil {
		c.fail(w, r, http.StatusServiceUnavailable, "Dead letters unavailable", err.Error())
		return
	}
	c.render(w, r, http.StatusOK, "dead-letters", "Dead letters", deadLettersData{Filter: ff, Stages: deadletter.Stages, Letters: rows, More: len(rows) == f.Limit})
}

type deadLetterData struct {
	Ref  string
	View deadletter.View
	JSON string
}

func (c *Console) deadLetterPage(w http.ResponseWriter, r *http.Request) {
	ref := r.PathValue("ref")
	v, err := deadletter.Show(r.Context(), c.o.Store, ref)
	switch {
	case errors.Is(err, store.ErrNotFound):
		c.fail(w, r, http.StatusNotFound, "Unknown dead letter", fmt.Sprintf("No dead letter %s.", ref))
		return
	case err != nil:
		c.fail(w, r, http.StatusBadRequest, "Dead letter unavailable", err.Error())
		return
	}
	var b strings.Builder
	enc := json.NewEncoder(&b)
	enc.SetIndent("", "  ")
	enc.SetEscapeHTML(false) // html/template escapes it
	_ = enc.Encode(v.ErrorMessage)
	c.render(w, r, http.StatusOK, "dead-letter", "Dead letter "+v.MessageID, deadLetterData{Ref: v.MessageID + "@" + v.ContentDigest, View: v, JSON: b.String()})
}

type redriveData struct {
	Refs     []string
	Outcomes []deadletter.Outcome
	Result   deadletter.Result
	Token    string
	Done     bool
	Filter   filterForm
	CanRun   bool
	Why      string
	Records  []string
}

// selection reads which dead letters a request names: ref=... (repeated)
// or a filter. It returns them, oldest first, and their exact refs.
func (c *Console) selection(ctx context.Context, q url.Values) (filterForm, []store.DeadLetter, []string, error) {
	refs := q["ref"]
	ff, f, err := readFilter(q, c.o.Now())
	if err != nil {
		return ff, nil, nil, err
	}
	if len(refs) == 0 && !ff.Set() {
		return ff, nil, nil, errors.New("say which dead letters: one letter's redrive button, or a filter (stage, reason, record, since, until)")
	}
	if len(refs) > 0 && ff.Set() {
		return ff, nil, nil, errors.New("give dead letters or a filter, not both")
	}
	if len(refs) > maxLimit {
		return ff, nil, nil, fmt.Errorf("at most %d dead letters at once", maxLimit)
	}
	f.OldestFirst = true
	letters, err := deadletter.Select(ctx, c.o.Store, refs, f)
	if err != nil {
		return ff, nil, nil, err
	}
	exact := make([]string, len(letters))
	for i, d := range letters {
		exact[i] = d.MessageID + "@" + d.ContentDigest
	}
	return ff, letters, exact, nil
}

func (c *Console) redriver(identity string) *deadletter.Redriver {
	return &deadletter.Redriver{Store: c.o.Store, Pub: c.o.Publisher, Env: c.o.Env,
		Note: "by " + identity + " from the console"}
}

// redrivePreview is the dry run: what would be redriven, and for an
// operator the confirmation form that carries the token.
func (c *Console) redrivePreview(w http.ResponseWriter, r *http.Request) {
	ff, letters, refs, err := c.selection(r.Context(), r.URL.Query())
	if err != nil {
		c.fail(w, r, http.StatusBadRequest, "Cannot preview this redrive", err.Error()+". Nothing was changed.")
		return
	}
	who := c.caller(r)
	d := redriveData{Refs: refs, Filter: ff}
	d.Result, err = c.redriver(who.Identity).Redrive(r.Context(), letters, true, func(o deadletter.Outcome) { d.Outcomes = append(d.Outcomes, o) })
	if err != nil {
		c.fail(w, r, http.StatusServiceUnavailable, "Preview failed", err.Error())
		return
	}
	switch {
	case !who.Operator:
		d.Why = "You can preview, but only an operator may redrive (you are " + orAnonymous(who.Identity) + ")."
	case c.o.Publisher == nil:
		d.Why = "This console has no publisher: redrive is unavailable."
	case d.Result.WouldRedrive == 0:
		d.Why = "Nothing here can be redriven."
	default:
		d.CanRun = true
		d.Token = c.token(who.Identity, refs, c.o.Now().Add(tokenTTL))
	}
	c.render(w, r, http.StatusOK, "redrive", "Redrive preview", d)
}

func orAnonymous(id string) string {
	if id == "" {
		return "anonymous"
	}
	return id
}

// redrive runs a confirmed redrive: the caller must be an operator and the
// token must match them and exactly the refs posted.
func (c *Console) redrive(w http.ResponseWriter, r *http.Request) {
	r.Body = http.MaxBytesReader(w, r.Body, 1<<20)
	if err := r.ParseForm(); err != nil {
		c.fail(w, r, http.StatusBadRequest, "Malformed request", err.Error()+". Nothing was changed.")
		return
	}
	who := c.caller(r)
	if !who.Operator {
		c.fail(w, r, http.StatusForbidden, "Not an operator", "Only an operator may redrive; you are "+orAnonymous(who.Identity)+". Nothing was changed.")
		return
	}
	refs := r.PostForm["ref"]
	if len(refs) == 0 || len(refs) > maxLimit {
		c.fail(w, r, http.StatusBadRequest, "Nothing to redrive", "The request names no dead letters. Nothing was changed.")
		return
	}
	if err := c.checkToken(who.Identity, refs, r.PostForm.Get("token")); err != nil {
		c.o.Log.WarnContext(r.Context(), "console redrive refused", "operator", who.Identity, "error", err.Error())
		c.fail(w, r, http.StatusForbidden, "Redrive refused", err.Error()+". Nothing was changed: preview the redrive and confirm it from that page.")
		return
	}
	if c.o.Publisher == nil {
		c.fail(w, r, http.StatusServiceUnavailable, "Redrive unavailable", "This console has no publisher. Nothing was changed.")
		return
	}
	letters, err := deadletter.Select(r.Context(), c.o.Store, refs, store.DeadLetterFilter{})
	if err != nil {
		c.fail(w, r, http.StatusBadRequest, "Cannot redrive", err.Error()+". Nothing was changed.")
		return
	}
	d := redriveData{Refs: refs, Done: true}
	seen := map[string]bool{}
	d.Result, err = c.redriver(who.Identity).Redrive(r.Context(), letters, false, func(o deadletter.Outcome) {
		d.Outcomes = append(d.Outcomes, o)
		if rec := o.Record(); rec != "" && !seen[rec] {
			seen[rec] = true
			d.Records = append(d.Records, rec)
		}
	})
	c.o.Log.InfoContext(r.Context(), "console redrive", "operator", who.Identity, "letters", len(letters),
		"redriven", d.Result.Redriven, "skipped", d.Result.Skipped, "failed", d.Result.Failed)
	if err != nil {
		c.fail(w, r, http.StatusServiceUnavailable, "Redrive stopped", err.Error())
		return
	}
	c.render(w, r, http.StatusOK, "redrive", "Redrive done", d)
}
