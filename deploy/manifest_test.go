package deploy

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"

	"github.com/mlbpf/mlbpf/internal/testutil"
)

// The Kubernetes manifests under test.
const (
	daemonSetFile = "kubernetes/daemonset.yaml"
	configMapFile = "kubernetes/configmap.yaml"
)

// daemonSet is the part of a DaemonSet the tests read. It is decoded
// with every field known: a field the manifest gains that is not here
// fails the tests until podmanRunArgs knows what it means for privilege.
type daemonSet struct {
	APIVersion string    `yaml:"apiVersion"`
	Kind       string    `yaml:"kind"`
	Metadata   yaml.Node `yaml:"metadata"`
	Spec       struct {
		Selector       yaml.Node `yaml:"selector"`
		UpdateStrategy yaml.Node `yaml:"updateStrategy"`
		Template       struct {
			Metadata yaml.Node `yaml:"metadata"`
			Spec     podSpec   `yaml:"spec"`
		} `yaml:"template"`
	} `yaml:"spec"`
}

type podSpec struct {
	HostPID     bool `yaml:"hostPID"`
	HostNetwork bool `yaml:"hostNetwork"`
	// Not privileges of the container: scheduling, the API token (none).
	AutomountServiceAccountToken  *bool       `yaml:"automountServiceAccountToken"`
	TerminationGracePeriodSeconds int         `yaml:"terminationGracePeriodSeconds"`
	PriorityClassName             string      `yaml:"priorityClassName"`
	Tolerations                   yaml.Node   `yaml:"tolerations"`
	Containers                    []container `yaml:"containers"`
	Volumes                       []volume    `yaml:"volumes"`
}

type container struct {
	Name            string   `yaml:"name"`
	Image           string   `yaml:"image"`
	ImagePullPolicy string   `yaml:"imagePullPolicy"`
	Command         []string `yaml:"command"`
	Args            []string `yaml:"args"`
	Env             []struct {
		Name      string `yaml:"name"`
		Value     string `yaml:"value"`
		ValueFrom *struct {
			FieldRef struct {
				FieldPath string `yaml:"fieldPath"`
			} `yaml:"fieldRef"`
		} `yaml:"valueFrom"`
	} `yaml:"env"`
	Resources yaml.Node `yaml:"resources"`
	Ports     []struct {
		Name          string `yaml:"name"`
		ContainerPort int    `yaml:"containerPort"`
		Protocol      string `yaml:"protocol"`
	} `yaml:"ports"`
	LivenessProbe struct {
		Exec struct {
			Command []string `yaml:"command"`
		} `yaml:"exec"`
		InitialDelaySeconds int `yaml:"initialDelaySeconds"`
		PeriodSeconds       int `yaml:"periodSeconds"`
		TimeoutSeconds      int `yaml:"timeoutSeconds"`
		FailureThreshold    int `yaml:"failureThreshold"`
	} `yaml:"livenessProbe"`
	SecurityContext struct {
		RunAsUser                *int64 `yaml:"runAsUser"`
		Privileged               bool   `yaml:"privileged"`
		AllowPrivilegeEscalation *bool  `yaml:"allowPrivilegeEscalation"`
		ReadOnlyRootFilesystem   bool   `yaml:"readOnlyRootFilesystem"`
		Capabilities             struct {
			Drop []string `yaml:"drop"`
			Add  []string `yaml:"add"`
		} `yaml:"capabilities"`
		SeccompProfile *struct {
			Type string `yaml:"type"`
		} `yaml:"seccompProfile"`
	} `yaml:"securityContext"`
	VolumeMounts []struct {
		Name      string `yaml:"name"`
		MountPath string `yaml:"mountPath"`
		ReadOnly  bool   `yaml:"readOnly"`
	} `yaml:"volumeMounts"`
}

type volume struct {
	Name     string `yaml:"name"`
	HostPath *struct {
		Path string `yaml:"path"`
		Type string `yaml:"type"`
	} `yaml:"hostPath"`
	ConfigMap *struct {
		Name string `yaml:"name"`
	} `yaml:"configMap"`
}

type configMap struct {
	APIVersion string            `yaml:"apiVersion"`
	Kind       string            `yaml:"kind"`
	Metadata   yaml.Node         `yaml:"metadata"`
	Data       map[string]string `yaml:"data"`
}

