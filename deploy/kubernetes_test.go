package deploy

import (
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/mlbpf/mlbpf/config"
	"github.com/mlbpf/mlbpf/internal/testutil"
	"github.com/mlbpf/mlbpf/loader"
)

// node is one test's stand-in for a Kubernetes node: the manifests'
// container, its configuration rewritten to the test's own pin root and
// cgroup, its state and socket directories in a temporary directory, and
// the host's mlbpf binary to look at it from outside.
type node struct {
	t         *testing.T
	p         *podman
	spec      podSpec
	c         container
	dir       string // the node's own directories (/var/lib/mlbpf, /run/mlbpf)
	configDir string // the ConfigMap's files
	cfg       *config.Config
	cgroup    string // tcp/cc's cgroup, the test's
	bin       string // mlbpf built for the host
}

func newNode(t *testing.T) *node {
	t.Helper()
	p := newPodman(t)
	spec, c, cm := readManifests(t)
	n := &node{t: t, p: p, spec: spec, c: c, dir: filepath.Join(p.dir, "node"), configDir: filepath.Join(p.dir, "config")}

	// The ConfigMap's configuration, on this node's pin root and tcp/cc
	// in a cgroup of the test's: the same file otherwise.
	const key = "mlbpf.yaml"
	text, ok := cm.Data[key]
	if !ok {
		t.Fatalf("%s: no %s in data", configMapFile, key)
	}
	orig, err := config.Parse(key, []byte(text))
	if err != nil {
		t.Fatalf("%s: the configuration does not load: %v", configMapFile, err)
	}
	cgroot, err := loader.Cgroup2Root()
	if err != nil {
		testutil.Missing(t, err.Error())
	}
	n.cgroup, err = os.MkdirTemp(cgroot, "mlbpf-image-test-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.Remove(n.cgroup) })
	pinRoot := testutil.PinRoot(t)
	for old, repl := range map[string]string{
		"pin_root: " + orig.PinRoot: "pin_root: " + pinRoot,
		`cgroup: ""`:                "cgroup: " + n.cgroup,
	} {
		if strings.Count(text, old) != 1 {
			t.Fatalf("%s: want one %q to point at the test's own, have %d", configMapFile, old, strings.Count(text, old))
		}
		text = strings.Replace(text, old, repl, 1)
	}
	if n.cfg, err = config.Parse(key, []byte(text)); err != nil {
		t.Fatal(err)
	}
	// Where the pins, state and socket are must be on the node, through
	// a hostPath mount: status on the node sees them, and the next pod
	// adopts them.
	for _, path := range []string{orig.PinRoot, n.cfg.StateDir, filepath.Dir(n.cfg.Socket)} {
		if n.onNode(path) == "" {
			t.Fatalf("%s: %s is on no hostPath mount of %s: it would die with the pod", configMapFile, path, daemonSetFile)
		}
	}
	if err := os.MkdirAll(n.configDir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(n.configDir, key), []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}

	n.bin = filepath.Join(p.dir, "mlbpf")
	build := exec.Command("go", "build", "-o", n.bin, "./cmd/mlbpf")
	build.Dir = ".."
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("building mlbpf: %v\n%s", err, out)
	}
	p.buildImage(c.Image)
	return n
}

// host is the node's hostPaths: the kernel's file systems are the host's,
// everything else is under the test's directory.
func (n *node) host(path string) string {
	if path == "/sys" || strings.HasPrefix(path, "/sys/") {
		return path
	}
	return filepath.Join(n.dir, path)
}

// onNode returns where path, as the container sees it, is on the node, or
// "" if no hostPath volume holds it.
func (n *node) onNode(path string) string {
	best, where := "", ""
	for _, m := range n.c.VolumeMounts {
		rel, err := filepath.Rel(m.MountPath, path)
		if err != nil || rel == ".." || strings.HasPrefix(rel, "../") || len(m.MountPath) <= len(best) {
			continue
		}
		i := slices.IndexFunc(n.spec.Volumes, func(v volume) bool { return v.Name == m.Name })
		if i < 0 || n.spec.Volumes[i].HostPath == nil {
			continue
		}
		best, where = m.MountPath, filepath.Join(n.host(n.spec.Volumes[i].HostPath.Path), rel)
	}
	return where
}

