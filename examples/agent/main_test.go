package main

import (
	"context"
	"fmt"
	"io"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mlbpf/mlbpf/config"
	"github.com/mlbpf/mlbpf/daemon"
	"github.com/mlbpf/mlbpf/internal/testutil"
	"github.com/mlbpf/mlbpf/loader"
	"github.com/mlbpf/mlbpf/model"
	"github.com/mlbpf/mlbpf/subsystems"
)

type syncBuffer = testutil.SyncBuffer

// TestAgentAgainstDaemon runs the example agent against a real daemon
// whose synthetic model learns from external agents only: the agent's
// recommendations earn the model its promotion, and when the agent goes
// away the model falls to EMERGENCY.
func TestAgentAgainstDaemon(t *testing.T) {
	testutil.RequireBPF(t)
	load := exec.Command("sh", "-c", "while :; do sleep 0.005; done")
	if err := load.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = load.Process.Kill(); _ = load.Wait() }()

	root, dir := testutil.PinRoot(t), t.TempDir()
	socket := filepath.Join(dir, "run", "agent.sock")
	cfg, err := config.Parse("agent.yaml", []byte(fmt.Sprintf(`
pin_root: %s
state_dir: %s
socket: %s
interval: 100ms
models:
  - name: synthetic/demo
    max_mode: recommendation
    learner: external
    agent_timeout: 500ms
    lease: 3s
    synthetic:
      pid: %d
`, root, filepath.Join(dir, "state"), socket, load.Process.Pid)))
	if err != nil {
		t.Fatal(err)
	}
	daemon.Register(subsystems.All()...)
	d, err := daemon.New(daemon.Options{Config: cfg})
	if err != nil {
		t.Fatal(err)
	}
	dctx, stopDaemon := context.WithCancel(context.Background())
	defer stopDaemon()
	ddone := make(chan error, 1)
	go func() { ddone <- d.Run(dctx) }()
	select {
	case <-d.Ready():
	case err := <-ddone:
		t.Fatal(err)
	}
	mode := func() model.Mode {
		pm, err := loader.ReadPinned(root, "synthetic", "demo")
		if err != nil {
			t.Fatal(err)
		}
		return model.Mode(pm.Control.Mode)
	}
	waitFor := func(what string, cond func() bool) {
		t.Helper()
		for deadline := time.Now().Add(15 * time.Second); time.Now().Before(deadline); time.Sleep(25 * time.Millisecond) {
			if cond() {
				return
			}
		}
		t.Fatalf("timed out waiting for %s (mode %v)", what, mode())
	}

	// Without an agent nothing is recommended: the model stays LEARNING.
	time.Sleep(300 * time.Millisecond)
	if m := mode(); m != model.ModeLearning {
		t.Fatalf("mode %v before any agent", m)
	}

	out := &syncBuffer{}
	actx, stopAgent := context.WithCancel(context.Background())
	adone := make(chan error, 1)
	go func() { adone <- run(actx, []string{"--socket", socket, "--model", "synthetic/demo"}, out, io.Discard) }()
	waitFor("RECOMMENDATION", func() bool { return mode() == model.ModeRecommendation })
	stopAgent()
	if err := <-adone; err != nil {
		t.Fatalf("agent: %v", err)
	}
	for _, want := range []string{"portion ", "new keys", "feedback: mode "} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("the agent's output has no %q:\n%.3000s", want, out)
		}
	}

	// The agent is gone: once agent_timeout passes, EMERGENCY.
	waitFor("EMERGENCY after the agent left", func() bool { return mode() == model.ModeEmergency })

	stopDaemon()
	if err := <-ddone; err != nil {
		t.Fatal(err)
	}
}
