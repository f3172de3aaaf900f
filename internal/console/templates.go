package console

import (
	"html/template"
	"net/url"
	"strings"
)

var templates = template.Must(template.New("console").Funcs(template.FuncMap{
	"join":    strings.Join,
	"query":   func(v url.Values) string { return v.Encode() },
	"escape":  url.PathEscape,
	"percent": func(f float64) int { return int(100*f + 0.5) },
	"short": func(s string) string {
		if len(s) > 8 {
			return s[:8]
		}
		return s
	},
}).Parse(layout + healthTmpl + recordsTmpl + deadLettersTmpl + deadLetterTmpl + redriveTmpl + problemTmpl))

const layout = `{{define "top"}}<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<title>{{.Title}} — backbone {{.Env}}</title>
{{if .Refresh}}<meta http-equiv="refresh" content="{{.Refresh}}">{{end}}
<style>
body{font:14px/1.4 system-ui,sans-serif;margin:0;color:#202124}
header{background:#202124;color:#fff;padding:8px 16px;display:flex;gap:16px;align-items:center}
header a{color:#fff;text-decoration:none}header a.on{text-decoration:underline}
header .who{margin-left:auto;font-size:12px;opacity:.8}
main{padding:16px}table{border-collapse:collapse;margin:8px 0}
th,td{border-bottom:1px solid #e0e0e0;padding:4px 8px;text-align:left;vertical-align:top}
th{background:#f1f3f4}.num{text-align:right}.bad{color:#c5221f;font-weight:600}.ok{color:#0b8043;font-weight:600}
.box{border:1px solid #dadce0;border-radius:6px;padding:8px 12px;margin:8px 0}
pre{background:#f8f9fa;padding:8px;overflow:auto;max-width:100%}
form.inline{display:inline}input,select{margin-right:6px}
button.danger{background:#c5221f;color:#fff;border:0;padding:6px 12px;border-radius:4px}
</style></head><body>
<header><strong>backbone {{.Env}}</strong>
<a href="/console/" {{if eq .Nav "health"}}class="on"{{end}}>Health</a>
<a href="/console/records" {{if eq .Nav "records"}}class="on"{{end}}>Records</a>
<a href="/console/dead-letters" {{if eq .Nav "dead-letters"}}class="on"{{end}}>Dead letters</a>
<span class="who" id="who">{{if .Caller.Identity}}{{.Caller.Identity}}{{else}}anonymous{{end}} · {{if .Caller.Operator}}operator{{else}}read-only{{end}}</span>
</header><main>{{end}}
{{define "bottom"}}</main></body></html>{{end}}
`

