package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/mlbpf/mlbpf/agent"
	"github.com/mlbpf/mlbpf/internal/testutil"
	"github.com/mlbpf/mlbpf/loader"
	"github.com/mlbpf/mlbpf/model"
	"github.com/mlbpf/mlbpf/synthetic"
)

const killConfig = `
interval: 250ms
models:
  - name: synthetic/demo
    mode: collaboration
    max_mode: collaboration
    lease: 2s   # 8 periods: a slow VM must not lose it (and trip) before the kill
    synthetic:
      pid: %d
      portion_bytes: 1048576
`

// TestDaemonKilled SIGKILLs the daemon while the kernel applies its
// model, and checks that the kernel returns to its default within the
// lease with no user space action at all (the applier stays attached by
// its pin: the lease, not the process's exit, ends the model's say), that
// a restarted daemon adopts the pins and continues (generation, mode,
// arm counts, the records the kernel made meanwhile), and that a dataset
// exported before the crash is intact.
func TestDaemonKilled(t *testing.T) {
	load := lightLoad(t)
	s := newSession(t, fmt.Sprintf(killConfig, load))
	const lease = 2 * time.Second
	p := s.spawn()
	dir := filepath.Join(s.root, "synthetic", "demo")
	controlID := testutil.PinnedMapID(t, filepath.Join(dir, "control"))

	// Mid-apply: the kernel applies the model's recommendations.
	s.waitFor("the kernel to apply the model", func() bool { return s.pinned().Arms[model.ArmModel] > 0 })
	if n := testutil.LinksUsingMap(t, controlID); n != 1 {
		t.Fatalf("the applier is attached %d times, want once", n)
	}
	exported := filepath.Join(t.TempDir(), "before.jsonl")
	s.must("dataset", "export", "synthetic/demo", "-o", exported)
	saved, err := os.ReadFile(exported)
	if err != nil || len(saved) == 0 {
		t.Fatalf("export before the crash: %d bytes, %v", len(saved), err)
	}

	// A portion the daemon has extracted, as an agent sees it.
	ctx := context.Background()
	c, err := agent.Dial(ctx, s.socket)
	if err != nil {
		t.Fatal(err)
	}
	extracted, err := c.Fetch(ctx, "synthetic/demo", agent.FetchOptions{Raw: true})
	c.Close()
	if err != nil || extracted.Size == 0 {
		t.Fatalf("the newest portion before the crash: %+v %v", extracted, err)
	}

	killed := loader.MonotonicNs()
	p.signal(syscall.SIGKILL)
	if _, sig := p.wait(5 * time.Second); sig != syscall.SIGKILL {
		t.Fatalf("the daemon ended by %v, want SIGKILL", sig)
	}
	at := s.pinned() // as the daemon left it
	deadline := at.Control.LeaseExpiresNs
	if left := time.Duration(int64(deadline) - int64(killed)); left > lease {
		t.Fatalf("the lease ran %v past the kill, longer than the configured %v", left, lease)
	}
	if _, err := os.Stat(filepath.Join(dir, synthetic.LinkPin)); err != nil {
		t.Fatalf("the applier's link is not pinned: %v", err)
	}
	if n := testutil.LinksUsingMap(t, controlID); n != 1 {
		t.Fatalf("with the daemon dead the applier is attached %d times, want once (pinned)", n)
	}

	// The kernel falls back on its own once the lease runs out.
	var fellBack time.Duration
	for {
		if pm := s.pinned(); pm.Arms[model.ArmFallback] > at.Arms[model.ArmFallback] {
			fellBack = time.Duration(loader.MonotonicNs() - killed)
			break
		}
		if time.Duration(loader.MonotonicNs()-killed) > lease+10*time.Second {
			t.Fatalf("no fallback %v after the kill (lease %v)", time.Duration(loader.MonotonicNs()-killed), lease)
		}
		time.Sleep(2 * time.Millisecond)
	}
	t.Logf("SIGKILL -> kernel default: lease deadline %v after the kill, first fallback seen after %v (lease %v)",
		time.Duration(int64(deadline)-int64(killed)).Round(time.Millisecond), fellBack.Round(time.Millisecond), lease)
	// From then on the kernel decides, on its default only: poll until
	// it has decided again, checking every time that it took no other arm.
	a := s.pinned()
	var b loader.PinnedModel
	for until := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		b = s.pinned()
		for arm := range loader.ArmCount {
			if d := b.Arms[arm] - a.Arms[arm]; model.Arm(arm) != model.ArmFallback && d != 0 {
				t.Fatalf("%d %v decisions after the lease expired: the kernel must be on its default", d, model.Arm(arm))
			}
		}
		if b.Arms[model.ArmFallback] > a.Arms[model.ArmFallback] {
			break
		}
		if time.Now().After(until) {
			t.Fatal("no decision at all in 10s after the lease: is the applier still attached?")
		}
	}
	if b.Control != at.Control {
		t.Fatalf("the control block changed with no daemon: %+v, was %+v", b.Control, at.Control)
	}
	st, err := s.status()
	if err != nil || st[0].Live || st[0].LeaseLeft == nil || *st[0].LeaseLeft >= 0 {
		t.Fatalf("status after the kill: %+v %v", st, err)
	}
	if out := s.must("status"); !strings.Contains(out, "daemon: not running") || !strings.Contains(out, "expired") {
		t.Fatalf("status after the kill:\n%s", out)
	}

	// A restarted daemon adopts the pins and continues. (Its period is
	// longer, so that it keeps its first portion, with the records of the
	// crash, for a few seconds.)
	if err := os.WriteFile(s.config, []byte(strings.NewReplacer("interval: 250ms", "interval: 1s", "lease: 2s", "lease: 3s").
		Replace(fmt.Sprintf(killConfig, load))), 0o644); err != nil {
		t.Fatal(err)
	}
	p = s.spawn()
	// The portion extracted before the crash is offered again, intact.
	c, err = agent.Dial(ctx, s.socket)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	again, err := c.Fetch(ctx, "synthetic/demo", agent.FetchOptions{Offset: &extracted.Offset, Raw: true})
	if err != nil {
		t.Fatalf("portion %d extracted before the crash, after the restart: %v", extracted.Offset, err)
	}
	if again.Size != extracted.Size || !bytes.Equal(again.Data, extracted.Data) {
		t.Fatalf("portion %d extracted before the crash comes back with %d records, %d bytes; it had %d, %d",
			extracted.Offset, again.Size, len(again.Data), extracted.Size, len(extracted.Data))
	}
	// spawn waits for the daemon's evidence, published at its first
	// period; its runner writes its first block on a goroutine of its own:
	// wait for that block, which must continue the generation.
	var after loader.PinnedModel
	for until := time.Now().Add(15 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		after = s.pinned()
		if int32(after.Control.Generation-at.Control.Generation) > 0 {
			break
		}
		if time.Now().After(until) {
			t.Fatalf("generation %d after the restart, %d before: it must continue\nlogs:\n%s", after.Control.Generation, at.Control.Generation, s.logs)
		}
	}
	if after.Control.Mode != at.Control.Mode {
		t.Fatalf("restarted in %v, the pins say %v", model.Mode(after.Control.Mode), model.Mode(at.Control.Mode))
	}
	for arm := range loader.ArmCount {
		if after.Arms[arm] < b.Arms[arm] {
			t.Fatalf("arm %v counts went back from %d to %d: the stats map was not adopted", model.Arm(arm), b.Arms[arm], after.Arms[arm])
		}
	}
	// No gap: the records the kernel made while no daemon ran reached the
	// new one (its first portion), and they show the kernel never applied
	// the model past the lease. The restarted daemon also offers the
	// portions the killed one spooled (records from before the kill), and
	// publishes its first one at its first period: look through every
	// portion it offers until the records made after the lease show up.
	var dead, afterLease, portions int
	checked := map[uint64]bool{}
	for until := time.Now().Add(15 * time.Second); afterLease == 0; time.Sleep(50 * time.Millisecond) {
		if time.Now().After(until) {
			t.Fatalf("none of the %d portions the restarted daemon offers holds a decision made after the lease ran out (%d after the kill)\nlogs:\n%s",
				portions, dead, s.logs)
		}
		models, err := c.Models(ctx)
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range models {
			if m.Model != "synthetic/demo" {
				continue
			}
			for _, off := range m.Portions {
				if checked[off] {
					continue
				}
				portion, err := c.Fetch(ctx, "synthetic/demo", agent.FetchOptions{Offset: &off, Raw: true})
				if err != nil {
					continue // evicted meanwhile
				}
				checked[off] = true
				portions++
				for i := range int(portion.Size) {
					var r synthetic.Record
					if err := synthetic.DecodeRecord(portion.Record(i), &r); err != nil {
						t.Fatal(err)
					}
					if r.Hdr.Generation != at.Control.Generation || r.Hdr.TsNs < killed {
						continue
					}
					dead++
					if r.Hdr.TsNs > deadline {
						afterLease++
						if model.Arm(r.Hdr.Arm) != model.ArmFallback || r.Applied != r.DefaultValue {
							t.Fatalf("a decision after the lease took %v and answered %d (default %d)", model.Arm(r.Hdr.Arm), r.Applied, r.DefaultValue)
						}
					}
				}
			}
		}
	}
	t.Logf("the restarted daemon's portions: %d looked through, %d decisions made after the kill, %d of them after the lease", portions, dead, afterLease)
	if after.Lost != at.Lost {
		t.Fatalf("%d records lost while no daemon ran", after.Lost-at.Lost)
	}
	s.waitFor("the model applied again", func() bool { return s.pinned().Arms[model.ArmModel] > b.Arms[model.ArmModel] })
	if n := testutil.LinksUsingMap(t, controlID); n != 1 {
		t.Fatalf("after the restart the applier is attached %d times, want once", n)
	}
	if now, err := os.ReadFile(exported); err != nil || !bytes.Equal(now, saved) {
		t.Fatalf("the dataset exported before the crash changed (%v)", err)
	}

	// Killed again: rollback alone detaches what it left.
	p.signal(syscall.SIGKILL)
	p.wait(5 * time.Second)
	s.must("rollback")
	if n := testutil.LinksUsingMap(t, controlID); n != 0 {
		t.Fatalf("after rollback the applier is attached %d times", n)
	}
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Fatalf("pins left after rollback: %v", err)
	}
}

