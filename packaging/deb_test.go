package packaging

import (
	"bufio"
	"bytes"
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

	"golang.org/x/sys/unix"

	"github.com/mlbpf/mlbpf/internal/testutil"
	"github.com/mlbpf/mlbpf/loader"
)

// unitPath is where the package installs its unit.
const unitPath = "/lib/systemd/system/mlbpf.service"

// Installed files the package must hold, and remove.
var installed = []string{
	"/usr/bin/mlbpf", "/etc/mlbpf/mlbpf.yaml", unitPath,
	"/usr/share/bash-completion/completions/mlbpf", "/usr/share/zsh/vendor-completions/_mlbpf",
	"/usr/share/man/man8/mlbpf.8.gz",
}

func run(t *testing.T, name string, args ...string) string {
	t.Helper()
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

func need(t *testing.T, tools ...string) {
	t.Helper()
	for _, tool := range tools {
		if _, err := exec.LookPath(tool); err != nil {
			testutil.Missing(t, fmt.Sprintf("%s (scripts/setup.sh test installs it)", tool))
		}
	}
}

// TestDebianPackage builds the package with scripts/deb.sh, installs it
// on this host, checks its unit with systemd-analyze, runs the unit's
// ExecStart under the unit's capability bounding set (and no_new_privs)
// on a cgroup of its own and sees tcp/cc attach, the readiness reach
// $NOTIFY_SOCKET, a reload announced there, and the daemon drop its
// capabilities; then removes the package and purges it, leaving nothing.
func TestDebianPackage(t *testing.T) {
	testutil.RequireBPF(t)
	if os.Getenv("VMTEST_GUEST") != "" {
		// The guest's root file system is the host's, shared by vng:
		// installing there would change the host's. make test runs this
		// on the host; the package does not depend on the kernel.
		t.Skip("in a vmtest guest the root file system is the host's: the package is tested on the host (make test)")
	}
	need(t, "dpkg-deb", "dpkg", "systemd-analyze", "setpriv")
	if out, err := exec.Command("dpkg-query", "-W", "-f=${Status}", "mlbpf").Output(); err == nil && strings.Contains(string(out), "installed") {
		t.Skip("an mlbpf package is installed on this host: the test would replace and remove it")
	}
	// Removing the package rolls back the default paths: refuse to touch
	// a daemon or pins that are not the test's.
	for _, p := range []string{"/sys/fs/bpf/mlbpf", "/run/mlbpf/agent.sock", "/var/lib/mlbpf", "/etc/mlbpf"} {
		if _, err := os.Stat(p); err == nil {
			t.Skipf("%s exists: mlbpf runs, or ran, on this host's default paths, which removing the package would roll back", p)
		}
	}
	if err := unix.Access("/usr/bin", unix.W_OK); err != nil {
		// A read-only /usr (a container, an image).
		t.Skipf("/usr/bin is not writable (%v): the package cannot be installed on this system", err)
	}
	cgroot, err := loader.Cgroup2Root()
	if err != nil {
		testutil.Missing(t, err.Error())
	}

	// Build.
	dist := t.TempDir()
	build := exec.Command("../scripts/deb.sh", dist)
	build.Env = append(os.Environ(), "PATH="+filepath.Join(runtime.GOROOT(), "bin")+":"+os.Getenv("PATH"), "VERSION=0.0.1-test")
	out, err := build.CombinedOutput()
	if err != nil {
		t.Fatalf("scripts/deb.sh: %v\n%s", err, out)
	}
	deb := strings.TrimSpace(string(out[bytes.LastIndexByte(bytes.TrimSpace(out), '\n')+1:]))
	if !strings.HasSuffix(deb, "mlbpf_0.0.1+test_"+runtime.GOARCH+".deb") {
		t.Fatalf("package %q", deb)
	}
	contents := run(t, "dpkg-deb", "-c", deb)
	for _, f := range installed {
		if !strings.Contains(contents, "."+f+"\n") {
			t.Errorf("the package has no %s:\n%s", f, contents)
		}
	}
	if c := run(t, "dpkg-deb", "-f", deb, "Version"); strings.TrimSpace(c) != "0.0.1+test" {
		t.Errorf("version %q", c)
	}
	if c := run(t, "dpkg-deb", "--ctrl-tarfile", deb); c == "" {
		t.Error("no control archive")
	}

	// Install; whatever happens, purge at the end.
	t.Cleanup(func() { _ = exec.Command("dpkg", "--purge", "mlbpf").Run() })
	run(t, "dpkg", "-i", deb)
	for _, f := range installed {
		if _, err := os.Stat(f); err != nil {
			t.Errorf("installed: %v", err)
		}
	}
	if out := run(t, "/usr/bin/mlbpf", "version"); !strings.Contains(out, "0.0.1+test") {
		t.Errorf("mlbpf version: %s", out)
	}
	if out := run(t, "dpkg-query", "-W", "-f=${Conffiles}", "mlbpf"); !strings.Contains(out, "/etc/mlbpf/mlbpf.yaml") {
		t.Errorf("conffiles: %q", out)
	}
	def := run(t, "/usr/bin/mlbpf", "config", "default")
	if b, _ := os.ReadFile("/etc/mlbpf/mlbpf.yaml"); string(b) != def {
		t.Error("/etc/mlbpf/mlbpf.yaml is not the embedded default")
	}
	// The unit: systemd-analyze says nothing about it.
	if out, err := exec.Command("systemd-analyze", "verify", unitPath).CombinedOutput(); err != nil || len(bytes.TrimSpace(out)) > 0 {
		t.Errorf("systemd-analyze verify %s: %v\n%s", unitPath, err, out)
	}
	unit := readUnit(t, unitPath)
	for k, want := range map[string]string{"Type": "notify", "Restart": "on-failure", "NoNewPrivileges": "yes", "ProtectSystem": "strict"} {
		if unit[k] != want {
			t.Errorf("unit %s=%q, want %q", k, unit[k], want)
		}
	}
	if unit["ExecReload"] == "" || !strings.Contains(unit["ReadWritePaths"], "/sys/fs/bpf") {
		t.Errorf("unit: ExecReload %q, ReadWritePaths %q", unit["ExecReload"], unit["ReadWritePaths"])
	}

	t.Run("ExecStart under the unit's capabilities", func(t *testing.T) {
		execStartUnderUnitCaps(t, unit, cgroot)
	})

	// Remove: everything but the configuration goes; purge: all of it.
	run(t, "dpkg", "-r", "mlbpf")
	for _, f := range installed {
		_, err := os.Stat(f)
		if f == "/etc/mlbpf/mlbpf.yaml" {
			if err != nil {
				t.Errorf("removed, the conffile should stay until purge: %v", err)
			}
			continue
		}
		if err == nil {
			t.Errorf("removed, %s is still there", f)
		}
	}
	run(t, "dpkg", "--purge", "mlbpf")
	for _, p := range []string{"/etc/mlbpf", "/var/lib/mlbpf", "/sys/fs/bpf/mlbpf"} {
		if _, err := os.Stat(p); err == nil {
			t.Errorf("purged, %s is still there", p)
		}
	}
	if out, _ := exec.Command("dpkg-query", "-W", "-f=${Status}", "mlbpf").Output(); strings.Contains(string(out), "installed") {
		t.Errorf("purged, dpkg says %q", out)
	}
}

// readUnit reads a unit's assignments (the last one of a key wins).
func readUnit(t *testing.T, path string) map[string]string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	out := map[string]string{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if k, v, ok := strings.Cut(line, "="); ok && !strings.HasPrefix(line, "#") {
			out[k] = v
		}
	}
	return out
}

