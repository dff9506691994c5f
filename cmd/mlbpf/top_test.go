package main

import (
	"bufio"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/mlbpf/mlbpf/internal/testutil"
	"github.com/mlbpf/mlbpf/loader"
	"github.com/mlbpf/mlbpf/model"
)

var updateTop = flag.Bool("update-top", false, "write the screen TestTopInTerminal captures to docs/top.txt (the README's screenshot)")

// terminal is a tmux server of a test's own, and one of its panes.
type terminal struct {
	t      *testing.T
	tmux   string
	socket string
	pane   string // its id, "" for the first one
}

// newTerminal starts a tmux server of its own running command in a
// pane of width x height, kept open once the command ends.
func newTerminal(t *testing.T, width, height int, command string) *terminal {
	t.Helper()
	path, err := exec.LookPath("tmux")
	if err != nil {
		t.Fatal(err)
	}
	tm := &terminal{t: t, tmux: path, socket: filepath.Join(t.TempDir(), "tmux.sock")}
	tm.run("-f", "/dev/null", "new-session", "-d", "-x", strconv.Itoa(width), "-y", strconv.Itoa(height), command)
	t.Cleanup(func() { _ = exec.Command(tm.tmux, "-S", tm.socket, "kill-server").Run() })
	return tm
}

func (tm *terminal) run(args ...string) string {
	tm.t.Helper()
	out, err := exec.Command(tm.tmux, append([]string{"-S", tm.socket}, args...)...).CombinedOutput()
	if err != nil {
		tm.t.Fatalf("tmux %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

// target is the arguments naming the pane.
func (tm *terminal) target() []string {
	if tm.pane == "" {
		return nil
	}
	return []string{"-t", tm.pane}
}

// screen is what the pane shows, as plain text.
func (tm *terminal) screen() string {
	return tm.run(append([]string{"capture-pane", "-p"}, tm.target()...)...)
}

// keys types keys into the pane.
func (tm *terminal) keys(keys ...string) {
	tm.run(append(append([]string{"send-keys"}, tm.target()...), keys...)...)
}

// window runs command in a new window, and returns its pane.
func (tm *terminal) window(command string) *terminal {
	tm.t.Helper()
	pane := strings.TrimSpace(tm.run("new-window", "-d", "-P", "-F", "#{pane_id}", command))
	return &terminal{t: tm.t, tmux: tm.tmux, socket: tm.socket, pane: pane}
}

// waitFor waits until the screen satisfies cond, and returns it.
func (tm *terminal) waitFor(what string, cond func(screen string) bool) string {
	tm.t.Helper()
	var screen string
	for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		if screen = tm.screen(); cond(screen) {
			return screen
		}
	}
	tm.t.Fatalf("timed out waiting for the screen to show %s; it shows:\n%s", what, screen)
	return ""
}

// waitText waits until the screen shows every text, wherever the screen
// wraps it.
func (tm *terminal) waitText(texts ...string) string {
	tm.t.Helper()
	return tm.waitFor(fmt.Sprintf("%q", texts), func(screen string) bool {
		flat := strings.Join(strings.Fields(screen), " ")
		for _, s := range texts {
			if !strings.Contains(flat, s) {
				return false
			}
		}
		return true
	})
}

// shellQuote quotes s for sh.
func shellQuote(s string) string { return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'" }

// screenArms reads the selected model's arm table off the screen.
var screenArm = regexp.MustCompile(`(?m)^  (fallback|no_rec|shadow|control|model|rejected|skipped) +(\d+) `)

func screenArms(screen string) map[string]uint64 {
	arms := map[string]uint64{}
	for _, m := range screenArm.FindAllStringSubmatch(screen, -1) {
		n, _ := strconv.ParseUint(m[2], 10, 64)
		arms[m[1]] = n
	}
	return arms
}

// TestTopInTerminal runs 'mlbpf top' in a real terminal (a tmux pane)
// against a daemon run by 'mlbpf run', and reads the screen: the model,
// its mode, its arm counts as 'mlbpf status -o json' has them, its keys.
// Then it sets modes with top's keys: one above max_mode is refused and
// the refusal shown, EMERGENCY is confirmed and reaches the kernel's
// control block, a cancelled one does nothing; q quits with status 0 and
// leaves the terminal as it was. With -update-top it writes the screen to
// docs/top.txt, the README's screenshot.
func TestTopInTerminal(t *testing.T) {
	if _, err := exec.LookPath("tmux"); err != nil {
		testutil.Missing(t, "needs tmux to run mlbpf top in a real terminal: apt-get install tmux (scripts/setup.sh test installs it)")
	}
	load := syscallLoad(t)
	// synthetic/demo is promoted to COLLABORATION, its max_mode;
	// synthetic/other stays in LEARNING.
	s := newSession(t, fmt.Sprintf(sessionConfig+`
  - name: synthetic/other
    mode: learning
    max_mode: learning
    lease: 3s
    synthetic:
      pid: %d
`, load, load))
	s.start()
	s.waitFor("COLLABORATION", func() bool {
		st, err := s.status()
		return err == nil && len(st) == 2 && st[0].Mode == "COLLABORATION" && st[0].Daemon != nil && st[0].Daemon.Efficiency != nil &&
			st[1].State == "RUNNING" && st[1].Mode == "LEARNING"
	})

	// This test binary stands in for mlbpf (see TestMain): no build.
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	// A script runs top, saying its pid first; the pane's shell says how
	// it ended.
	args := []string{"env", asMlbpf + "=1", self, "top", "--every", "250ms", "--history", "20s"}
	var command []string
	for _, a := range append(args, s.flags...) {
		command = append(command, shellQuote(a))
	}
	dir := t.TempDir()
	pidFile, script := filepath.Join(dir, "top.pid"), filepath.Join(dir, "top.sh")
	body := "echo $$ > " + shellQuote(pidFile) + "\nexec " + strings.Join(command, " ") + "\n"
	if err := os.WriteFile(script, []byte(body), 0o755); err != nil {
		t.Fatal(err)
	}
	topCommand := "sh " + shellQuote(script) + `; echo "mlbpf top exited: $?"; sleep 600`
	tm := newTerminal(t, 150, 36, topCommand)

	// The model, its mode and max_mode, its keys from the daemon.
	tm.waitText("synthetic/demo", "RUNNING", "COLLABORATION", "decisions: ", "keys, from the daemon (pid ", "efficiency: gain over the default")
	// A few seconds of samples in the chart, the rates measured.
	screen := tm.waitFor("rates and a chart", func(screen string) bool {
		return strings.Count(screen, "●") >= 16 && regexp.MustCompile(`model=\d+ \(\d+\)`).MatchString(screen)
	})
	if *updateTop {
		// The screen, its runs of empty lines squeezed to one.
		var lines []string
		for _, l := range strings.Split(screen, "\n") {
			l = strings.TrimRight(l, " ")
			if l == "" && len(lines) > 0 && lines[len(lines)-1] == "" {
				continue
			}
			lines = append(lines, l)
		}
		text := strings.TrimRight(strings.Join(lines, "\n"), "\n") + "\n"
		if err := os.WriteFile(filepath.Join("..", "..", "docs", "top.txt"), []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
	}

	// The arm counts are those 'mlbpf status -o json' has: with the load
	// stopped, the counts stand still, and the screen must catch up.
	if err := syscall.Kill(load, syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	defer syscall.Kill(load, syscall.SIGCONT)
	var want map[string]uint64
	s.waitFor("the arm counts to stand still", func() bool {
		a := s.pinned().Arms
		time.Sleep(300 * time.Millisecond)
		b := s.pinned().Arms
		if a != b {
			return false
		}
		st, err := s.status()
		if err != nil {
			t.Fatal(err)
		}
		want = st[0].Arms
		return true
	})
	tm.waitFor(fmt.Sprintf("the arm counts of mlbpf status -o json, %v", want), func(screen string) bool {
		got := screenArms(screen)
		for arm := range model.ArmCount {
			a := model.Arm(arm).String()
			if n, ok := got[a]; !ok || n != want[a] {
				return false
			}
		}
		return true
	})
	if err := syscall.Kill(load, syscall.SIGCONT); err != nil {
		t.Fatal(err)
	}

	// A mode above max_mode: asked for, confirmed, refused by the daemon;
	// the refusal is on the screen and the kernel's block unchanged.
	tm.keys("r")
	tm.waitText("set synthetic/demo to RECOMMENDATION? y to confirm")
	tm.keys("y")
	tm.waitText("mode recommendation refused", "above the daemon's max_mode COLLABORATION")
	if c := s.control(); c.Mode != model.ModeCollaboration {
		t.Fatalf("after a refused RECOMMENDATION the kernel has %v", c)
	}

	// Another model: selected with the down key, its detail shown, and
	// the mode keys act on it alone.
	tm.keys("Down")
	tm.waitFor("synthetic/other selected", func(screen string) bool {
		return regexp.MustCompile(`(?m)^> synthetic/other +RUNNING +LEARNING +LEARNING `).MatchString(screen) &&
			strings.Contains(screen, "synthetic/other - RUNNING LEARNING, generation")
	})
	tm.keys("e")
	tm.waitText("set synthetic/other to EMERGENCY? y to confirm")
	tm.keys("y")
	tm.waitText("synthetic/other: mode emergency", "the kernel has RUNNING EMERGENCY")
	if pm, err := loader.ReadPinned(s.root, "synthetic", "other"); err != nil || model.Mode(pm.Control.Mode) != model.ModeEmergency {
		t.Fatalf("top said synthetic/other's kernel has EMERGENCY; its pinned control block: %+v %v", pm.Control, err)
	}
	if c := s.control(); c.Mode != model.ModeCollaboration {
		t.Fatalf("EMERGENCY set for synthetic/other changed synthetic/demo's block: %v", c)
	}
	tm.keys("Up")
	tm.waitText("synthetic/demo - RUNNING COLLABORATION, generation")

	// EMERGENCY, confirmed: the daemon answers once the kernel holds it,
	// and top shows its answer.
	tm.keys("e")
	tm.waitText("set synthetic/demo to EMERGENCY? y to confirm")
	tm.keys("y")
	tm.waitText("synthetic/demo: mode emergency", "the kernel has RUNNING EMERGENCY")
	if c := s.control(); c.Mode != model.ModeEmergency || c.State != model.StateRunning {
		t.Fatalf("top said the kernel has RUNNING EMERGENCY; the pinned control block says %v", c)
	}
	tm.waitFor("the table to say EMERGENCY", func(screen string) bool {
		return regexp.MustCompile(`(?m)^> synthetic/demo +RUNNING +EMERGENCY +COLLABORATION `).MatchString(screen)
	})

	// Cancelled: nothing changes.
	tm.keys("l")
	tm.waitText("set synthetic/demo to LEARNING? y to confirm")
	tm.keys("n")
	tm.waitText("mode learning not set")
	if c := s.control(); c.Mode != model.ModeEmergency {
		t.Fatalf("a cancelled LEARNING changed the kernel's mode: %v", c)
	}

	// q quits, status 0, and the terminal is as it was: top's screen gone.
	tm.keys("q")
	screen = tm.waitText("mlbpf top exited: 0")
	if strings.Contains(screen, "synthetic/demo") {
		t.Fatalf("top's screen is still there after it quit:\n%s", screen)
	}

	// SIGTERM (systemd's, kill's) ends it as cleanly.
	if err := os.Remove(pidFile); err != nil {
		t.Fatal(err)
	}
	w := tm.window(topCommand)
	w.waitText("synthetic/demo", "decisions: ")
	b, err := os.ReadFile(pidFile)
	if err != nil {
		t.Fatal(err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		t.Fatal(err)
	}
	if err := syscall.Kill(pid, syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	w.waitText("mlbpf top exited: 0")
	if screen := w.screen(); strings.Contains(screen, "synthetic/demo") {
		t.Fatalf("top's screen is still there after SIGTERM:\n%s", screen)
	}
}

// TestTopPlain runs 'mlbpf top' with stdout not a terminal: plain text
// frames, and JSON lines with -o json.
func TestTopPlain(t *testing.T) {
	s := newSession(t, fmt.Sprintf(sessionConfig, syscallLoad(t)))
	s.start()
	s.waitFor("records", func() bool {
		st, err := s.status()
		return err == nil && st[0].Daemon != nil && st[0].Daemon.Records > 0
	})
	out := s.must("top", "-n", "2", "--every", "200ms")
	if n := strings.Count(out, "mlbpf top - "); n != 2 {
		t.Fatalf("top -n 2 printed %d frames:\n%s", n, out)
	}
	for _, want := range []string{"synthetic/demo", "RUNNING", "decisions: ", "ARM", "DECISIONS", "PER S", "efficiency: gain over the default"} {
		if !strings.Contains(out, want) {
			t.Errorf("top's plain frames have no %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, "\x1b[") {
		t.Errorf("top's plain frames hold escape sequences:\n%q", out)
	}

	out = s.must("top", "-n", "3", "--every", "200ms", "-o", "json")
	sc := bufio.NewScanner(strings.NewReader(out))
	var frames []topFrame
	for sc.Scan() {
		var f topFrame
		if err := json.Unmarshal(sc.Bytes(), &f); err != nil {
			t.Fatalf("a line of top -o json: %v\n%s", err, sc.Text())
		}
		frames = append(frames, f)
	}
	if len(frames) != 3 {
		t.Fatalf("top -n 3 -o json wrote %d frames:\n%s", len(frames), out)
	}
	last := frames[2]
	if last.DaemonPID != os.Getpid() || len(last.Models) != 1 {
		t.Fatalf("frame: %+v", last)
	}
	m := last.Models[0]
	if m.Model != "synthetic/demo" || m.State != "RUNNING" || m.ArmRates == nil || m.KeysFrom == "" || m.Daemon == nil {
		t.Fatalf("model in the last frame: %+v", m)
	}
	if frames[0].Models[0].ArmRates != nil {
		t.Fatalf("the first frame has rates, measured from nothing: %+v", frames[0].Models[0].ArmRates)
	}

	// A model that is not pinned is refused.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var stdout, stderr strings.Builder
	if err := run(ctx, append([]string{"top", "-n", "1", "synthetic/nothere"}, s.flags...), &stdout, &stderr); err == nil {
		t.Fatalf("top of a model not pinned: no error\n%s", stdout.String())
	}
}

// TestTopCharts draws the sparkline and the chart of known samples.
func TestTopCharts(t *testing.T) {
	now := time.Now()
	at := func(ago time.Duration, effect, lower, high float64) effSample {
		return effSample{t: now.Add(-ago), effect: effect, lower: lower, high: high}
	}
	// Noise within the interval shows flat; a rise beyond it shows.
	// A column a second, the newest on the right.
	flat := []effSample{at(2500*time.Millisecond, 10, 0, 20), at(1500*time.Millisecond, 11, 1, 21), at(500*time.Millisecond, 10.5, 0.5, 20.5)}
	if got := sparkline(flat, 4*time.Second, now, 4); got != " ▄▄▄" && got != " ▃▄▄" && got != " ▄▄▃" {
		t.Errorf("sparkline of noise within the interval: %q", got)
	}
	rise := []effSample{at(2500*time.Millisecond, 0, -1, 1), at(1500*time.Millisecond, 50, 49, 51), at(500*time.Millisecond, 100, 99, 101)}
	if got := sparkline(rise, 4*time.Second, now, 4); got != " ▁▄█" {
		t.Errorf("sparkline of a rise: %q", got)
	}
	if got := sparkline(nil, time.Minute, now, 3); got != "   " {
		t.Errorf("sparkline of nothing: %q", got)
	}
	// Samples older than the span are left out.
	if got := sparkline([]effSample{at(time.Hour, 1, 0, 2)}, time.Minute, now, 3); got != "   " {
		t.Errorf("sparkline of a sample older than its span: %q", got)
	}

	// The chart: the estimate '●' within its interval '│', zero '─',
	// labelled with the top, zero and bottom values.
	rows := effChart([]effSample{at(500*time.Millisecond, 10, -10, 30)}, 2*time.Second, now, 2, 5)
	want := []string{
		"  +30.0% ┤ │",
		"         ┤ │",
		"         ┤ ●",
		"       0 ┤─│",
		"  -10.0% ┤ │",
	}
	if strings.Join(rows, "\n") != strings.Join(want, "\n") {
		t.Errorf("chart:\n%s\nwant:\n%s", strings.Join(rows, "\n"), strings.Join(want, "\n"))
	}
}
