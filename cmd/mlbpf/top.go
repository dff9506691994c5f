package main

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"slices"
	"strings"
	"sync"
	"text/tabwriter"
	"time"

	tea "github.com/charmbracelet/bubbletea"
	"github.com/charmbracelet/lipgloss"
	"github.com/charmbracelet/x/term"

	"github.com/mlbpf/mlbpf/agent"
	"github.com/mlbpf/mlbpf/config"
	"github.com/mlbpf/mlbpf/daemon"
	"github.com/mlbpf/mlbpf/loader"
	"github.com/mlbpf/mlbpf/model"
)

func cmdTop(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("top", "top [flags] [SUBSYSTEM/MODEL...]", `
A live view of every pinned model, or the ones named, refreshed every
period: its state, mode and max_mode, lease, the decisions each arm took
and their rate, the records the daemon read and those lost, and the
efficiency estimate with its confidence interval, charted over the last
minutes (top keeps its own samples, from when it started). For the
selected model it also lists its keys (prefixes, devices, ...) with the
value each gets and the evidence behind it, as 'mlbpf recommendations'.

Keys: up/down (or j/k, tab) select a model; e, l, c, r set its mode to
emergency, learning, collaboration, recommendation, once confirmed with y:
carried out as 'mlbpf mode' does (through the daemon, which answers once
the kernel holds the mode, or refuses and says why: the answer is shown);
q or Ctrl-C quits, and gives the terminal back as it was.

When stdout is not a terminal, or with -n, top prints a plain frame every
period (every model with its arms, chart and first keys), -n frames or
until interrupted; with -o json, one JSON object a line per frame.`, `
  mlbpf top
  mlbpf top tcp/cc --every 5s --history 30m
  mlbpf top -n 1                        # one plain frame, as when piped
  mlbpf top -o json -n 10 | jq .models[0].arms`, stdout, stderr)
	p := addPaths(fs)
	out := addOutput(fs, "text")
	every := fs.Duration("every", 0, "refresh period (default: the configuration's interval)")
	history := fs.Duration("history", 5*time.Minute, "how far back the efficiency chart goes")
	frames := fs.Int("n", 0, "print this many plain frames, and stop (0: the live view on a terminal, until q, Ctrl-C or SIGTERM)")
	keys := fs.Int("keys", 10, "keys shown per model in plain text (the terminal view shows what fits)")
	if err := fs.parse(args); err != nil {
		return err
	}
	if err := out.check(); err != nil {
		return err
	}
	if *history <= 0 || *frames < 0 || *keys < 0 || *every < 0 {
		return fmt.Errorf("--history must be positive, --every, -n and --keys not negative")
	}
	for _, a := range fs.Args() {
		if _, _, err := daemon.SplitName(a); err != nil {
			return err
		}
	}
	cfg, err := p.load()
	if err != nil {
		return err
	}
	if err := loader.CheckPrivileges(); err != nil {
		return err
	}
	if list, _, err := readStatus(p, fs.Args(), io.Discard); list == nil && err != nil {
		return err // a model named that is not pinned
	}
	if *every == 0 {
		*every = max(cfg.Interval, 100*time.Millisecond)
	}
	c := &topCollector{p: p, cfg: cfg, names: fs.Args(), history: *history, rings: map[string][]effSample{}, prev: map[string]topPrev{}}
	defer c.close()
	if f, ok := stdout.(*os.File); ok && !out.json() && *frames == 0 && term.IsTerminal(f.Fd()) {
		own := *p // carry loads its own
		ops := &operatorFlags{p: &own, out: &output{format: "text"}, wait: 5 * time.Second}
		return runTopTerminal(ctx, c, ops, f, *every)
	}
	return runTopPlain(ctx, c, out.json(), stdout, *every, *frames, *keys)
}

// keysTimeout bounds the wait for the daemon's answer on a model's keys.
const keysTimeout = 3 * time.Second

