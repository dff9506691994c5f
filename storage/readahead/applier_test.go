package readahead

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/mlbpf/mlbpf/internal/testutil"
	"github.com/mlbpf/mlbpf/model"
	"github.com/mlbpf/mlbpf/storage/testbed"
)

// TestMain lets the test binary be the readahead watchdog (the daemon
// runs `mlbpf watchdog`; the tests run themselves).
func TestMain(m *testing.M) {
	if os.Getenv("MLBPF_RA_WATCHDOG") == "1" {
		cfg, err := ParseWatchdogArgs(os.Args[1:], os.Stderr)
		if err == nil {
			err = RunWatchdog(context.Background(), cfg, func(f string, a ...any) { fmt.Fprintf(os.Stderr, f+"\n", a...) })
		}
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

func lookup(t *testing.T, tb *testbed.Testbed) Device {
	t.Helper()
	d, err := LookupDevice(tb.Name)
	if err != nil {
		t.Fatal(err)
	}
	if d.Dev != tb.Dev() {
		t.Fatalf("device %s is %d, the testbed says %d", tb.Name, d.Dev, tb.Dev())
	}
	return d
}

// kernelKB reads read_ahead_kb from the kernel: sysfs and BLKRAGET must agree.
func kernelKB(t *testing.T, tb *testbed.Testbed) uint32 {
	t.Helper()
	sysfs := func() uint32 {
		b, err := os.ReadFile(tb.ReadAheadPath())
		if err != nil {
			t.Fatal(err)
		}
		var kb uint32
		if _, err := fmt.Sscanf(strings.TrimSpace(string(b)), "%d", &kb); err != nil {
			t.Fatalf("%s holds %q: %v", tb.ReadAheadPath(), b, err)
		}
		return kb
	}
	f, err := os.Open(tb.Device)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	// The two reads are compared only when sysfs held one value around
	// the ioctl: a watchdog or a daemon may be changing it meanwhile.
	for range 10 {
		before := sysfs()
		sectors, err := unix.IoctlGetInt(int(f.Fd()), unix.BLKRAGET)
		if err != nil {
			t.Fatal(err)
		}
		if after := sysfs(); after != before {
			continue
		}
		if uint32(sectors/2) != before {
			t.Fatalf("sysfs says %d KB, BLKRAGET %d sectors", before, sectors)
		}
		return before
	}
	t.Fatalf("%s changed at each of 10 reads", tb.ReadAheadPath())
	return 0
}

func setKB(t *testing.T, tb *testbed.Testbed, kb uint32) {
	t.Helper()
	if err := os.WriteFile(tb.ReadAheadPath(), []byte(fmt.Sprint(kb)), 0); err != nil {
		t.Fatal(err)
	}
}

func TestApplierRecordsAndRestores(t *testing.T) {
	tb := newTestbed(t, testbed.Config{})
	setKB(t, tb, 128)
	dir := t.TempDir()
	a, err := NewApplier(dir, t.Logf)
	if err != nil {
		t.Fatal(err)
	}
	d := lookup(t, tb)
	if err := a.Set(d, 1024); err != nil {
		t.Fatal(err)
	}
	if got := kernelKB(t, tb); got != 1024 {
		t.Fatalf("after Set(1024) the kernel has %d", got)
	}
	rec, err := os.ReadFile(filepath.Join(dir, stateFile))
	if err != nil {
		t.Fatalf("no record of the original after a change: %v", err)
	}
	if !strings.Contains(string(rec), `"original_kb": 128`) {
		t.Errorf("record %s does not hold the original 128", rec)
	}
	cmds, _ := RestoreCommands(dir)
	if len(cmds) != 1 || cmds[0] != "echo 128 > "+d.Path {
		t.Errorf("restore commands %q", cmds)
	}
	if err := a.Set(d, 64); err != nil {
		t.Fatal(err)
	}
	if err := a.RestoreAll(); err != nil {
		t.Fatal(err)
	}
	if got := kernelKB(t, tb); got != 128 {
		t.Errorf("after RestoreAll the kernel has %d, want the original 128", got)
	}
	if _, err := os.Stat(filepath.Join(dir, stateFile)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the record is left after a restore: %v", err)
	}

	// A record left by a killed process is restored by the next applier.
	if err := a.Set(d, 2048); err != nil {
		t.Fatal(err)
	}
	if _, err := NewApplier(dir, t.Logf); err != nil {
		t.Fatal(err)
	}
	if got := kernelKB(t, tb); got != 128 {
		t.Errorf("a new applier left %d, want the original 128 restored", got)
	}
}

func TestApplierBacksOffAnotherWriter(t *testing.T) {
	tb := newTestbed(t, testbed.Config{})
	setKB(t, tb, 128)
	a, err := NewApplier(t.TempDir(), t.Logf)
	if err != nil {
		t.Fatal(err)
	}
	d := lookup(t, tb)
	if err := a.Set(d, 512); err != nil {
		t.Fatal(err)
	}
	setKB(t, tb, 256) // an operator
	if err := a.Set(d, 1024); !errors.Is(err, ErrBackedOff) {
		t.Fatalf("Set after another writer: %v, want ErrBackedOff", err)
	}
	if got := kernelKB(t, tb); got != 256 {
		t.Errorf("the kernel has %d, want the operator's 256 kept", got)
	}
	if err := a.RestoreAll(); err != nil {
		t.Fatal(err)
	}
	if got := kernelKB(t, tb); got != 256 {
		t.Errorf("after RestoreAll the kernel has %d, want the operator's 256 kept", got)
	}
	if a.BackedOff()[d.Name] != 256 {
		t.Errorf("BackedOff %v, want %s at 256", a.BackedOff(), d.Name)
	}
}

func newTuner(t *testing.T, tb *testbed.Testbed, cfg Config) *Tuner {
	t.Helper()
	cfg.Devices = []string{tb.Name}
	if cfg.StateDir == "" {
		cfg.StateDir = t.TempDir()
	}
	if cfg.PinDir == "" {
		cfg.PinDir = filepath.Join(testutil.PinRoot(t), "storage", "readahead")
	}
	if cfg.Logf == nil {
		cfg.Logf = t.Logf
	}
	tu, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tu.Close() })
	return tu
}