// runArgs are the arguments of 'podman run' for c (the manifest's container or
// a variant of it), up to the image.
func (n *node) runArgs(c container) []string {
	n.t.Helper()
	args, err := podmanRunArgs(n.spec, c, n.host, n.configDir)
	if err != nil {
		n.t.Fatalf("%s: %v", daemonSetFile, err)
	}
	return args
}

// mlbpf runs the host's mlbpf on the node's pin root, state and socket.
func (n *node) mlbpf(args ...string) (string, error) {
	args = append(args, "--pin-root", n.cfg.PinRoot, "--state-dir", n.onNode(n.cfg.StateDir), "--socket", n.onNode(n.cfg.Socket))
	out, err := exec.Command(n.bin, args...).CombinedOutput()
	return string(out), err
}

type statusJSON struct {
	Model     string            `json:"model"`
	State     string            `json:"state"`
	Mode      string            `json:"mode"`
	LeaseLeft *float64          `json:"lease_left_seconds"`
	Arms      map[string]uint64 `json:"arms"`
	Live      bool              `json:"live"`
	Pins      string            `json:"pins"`
	Daemon    *struct {
		PID     int    `json:"pid"`
		Records uint64 `json:"records"`
	} `json:"daemon"`
}

// status is 'mlbpf status -o json tcp/cc' on the node, nil if it is not
// pinned.
func (n *node) status() *statusJSON {
	n.t.Helper()
	st, err := n.tryStatus()
	if err != nil {
		n.t.Fatal(err)
	}
	return st
}

// tryStatus is status, returning its error: while the daemon starts, its
// pins appear one by one and 'mlbpf status' may fail on a half-made
// model directory.
func (n *node) tryStatus() (*statusJSON, error) {
	out, err := n.mlbpf("status", "-o", "json")
	if err != nil {
		return nil, fmt.Errorf("mlbpf status on the node: %w\n%s", err, out)
	}
	var list []statusJSON
	if err := json.Unmarshal([]byte(out), &list); err != nil {
		return nil, fmt.Errorf("mlbpf status -o json: %w\n%s", err, out)
	}
	for i := range list {
		if list[i].Model == "tcp/cc" {
			return &list[i], nil
		}
	}
	return nil, nil
}

// rollback is 'mlbpf rollback' on the node: the pins go.
func (n *node) rollback() {
	n.t.Helper()
	if out, err := n.mlbpf("rollback"); err != nil {
		n.t.Errorf("mlbpf rollback on the node: %v\n%s", err, out)
	}
}

// waitUntil waits for ok, and fails t after timeout, saying what it
// waited for and what the optional last says it had instead.
func waitUntil(t *testing.T, what string, timeout time.Duration, ok func() bool, last ...func() string) {
	t.Helper()
	for deadline := time.Now().Add(timeout); !ok(); time.Sleep(200 * time.Millisecond) {
		if time.Now().After(deadline) {
			had := ""
			for _, l := range last {
				had += ": had " + l()
			}
			t.Fatalf("%s: not within %v%s", what, timeout, had)
		}
	}
}

// connect makes n TCP connections to a listener of the test's from a
// shell moved into cgroup, which tcp/cc watches, each sending 256 KiB
// (tcp/cc records flows of 64 KiB or more).
func connect(t *testing.T, cgroup string, n int) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() { _, _ = io.Copy(io.Discard, c); c.Close() }()
		}
	}()
	port := ln.Addr().(*net.TCPAddr).Port
	script := fmt.Sprintf(`echo $$ > %s/cgroup.procs || exit 1
for i in $(seq %d); do exec 3<>/dev/tcp/127.0.0.1/%d || exit 1; head -c 262144 /dev/zero >&3; exec 3>&-; done`, cgroup, n, port)
	if out, err := exec.Command("bash", "-c", script).CombinedOutput(); err != nil {
		t.Fatalf("connecting from cgroup %s: %v\n%s", cgroup, err, out)
	}
}