// topFrame is one frame of 'mlbpf top'; -o json writes one a line.
type topFrame struct {
	Time time.Time `json:"time"`
	// DaemonPID is the running daemon's pid: 0 if none, -1 if unknown.
	DaemonPID int        `json:"daemon_pid"`
	Models    []topModel `json:"models"`
	// Error says what could not be read, if anything.
	Error string `json:"error,omitempty"`
}

// topModel is one model in a frame: what 'mlbpf status -o json' says of
// it, with rates and its keys.
type topModel struct {
	modelStatus
	// ArmRates are the decisions per second of each arm since the
	// previous frame, RecordRate the records the daemon read per second;
	// absent in the first frame.
	ArmRates   map[string]float64 `json:"arm_rates,omitempty"`
	RecordRate *float64           `json:"records_per_second,omitempty"`
	// Keys are the model's keys, as 'mlbpf recommendations' lists them
	// (the terminal view reads them for the selected model only);
	// KeysFrom says from where, KeysError why they could not be read.
	Keys      []agent.Entry `json:"keys,omitempty"`
	KeysFrom  string        `json:"keys_from,omitempty"`
	KeysError string        `json:"keys_error,omitempty"`
	// history is top's own samples of the efficiency, oldest first.
	history []effSample
}

// effSample is one sample of a model's efficiency: the gain over the
// default with its interval, in percent of the default's mean reward
// (raw when that mean is 0).
type effSample struct {
	t                   time.Time
	effect, lower, high float64
}

// topPrev is what a model's rates are measured from: the previous
// frame's arms, the previous publication of the daemon's evidence.
type topPrev struct {
	t          time.Time
	arms       map[string]uint64
	updated    time.Time
	records    uint64
	recordRate *float64
}

// topCollector reads the frames, one at a time.
type topCollector struct {
	mu      sync.Mutex // held by collect and close
	p       *paths
	cfg     *config.Config
	names   []string
	history time.Duration
	rings   map[string][]effSample
	prev    map[string]topPrev
	client  *agent.Client
	pid     int // of the daemon client talks to
}

func (c *topCollector) close() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.hangUp()
}

// hangUp closes the connection to the daemon, if any.
func (c *topCollector) hangUp() {
	if c.client != nil {
		c.client.Close()
		c.client = nil
	}
}

// collect reads a frame; keysOf says which models' keys to read.
func (c *topCollector) collect(ctx context.Context, keysOf func(name string) bool) topFrame {
	c.mu.Lock()
	defer c.mu.Unlock()
	now := time.Now()
	var warn bytes.Buffer
	list, pid, err := readStatus(c.p, c.names, &warn)
	f := topFrame{Time: now, DaemonPID: pid, Models: make([]topModel, 0, len(list))}
	var errs []string
	if err != nil {
		errs = append(errs, err.Error())
	}
	if w := strings.TrimSpace(warn.String()); w != "" {
		errs = append(errs, w)
	}
	for _, s := range list {
		m := topModel{modelStatus: s}
		prev, seen := c.prev[s.Model]
		next := topPrev{t: now, arms: s.Arms, updated: prev.updated, records: prev.records, recordRate: prev.recordRate}
		if dt := now.Sub(prev.t).Seconds(); seen && dt > 0 {
			m.ArmRates = map[string]float64{}
			for a, n := range s.Arms {
				if n >= prev.arms[a] {
					m.ArmRates[a] = float64(n-prev.arms[a]) / dt
				}
			}
		}
		// The daemon publishes its evidence every few seconds: the
		// records' rate is measured between two publications.
		if ev := s.Daemon; ev != nil && !ev.Updated.Equal(prev.updated) {
			if dt := ev.Updated.Sub(prev.updated).Seconds(); !prev.updated.IsZero() && dt > 0 && ev.Records >= prev.records {
				r := float64(ev.Records-prev.records) / dt
				next.recordRate = &r
			}
			next.updated, next.records = ev.Updated, ev.Records
		}
		m.RecordRate = next.recordRate
		c.prev[s.Model] = next
		ev := s.Daemon
		if !s.Live {
			ev = nil // a stopped daemon's last word, not a sample
		}
		m.history = c.sample(s.Model, ev, now)
		if keysOf(s.Model) {
			m.Keys, m.KeysFrom, err = c.keys(ctx, pid, s.Model)
			if err != nil {
				m.KeysError = err.Error()
			}
		}
		f.Models = append(f.Models, m)
	}
	f.Error = strings.Join(errs, "; ")
	return f
}