// watchKB samples the device's setting while the tuner runs a workload.
func watchKB(t *testing.T, tb *testbed.Testbed, tu *Tuner, w testbed.Workload, d time.Duration) map[uint32]int {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- tu.Run(ctx) }()
	wl := make(chan error, 1)
	go func() { _, err := tb.Run(ctx, w, d, nil); wl <- err }()
	seen := map[uint32]int{}
	for end := time.Now().Add(d); time.Now().Before(end); time.Sleep(20 * time.Millisecond) {
		seen[kernelKB(t, tb)]++
	}
	if err := <-wl; err != nil {
		t.Error(err)
	}
	cancel()
	if err := <-done; err != nil {
		t.Error(err)
	}
	return seen
}

func TestLearningNeverChangesTheDevice(t *testing.T) {
	tb := newTestbed(t, testbed.Config{Throttle: testbed.Throttle{ReadIOPS: 200}})
	setKB(t, tb, 128)
	tu := newTuner(t, tb, Config{Mode: model.ModeLearning, MaxMode: model.ModeLearning, Block: 200 * time.Millisecond, Window: 100 * time.Millisecond})
	if err := tu.Recommend(tb.Name, 2048); err != nil {
		t.Fatal(err)
	}
	seen := watchKB(t, tb, tu, testbed.Seq, 2*time.Second)
	if len(seen) != 1 || seen[128] == 0 {
		t.Errorf("in LEARNING the device held %v, want only its own 128", seen)
	}
}