const healthTmpl = `{{define "health"}}{{template "top" .}}{{with .Data}}
<h1 id="state">{{if .Problems}}<span class="bad">Unhealthy</span>{{else}}<span class="ok">Healthy</span>{{end}}</h1>
<p>As of {{.Snap.At.Format "2006-01-02 15:04:05"}} UTC; this page refreshes itself.</p>
{{if .Problems}}<ul id="problems">{{range .Problems}}<li class="bad">{{.}}</li>{{end}}</ul>{{end}}
<div class="box"><h2>Last hour</h2>{{.Chart}}</div>
<div class="box" id="outbox"><h2>Outbox</h2>
<p><span id="outbox-unprocessed">{{.Snap.Outbox.Unprocessed}}</span> unprocessed{{if .Snap.Outbox.Oldest}}, the oldest {{call .Age .Snap.Outbox.OldestAgeSeconds}} old{{end}}.</p></div>
<div class="box" id="dead-letters"><h2>Dead letters</h2>
<p><span id="dl-hour">{{.Snap.DeadLetters.LastHour}}</span> in the last hour, <span id="dl-day">{{.Snap.DeadLetters.LastDay}}</span> in the last day.</p>
{{if .Snap.DeadLetters.ByReason}}<table><tr><th>Stage</th><th>Reason</th><th>Last hour</th><th>Last day</th></tr>
{{range .Snap.DeadLetters.ByReason}}<tr><td>{{.Stage}}</td><td><a href="/console/dead-letters?stage={{.Stage}}&amp;reason={{.Reason}}">{{.Reason}}</a></td><td class="num">{{.LastHour}}</td><td class="num">{{.LastDay}}</td></tr>{{end}}</table>{{end}}</div>
<div class="box"><h2>Targets</h2><table id="targets"><tr><th>Target</th><th>Last delivered</th><th>Window</th><th>Delivered</th><th>Failed</th><th>Refused</th><th>Stale</th><th>Skipped echo</th><th>Sending</th><th>Failure rate</th></tr>
{{range .Snap.Targets}}<tr id="target-{{.Name}}"><td>{{.Name}}</td><td>{{if .LastDelivered}}{{call $.Data.Age .LastDeliveredAge}} ago{{else}}none in {{.LookBack}}{{end}}</td><td>{{.Window}}</td>
<td class="num">{{.Delivered}}</td><td class="num">{{.Failed}}</td><td class="num">{{.Refused}}</td><td class="num">{{.Stale}}</td><td class="num">{{.SkippedEcho}}</td><td class="num">{{.Sending}}</td><td class="num rate">{{percent .FailureRate}}%</td></tr>{{end}}</table></div>
<div class="box"><h2>Not converged</h2>
<p><span id="unconverged">{{.Snap.Unconverged.Count}}</span> record(s) some target lacks fields of (checked {{.Snap.Unconverged.Checked}} with activity in the last {{.Snap.Unconverged.Window}}{{if .Snap.Unconverged.Capped}}, capped at the newest {{.Snap.Unconverged.Cap}}{{end}}).</p>
{{if .Snap.Unconverged.Records}}<table><tr><th>Record</th><th>For</th><th>Missing</th></tr>{{range .Snap.Unconverged.Records}}
<tr><td><a href="/console/records?q={{.RecordType}}:{{.RecordID}}">{{.RecordType}}:{{.RecordID}}</a></td><td>{{call $.Data.Age .AgeSeconds}}</td><td>{{range $t, $f := .Missing}}{{$t}}: {{join $f ", "}}<br>{{end}}</td></tr>{{end}}</table>{{end}}</div>
<div class="box"><h2>Subscriptions</h2><table id="subscriptions"><tr><th>Subscription</th><th>Function</th><th>Backlog</th><th>Oldest unacked</th><th></th></tr>
{{range .Snap.Subscriptions}}<tr><td>{{.Name}}</td><td>{{.Function}}</td><td class="num">{{if .Backlog}}{{.Backlog}}{{else}}n/a{{end}}</td><td>{{if .OldestUnackedAgeSeconds}}{{call $.Data.Age .OldestUnackedAgeSeconds}}{{else}}n/a{{end}}</td><td>{{.Note}}</td></tr>{{end}}</table></div>
{{end}}{{template "bottom" .}}{{end}}
`

const recordsTmpl = `{{define "records"}}{{template "top" .}}{{with .Data}}
<form method="get" action="/console/records"><label>Record <input name="q" id="q" size="48" placeholder="customer:C-1001" value="{{.Query}}"></label><button id="search">Show timeline</button></form>
{{if .Entries}}<h1 id="record">{{.Type}}:{{.ID}} — version {{.Version}}</h1>
<table id="timeline"><tr><th>Time</th><th>Stage</th><th>Outcome</th><th>Version</th><th>Source</th><th>Event</th><th>Fields sent</th><th>Detail</th></tr>
{{range .Entries}}<tr class="stage-{{.Stage}} outcome-{{.Outcome}}"><td>{{.Time}}</td><td>{{.Stage}}</td><td>{{.Outcome}}</td><td>{{if .Version}}v{{.Version}}{{end}}</td><td>{{.Source}}</td>
<td title="{{.EventID}}">{{short .EventID}}</td><td class="fields-sent">{{join .FieldsSent ", "}}</td>
<td>{{if .Changes}}<code>{{printf "%s" .Changes}}</code> {{end}}{{if .FieldsReported}}reported: {{join .FieldsReported ", "}} {{end}}{{.Detail}}{{if eq .Stage "dead_letter"}} <a href="/console/dead-letters/{{escape .MessageID}}">open</a>{{end}}</td></tr>{{end}}</table>
{{end}}{{end}}{{template "bottom" .}}{{end}}
`

const deadLettersTmpl = `{{define "dead-letters"}}{{template "top" .}}{{with .Data}}
<form method="get" action="/console/dead-letters" id="filter">
<select name="stage" id="stage"><option value="">any stage</option>{{range .Stages}}<option value="{{.}}" {{if eq . $.Data.Filter.Stage}}selected{{end}}>{{.}}</option>{{end}}</select>
<input name="reason" id="reason" placeholder="reason, e.g. http_503" value="{{.Filter.Reason}}">
<input name="record" id="record" placeholder="customer:C-1001" value="{{.Filter.Record}}">
<input name="since" id="since" placeholder="since: 24h or RFC 3339" value="{{.Filter.Since}}">
<input name="until" id="until" placeholder="until" value="{{.Filter.Until}}">
<input name="limit" id="limit" size="4" placeholder="100" value="{{.Filter.Limit}}">
<button id="apply">Filter</button></form>
<p><span id="count">{{len .Letters}}</span> dead letter(s){{if .More}}, the newest; more match{{end}}.
{{if and .Letters .Filter.Set}} <a id="redrive-filter" href="/console/redrive?{{query .Filter.Values}}">Preview a redrive of this filter</a>{{end}}</p>
<table id="letters"><tr><th>Archived</th><th>Message</th><th>Stage</th><th>Reason</th><th>Record</th><th>Attempts</th><th>Detail</th></tr>
{{range .Letters}}<tr><td>{{.ArchivedAt.UTC.Format "2006-01-02 15:04:05"}}</td><td><a class="letter" href="/console/dead-letters/{{escape .MessageID}}@{{.ContentDigest}}">{{.MessageID}}</a></td>
<td>{{.Stage}}</td><td>{{.Reason}}</td><td>{{with .Record}}<a href="/console/records?q={{.}}">{{.}}</a>{{end}}</td><td class="num">{{.DeliveryAttempts}}</td><td>{{.Detail}}</td></tr>{{end}}</table>
{{end}}{{template "bottom" .}}{{end}}
`