// sample adds the model's efficiency to its ring and returns the ring.
func (c *topCollector) sample(name string, ev *daemon.Evidence, now time.Time) []effSample {
	ring := c.rings[name]
	drop := 0
	for drop < len(ring) && now.Sub(ring[drop].t) > c.history {
		drop++
	}
	ring = ring[drop:]
	if ev != nil && ev.Efficiency != nil && ev.Efficiency.N >= 2 && ev.Efficiency.BaselineN >= 2 {
		e := ev.Efficiency
		scale := 1.0
		if e.Baseline != 0 {
			scale = 100 / abs(e.Baseline)
		}
		ring = append(ring, effSample{t: now, effect: e.Effect * scale, lower: e.Lower * scale, high: e.Upper * scale})
	}
	c.rings[name] = ring
	return ring
}

// keys lists a model's keys: from the daemon when one runs (the
// connection is kept from frame to frame), else from the pins. A daemon
// that does not answer within keysTimeout is hung up on, and tried again
// the next frame.
func (c *topCollector) keys(ctx context.Context, pid int, name string) ([]agent.Entry, string, error) {
	ctx, cancel := context.WithTimeout(ctx, keysTimeout)
	defer cancel()
	if pid == 0 {
		c.hangUp()
		k, err := daemon.PinnedKeys(c.cfg, c.p.pinRoot, name)
		if err != nil {
			return nil, "", err
		}
		defer k.Close()
		pes, err := k.Entries()
		return daemon.Entries(pes), "the pinned maps", err
	}
	if c.client != nil && c.pid != pid {
		c.hangUp() // another daemon
	}
	if c.client != nil {
		select {
		case <-c.client.Done():
			c.hangUp()
		default:
		}
	}
	if c.client == nil {
		cl, h, err := dialDaemon(ctx, c.p, pid, "mlbpf top", keysTimeout/2)
		if err != nil {
			return nil, "", err
		}
		c.client, c.pid = cl, pid
		if pid < 0 {
			c.pid = h.PID
		}
	}
	es, err := c.client.Recommendations(ctx, name)
	if err != nil {
		var re *agent.RemoteError
		if !errors.As(err, &re) {
			c.hangUp() // redial next frame
		}
		return nil, "", unwrapRemote(err)
	}
	return es, fmt.Sprintf("the daemon (pid %d)", c.pid), nil
}

// runTopPlain prints frames as text or JSON lines.
func runTopPlain(ctx context.Context, c *topCollector, asJSON bool, stdout io.Writer, every time.Duration, frames, keys int) error {
	all := func(string) bool { return true }
	enc := json.NewEncoder(stdout)
	for i := 1; ; i++ {
		f := c.collect(ctx, all)
		if asJSON {
			if err := enc.Encode(f); err != nil {
				return err
			}
		} else {
			v := topView{frame: f, every: every, history: c.history}
			if i > 1 {
				fmt.Fprintln(stdout)
			}
			if _, err := io.WriteString(stdout, v.plain(keys)); err != nil {
				return err
			}
		}
		if frames > 0 && i >= frames {
			return nil
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(every):
		}
	}
}