func TestOperatorWriteIsRespectedInEveryArm(t *testing.T) {
	for _, mode := range []model.Mode{model.ModeLearning, model.ModeRecommendation} {
		t.Run(mode.String(), func(t *testing.T) {
			tb := newTestbed(t, testbed.Config{})
			setKB(t, tb, 128)
			tu := newTuner(t, tb, Config{Mode: mode, MaxMode: mode, HoldoutPermille: 1, Block: time.Hour})
			tu.Recommend(tb.Name, 512)
			tu.step(time.Now())
			setKB(t, tb, 96) // an operator
			tu.devices[0].checked = time.Time{}
			tu.step(time.Now())
			tu.devices[0].blockEnd = time.Time{}
			tu.step(time.Now())
			if got := kernelKB(t, tb); got != 96 {
				t.Errorf("the device holds %d after an operator wrote 96", got)
			}
			if st := tu.Status(); !st.Devices[0].BackedOff {
				t.Errorf("status does not say the model backed off: %+v", st.Devices[0])
			}
			tu.Close()
			if got := kernelKB(t, tb); got != 96 {
				t.Errorf("after stop the device holds %d, want the operator's 96", got)
			}
		})
	}
}

func TestCollaborationRandomisesBlocks(t *testing.T) {
	requireReward(t)
	tb := newTestbed(t, testbed.Config{Throttle: testbed.Throttle{ReadIOPS: 200}})
	setKB(t, tb, 128)
	tu := newTuner(t, tb, Config{Mode: model.ModeCollaboration, MaxMode: model.ModeCollaboration, Block: 200 * time.Millisecond, Window: 100 * time.Millisecond})
	if err := tu.Recommend(tb.Name, 2048); err != nil {
		t.Fatal(err)
	}
	seen := watchKB(t, tb, tu, testbed.Seq, 4*time.Second)
	t.Logf("settings seen (KB: samples): %v", seen)
	if seen[128] == 0 || seen[2048] == 0 || len(seen) != 2 {
		t.Errorf("in COLLABORATION the device held %v, want both the default 128 and the recommended 2048, nothing else", seen)
	}
	if got := kernelKB(t, tb); got != 128 {
		t.Errorf("after the model stopped the device holds %d, want its original 128", got)
	}
}

func TestEmergencyAndOperatorWriteRestoreOrBackOff(t *testing.T) {
	tb := newTestbed(t, testbed.Config{})
	setKB(t, tb, 128)
	tu := newTuner(t, tb, Config{Mode: model.ModeRecommendation, MaxMode: model.ModeRecommendation, HoldoutPermille: 1, Block: time.Hour})
	if err := tu.Recommend(tb.Name, 512); err != nil {
		t.Fatal(err)
	}
	tu.step(time.Now())
	if got := kernelKB(t, tb); got != 512 && tu.devices[0].arm == model.ArmModel {
		t.Fatalf("in RECOMMENDATION the device holds %d, want 512", got)
	}
	if err := tu.SetMode(model.ModeEmergency); err != nil {
		t.Fatal(err)
	}
	if got := kernelKB(t, tb); got != 128 {
		t.Errorf("after EMERGENCY the device holds %d, want its original 128", got)
	}
	if err := tu.SetMode(model.ModeRecommendation); err != nil {
		t.Fatal(err)
	}
	for tu.devices[0].arm != model.ArmModel { // the holdout is 1 ‰
		tu.devices[0].blockEnd = time.Time{}
		tu.step(time.Now())
	}
	if got := kernelKB(t, tb); got != 512 {
		t.Fatalf("back in RECOMMENDATION the device holds %d, want 512", got)
	}
	setKB(t, tb, 64) // an operator
	tu.devices[0].checked = time.Time{}
	tu.step(time.Now())
	tu.Recommend(tb.Name, 1024)
	tu.step(time.Now())
	if got := kernelKB(t, tb); got != 64 {
		t.Errorf("after an operator's write the device holds %d, want the operator's 64", got)
	}
	if !tu.devices[0].backedOff {
		t.Error("the model did not back off the device")
	}
	if err := tu.Close(); err != nil {
		t.Fatal(err)
	}
	if got := kernelKB(t, tb); got != 64 {
		t.Errorf("after stop the device holds %d, want the operator's 64 kept", got)
	}
}