func decodeStrict(t *testing.T, file string, v any) {
	t.Helper()
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	if err := dec.Decode(v); err != nil {
		t.Fatalf("%s: %v", file, err)
	}
}

// readManifests returns the DaemonSet's pod spec, its one container, and
// the ConfigMap it mounts.
func readManifests(t *testing.T) (podSpec, container, configMap) {
	t.Helper()
	var ds daemonSet
	decodeStrict(t, daemonSetFile, &ds)
	var cm configMap
	decodeStrict(t, configMapFile, &cm)
	if ds.Kind != "DaemonSet" || ds.APIVersion != "apps/v1" || cm.Kind != "ConfigMap" || cm.APIVersion != "v1" {
		t.Fatalf("want an apps/v1 DaemonSet and a v1 ConfigMap, have %s %s and %s %s", ds.APIVersion, ds.Kind, cm.APIVersion, cm.Kind)
	}
	spec := ds.Spec.Template.Spec
	if len(spec.Containers) != 1 {
		t.Fatalf("%s: want one container, have %d", daemonSetFile, len(spec.Containers))
	}
	return spec, spec.Containers[0], cm
}

// hostPaths says where a hostPath volume of the manifest is on this host
// for a test: the kernel's file systems (under /sys) are the host's own;
// the daemon's state and socket directories are the test's, so that it
// never touches another daemon's.
type hostPaths func(path string) string

// podmanRunArgs translates the pod spec and its container into the
// arguments of 'podman run' that give the container the same namespaces,
// capabilities, seccomp profile, file systems and mounts as Kubernetes
// would. configDir holds the ConfigMap's files. A field it cannot
// translate is an error.
func podmanRunArgs(spec podSpec, c container, host hostPaths, configDir string) ([]string, error) {
	var args []string
	if spec.HostPID {
		args = append(args, "--pid", "host")
	}
	if spec.HostNetwork {
		args = append(args, "--network", "host")
	}
	sc := c.SecurityContext
	if sc.Privileged {
		args = append(args, "--privileged")
	}
	if sc.RunAsUser != nil {
		args = append(args, "--user", fmt.Sprint(*sc.RunAsUser))
	}
	if sc.AllowPrivilegeEscalation != nil && !*sc.AllowPrivilegeEscalation {
		args = append(args, "--security-opt", "no-new-privileges")
	}
	if sc.ReadOnlyRootFilesystem {
		// Kubernetes adds no tmpfs on a read-only root; podman would.
		args = append(args, "--read-only", "--read-only-tmpfs=false")
	}
	for _, cp := range sc.Capabilities.Drop {
		args = append(args, "--cap-drop", strings.ToLower(cp))
	}
	for _, cp := range sc.Capabilities.Add {
		args = append(args, "--cap-add", cp)
	}
	switch p := sc.SeccompProfile; {
	case p == nil || p.Type == "RuntimeDefault":
		// podman's default profile, containers-common's, as CRI-O's.
	case p.Type == "Unconfined":
		args = append(args, "--security-opt", "seccomp=unconfined")
	default:
		return nil, fmt.Errorf("seccompProfile %q: not translated", p.Type)
	}
	for _, m := range c.VolumeMounts {
		i := slices.IndexFunc(spec.Volumes, func(v volume) bool { return v.Name == m.Name })
		if i < 0 {
			return nil, fmt.Errorf("volumeMount %s: no such volume", m.Name)
		}
		v := spec.Volumes[i]
		switch {
		case v.HostPath != nil:
			src := host(v.HostPath.Path)
			switch v.HostPath.Type {
			case "DirectoryOrCreate":
				if err := os.MkdirAll(src, 0o755); err != nil {
					return nil, err
				}
			case "Directory":
				if st, err := os.Stat(src); err != nil || !st.IsDir() {
					return nil, fmt.Errorf("hostPath %s: want a directory (type Directory): %v", src, err)
				}
			default:
				return nil, fmt.Errorf("hostPath %s: type %q not translated", v.HostPath.Path, v.HostPath.Type)
			}
			opt := src + ":" + m.MountPath
			if m.ReadOnly {
				opt += ":ro"
			}
			args = append(args, "-v", opt)
		case v.ConfigMap != nil:
			// Kubernetes mounts a ConfigMap read-only whatever readOnly says.
			args = append(args, "-v", configDir+":"+m.MountPath+":ro")
		default:
			return nil, fmt.Errorf("volume %s: only hostPath and configMap are translated", v.Name)
		}
	}
	for _, e := range c.Env {
		switch {
		case e.ValueFrom == nil:
			args = append(args, "--env", e.Name+"="+e.Value)
		case e.ValueFrom.FieldRef.FieldPath == "spec.nodeName":
			// The downward API's node name: this host's.
			node, err := os.Hostname()
			if err != nil {
				return nil, err
			}
			args = append(args, "--env", e.Name+"="+node)
		default:
			return nil, fmt.Errorf("env %s: valueFrom %+v not translated", e.Name, *e.ValueFrom)
		}
	}
	if len(c.Command) > 0 {
		args = append(args, "--entrypoint", c.Command[0])
	}
	return args, nil
}