// setprivCaps turns CapabilityBoundingSet into setpriv's --bounding-set.
func setprivCaps(t *testing.T, set string) string {
	t.Helper()
	caps := []string{"-all"}
	for _, c := range strings.Fields(set) {
		if !strings.HasPrefix(c, "CAP_") {
			t.Fatalf("CapabilityBoundingSet %q: %q", set, c)
		}
		caps = append(caps, "+"+strings.ToLower(strings.TrimPrefix(c, "CAP_")))
	}
	return strings.Join(caps, ",")
}

func execStartUnderUnitCaps(t *testing.T, unit map[string]string, cgroot string) {
	argv := strings.Fields(unit["ExecStart"])
	if len(argv) < 2 || argv[1] != "run" || unit["CapabilityBoundingSet"] == "" {
		t.Fatalf("ExecStart %q, CapabilityBoundingSet %q", unit["ExecStart"], unit["CapabilityBoundingSet"])
	}
	cg, err := os.MkdirTemp(cgroot, "mlbpf-deb-test-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.Remove(cg) })
	dir := t.TempDir()
	root := testutil.PinRoot(t)
	socket := filepath.Join(dir, "run", "agent.sock")
	cfg := filepath.Join(dir, "mlbpf.yaml")
	// The installed configuration, on a cgroup and paths of the test's.
	conf := strings.NewReplacer("pin_root: /sys/fs/bpf/mlbpf", "pin_root: "+root,
		"state_dir: /var/lib/mlbpf", "state_dir: "+filepath.Join(dir, "state"),
		"socket: /run/mlbpf/agent.sock", "socket: "+socket,
		`cgroup: ""`, "cgroup: "+cg).Replace(run(t, "/usr/bin/mlbpf", "config", "default"))
	if !strings.Contains(conf, "cgroup: "+cg) || strings.Contains(conf, "/sys/fs/bpf/mlbpf\n") {
		t.Fatalf("could not point the default configuration at the test's paths:\n%s", conf)
	}
	if err := os.WriteFile(cfg, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	for i, a := range argv {
		if a == "/etc/mlbpf/mlbpf.yaml" {
			argv[i] = cfg
		}
	}

	notify := filepath.Join(dir, "notify")
	ln, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: notify, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	got := make(chan string, 16)
	go func() {
		buf := make([]byte, 4096)
		for {
			n, err := ln.Read(buf)
			if err != nil {
				close(got)
				return
			}
			got <- string(buf[:n])
		}
	}()
	args := append([]string{"--bounding-set", setprivCaps(t, unit["CapabilityBoundingSet"]), "--inh-caps", "-all", "--no-new-privs"}, argv...)
	cmd := exec.Command("setpriv", args...)
	cmd.Env = append(os.Environ(), "NOTIFY_SOCKET="+notify)
	var logs testutil.SyncBuffer
	cmd.Stdout, cmd.Stderr = &logs, &logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	defer func() {
		_ = cmd.Process.Kill()
		<-done
		_ = exec.Command("/usr/bin/mlbpf", "rollback", "--config", cfg).Run()
	}()
	expect := func(what string) string {
		t.Helper()
		select {
		case m := <-got:
			if !strings.Contains(m, what) {
				t.Fatalf("systemd got %q, want %s\n%s", m, what, logs.String())
			}
			return m
		case err := <-done:
			t.Fatalf("the daemon exited (%v) before %s:\n%s", err, what, logs.String())
		case <-time.After(30 * time.Second):
			t.Fatalf("no %s on NOTIFY_SOCKET within 30s:\n%s", what, logs.String())
		}
		return ""
	}
	if m := expect("READY=1"); !strings.Contains(m, fmt.Sprintf("MAINPID=%d", cmd.Process.Pid)) {
		t.Errorf("readiness %q: not the daemon's pid %d", m, cmd.Process.Pid)
	}
	// Ready means tcp/cc is attached and running, the socket listens.
	var st []struct {
		Model  string `json:"model"`
		State  string `json:"state"`
		Live   bool   `json:"live"`
		Daemon *struct {
			Capabilities string `json:"capabilities"`
		} `json:"daemon"`
	}
	out := run(t, "/usr/bin/mlbpf", "status", "-o", "json", "--config", cfg)
	if err := json.Unmarshal([]byte(out), &st); err != nil || len(st) != 1 || st[0].Model != "tcp/cc" || st[0].State != "RUNNING" {
		t.Fatalf("status once ready: %v\n%s", err, out)
	}
	if _, err := os.Stat(filepath.Join(root, "tcp", "cc", "link")); err != nil {
		t.Fatalf("tcp/cc's sock_ops link: %v", err)
	}
	if _, err := os.Stat(socket); err != nil {
		t.Fatalf("the agent socket: %v", err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		out = run(t, "/usr/bin/mlbpf", "status", "-o", "json", "--config", cfg)
		if err := json.Unmarshal([]byte(out), &st); err == nil && st[0].Daemon != nil && st[0].Daemon.Capabilities == "dropped" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the daemon did not drop its capabilities:\n%s\n%s", out, logs.String())
		}
		time.Sleep(100 * time.Millisecond)
	}
	// ExecReload: SIGHUP, announced.
	if err := cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	expect("RELOADING=1")
	expect("READY=1")
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	expect("STOPPING=1")
	select {
	case err := <-done:
		done <- err
		if err != nil {
			t.Fatalf("the daemon exited: %v\n%s", err, logs.String())
		}
	case <-time.After(30 * time.Second):
		t.Fatal("the daemon did not stop on SIGTERM")
	}
	// ExecStopPost, under the same capabilities: the pins stay.
	post := strings.Fields(unit["ExecStopPost"])
	for i, a := range post {
		if a == "/etc/mlbpf/mlbpf.yaml" {
			post[i] = cfg
		}
	}
	if len(post) == 0 {
		t.Fatal("the unit has no ExecStopPost")
	}
	args = append([]string{"--bounding-set", setprivCaps(t, unit["CapabilityBoundingSet"]), "--inh-caps", "-all", "--no-new-privs"}, post...)
	if out, err := exec.Command("setpriv", args...).CombinedOutput(); err != nil || !strings.Contains(string(out), "tcp/cc: applied in BPF: nothing to restore") {
		t.Errorf("ExecStopPost: %v\n%s", err, out)
	}
	if _, err := os.Stat(filepath.Join(root, "tcp", "cc", "link")); err != nil {
		t.Errorf("tcp/cc's pins after ExecStopPost: %v", err)
	}
}