const capsConfig = `
interval: 100ms
models:
  - name: synthetic/demo
    max_mode: recommendation
    lease: 3s   # generous: a slow VM must not lose it by accident
    synthetic:
      pid: %d
`

// TestDaemonDropsCapabilities checks that once its model is attached the
// daemon holds no capability on any thread, bounding set included, with
// no_new_privs set, and still does all its work: renew leases, read
// records, write an agent's recommendation, re-attach the applier after
// an operator's stop and start, and clean up on SIGTERM.
func TestDaemonDropsCapabilities(t *testing.T) {
	s := newSession(t, fmt.Sprintf(capsConfig, syscallLoad(t)))
	p := s.spawn()
	dir := filepath.Join(s.root, "synthetic", "demo")
	controlID := testutil.PinnedMapID(t, filepath.Join(dir, "control"))
	allowed := uint64(0)
	for _, c := range loader.KeepAfterAttach() {
		allowed |= 1 << c
	}
	s.waitFor("the capabilities to be dropped", func() bool {
		caps, err := loader.ThreadCapabilities(p.pid())
		if err != nil {
			t.Fatal(err)
		}
		for _, c := range caps {
			if c.Effective|c.Permitted|c.Bounding|c.Inheritable|c.Ambient != c.Effective&c.Permitted&c.Bounding&allowed {
				return false
			}
		}
		return len(caps) > 0
	})
	caps, _ := loader.ThreadCapabilities(p.pid())
	for tid, c := range caps {
		if c.Inheritable != 0 || c.Ambient != 0 || c.Effective&^allowed != 0 || c.Permitted&^allowed != 0 || c.Bounding&^allowed != 0 {
			t.Fatalf("thread %d: %v", tid, c)
		}
	}
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", p.pid()))
	if err != nil || !bytes.Contains(status, []byte("NoNewPrivs:\t1")) {
		t.Fatalf("no_new_privs not set (%v)", err)
	}
	t.Logf("daemon pid %d, %d threads: %v", p.pid(), len(caps), caps[p.pid()])
	s.waitFor("the evidence to say so", func() bool {
		st, err := s.status()
		return err == nil && st[0].Daemon != nil && st[0].Daemon.Capabilities != ""
	})
	if st, _ := s.status(); allowed == 0 && st[0].Daemon.Capabilities != "dropped" {
		t.Fatalf("evidence says capabilities %q", st[0].Daemon.Capabilities)
	}

	// Its work goes on without them.
	leaseBefore := s.pinned().Control.LeaseExpiresNs
	s.waitFor("a lease renewal", func() bool { return s.pinned().Control.LeaseExpiresNs > leaseBefore })
	if out := s.must("recommend", "synthetic/demo", "5", "42"); !strings.Contains(out, "through the daemon") {
		t.Fatalf("recommend: %s", out)
	}
	s.must("stop", "synthetic/demo")
	s.waitFor("the applier detached", func() bool { return testutil.LinksUsingMap(t, controlID) == 0 })
	s.must("start", "synthetic/demo")
	s.waitFor("the applier attached again, without capabilities", func() bool {
		return s.pinned().Control.State == uint32(model.StateRunning) && testutil.LinksUsingMap(t, controlID) == 1
	})
	decided := func() (n uint64) {
		arms := s.pinned().Arms
		for arm, c := range arms {
			if model.Arm(arm) != model.ArmFallback {
				n += c
			}
		}
		return n
	}
	before := decided()
	s.waitFor("the model deciding again", func() bool { return decided() > before })

	p.signal(syscall.SIGTERM)
	if code, sig := p.wait(10 * time.Second); code != 0 {
		t.Fatalf("exit status %d (signal %v) after SIGTERM\n%s", code, sig, p.logs)
	}
	pm := s.pinned()
	if model.State(pm.Control.State) != model.StateStopped || pm.Control.LeaseExpiresNs != 0 {
		t.Fatalf("control block after SIGTERM: %+v", pm.Control)
	}
	for _, gone := range []string{filepath.Join(dir, synthetic.LinkPin), s.socket, filepath.Join(filepath.Dir(s.socket), "mlbpf.lock")} {
		if _, err := os.Stat(gone); !os.IsNotExist(err) {
			t.Errorf("%s left after SIGTERM (%v)", gone, err)
		}
	}
	if n := testutil.LinksUsingMap(t, controlID); n != 0 {
		t.Fatalf("applier attached %d times after SIGTERM", n)
	}
	for _, bad := range []string{"operation not permitted", "permission denied", "level=ERROR"} {
		if strings.Contains(p.logs.String(), bad) {
			t.Errorf("the daemon's logs say %q:\n%s", bad, p.logs)
		}
	}
}