// TestContainerRunsAsManifest builds the image (the script of 'make image'),
// runs it under podman with the privileges, namespaces and mounts of
// deploy/kubernetes/daemonset.yaml (translated from the file) and the
// configuration of configmap.yaml (on the test's own pin root and cgroup),
// and checks from the host: tcp/cc is attached and decides on the cgroup's
// connections, 'mlbpf status' sees the pins and the daemon's true pid,
// the daemon holds no capability once attached, the metrics port serves,
// the liveness probe passes and fails when the daemon hangs, and a
// stopped container leaves the model STOPPED (the kernel on its default)
// with its pins, which 'mlbpf rollback' removes.
func TestContainerRunsAsManifest(t *testing.T) {
	n := newNode(t)
	name := "mlbpf-test-" + strconv.Itoa(os.Getpid())
	args := append([]string{"run", "--detach", "--name", name}, n.runArgs(n.c)...)
	args = append(append(args, n.c.Image), n.c.Args...)
	if out, err := n.p.run(args...); err != nil {
		t.Fatalf("podman %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	logs := func() string { out, _ := n.p.run("logs", name); return out }
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("the container's log:\n%s", logs())
		}
		_, _ = n.p.run("rm", "--force", "--time", "0", name)
		if _, err := os.Stat(filepath.Join(n.cfg.PinRoot, "tcp")); err == nil {
			n.rollback()
		}
	})

	var st *statusJSON
	var stErr error
	waitUntil(t, "tcp/cc RUNNING, live, in the node's mlbpf status", 60*time.Second, func() bool {
		st, stErr = n.tryStatus()
		return st != nil && st.State == "RUNNING" && st.Live && st.LeaseLeft != nil && *st.LeaseLeft > 0
	}, func() string { return fmt.Sprintf("%+v, %v", st, stErr) })
	if st.Mode != "LEARNING" {
		t.Errorf("the ConfigMap's tcp/cc runs in %s, want LEARNING (max_mode learning)", st.Mode)
	}

	// The daemon's pid, as the node sees it (hostPID): the container's.
	out, err := n.p.run("inspect", "--format", "{{.State.Pid}}", name)
	if err != nil {
		t.Fatal(err, out)
	}
	pid, _ := strconv.Atoi(strings.TrimSpace(out))
	if text, _ := n.mlbpf("status"); !strings.Contains(text, fmt.Sprintf("daemon: running, pid %d,", pid)) {
		t.Errorf("the node's mlbpf status does not name the container's daemon, pid %d:\n%s", pid, text)
	}
	if st.Daemon == nil || st.Daemon.PID != pid {
		t.Errorf("the daemon's evidence names pid %+v, want the node's %d", st.Daemon, pid)
	}
	// Attached, its capabilities all dropped (CAP_SETPCAP).
	waitUntil(t, "the daemon's capabilities dropped", 10*time.Second, func() bool {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
		return err == nil && strings.Contains(string(b), "CapEff:\t0000000000000000") && strings.Contains(string(b), "CapBnd:\t0000000000000000")
	})

	// tcp/cc decides on the connections of its cgroup, and the daemon in
	// the container reads their records.
	connect(t, n.cgroup, 20)
	waitUntil(t, "5 decisions and their records", 20*time.Second, func() bool {
		st = n.status()
		var d uint64
		for _, c := range st.Arms {
			d += c
		}
		return d >= 5 && st.Daemon != nil && st.Daemon.Records >= 5
	}, func() string { return fmt.Sprintf("%+v %+v", st, st.Daemon) })
	if b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid)); err == nil {
		for _, l := range strings.Split(string(b), "\n") {
			if strings.HasPrefix(l, "VmRSS:") || strings.HasPrefix(l, "VmHWM:") {
				t.Logf("the daemon's %s", strings.Join(strings.Fields(l), " "))
			}
		}
	}

	// The Prometheus port, on the pod's address.
	port := 0
	for _, p := range n.c.Ports {
		if p.Name == "metrics" {
			port = p.ContainerPort
		}
	}
	if port == 0 {
		t.Fatalf("%s: no port named metrics", daemonSetFile)
	}
	addr := "127.0.0.1"
	if !n.spec.HostNetwork {
		out, err := n.p.run("inspect", "--format", "{{.NetworkSettings.IPAddress}}", name)
		if err != nil || strings.TrimSpace(out) == "" {
			t.Fatalf("the container's address: %v %q", err, out)
		}
		addr = strings.TrimSpace(out)
	}
	resp, err := (&http.Client{Timeout: 10 * time.Second}).Get(fmt.Sprintf("http://%s/metrics", net.JoinHostPort(addr, strconv.Itoa(port))))
	if err != nil {
		t.Fatalf("the metrics port: %v", err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !strings.Contains(string(body), `mlbpf_mode{mode="LEARNING",model="tcp/cc"} 1`) {
		t.Errorf("the metrics port serves no tcp/cc LEARNING mode:\n%.2000s", body)
	}

	// The liveness probe, run as the kubelet runs it: in the container.
	probe := func() (string, error) {
		return n.p.run(append([]string{"exec", name}, n.c.LivenessProbe.Exec.Command...)...)
	}
	if len(n.c.LivenessProbe.Exec.Command) == 0 {
		t.Fatalf("%s: no exec liveness probe", daemonSetFile)
	}
	if out, err := probe(); err != nil {
		t.Fatalf("the liveness probe fails on a running daemon: %v\n%s", err, out)
	}
	if err := syscall.Kill(pid, syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	stopped := time.Now()
	var hung string
	waitUntil(t, "the liveness probe failing on a hung daemon", 30*time.Second, func() bool {
		out, err := probe()
		hung = out
		return err != nil
	})
	t.Logf("the liveness probe failed %v after the daemon was stopped (SIGSTOP)", time.Since(stopped).Round(100*time.Millisecond))
	if err := syscall.Kill(pid, syscall.SIGCONT); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(hung, "lease") {
		t.Errorf("the probe failed on a hung daemon without naming its lease:\n%s", hung)
	}
	waitUntil(t, "the liveness probe passing once the daemon resumes", 30*time.Second, func() bool {
		_, err := probe()
		return err == nil
	})

	// Stopped as Kubernetes stops a pod: SIGTERM, then the grace period.
	grace := strconv.Itoa(max(n.spec.TerminationGracePeriodSeconds, 1))
	if out, err := n.p.run("stop", "--time", grace, name); err != nil {
		t.Fatalf("podman stop: %v\n%s", err, out)
	}
	if out, _ := n.p.run("inspect", "--format", "{{.State.ExitCode}}", name); strings.TrimSpace(out) != "0" {
		t.Errorf("the daemon exited %s on SIGTERM, want 0", strings.TrimSpace(out))
	}
	if !strings.Contains(logs(), "model stopped: the kernel is on its default") {
		t.Errorf("the daemon did not log tcp/cc stopping")
	}
	st = n.status()
	if st == nil || st.State != "STOPPED" || st.Live {
		t.Fatalf("after the container stopped, the node's status has %+v, want tcp/cc pinned, STOPPED, not live", st)
	}
	if out, err := n.mlbpf("status", "--check"); err == nil {
		t.Errorf("status --check passes with the container stopped:\n%s", out)
	}
	n.rollback()
	if _, err := os.Stat(st.Pins); !os.IsNotExist(err) {
		t.Errorf("pins left after mlbpf rollback: %v", err)
	}
}

// TestContainerNeedsEachCapability runs the image as the manifest does,
// once without each capability the manifest adds, and once with the
// container runtime's default seccomp profile: each fails to attach
// tcp/cc or, CAP_SETPCAP, leaves the daemon with its capabilities. The
// manifest's own set attaches and drops them. The manifest's comments
// quote these failures.
func TestContainerNeedsEachCapability(t *testing.T) {
	n := newNode(t)
	// Each variant's failure must say what it lacks: its word.
	type variant struct {
		name, word string
		c          container
	}
	vs := []variant{{"the manifest's", "", n.c}}
	for _, cp := range n.c.SecurityContext.Capabilities.Add {
		c := n.c
		c.SecurityContext.Capabilities.Add = slices.DeleteFunc(slices.Clone(c.SecurityContext.Capabilities.Add), func(s string) bool { return s == cp })
		word := "CAP_" + cp
		if cp == "SETPCAP" {
			word = "capabilities not dropped" // needed only to drop them
		}
		vs = append(vs, variant{"without CAP_" + cp, word, c})
	}
	if p := n.c.SecurityContext.SeccompProfile; p != nil && p.Type == "Unconfined" {
		c := n.c
		c.SecurityContext.SeccompProfile = nil
		vs = append(vs, variant{"with seccompProfile RuntimeDefault", "seccomp", c})
	}
	for i, v := range vs {
		args := append([]string{"run", "--rm"}, n.runArgs(v.c)...)
		args = append(append(args, n.c.Image), n.c.Args...)
		args = append(args, "--duration", "1s")
		out, err := n.p.run(args...)
		if _, serr := os.Stat(filepath.Join(n.cfg.PinRoot, "tcp")); serr == nil {
			n.rollback()
		}
		attached := strings.Contains(out, "sock_ops attached")
		dropped := strings.Contains(out, "capabilities dropped:")
		why := ""
		for _, l := range strings.Split(out, "\n") {
			if strings.HasPrefix(l, "mlbpf: ") || strings.Contains(l, "not dropped") {
				why = ": " + l
			}
		}
		t.Logf("%s: exit %v, attached %v, capabilities dropped %v%s", v.name, err, attached, dropped, why)
		if i == 0 {
			if err != nil || !attached || !dropped {
				t.Errorf("%s capabilities: exit %v, attached %v, capabilities dropped %v, want all:\n%s", v.name, err, attached, dropped, out)
			}
			continue
		}
		if err == nil && attached && dropped {
			t.Errorf("%s: tcp/cc attached and the daemon dropped its capabilities: the manifest asks for more than it needs", v.name)
		}
		if !strings.Contains(why, v.word) {
			t.Errorf("%s: the daemon does not say what it lacks (%q):\n%s", v.name, v.word, out)
		}
	}
}

// TestManifestPlaysInPodman has 'podman kube play', a real reader of
// Kubernetes YAML, create the DaemonSet's pod (its template, with the
// ConfigMap) without starting it, and checks that what podman made of it
// has the capabilities, mounts, read-only root and no_new_privs that the
// translation TestContainerRunsAsManifest runs with gives. podman 4.3
// ignores hostPID and the seccompProfile field: those two the translation
// alone carries; it refuses spec.nodeName in env, which gets the value. Broken copies of the manifest are refused.
func TestManifestPlaysInPodman(t *testing.T) {
	n := newNode(t)

	var ds map[string]any
	b, err := os.ReadFile(daemonSetFile)
	if err != nil {
		t.Fatal(err)
	}
	if err := yaml.Unmarshal(b, &ds); err != nil {
		t.Fatal(err)
	}
	tmpl := ds["spec"].(map[string]any)["template"].(map[string]any)
	spec := tmpl["spec"].(map[string]any)
	for _, v := range spec["volumes"].([]any) {
		if hp, ok := v.(map[string]any)["hostPath"].(map[string]any); ok {
			hp["path"] = n.host(hp["path"].(string))
		}
	}
	// podman 4.3 refuses the downward API's spec.nodeName (it knows only
	// metadata fields): give it the value, as the translation does.
	node, err := os.Hostname()
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range spec["containers"].([]any) {
		env, _ := c.(map[string]any)["env"].([]any)
		for _, e := range env {
			e := e.(map[string]any)
			if vf, ok := e["valueFrom"].(map[string]any); ok && fmt.Sprint(vf["fieldRef"]) == "map[fieldPath:spec.nodeName]" {
				delete(e, "valueFrom")
				e["value"] = node
			}
		}
	}
	meta := tmpl["metadata"].(map[string]any)
	meta["name"] = "mlbpf-play"
	pod, err := yaml.Marshal(map[string]any{"apiVersion": "v1", "kind": "Pod", "metadata": meta, "spec": spec})
	if err != nil {
		t.Fatal(err)
	}
	// What podman made of the manifest, and what the translation makes.
	var configMounts []string
	for _, m := range n.c.VolumeMounts {
		if i := slices.IndexFunc(n.spec.Volumes, func(v volume) bool { return v.Name == m.Name }); i >= 0 && n.spec.Volumes[i].ConfigMap != nil {
			configMounts = append(configMounts, m.MountPath)
		}
	}
	type inspected struct {
		EffectiveCaps []string
		Mounts        []struct {
			Source, Destination string
			RW                  bool
		}
		HostConfig struct {
			ReadonlyRootfs bool
			SecurityOpt    []string
		}
	}
	inspect := func(container string) inspected {
		t.Helper()
		out, err := n.p.run("container", "inspect", container)
		if err != nil {
			t.Fatalf("podman container inspect %s: %v\n%s", container, err, out)
		}
		var in []inspected
		if err := json.Unmarshal([]byte(out), &in); err != nil || len(in) != 1 {
			t.Fatalf("podman container inspect %s: %v\n%s", container, err, out)
		}
		slices.Sort(in[0].EffectiveCaps)
		for i := range in[0].Mounts {
			m := &in[0].Mounts[i]
			if slices.Contains(configMounts, m.Destination) {
				m.Source = "the ConfigMap" // a volume podman made of it; ours is a directory
			}
		}
		slices.SortFunc(in[0].Mounts, func(a, b struct {
			Source, Destination string
			RW                  bool
		}) int {
			return strings.Compare(a.Destination, b.Destination)
		})
		return in[0]
	}
	out, err := n.p.run("kube", "play", "--start=false", "--configmap", configMapFile, writeFile(t, n.p.dir, "pod.yaml", pod))
	if err != nil {
		t.Fatalf("podman kube play refused the DaemonSet's pod: %v\n%s", err, out)
	}
	played := inspect("mlbpf-play-" + n.c.Name)
	if _, err := n.p.run("pod", "rm", "--force", "--time", "0", "mlbpf-play"); err != nil {
		t.Fatal(err)
	}
	args := append([]string{"create", "--name", "mlbpf-translated"}, n.runArgs(n.c)...)
	if out, err := n.p.run(append(append(args, n.c.Image), n.c.Args...)...); err != nil {
		t.Fatalf("podman create: %v\n%s", err, out)
	}
	ours := inspect("mlbpf-translated")
	if fmt.Sprint(played.EffectiveCaps) != fmt.Sprint(ours.EffectiveCaps) {
		t.Errorf("capabilities: podman kube play gives %v, the translation %v", played.EffectiveCaps, ours.EffectiveCaps)
	}
	if fmt.Sprint(played.Mounts) != fmt.Sprint(ours.Mounts) {
		t.Errorf("mounts: podman kube play gives\n%v\nthe translation\n%v", played.Mounts, ours.Mounts)
	}
	if played.HostConfig.ReadonlyRootfs != ours.HostConfig.ReadonlyRootfs {
		t.Errorf("read-only root: podman kube play %v, the translation %v", played.HostConfig.ReadonlyRootfs, ours.HostConfig.ReadonlyRootfs)
	}
	nnp := func(in inspected) bool { return slices.Contains(in.HostConfig.SecurityOpt, "no-new-privileges") }
	if nnp(played) != nnp(ours) {
		t.Errorf("no_new_privs: podman kube play %v, the translation %v", nnp(played), nnp(ours))
	}
	if len(played.EffectiveCaps) == 0 || len(played.Mounts) < 7 {
		t.Errorf("podman kube play made little of the manifest: capabilities %v, mounts %v", played.EffectiveCaps, played.Mounts)
	}

	// Broken copies are refused.
	for _, broken := range []struct{ what, old, new, want string }{
		{"a misspelt capability", "- PERFMON", "- PERFMONN", "unknown capability"},
		{"a port that is not a number", "containerPort: 9464", `containerPort: "metrics"`, "containerPort"},
	} {
		if !strings.Contains(string(pod), broken.old) {
			t.Fatalf("the pod has no %q to break", broken.old)
		}
		out, err := n.p.run("kube", "play", "--start=false", "--configmap", configMapFile,
			writeFile(t, n.p.dir, "broken.yaml", []byte(strings.Replace(string(pod), broken.old, broken.new, 1))))
		_, _ = n.p.run("pod", "rm", "--force", "--time", "0", "mlbpf-play")
		if err == nil || !strings.Contains(out, broken.want) {
			t.Errorf("podman kube play on the pod with %s: %v, want refused with %q:\n%s", broken.what, err, broken.want, out)
		}
	}
}

func writeFile(t *testing.T, dir, name string, b []byte) string {
	t.Helper()
	file := filepath.Join(dir, name)
	if err := os.WriteFile(file, b, 0o644); err != nil {
		t.Fatal(err)
	}
	return file
}
