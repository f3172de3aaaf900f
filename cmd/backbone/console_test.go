package main

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/backbone-sync/backbone/internal/devstack"
	"github.com/backbone-sync/backbone/shared/config"
	"github.com/backbone-sync/backbone/shared/publish"
	"github.com/backbone-sync/backbone/shared/store/mysql/mysqltest"
)

// chromiumPackage is the Debian package of the browser the console tests
// drive.
const chromiumPackage = "chromium"

// browser starts headless Chromium; the test fails when it is missing.
func browser(t *testing.T) context.Context {
	t.Helper()
	var path string
	for _, name := range []string{"chromium", "chromium-browser"} {
		if p, err := exec.LookPath(name); err == nil {
			path = p
			break
		}
	}
	if path == "" {
		t.Fatalf("headless Chromium is not on PATH: install the Debian package %s (apt-get install -y %s); the console tests drive a real browser and never skip",
			chromiumPackage, chromiumPackage)
	}
	opts := append(chromedp.DefaultExecAllocatorOptions[:], chromedp.ExecPath(path), chromedp.NoSandbox,
		chromedp.Flag("disable-gpu", true), chromedp.WindowSize(1280, 900))
	actx, cancelA := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancelB := chromedp.NewContext(actx)
	t.Cleanup(func() { cancelB(); cancelA() })
	ctx, cancelT := context.WithTimeout(ctx, 3*time.Minute)
	t.Cleanup(cancelT)
	if err := chromedp.Run(ctx); err != nil {
		t.Fatalf("start %s: %v", path, err)
	}
	return ctx
}