const deadLetterTmpl = `{{define "dead-letter"}}{{template "top" .}}{{with .Data}}{{with .View}}
<h1 id="letter">Dead letter {{.MessageID}}</h1>
<table><tr><th>Archived</th><td>{{.ArchivedAt.UTC.Format "2006-01-02 15:04:05.000000"}}</td></tr>
<tr><th>Stage / reason</th><td id="letter-reason">{{.Stage}} / {{.Reason}}</td></tr>
<tr><th>Record</th><td>{{with .Record}}<a href="/console/records?q={{.}}">{{.}}</a>{{end}}</td></tr>
<tr><th>Subscription</th><td>{{.Subscription}} ({{.DeliveryAttempts}} attempts)</td></tr>
<tr><th>Digest</th><td>{{.ContentDigest}}</td></tr><tr><th>Detail</th><td>{{.Detail}}</td></tr>
<tr><th>Earlier redrives</th><td id="redrives">{{len .Redrives}}{{range .Redrives}}<br>{{.At.UTC.Format "2006-01-02 15:04:05"}}: {{.Detail}}{{end}}</td></tr></table>
{{if .DecodeError}}<p class="bad">Not an error message: {{.DecodeError}}</p>{{end}}
{{end}}<p><a id="redrive-one" href="/console/redrive?ref={{.Ref}}">Preview a redrive of this letter</a></p>
<h2>Error message</h2><pre>{{.JSON}}</pre>
{{end}}{{template "bottom" .}}{{end}}
`

const redriveTmpl = `{{define "redrive"}}{{template "top" .}}{{with .Data}}
{{if .Done}}<h1 id="done">Redrive done</h1><p id="result">{{.Result.Redriven}} redriven, {{.Result.Skipped}} skipped, {{.Result.Failed}} failed.</p>
{{if .Records}}<p>Follow them: {{range .Records}}<a class="record" href="/console/records?q={{.}}">{{.}}</a> {{end}}</p>{{end}}
{{else}}<h1>Redrive preview (dry run)</h1><p id="preview">{{.Result.WouldRedrive}} would be redriven, {{.Result.Skipped}} skipped, {{.Result.Failed}} failed. Nothing has been published.</p>{{end}}
<table id="outcomes"><tr><th>Message</th><th>Stage / reason</th><th>Record</th><th>Action</th><th>Redrive #</th><th>Before</th><th>Note</th></tr>
{{range .Outcomes}}<tr><td>{{.MessageID}}</td><td>{{.Stage}} / {{.Reason}}</td><td>{{.Record}}</td><td>{{.Action}}</td><td>{{.Redrive}}</td><td>{{.PreviousRedrives}}</td><td>{{.Error}}{{if .PublishedID}}published as {{.PublishedID}}{{end}}</td></tr>{{end}}</table>
{{if not .Done}}{{if .CanRun}}<form method="post" action="/console/redrive" id="confirm">
{{range .Refs}}<input type="hidden" name="ref" value="{{.}}">{{end}}<input type="hidden" name="token" value="{{.Token}}">
<p>Redrive puts these dead letters back on the error topic, audited with your identity. Confirm within 10 minutes.</p>
<button class="danger" id="confirm-redrive">Confirm redrive of {{.Result.WouldRedrive}}</button></form>{{else}}<p id="why">{{.Why}}</p>{{end}}{{end}}
{{end}}{{template "bottom" .}}{{end}}
`

const problemTmpl = `{{define "problem"}}{{template "top" .}}{{with .Data}}<h1 id="problem" class="bad">{{.Heading}}</h1><p id="problem-message">{{.Message}}</p>
<p><a href="/console/">Back to health</a></p>{{end}}{{template "bottom" .}}{{end}}
`