// TestSIGKILLRestoresWithinLease kills a daemon that changed a device's
// readahead: its watchdog restores the original within the lease plus
// one second, with no operator action, and exits.
func TestSIGKILLRestoresWithinLease(t *testing.T) {
	requireReward(t) // without one the model never leaves LEARNING: nothing to restore
	const lease = 2 * time.Second
	if os.Getenv("MLBPF_RA_DAEMON") != "" {
		fields := strings.Fields(os.Getenv("MLBPF_RA_DAEMON"))
		os.Setenv("MLBPF_RA_WATCHDOG", "1") // for the watchdog this starts
		tu, err := New(Config{
			Devices: []string{fields[0]}, StateDir: fields[1], PinDir: fields[2],
			Mode: model.ModeRecommendation, MaxMode: model.ModeRecommendation, HoldoutPermille: 1,
			Lease: lease, Block: time.Hour, Watchdog: []string{os.Args[0]},
		})
		if err != nil {
			fmt.Println("error", err)
			os.Exit(1)
		}
		tu.Recommend(fields[0], 2048)
		fmt.Printf("ready %d\n", tu.watchdog.Process.Pid)
		_ = tu.Run(context.Background())
		os.Exit(0)
	}
	tb := newTestbed(t, testbed.Config{})
	setKB(t, tb, 128)
	state := t.TempDir()
	pins := filepath.Join(testutil.PinRoot(t), "storage", "readahead")
	cmd := exec.Command(os.Args[0], "-test.run=^TestSIGKILLRestoresWithinLease$")
	cmd.Env = append(os.Environ(), "MLBPF_RA_DAEMON="+tb.Name+" "+state+" "+pins)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	// However the test ends, the daemon (perhaps stopped) is not left in
	// the testbed's cgroup, which could not be removed.
	waited := false
	defer func() {
		if !waited {
			_ = cmd.Process.Kill()
			_ = cmd.Wait()
		}
	}()
	line, err := bufio.NewReader(out).ReadString('\n')
	var wdPID int
	if _, serr := fmt.Sscanf(line, "ready %d", &wdPID); err != nil || serr != nil {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		t.Fatalf("daemon said %q: %v", line, err)
	}
	defer unix.Kill(wdPID, unix.SIGKILL) // only if the test fails
	for end := time.Now().Add(5 * time.Second); kernelKB(t, tb) != 2048; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(end) {
			_ = cmd.Process.Kill()
			t.Fatalf("the daemon never set 2048 (the device holds %d)", kernelKB(t, tb))
		}
	}
	// A hung daemon (stopped): the lease runs out, the watchdog restores.
	if err := cmd.Process.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	stopped := time.Now()
	for kernelKB(t, tb) != 128 {
		if time.Since(stopped) > lease+time.Second {
			_ = cmd.Process.Kill()
			t.Fatalf("%v after the daemon hung the device still holds %d, want its original 128 within the lease (%v) plus 1 s", time.Since(stopped), kernelKB(t, tb), lease)
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Logf("hung daemon: original restored %v after it stopped (lease %v)", time.Since(stopped).Round(time.Millisecond), lease)
	_ = cmd.Process.Signal(syscall.SIGCONT)
	for end := time.Now().Add(5 * time.Second); kernelKB(t, tb) != 2048; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(end) {
			_ = cmd.Process.Kill()
			t.Fatalf("the resumed daemon never set 2048 again (the device holds %d)", kernelKB(t, tb))
		}
	}
	killed := time.Now()
	if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	_ = cmd.Wait()
	waited = true
	for kernelKB(t, tb) != 128 {
		if time.Since(killed) > lease+time.Second {
			t.Fatalf("%v after the SIGKILL the device still holds %d, want its original 128 within the lease (%v) plus 1 s", time.Since(killed), kernelKB(t, tb), lease)
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Logf("original restored %v after the SIGKILL (lease %v)", time.Since(killed).Round(time.Millisecond), lease)
	for end := time.Now().Add(3 * time.Second); processRunning(wdPID); time.Sleep(20 * time.Millisecond) {
		if time.Now().After(end) {
			t.Fatalf("the watchdog (pid %d) is still running after restoring", wdPID)
		}
	}
	if _, err := os.Stat(filepath.Join(state, stateFile)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the record is left after the watchdog restored: %v", err)
	}
}

// TestTunerLearnsAndPromotes runs the model in COLLABORATION on a
// sequential workload over a device capped at 100 requests a second,
// where large readahead wins: it must learn a setting above the default
// and be promoted to RECOMMENDATION.
func TestTunerLearnsAndPromotes(t *testing.T) {
	requireReward(t)
	if testing.Short() {
		t.Skip("learns for up to 120 s")
	}
	tb := newTestbed(t, testbed.Config{Throttle: testbed.Throttle{ReadIOPS: 100}})
	tu := newTuner(t, tb, Config{Mode: model.ModeCollaboration,
		Controller: model.ControllerConfig{MinSamples: 20, Confidence: 0.95, MinEffect: 0.05}})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- tu.Run(ctx) }()
	start := time.Now()
	for time.Since(start) < 120*time.Second && tu.Mode() != model.ModeRecommendation {
		if _, err := tb.Run(ctx, testbed.Seq, 2*time.Second, nil); err != nil {
			t.Fatal(err)
		}
	}
	st := tu.Status()
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	t.Logf("after %v: mode %v, learned %v; %s", time.Since(start).Round(time.Second), st.Mode, st.Devices[0].Learned, st.Evidence)
	if kb := st.Devices[0].Learned[PhaseSequential.String()]; kb <= testbed.DefaultReadAheadKB {
		t.Errorf("learned %d KB for sequential reads at 100 IOPS, want more than the default %d", kb, testbed.DefaultReadAheadKB)
	}
	if st.Mode != model.ModeRecommendation {
		t.Errorf("mode %v after 120 s, want RECOMMENDATION", st.Mode)
	}
	if got := kernelKB(t, tb); got != testbed.DefaultReadAheadKB {
		t.Errorf("after the model stopped the device holds %d, want its original %d", got, testbed.DefaultReadAheadKB)
	}
}

// TestPromotionStartsANewBlock: a block drawn in COLLABORATION (here a
// control block, on the device's default) ends when the mode changes, so
// a promotion applies the model's setting at once, not a block later.
func TestPromotionStartsANewBlock(t *testing.T) {
	tb := newTestbed(t, testbed.Config{})
	setKB(t, tb, 128)
	tu := newTuner(t, tb, Config{Mode: model.ModeCollaboration, MaxMode: model.ModeRecommendation, CollabPermille: 1, HoldoutPermille: 1, Block: time.Hour})
	if err := tu.Recommend(tb.Name, 2048); err != nil {
		t.Fatal(err)
	}
	tu.step(time.Now())
	if got := kernelKB(t, tb); got != 128 {
		t.Fatalf("in a COLLABORATION control block (model share 0.1 %%) the device holds %d, want 128", got)
	}
	tu.mu.Lock()
	tu.control.Mode = model.ModeRecommendation // as the controller's promotion does
	err := tu.renew()
	tu.mu.Unlock()
	if err != nil {
		t.Fatal(err)
	}
	tu.step(time.Now())
	if got := kernelKB(t, tb); got != 2048 {
		t.Errorf("right after the promotion (holdout 0.1 %%) the device holds %d, want the model's 2048", got)
	}
}