// podman runs podman on storage and a configuration of its own, in a
// temporary directory, so that a test neither sees nor leaves images or
// containers in the host's storage.
type podman struct {
	t    *testing.T
	dir  string
	conf string
}

// newPodman checks for podman and runc, and returns a podman with private
// storage, removed (containers, pods, images) when the test ends.
//
// Its configuration runs containers with runc and cgroupfs, which work on
// a host with systemd or without, on cgroup v1, hybrid or v2 (crun, the
// default, refuses a hybrid hierarchy: "cgroups in hybrid mode not
// supported"), and lowers the file and process limits podman raises by
// default to what any host allows (a sandbox may not raise nofile past
// 20000).
func newPodman(t *testing.T) *podman {
	t.Helper()
	testutil.RequireBPF(t)
	if os.Getenv("VMTEST_GUEST") != "" {
		// The image is built with go, and the guest's HOME (a tmpfs)
		// has no module cache; its root file system, podman's
		// configuration among it, is the host's. make test runs these
		// on the host; the daemon's own tests cover the kernels.
		t.Skip("in a vmtest guest: the image is built and run on the host (make test)")
	}
	for _, tool := range []string{"podman", "runc"} {
		if _, err := exec.LookPath(tool); err != nil {
			testutil.Missing(t, "needs "+tool+" to run the image: apt-get install podman runc catatonit (sudo make setup)")
		}
	}
	dir, err := os.MkdirTemp("", "mlbpf-image-")
	if err != nil {
		t.Fatal(err)
	}
	p := &podman{t: t, dir: dir, conf: filepath.Join(dir, "containers.conf")}
	conf := `[containers]
default_ulimits = ["nofile=4096:4096", "nproc=4096:4096"]
[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
`
	if err := os.WriteFile(p.conf, []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_, _ = p.run("pod", "rm", "--all", "--force", "--time", "0")
		_, _ = p.run("rm", "--all", "--force", "--time", "0")
		_, _ = p.run("rmi", "--all", "--force")
		if out, err := p.run("system", "reset", "--force"); err != nil {
			t.Logf("podman system reset: %v: %s", err, out)
		}
		_ = os.RemoveAll(dir)
	})
	return p
}

// globals are podman's global options: the private storage.
func (p *podman) globals() []string {
	return []string{"--root", filepath.Join(p.dir, "storage"), "--runroot", filepath.Join(p.dir, "run"), "--tmpdir", filepath.Join(p.dir, "tmp")}
}

func (p *podman) command(args ...string) *exec.Cmd {
	cmd := exec.Command("podman", append(p.globals(), args...)...)
	cmd.Env = append(os.Environ(), "CONTAINERS_CONF="+p.conf)
	return cmd
}

// run runs podman and returns its combined output.
func (p *podman) run(args ...string) (string, error) {
	out, err := p.command(args...).CombinedOutput()
	return string(out), err
}

// buildImage builds the image with the script of 'make image' into p's
// storage, and checks that it holds the manifest's image.
func (p *podman) buildImage(image string) {
	p.t.Helper()
	cmd := exec.Command("scripts/image.sh")
	cmd.Dir = ".."
	cmd.Env = append(os.Environ(), "PODMAN=podman "+strings.Join(p.globals(), " "), "CONTAINERS_CONF="+p.conf)
	built, err := cmd.CombinedOutput()
	if err != nil {
		p.t.Fatalf("scripts/image.sh: %v\n%s", err, built)
	}
	if out, err := p.run("image", "exists", image); err != nil {
		p.t.Fatalf("scripts/image.sh built %s but not the manifest's image %s: %v %s", strings.TrimSpace(string(built)), image, err, out)
	}
}
