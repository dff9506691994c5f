package report

import "html/template"

// pageTemplate is the page: inline CSS, no script, nothing to fetch (its
// Content-Security-Policy forbids any load: a browser says so if one
// creeps in).
var pageTemplate = template.Must(template.New("report").Parse(`<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; style-src 'unsafe-inline'">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{{.Title}}</title>
<style>
body { font-family: sans-serif; margin: 1.5em auto; max-width: 1000px; padding: 0 1em; color: #222; }
h1 { font-size: 1.5em; margin-bottom: .2em; }
h2 { font-size: 1.3em; margin-top: 2em; border-bottom: 2px solid #888; }
h3 { font-size: 1.1em; margin-top: 1.6em; border-bottom: 1px solid #ccc; }
.source { color: #666; margin-top: 0; }
figure { margin: 1.5em 0; }
figure svg { width: 100%; height: auto; display: block; }
figcaption { font-size: .85em; color: #555; }
table { border-collapse: collapse; font-size: .85em; width: 100%; }
th, td { border: 1px solid #ddd; padding: .25em .5em; text-align: left; vertical-align: top; }
th { background: #f4f4f4; }
td.num { text-align: right; white-space: nowrap; }
tr.changed td { background: #fff4e5; }
dl.summary { display: grid; grid-template-columns: max-content auto; gap: .2em 1em; }
dl.summary dt { font-weight: bold; }
dl.summary dd { margin: 0; }
.warn { color: #a33; }
</style>
</head>
<body>
<h1>{{.Title}}</h1>
{{with .Source}}<p class="source">{{.}}</p>{{end}}
{{$many := gt (len .Sections) 1}}
{{range .Sections}}<section>
{{if or $many .Name}}<h2 class="section">{{or .Name .Model}}</h2>{{end}}
{{if .Missing}}<p class="warn">{{.Missing}}</p>{{else}}
<dl class="summary">
<dt>Model</dt><dd>{{.Model}}</dd>
<dt>History</dt><dd>{{.From}} to {{.To}} UTC ({{.Span}}, {{.Periods}} periods)</dd>
<dt>Now</dt><dd>{{.Mode}}, {{.State}}</dd>
<dt>Efficiency</dt><dd>{{.Efficiency}}</dd>
<dt>Records</dt><dd>{{.Records}} read, {{.Lost}} lost by the kernel</dd>
</dl>
{{range .Damaged}}<p class="warn">Damaged history skipped: {{.}}</p>{{end}}
{{range .Plots}}
<figure class="plot" title="{{.Title}}">
{{.SVG}}
<figcaption>{{.Caption}}</figcaption>
</figure>
{{end}}
<h3>Mode changes</h3>
{{if .Changes}}<table class="mode-changes">
<tr><th>time (UTC)</th><th>from</th><th>to</th><th>reason</th></tr>
{{range .Changes}}<tr><td class="num">{{.Time}}</td><td>{{.From}}</td><td>{{.To}}</td><td>{{.Reason}}</td></tr>
{{end}}</table>{{else}}<p>None: the model stayed in {{.Mode}}.</p>{{end}}
<h3>Decisions of the mode controller</h3>
<p>Consecutive periods that decided alike are one row, with the last period's reason.</p>
<table class="decisions">
<tr><th>from (UTC)</th><th>to</th><th>periods</th><th>decision</th><th>reason</th></tr>
{{range .Decisions}}<tr{{if .Changed}} class="changed"{{end}}><td class="num">{{.First}}</td><td class="num">{{.Last}}</td><td class="num">{{.Periods}}</td><td>{{.Decision}}</td><td>{{.Reason}}</td></tr>
{{end}}</table>
<h3>Keys</h3>
{{if .Keys}}<p>The recommendation map at {{.KeysTime}} UTC, with the outcomes fed back for each key since the daemon started (n · mean reward per arm){{if .KeysLeft}}; {{.KeysLeft}} keys with fewer outcomes are not shown{{end}}.</p>
<table class="keys">
<tr><th>key</th><th>value</th><th>by</th>{{range .KeyArms}}<th>{{.}}</th>{{end}}</tr>
{{range .Keys}}<tr><td>{{.Key}}</td><td>{{.Value}}</td><td>{{.By}}</td>{{range .Arms}}<td class="num">{{.}}</td>{{end}}</tr>
{{end}}</table>{{else if .KeysSaved}}<p>The recommendation map was empty at {{.KeysTime}} UTC.</p>{{else}}<p>No keys saved yet.</p>{{end}}
{{end}}</section>
{{end}}</body>
</html>
`))