// shoot saves a full-page screenshot into the test's folder (and, when
// BACKBONE_SCREENSHOTS names a folder, there too: how docs/ gets its).
func shoot(t *testing.T, ctx context.Context, dir, name string) {
	t.Helper()
	var png []byte
	if err := chromedp.Run(ctx, chromedp.FullScreenshot(&png, 100)); err != nil {
		t.Fatalf("screenshot %s: %v", name, err)
	}
	for _, d := range []string{dir, os.Getenv("BACKBONE_SCREENSHOTS")} {
		if d == "" {
			continue
		}
		if err := os.WriteFile(filepath.Join(d, name+".png"), png, 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

func text(t *testing.T, ctx context.Context, sel string) string {
	t.Helper()
	var s string
	if err := chromedp.Run(ctx, chromedp.WaitVisible(sel, chromedp.ByQuery), chromedp.Text(sel, &s, chromedp.ByQuery)); err != nil {
		t.Fatalf("read %s: %v", sel, err)
	}
	return s
}

// waitURL waits until the page a click led to is loaded: its address holds
// part.
func waitURL(t *testing.T, ctx context.Context, part string) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		var u, state string
		err := chromedp.Run(ctx, chromedp.Location(&u), chromedp.Evaluate("document.readyState", &state))
		if err == nil && strings.Contains(u, part) && state == "complete" {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("the page did not reach an address with %q (at %q, %v)", part, u, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestConsoleInBrowser drives the console `dev` serves at /console in
// headless Chromium: the health figures, a record's timeline with the
// fields a delivery sent, the dead letters filtered, one opened, redriven
// after its preview and confirmation and seen in the record's timeline;
// bad input gets a clear page, and a forged redrive without the token is
// refused and changes nothing.
func TestConsoleInBrowser(t *testing.T) {
	t.Parallel()
	ctx := browser(t)
	shots := t.TempDir()
	db := mysqltest.Empty(t)
	ft := newFaultTargets(t)
	var down atomic.Bool
	ft.before = func(system, _ string, _ uint64) int {
		if system == "suitex" && down.Load() {
			return http.StatusServiceUnavailable
		}
		return 0
	}
	d, err := startDev(context.Background(), devstack.Options{Env: config.Sandbox, DSN: db.DSN, FuncAddr: "127.0.0.1:0",
		NetSuiteURL: ft.nsURL, SuiteXURL: ft.sxURL, Getenv: func(k string) string { return ft.env()[k] },
		MinBackoff: 50 * time.Millisecond, MaxBackoff: 200 * time.Millisecond, Serve: devstack.ServeInProcess, Log: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Stop()
	pub := publish.Guard(config.Sandbox, d.PubSub)
	ok := &chain{prefix: "cok", records: 2, versions: 2, targets: ft}
	ok.publishVersions(t, pub, config.Sandbox, 0, 2)
	ok.waitConverged(t, db, ft, time.Minute)
	down.Store(true)
	bad := &chain{prefix: "cbad", records: 1, versions: 1, targets: ft}
	bad.publishVersions(t, pub, config.Sandbox, 0, 1)
	deadline := time.Now().Add(90 * time.Second)
	for deadLetterCount(t, db, "WHERE stage = 'suitex'") < 1 {
		if time.Now().After(deadline) {
			t.Fatal("the SuiteX delivery was not dead-lettered")
		}
		time.Sleep(100 * time.Millisecond)
	}
	down.Store(false)
	base := d.FuncURL + "/console"
	me := localUser()

	// Health.
	time.Sleep(2100 * time.Millisecond) // the dev console's snapshot is at most 2s old
	if err := chromedp.Run(ctx, chromedp.Navigate(base+"/")); err != nil {
		t.Fatal(err)
	}
	if s := text(t, ctx, "#state"); s != "Unhealthy" {
		t.Errorf("health state %q, want Unhealthy (a dead letter in the last hour)", s)
	}
	if s := text(t, ctx, "#dl-hour"); s != "1" {
		t.Errorf("dead letters in the last hour: %q", s)
	}
	if s := text(t, ctx, "#targets"); !strings.Contains(s, "netsuite") || !strings.Contains(s, "suitex") {
		t.Errorf("targets table: %q", s)
	}
	if s := text(t, ctx, "#unconverged"); s != "1" {
		t.Errorf("unconverged: %q", s)
	}
	if s := text(t, ctx, "#who"); !strings.Contains(s, me) || !strings.Contains(s, "operator") {
		t.Errorf("identity: %q", s)
	}
	if s := text(t, ctx, "#subscriptions"); !strings.Contains(s, "n/a") {
		t.Errorf("subscriptions: %q", s)
	}
	shoot(t, ctx, shots, "health")

	// A record's timeline, with the fields each delivery sent.
	rid := ok.rid(0)
	if err := chromedp.Run(ctx, chromedp.Navigate(base+"/records"), chromedp.WaitVisible("#q", chromedp.ByID),
		chromedp.SendKeys("#q", "customer:"+rid, chromedp.ByID), chromedp.Click("#search", chromedp.ByID)); err != nil {
		t.Fatal(err)
	}
	if s := text(t, ctx, "#record"); !strings.Contains(s, "customer:"+rid) || !strings.Contains(s, "version 2") {
		t.Errorf("record heading: %q", s)
	}
	tl := text(t, ctx, "#timeline")
	for _, want := range []string{"accepted", "sending", "delivered", "netsuite", "suitex"} {
		if !strings.Contains(tl, want) {
			t.Errorf("timeline misses %q:\n%s", want, tl)
		}
	}
	var sent []string
	if err := chromedp.Run(ctx, chromedp.Evaluate(`Array.from(document.querySelectorAll("tr.outcome-delivered td.fields-sent")).map(e => e.textContent)`, &sent)); err != nil {
		t.Fatal(err)
	}
	if len(sent) == 0 || !strings.Contains(strings.Join(sent, "|"), "n") {
		t.Errorf("delivered rows' fields sent: %q", sent)
	}
	shoot(t, ctx, shots, "record")

	// Bad input: a clear page.
	for path, want := range map[string]string{
		"/records?q=customer:NOPE":     "Unknown record",
		"/records?q=nocolon":           "Not a record",
		"/dead-letters?stage=bogus":    "Malformed filter",
		"/dead-letters?since=tomorrow": "Malformed filter",
		"/dead-letters/none@deadbeef":  "Unknown dead letter",
	} {
		if err := chromedp.Run(ctx, chromedp.Navigate(base+path)); err != nil {
			t.Fatal(err)
		}
		if s := text(t, ctx, "#problem"); s != want {
			t.Errorf("%s: page says %q, want %q", path, s, want)
		}
	}
	shoot(t, ctx, shots, "bad-input")

	// Dead letters, filtered.
	if err := chromedp.Run(ctx, chromedp.Navigate(base+"/dead-letters"), chromedp.WaitVisible("#stage", chromedp.ByID),
		chromedp.SetValue("#stage", "merge", chromedp.ByID), chromedp.Click("#apply", chromedp.ByID)); err != nil {
		t.Fatal(err)
	}
	waitURL(t, ctx, "stage=merge")
	if s := text(t, ctx, "#count"); s != "0" {
		t.Errorf("merge dead letters: %q", s)
	}
	if err := chromedp.Run(ctx, chromedp.SetValue("#stage", "suitex", chromedp.ByID), chromedp.SendKeys("#reason", "http_503", chromedp.ByID),
		chromedp.Click("#apply", chromedp.ByID)); err != nil {
		t.Fatal(err)
	}
	waitURL(t, ctx, "reason=http_503")
	if s := text(t, ctx, "#count"); s != "1" {
		t.Errorf("suitex http_503 dead letters: %q", s)
	}
	if s := text(t, ctx, "#letters"); !strings.Contains(s, bad.rid(0)) {
		t.Errorf("letters: %q", s)
	}
	shoot(t, ctx, shots, "dead-letters")

	// One letter.
	if err := chromedp.Run(ctx, chromedp.Click("a.letter", chromedp.ByQuery), chromedp.WaitVisible("#letter", chromedp.ByID)); err != nil {
		t.Fatal(err)
	}
	if s := text(t, ctx, "#letter-reason"); s != "suitex / http_503" {
		t.Errorf("letter: %q", s)
	}
	var letterURL string
	if err := chromedp.Run(ctx, chromedp.Location(&letterURL)); err != nil {
		t.Fatal(err)
	}
	ref, _ := url.PathUnescape(letterURL[strings.LastIndex(letterURL, "/")+1:])
	shoot(t, ctx, shots, "dead-letter")

	// A forged redrive: no token, then a made-up one. Refused, nothing changes.
	redriven := func() int {
		var n int
		if err := db.Root.QueryRow("SELECT COUNT(*) FROM event_audit_log WHERE processing_outcome = 'redriven'").Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}
	for _, form := range []url.Values{{"ref": {ref}}, {"ref": {ref}, "token": {"9999999999.00ff"}}} {
		resp, err := http.PostForm(base+"/redrive", form)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusForbidden || !strings.Contains(string(body), "Redrive refused") || !strings.Contains(string(body), "Nothing was changed") {
			t.Errorf("forged redrive %v: %d\n%s", form, resp.StatusCode, body)
		}
	}
	if n := redriven(); n != 0 {
		t.Fatalf("a forged redrive changed something: %d redriven rows", n)
	}

	// Redrive it: preview (dry run), confirm, and follow it into the timeline.
	if err := chromedp.Run(ctx, chromedp.Navigate(letterURL), chromedp.Click("#redrive-one", chromedp.ByID), chromedp.WaitVisible("#preview", chromedp.ByID)); err != nil {
		t.Fatal(err)
	}
	if s := text(t, ctx, "#preview"); !strings.HasPrefix(s, "1 would be redriven") {
		t.Errorf("preview: %q", s)
	}
	if n := redriven(); n != 0 {
		t.Fatalf("the preview redrove: %d", n)
	}
	shoot(t, ctx, shots, "redrive-preview")
	if err := chromedp.Run(ctx, chromedp.Click("#confirm-redrive", chromedp.ByID), chromedp.WaitVisible("#done", chromedp.ByID)); err != nil {
		t.Fatal(err)
	}
	if s := text(t, ctx, "#result"); !strings.HasPrefix(s, "1 redriven") {
		t.Errorf("result: %q", s)
	}
	shoot(t, ctx, shots, "redrive-done")
	bad.waitConverged(t, db, ft, time.Minute)
	if err := chromedp.Run(ctx, chromedp.Click("a.record", chromedp.ByQuery), chromedp.WaitVisible("#timeline", chromedp.ByID)); err != nil {
		t.Fatal(err)
	}
	tl = text(t, ctx, "#timeline")
	for _, want := range []string{"dead_letter", "redriven", "by " + me + " from the console"} {
		if !strings.Contains(tl, want) {
			t.Errorf("timeline after the redrive misses %q:\n%s", want, tl)
		}
	}
	shoot(t, ctx, shots, "record-after-redrive")
	t.Logf("screenshots in %s", shots)
}