// runTopTerminal runs the live view on the terminal f.
func runTopTerminal(ctx context.Context, c *topCollector, ops *operatorFlags, f *os.File, every time.Duration) error {
	ui := &topUI{ctx: ctx, c: c, ops: ops, view: topView{every: every, history: c.history, width: 80, height: 24}}
	// SIGINT and SIGTERM end ctx (see main), which quits the program as
	// q does. Neither bubbletea's signal handler nor its WithContext:
	// the handler races ctx and can block the shutdown forever (it sends
	// on a channel nobody reads once the event loop ended), and a
	// program ended by its context closes the terminal under its own
	// input reader (a data race the race detector reports).
	prog := tea.NewProgram(ui, tea.WithOutput(f), tea.WithAltScreen(), tea.WithoutSignalHandler())
	done := make(chan struct{})
	defer close(done)
	go func() {
		select {
		case <-ctx.Done():
			prog.Quit()
		case <-done:
		}
	}()
	if _, err := prog.Run(); err != nil {
		return fmt.Errorf("running the terminal view: %w (try 'mlbpf top | cat' for plain text)", err)
	}
	return nil
}

// topUI is the terminal view's bubbletea model.
type topUI struct {
	ctx  context.Context
	c    *topCollector
	ops  *operatorFlags
	view topView
	// confirm is the mode waiting for the operator's y, busy is set
	// while a mode change is carried out.
	confirm string
	busy    bool
}

type (
	topFrameMsg   topFrame
	topTickMsg    struct{}
	topControlMsg struct {
		text string
		err  error
	}
)

func (u *topUI) Init() tea.Cmd { return u.fetch() }

// fetch reads the next frame, the selected model's keys with it. Only
// one fetch runs at a time: the next is asked for once this one is in.
func (u *topUI) fetch() tea.Cmd {
	sel := u.view.selected
	return func() tea.Msg {
		return topFrameMsg(u.c.collect(u.ctx, func(name string) bool { return sel == "" || name == sel }))
	}
}

// modeKeys are the keys that set a mode.
var modeKeys = map[string]model.Mode{"e": model.ModeEmergency, "l": model.ModeLearning, "c": model.ModeCollaboration, "r": model.ModeRecommendation}

func (u *topUI) Update(msg tea.Msg) (tea.Model, tea.Cmd) {
	v := &u.view
	switch msg := msg.(type) {
	case tea.WindowSizeMsg:
		v.width, v.height = msg.Width, msg.Height
	case topFrameMsg:
		v.frame = topFrame(msg)
		if v.index() < 0 && len(v.frame.Models) > 0 {
			v.selected = v.frame.Models[0].Model
		}
		return u, tea.Tick(v.every, func(time.Time) tea.Msg { return topTickMsg{} })
	case topTickMsg:
		return u, u.fetch()
	case topControlMsg:
		u.busy = false
		v.note, v.noteErr = msg.text, msg.err != nil
		if msg.err != nil {
			v.note = msg.err.Error()
		}
	case tea.KeyMsg:
		key := msg.String()
		if key == "ctrl+c" || key == "q" {
			return u, tea.Quit
		}
		if u.confirm != "" {
			mode := u.confirm
			u.confirm, v.prompt = "", ""
			if key != "y" && key != "Y" {
				v.note, v.noteErr = "mode "+mode+" not set", false
				return u, nil
			}
			u.busy = true
			v.note, v.noteErr = fmt.Sprintf("setting %s to %s ...", v.selected, strings.ToUpper(mode)), false
			return u, u.setMode(v.selected, mode)
		}
		switch key {
		case "up", "k", "shift+tab":
			v.move(-1)
		case "down", "j", "tab":
			v.move(1)
		default:
			if m, ok := modeKeys[key]; ok && v.selected != "" && !u.busy {
				u.confirm = strings.ToLower(m.String())
				v.prompt = fmt.Sprintf("set %s to %s? y to confirm, any other key to cancel", v.selected, m)
			}
		}
	}
	return u, nil
}