// asNobody runs fn on a thread whose effective uid is 65534, as a process
// of another user would connect.
func asNobody(t *testing.T, fn func()) {
	t.Helper()
	done := make(chan struct{})
	go func() {
		defer close(done)
		runtime.LockOSThread()
		if _, _, e := syscall.RawSyscall(syscall.SYS_SETRESUID, ^uintptr(0), 65534, ^uintptr(0)); e != 0 {
			runtime.UnlockOSThread()
			t.Errorf("setresuid: %v", e)
			return
		}
		fn()
		if _, _, e := syscall.RawSyscall(syscall.SYS_SETRESUID, ^uintptr(0), 0, ^uintptr(0)); e != 0 {
			return // the thread ends with the goroutine, still locked
		}
		runtime.UnlockOSThread()
	}()
	<-done
}

// TestPrivilegeBoundaries checks what a user other than root meets: the
// pins, the state and the agent socket are root's alone (modes 0600 and
// 0700), the socket refuses another user's connection even with its mode
// opened (SO_PEERCRED), and every privileged command of the binary,
// run as nobody, is refused with a message saying to use sudo and exit
// status 1, changing nothing.
func TestPrivilegeBoundaries(t *testing.T) {
	// Learning only: the controller changes nothing meanwhile, so any
	// change to the block would be the unprivileged commands'.
	s := newSession(t, fmt.Sprintf(`
interval: 100ms
models:
  - name: synthetic/demo
    max_mode: learning
    lease: 3s
    synthetic:
      pid: %d
`, syscallLoad(t)))
	s.start()
	bin := mlbpfBinary(t)
	dir := filepath.Join(s.root, "synthetic", "demo")

	mode := func(path string) os.FileMode {
		t.Helper()
		fi, err := os.Lstat(path)
		if err != nil {
			t.Fatal(err)
		}
		return fi.Mode()
	}
	for _, d := range []string{filepath.Join(s.root, "synthetic"), dir, filepath.Dir(s.socket), s.state,
		filepath.Join(s.state, "synthetic"), filepath.Join(s.state, "synthetic", "demo")} {
		if m := mode(d); m.Perm() != 0o700 || !m.IsDir() {
			t.Errorf("%s: %v, want drwx------", d, m)
		}
	}
	pins, err := loader.Pins(dir)
	if err != nil || len(pins) < 5 {
		t.Fatalf("pins %v, %v", pins, err)
	}
	for _, pin := range pins {
		if m := mode(filepath.Join(dir, pin)); m.Perm() != 0o600 {
			t.Errorf("pin %s: %v, want -rw-------", pin, m)
		}
	}
	if m := mode(s.socket); m.Type() != os.ModeSocket || m.Perm() != 0o600 {
		t.Errorf("agent socket: %v, want srw-------", m)
	}
	if m := mode(filepath.Join(filepath.Dir(s.socket), "mlbpf.lock")); m.Perm() != 0o600 {
		t.Errorf("lock file: %v, want -rw-------", m)
	}

	// Another user cannot reach the socket; with its mode opened, the
	// daemon refuses the peer.
	dial := func() string {
		var out string
		asNobody(t, func() {
			nc, err := net.Dial("unix", s.socket)
			if err != nil {
				out = err.Error()
				return
			}
			defer nc.Close()
			_ = nc.SetDeadline(time.Now().Add(5 * time.Second))
			fmt.Fprintf(nc, "{\"id\":1,\"op\":\"models\"}\n")
			b := make([]byte, 4096)
			n, _ := nc.Read(b)
			out = string(b[:n])
		})
		return out
	}
	if out := dial(); !strings.Contains(out, "permission denied") {
		t.Fatalf("another user reached the daemon's socket: %s", out)
	}
	for d := filepath.Dir(s.socket); d != "/"; d = filepath.Dir(d) {
		if strings.HasPrefix(d, os.TempDir()+"/") {
			_ = os.Chmod(d, 0o755)
		}
	}
	if err := os.Chmod(s.socket, 0o666); err != nil {
		t.Fatal(err)
	}
	if out := dial(); !strings.Contains(out, "uid 65534 may not use this socket") || strings.Contains(out, `"models"`) {
		t.Fatalf("the daemon served another user: %s", out)
	}

	// Every privileged command, as nobody.
	cfgDir, err := os.MkdirTemp("", "mlbpf-cfg-")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(cfgDir)
	cfg := filepath.Join(cfgDir, "mlbpf.yaml")
	b, _ := os.ReadFile(s.config)
	if err := os.WriteFile(cfg, b, 0o644); err != nil || os.Chmod(cfgDir, 0o755) != nil {
		t.Fatal(err)
	}
	paths := []string{"--pin-root", s.root, "--state-dir", s.state, "--socket", s.socket}
	before := s.control()
	asUser := func(args ...string) (int, string) {
		cmd := exec.Command(bin, args...)
		cmd.Dir, cmd.Env = "/", append([]string{"PATH=/usr/bin:/bin"}, builtBinary.env...)
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		done := make(chan error, 1)
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		go func() { done <- cmd.Wait() }()
		select {
		case err := <-done:
			code, sig := exitStatus(t, err)
			if sig != 0 {
				t.Fatalf("mlbpf %s as nobody: killed by %v\n%s", strings.Join(args, " "), sig, stderr.String())
			}
			return code, stderr.String()
		case <-time.After(15 * time.Second):
			_ = cmd.Process.Kill()
			t.Fatalf("mlbpf %s as nobody: still running after 15s", strings.Join(args, " "))
			return 0, ""
		}
	}
	for _, args := range [][]string{
		{"status"},
		{"mode", "synthetic/demo", "emergency"},
		{"stop", "synthetic/demo"},
		{"start", "synthetic/demo"},
		{"recommend", "synthetic/demo", "5", "42"},
		{"dataset", "get", "synthetic/demo"},
		{"dataset", "discard", "synthetic/demo"},
		{"dataset", "export", "synthetic/demo", "-o", filepath.Join(cfgDir, "out.jsonl")},
		{"rollback"},
		{"run", "--config", cfg, "--duration", "5s"},
	} {
		code, stderr := asUser(append(args, paths...)...)
		if code != 1 || !strings.Contains(stderr, "needs root") || !strings.Contains(stderr, "run it with sudo") || strings.Contains(stderr, "panic") {
			t.Errorf("mlbpf %s as nobody: exit status %d, stderr:\n%s", strings.Join(args, " "), code, stderr)
		}
	}
	// The same binary, same user, runs what needs no privilege: the
	// refusals above are about privilege.
	if code, stderr := asUser("version"); code != 0 {
		t.Fatalf("mlbpf version as nobody: exit status %d\n%s", code, stderr)
	}
	after := s.control()
	if after.Mode != before.Mode || after.State != before.State || after.Generation != before.Generation {
		t.Fatalf("an unprivileged command changed the control block: %v -> %v", before, after)
	}
	if _, err := os.Stat(filepath.Join(cfgDir, "out.jsonl")); !os.IsNotExist(err) {
		t.Fatalf("an unprivileged export wrote a file (%v)", err)
	}
	s.waitFor("the daemon to run on", func() bool {
		st, err := s.status()
		return err == nil && st[0].Live && st[0].State == "RUNNING" && st[0].Daemon.Records > 0
	})
}

// encodeJSONLines counts the lines of b that parse as JSON objects, and
// reports whether every line does.
func encodeJSONLines(b []byte) (int, bool) {
	n := 0
	for _, l := range bytes.Split(bytes.TrimSuffix(b, []byte("\n")), []byte("\n")) {
		var v map[string]any
		if json.Unmarshal(l, &v) != nil {
			return n, false
		}
		n++
	}
	return n, len(b) > 0 && b[len(b)-1] == '\n'
}
