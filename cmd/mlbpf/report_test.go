package main

import (
	"context"
	"flag"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/mlbpf/mlbpf/daemon"
	"github.com/mlbpf/mlbpf/internal/headless"
	"github.com/mlbpf/mlbpf/internal/testutil"
	"github.com/mlbpf/mlbpf/model"
	"github.com/mlbpf/mlbpf/pipeline"
	"github.com/mlbpf/mlbpf/report"
	"github.com/mlbpf/mlbpf/synthetic"
)

var updateScreenshot = flag.Bool("update", false, "write docs/report.png from TestReport's page")

// synthHistory runs a live synthetic model (its hook on this process's
// system calls, each a request whose key is the call's number) through
// the real period loop for at least 60 periods, until the mode
// controller promoted it twice, or up to 200, leaving its history in
// stateDir; it returns the model's name.
func synthHistory(t *testing.T, stateDir string) string {
	t.Helper()
	testutil.RequireBPF(t)
	full := synthetic.Name + "/demo" // under a pin root and a state directory of the test's own
	loop, err := synthetic.Subsystem().Open(pipeline.Env{
		Model: "demo", PinRoot: testutil.PinRoot(t), StateDir: daemon.ModelStateDir(stateDir, full),
		Options: model.Options{SleepTimeout: 100 * time.Millisecond},
	}, &synthetic.Config{FilterTgid: uint32(os.Getpid())})
	if err != nil {
		t.Fatal(err)
	}
	defer loop.Close()
	m := loop.Model()
	if err := m.Start(model.RunConfig{}); err != nil {
		t.Fatal(err)
	}
	defer m.Stop()
	calls := []func(){
		func() { unix.Getppid() }, func() { unix.Getuid() }, func() { unix.Getgid() },
		func() { unix.Geteuid() }, func() { unix.Getegid() }, func() { unix.Gettid() },
		func() { unix.Getpgrp() }, func() { var u unix.Utsname; unix.Uname(&u) },
	}
	changes := 0
	for i := 0; i < 200 && (changes < 2 || i < 60); i++ {
		for j := range 1000 + 500*(i%4) {
			calls[(i+j*j)%len(calls)]()
		}
		before := m.Mode()
		if err := loop.Period(); err != nil {
			t.Fatal(err)
		}
		if m.Mode() != before {
			changes++
		}
		time.Sleep(20 * time.Millisecond) // periods spread a little in time
	}
	if changes == 0 {
		t.Fatalf("the synthetic model was never promoted: %s", loop.Stats().Decision)
	}
	return full
}

// TestReport: a real loop on the synthetic model leaves its history;
// 'mlbpf report' makes a page of it that headless Chromium loads with no
// console message (the page's policy forbids any load, so a fetch would
// be one), holding every plot as inline SVG under its title, the mode
// changes, the decisions and the keys; its screenshot is not blank.
func TestReport(t *testing.T) {
	b := headless.ForTest(t)
	stateDir := t.TempDir()
	name := synthHistory(t, stateDir)
	dir := t.TempDir()
	page := filepath.Join(dir, "report.html")
	out := mustMlbpf(t, "report", name, "--state-dir", stateDir, "-o", page)
	if !strings.Contains(out, "periods from") {
		t.Fatalf("mlbpf report said %q", out)
	}

	// To stdout, the last second only.
	html := mustMlbpf(t, "report", name, "--state-dir", stateDir, "--last", "1s", "-o", "-")
	if !strings.HasPrefix(html, "<!DOCTYPE html>") {
		t.Fatalf("-o - wrote %.200q", html)
	}
	all := regexp.MustCompile(`(\d+) periods from`).FindStringSubmatch(out)
	last := regexp.MustCompile(`, (\d+) periods\)`).FindStringSubmatch(html)
	if all == nil || last == nil || last[1] == "0" || len(last[1]) > len(all[1]) || len(last[1]) == len(all[1]) && last[1] >= all[1] {
		t.Errorf("--last 1s: %v periods of %v, want fewer (they are at least 20 ms apart)", last, all)
	}

	png := filepath.Join(dir, "report.png")
	p, err := b.Load(context.Background(), page, &headless.Screenshot{Path: png, Width: 1000, Height: 1050})
	if err != nil {
		t.Fatal(err)
	}
	if len(p.Console) != 0 {
		t.Fatalf("the page logged to the console:\n%s", strings.Join(p.Console, "\n"))
	}
	figures := regexp.MustCompile(`(?s)<figure class="plot" title="([^"]*)">\s*<svg.*?</svg>`).FindAllStringSubmatch(p.DOM, -1)
	if len(figures) != len(report.PlotTitles) {
		t.Fatalf("%d figures with an <svg>, want %d", len(figures), len(report.PlotTitles))
	}
	for i, f := range figures {
		// The title is the figure's, and drawn in the plot.
		if f[1] != report.PlotTitles[i] || !strings.Contains(f[0], ">"+report.PlotTitles[i]+"<") {
			t.Errorf("figure %d is %q, want %q drawn in it", i, f[1], report.PlotTitles[i])
		}
	}
	for _, want := range []string{`class="mode-changes"`, "LEARNING → COLLABORATION", `class="decisions"`, `class="keys"`, "shadow (n=", "<td>learner</td>"} {
		if !strings.Contains(p.DOM, want) {
			t.Errorf("the page lacks %q", want)
		}
	}

	ink, err := headless.Ink(png)
	if err != nil {
		t.Fatal(err)
	}
	if ink < 0.03 {
		t.Fatalf("the screenshot is blank: %.1f %% ink", 100*ink)
	}
	t.Logf("screenshot: %.1f %% ink", 100*ink)
	if *updateScreenshot {
		if err := headless.Compress(png); err != nil {
			t.Fatal(err)
		}
		b, err := os.ReadFile(png)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join("..", "..", "docs", "report.png"), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// TestReportErrors: no history yet, or no -o, says what to do.
func TestReportErrors(t *testing.T) {
	_, _, err := mlbpf(t, "report", "synthetic/none", "--state-dir", t.TempDir(), "-o", filepath.Join(t.TempDir(), "r.html"))
	if err == nil || !strings.Contains(err.Error(), "no history yet") || !strings.Contains(err.Error(), "mlbpf run") {
		t.Fatalf("no history: %v", err)
	}
	if _, errOut, err := mlbpf(t, "report", "synthetic/none"); err != errUsage || !strings.Contains(errOut, "want -o FILE") {
		t.Fatalf("no -o: %v\n%s", err, errOut)
	}
	if _, _, err := mlbpf(t, "report", "nomodel", "-o", "x.html"); err == nil {
		t.Fatal("a name with no subsystem accepted")
	}
}