// setMode carries a mode change out as 'mlbpf mode' does.
func (u *topUI) setMode(name, mode string) tea.Cmd {
	return func() tea.Msg {
		req := agent.ControlRequest{Model: name, Action: agent.ActionMode, Mode: mode}
		res, pid, err := u.ops.carry(u.ctx, req)
		if err != nil {
			return topControlMsg{err: fmt.Errorf("mode %s refused: %w", mode, err)}
		}
		var b strings.Builder
		if err := u.ops.report(&b, req, res, pid); err != nil {
			return topControlMsg{err: err}
		}
		return topControlMsg{text: strings.Join(strings.Fields(b.String()), " ")}
	}
}

func (u *topUI) View() string { return u.view.terminal() }

// topView renders frames.
type topView struct {
	frame         topFrame
	every         time.Duration
	history       time.Duration
	width, height int
	selected      string
	// prompt asks for a confirmation; note is the last mode change's
	// outcome, noteErr if it was refused.
	prompt, note string
	noteErr      bool
}

var (
	topTitle    = lipgloss.NewStyle().Bold(true)
	topSelected = lipgloss.NewStyle().Reverse(true)
	topRefused  = lipgloss.NewStyle().Foreground(lipgloss.Color("9")).Bold(true)
	topAsk      = lipgloss.NewStyle().Foreground(lipgloss.Color("11")).Bold(true)
	topDim      = lipgloss.NewStyle().Faint(true)
)

func (v *topView) index() int {
	return slices.IndexFunc(v.frame.Models, func(m topModel) bool { return m.Model == v.selected })
}

func (v *topView) move(d int) {
	n := len(v.frame.Models)
	if n == 0 {
		return
	}
	i := (max(v.index(), 0) + d + n) % n
	v.selected = v.frame.Models[i].Model
}

// header is the frame's first line.
func (v *topView) header() string {
	d := "daemon not running (the kernel follows no model whose lease expired)"
	switch pid := v.frame.DaemonPID; {
	case pid > 0:
		d = fmt.Sprintf("daemon pid %d", pid)
	case pid < 0:
		d = "daemon running"
	}
	return fmt.Sprintf("mlbpf top - %s - %s - every %s", v.frame.Time.Format(time.TimeOnly), d, shortDuration(v.every))
}

// table is the models' table: a heading, then two lines a model (its
// figures, then the decisions each arm took, with their rate).
func (v *topView) table(spark int) []string {
	var b strings.Builder
	tw := tabwriter.NewWriter(&b, 0, 0, 2, ' ', 0)
	fmt.Fprintf(tw, "  MODEL\tSTATE\tMODE\tMAX\tLEASE\tEFFICIENCY\t%s\tRECORDS\tLOST\n", chartSpan(v.history))
	for _, m := range v.frame.Models {
		maxMode, records, eff := "-", "-", "-"
		if ev := m.Daemon; ev != nil {
			maxMode, records, eff = ev.MaxMode, fmt.Sprint(ev.Records), shortEfficiency(ev)
			if m.RecordRate != nil {
				records += fmt.Sprintf(" (%s/s)", rate(*m.RecordRate))
			}
			if !m.Live {
				records += " (last run)"
			}
		}
		fmt.Fprintf(tw, "  %s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%d\n", m.Model, m.State, m.Mode, maxMode,
			formatLease(m.LeaseLeft, nil), eff, sparkline(m.history, v.history, v.frame.Time, spark), records, m.Lost)
	}
	tw.Flush()
	rows := strings.Split(strings.TrimSuffix(b.String(), "\n"), "\n")
	lines := []string{rows[0]}
	for i, m := range v.frame.Models {
		lines = append(lines, rows[i+1], "    decisions: "+armRates(m.Arms, m.ArmRates))
	}
	return lines
}

// shortEfficiency is the efficiency for the table: "+31.2% [+29.0, +33.4]".
func shortEfficiency(ev *daemon.Evidence) string {
	e := ev.Efficiency
	if e == nil || e.N < 2 || e.BaselineN < 2 {
		return "no evidence yet"
	}
	if e.Baseline == 0 {
		return fmt.Sprintf("%+.3g [%+.3g, %+.3g]", e.Effect, e.Lower, e.Upper)
	}
	b := 100 / abs(e.Baseline)
	return fmt.Sprintf("%+.1f%% [%+.1f, %+.1f]", e.Effect*b, e.Lower*b, e.Upper*b)
}

// detail is a model's detail: arms, efficiency chart, decision, keys.
func (v *topView) detail(m topModel, chartWidth, maxKeys int) []string {
	lines := []string{topTitle.Render(m.Model) + fmt.Sprintf(" - %s %s, generation %d, collab %d‰, holdout %d‰", m.State, m.Mode, m.Generation, m.Collab, m.Holdout)}
	arms := []string{fmt.Sprintf("%-9s %12s %8s", "ARM", "DECISIONS", "PER S")}
	for i := range model.ArmCount {
		a := model.Arm(i).String()
		r := "-"
		if m.ArmRates != nil {
			r = rate(m.ArmRates[a])
		}
		arms = append(arms, fmt.Sprintf("%-9s %12d %8s", a, m.Arms[a], r))
	}
	chart := effChart(m.history, v.history, v.frame.Time, chartWidth, len(arms)-1)
	for i, a := range arms {
		line := "  " + a
		if i == 0 {
			line += "   efficiency: gain over the default, and its interval (" + chartSpan(v.history) + ")"
		} else if i-1 < len(chart) {
			line += "   " + chart[i-1]
		}
		lines = append(lines, line)
	}
	if ev := m.Daemon; ev != nil {
		notes := append([]string{fmt.Sprintf("records %d (%d corrupted), lost %d in the kernel, %d dropped past a portion's cap, %d portions partial",
			ev.Records, ev.Corrupted, ev.Lost, ev.Dropped, ev.PartialPortions)}, evidenceNotes(m.Model, ev)...)
		for _, n := range notes {
			lines = append(lines, "  "+n)
		}
	}
	switch {
	case m.KeysError != "":
		lines = append(lines, "  keys: "+m.KeysError)
	case m.KeysFrom == "":
	case len(m.Keys) == 0:
		lines = append(lines, "  no keys, from "+m.KeysFrom)
	default:
		lines = append(lines, fmt.Sprintf("  %d keys, from %s:", len(m.Keys), m.KeysFrom))
		var b strings.Builder
		tw := tabwriter.NewWriter(&b, 0, 0, 2, ' ', 0)
		fmt.Fprintln(tw, "KEY\tVALUE\tBY\tWRITTEN\tGEN\tEVIDENCE (arm n mean_reward)")
		for _, e := range m.Keys[:min(len(m.Keys), maxKeys)] {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d\t%s\n", e.Key, e.Value, cmp.Or(e.By, "-"), cmp.Or(e.Written, "-"), e.Generation, evidence(e.Evidence))
		}
		tw.Flush()
		for _, l := range strings.Split(strings.TrimSuffix(b.String(), "\n"), "\n") {
			lines = append(lines, "    "+l)
		}
		if len(m.Keys) > maxKeys {
			lines = append(lines, fmt.Sprintf("    ... and %d more ('mlbpf recommendations %s')", len(m.Keys)-maxKeys, m.Model))
		}
	}
	return lines
}

// plain is a frame as plain text: every model, with its detail.
func (v *topView) plain(maxKeys int) string {
	lines := []string{v.header()}
	if v.frame.Error != "" {
		lines = append(lines, "error: "+v.frame.Error)
	}
	if len(v.frame.Models) == 0 {
		lines = append(lines, "no models pinned (start the daemon: mlbpf run)")
	} else {
		lines = append(lines, v.table(20)...)
	}
	for _, m := range v.frame.Models {
		lines = append(lines, "")
		lines = append(lines, v.detail(m, 40, maxKeys)...)
	}
	return stripANSI(strings.Join(lines, "\n")) + "\n"
}

// terminal is a frame for the live view, fitted to the terminal.
func (v *topView) terminal() string {
	lines := []string{topTitle.Render(v.header())}
	if v.frame.Time.IsZero() {
		lines = append(lines, "reading the pins ...")
	}
	if v.frame.Error != "" {
		lines = append(lines, topRefused.Render("error: "+v.frame.Error))
	}
	foot := []string{topDim.Render("up/down: select a model   e/l/c/r: set its mode (emergency, learning, collaboration, recommendation)   q: quit")}
	wrap := lipgloss.NewStyle().Width(max(v.width, 20))
	switch {
	case v.prompt != "":
		foot = append(foot, topAsk.Render(v.prompt))
	case v.note != "" && v.noteErr:
		foot = append(foot, strings.Split(wrap.Inherit(topRefused).Render(v.note), "\n")...)
	case v.note != "":
		foot = append(foot, strings.Split(wrap.Render(v.note), "\n")...)
	}
	if len(v.frame.Models) == 0 && !v.frame.Time.IsZero() {
		lines = append(lines, "no models pinned (start the daemon: mlbpf run)")
	}
	if len(v.frame.Models) > 0 {
		table := v.table(24)
		lines = append(lines, topTitle.Render(table[0]))
		for i, l := range table[1:] {
			if v.frame.Models[i/2].Model == v.selected {
				if i%2 == 0 {
					l = ">" + l[1:]
				}
				l = topSelected.Render(l)
			}
			lines = append(lines, l)
		}
		if i := v.index(); i >= 0 {
			room := v.height - len(lines) - len(foot) - 1
			// What the detail takes without keys: a line of title, the
			// arms, the notes, the keys' heading and column heading.
			keys := max(room-(model.ArmCount+2)-4-3, 1)
			chart := min(max(v.width-40, 10), 72)
			lines = append(lines, "")
			lines = append(lines, v.detail(v.frame.Models[i], chart, keys)...)
		}
	}
	for len(lines)+len(foot) < v.height {
		lines = append(lines, "")
	}
	lines = append(lines[:min(len(lines), max(v.height-len(foot), 1))], foot...)
	for i, l := range lines {
		if lipgloss.Width(l) > v.width {
			lines[i] = truncate(l, v.width)
		}
	}
	return strings.Join(lines, "\n")
}

// chartSpan names the chart's time span: "last 5m".
func chartSpan(d time.Duration) string { return "last " + shortDuration(d) }

// shortDuration is d without its zero tails: 5m, not 5m0s.
func shortDuration(d time.Duration) string {
	s := d.String()
	if strings.HasSuffix(s, "m0s") {
		s = strings.TrimSuffix(s, "0s")
	}
	if strings.HasSuffix(s, "h0m") {
		s = strings.TrimSuffix(s, "0m")
	}
	return s
}

// rate formats a rate per second.
func rate(r float64) string {
	switch {
	case r >= 10:
		return fmt.Sprintf("%.0f", r)
	case r == 0:
		return "0"
	}
	return fmt.Sprintf("%.1f", r)
}

// armRates is the arms taken, with their rate: "shadow=120 (40/s)".
func armRates(arms map[string]uint64, rates map[string]float64) string {
	var parts []string
	for i := range model.ArmCount {
		a := model.Arm(i).String()
		if n := arms[a]; n > 0 {
			p := fmt.Sprintf("%s=%d", a, n)
			if rates != nil {
				p += " (" + rate(rates[a]) + ")"
			}
			parts = append(parts, p)
		}
	}
	if len(parts) == 0 {
		return "none"
	}
	return strings.Join(parts, " ")
}

// buckets spreads samples over width columns of span up to now, each
// column the mean of its samples (ok false where none).
func buckets(samples []effSample, span time.Duration, now time.Time, width int) (cols []effSample, ok []bool) {
	cols, ok = make([]effSample, width), make([]bool, width)
	n := make([]int, width)
	for _, s := range samples {
		age := now.Sub(s.t)
		if age < 0 || age > span {
			continue
		}
		i := width - 1 - int(float64(age)/float64(span)*float64(width))
		i = min(max(i, 0), width-1)
		cols[i].effect += s.effect
		cols[i].lower += s.lower
		cols[i].high += s.high
		n[i]++
	}
	for i := range cols {
		if ok[i] = n[i] > 0; ok[i] {
			k := float64(n[i])
			cols[i].effect, cols[i].lower, cols[i].high = cols[i].effect/k, cols[i].lower/k, cols[i].high/k
		}
	}
	return cols, ok
}

var sparks = []rune("▁▂▃▄▅▆▇█")

// sparkline is the efficiency over span, one character a column, from
// its lowest to its highest; a range narrower than the mean interval is
// widened to it, so that noise within the interval shows flat.
func sparkline(samples []effSample, span time.Duration, now time.Time, width int) string {
	cols, ok := buckets(samples, span, now, width)
	lo, hi := math.Inf(1), math.Inf(-1)
	var interval float64
	n := 0
	for i, c := range cols {
		if ok[i] {
			lo, hi = min(lo, c.effect), max(hi, c.effect)
			interval += c.high - c.lower
			n++
		}
	}
	if n == 0 {
		return strings.Repeat(" ", width)
	}
	if interval /= float64(n); hi-lo < interval {
		mid := (hi + lo) / 2
		lo, hi = mid-interval/2, mid+interval/2
	}
	r := make([]rune, width)
	for i, c := range cols {
		r[i] = ' '
		if ok[i] {
			k := len(sparks) / 2
			if hi > lo {
				k = int((c.effect - lo) / (hi - lo) * float64(len(sparks)-1))
			}
			r[i] = sparks[min(max(k, 0), len(sparks)-1)]
		}
	}
	return string(r)
}

// effChart draws the efficiency over span in height rows of width
// columns, with the axis labels: '●' the estimate, '│' its interval,
// '─' zero.
func effChart(samples []effSample, span time.Duration, now time.Time, width, height int) []string {
	if height < 2 {
		return nil
	}
	cols, ok := buckets(samples, span, now, width)
	lo, hi := 0.0, 0.0
	seen := false
	for i, c := range cols {
		if ok[i] {
			lo, hi, seen = min(lo, c.lower, c.effect), max(hi, c.high, c.effect), true
		}
	}
	if !seen {
		rows := make([]string, height)
		rows[height/2] = "         no evidence yet"
		return rows
	}
	if hi == lo {
		hi = lo + 1
	}
	row := func(x float64) int { // 0 is the top row
		return min(max(int(math.Round((hi-x)/(hi-lo)*float64(height-1))), 0), height-1)
	}
	grid := make([][]rune, height)
	for r := range grid {
		grid[r] = []rune(strings.Repeat(" ", width))
	}
	zero := row(0)
	for i := range width {
		grid[zero][i] = '─'
	}
	for i, c := range cols {
		if !ok[i] {
			continue
		}
		for r := row(c.high); r <= row(c.lower); r++ {
			grid[r][i] = '│'
		}
		grid[row(c.effect)][i] = '●'
	}
	rows := make([]string, height)
	for r := range grid {
		label := ""
		switch r {
		case 0:
			label = fmt.Sprintf("%+.1f%%", hi)
		case zero:
			label = "0"
		case height - 1:
			label = fmt.Sprintf("%+.1f%%", lo)
		}
		rows[r] = fmt.Sprintf("%8s ┤%s", label, string(grid[r]))
	}
	return rows
}

// truncate cuts a line to width cells, styles and all.
func truncate(s string, width int) string {
	return lipgloss.NewStyle().MaxWidth(width).Render(s)
}

// stripANSI removes the terminal's escape sequences.
func stripANSI(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == 0x1b && i+1 < len(s) && s[i+1] == '[' {
			j := i + 2
			for j < len(s) && (s[j] < 0x40 || s[j] > 0x7e) {
				j++
			}
			i = j
			continue
		}
		b.WriteByte(s[i])
	}
	return b.String()
}
