package daemon

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/mlbpf/mlbpf/agent"
	"github.com/mlbpf/mlbpf/config"
	"github.com/mlbpf/mlbpf/internal/testutil"
	"github.com/mlbpf/mlbpf/model"
	"github.com/mlbpf/mlbpf/pipeline"
	"github.com/mlbpf/mlbpf/subsystems"
)

func TestLock(t *testing.T) {
	path := filepath.Join(t.TempDir(), "run", LockFile)
	l, err := AcquireLock(path)
	if err != nil {
		t.Fatal(err)
	}
	if pid, running := Holder(path); !running || pid != os.Getpid() {
		t.Fatalf("Holder: pid %d running %v", pid, running)
	}
	_, err = AcquireLock(path)
	if !errors.Is(err, ErrLocked) || !strings.Contains(err.Error(), fmt.Sprintf("process %d holds %s", os.Getpid(), path)) {
		t.Fatalf("second lock: %v", err)
	}
	if err := l.Release(); err != nil {
		t.Fatal(err)
	}
	if _, running := Holder(path); running {
		t.Fatal("still held after Release")
	}
	l, err = AcquireLock(path)
	if err != nil {
		t.Fatalf("lock after release: %v", err)
	}
	l.Release()
}

// TestLockThroughProbes starts daemons while commands ask, as fast as
// they can, whether one runs (Holder holds the lock shared for an
// instant): every start takes the lock. (A daemon started while a command
// probed refused to start, naming "another process".)
func TestLockThroughProbes(t *testing.T) {
	path := filepath.Join(t.TempDir(), "run", LockFile)
	l, err := AcquireLock(path)
	if err != nil {
		t.Fatal(err)
	}
	l.Release()
	stop := make(chan struct{})
	probed := make(chan int)
	go func() {
		n := 0
		for {
			select {
			case <-stop:
				probed <- n
				return
			default:
				Holder(path)
				n++
			}
		}
	}()
	for i := range 300 {
		l, err := AcquireLock(path)
		if err != nil {
			close(stop)
			<-probed
			t.Fatalf("start %d: %v", i, err)
		}
		l.Release()
	}
	close(stop)
	t.Logf("300 starts through %d probes", <-probed)
}

func TestCheck(t *testing.T) {
	for _, tc := range []struct{ yaml, want string }{
		{"models:\n  - name: disk/io\n", `x.yaml:2: models[0].name: unknown subsystem "disk" (want tcp, synthetic, storage)`},
		{"models:\n  - name: tcp/xyz\n", `x.yaml:2: models[0].name: tcp has only the models cc, rto`},
		{"models:\n  - name: tcp/cc\n    tcp:\n      allowed: [BBR]\n", `x.yaml:4: models[0].tcp.allowed: "BBR" is not a congestion control name`},
		{"models:\n  - name: tcp/cc\n    tcp:\n      cgroups: /x\n", `x.yaml:4: models[0].tcp.cgroups: unknown field (want cgroup, allowed, default, passive, rate_probe, learn, portion_bytes, ring_bytes)`},
		{"models:\n  - name: tcp/cc\n    tcp:\n      portion_bytes: 100\n", `x.yaml:4: models[0].tcp.portion_bytes: 100: want at least one record, 128 bytes`},
		{"models:\n  - name: synthetic/a\n    synthetic:\n      portion_bytes: 3\n", `x.yaml:4: models[0].synthetic.portion_bytes: 3: want at least one record, 40 bytes`},
	} {
		c, err := config.Parse("x.yaml", []byte(tc.yaml))
		if err != nil {
			t.Fatalf("%q: %v", tc.yaml, err)
		}
		if err := Check(c); err == nil || err.Error() != tc.want {
			t.Errorf("%q:\n got %v\nwant %s", tc.yaml, err, tc.want)
		}
	}
	if err := Check(config.Default()); err != nil {
		t.Fatalf("the embedded default: %v", err)
	}
	files, _ := filepath.Glob("../testdata/config/good/*")
	for _, f := range files {
		c, err := config.Load(f)
		if err != nil {
			t.Fatal(err)
		}
		if err := Check(c); err != nil {
			t.Errorf("%s: %v", f, err)
		}
	}
}

// TestRegisterSharedName: two packages serve the tcp subsystem (tcp/cc
// and tcp/rto), each model finds its own, and a model registered twice
// panics.
func TestRegisterSharedName(t *testing.T) {
	saved := Subsystems()
	t.Cleanup(func() {
		registryMu.Lock()
		registry = saved
		registryMu.Unlock()
	})
	// tcp/rto is registered (package subsystems) beside tcp/cc.
	for name, want := range map[string][]string{"tcp/rto": {"rto"}, "tcp/cc": {"cc"}} {
		s, m, err := SplitName(name)
		if err != nil || !slices.Equal(s.Models, want) || m != want[0] {
			t.Errorf("%s: %v %q %v", name, s, m, err)
		}
	}
	if _, _, err := SplitName("tcp/x"); err == nil || !strings.Contains(err.Error(), "tcp has only cc, rto") {
		t.Errorf("tcp/x: %v", err)
	}
	defer func() {
		if recover() == nil {
			t.Error("registering tcp/rto twice did not panic")
		}
	}()
	Register(&pipeline.Subsystem{Name: "tcp", Models: []string{"rto"}})
}

func TestSplitName(t *testing.T) {
	if s, m, err := SplitName("tcp/cc"); err != nil || s.Name != "tcp" || m != "cc" {
		t.Fatalf("tcp/cc: %v %v %v", s, m, err)
	}
	for _, bad := range []string{"tcp", "tcp/", "tcp/xyz", "disk/io", "TCP/cc", "tcp/cc/x"} {
		if _, _, err := SplitName(bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}

func dataset(t *testing.T, offset uint64, n int) *model.Dataset {
	t.Helper()
	ds, err := model.NewDataset(model.DatasetStructure, 24, 8)
	if err != nil {
		t.Fatal(err)
	}
	if err := ds.MarkClean(); err != nil {
		t.Fatal(err)
	}
	ds.PortionOffset = offset
	for range n {
		if _, err := ds.Reserve(); err != nil {
			t.Fatal(err)
		}
	}
	if err := ds.Extracted(false); err != nil {
		t.Fatal(err)
	}
	return ds
}

func TestHub(t *testing.T) {
	h := newHub("synthetic/demo", pipeline.RecordFormat{Kind: 1, Size: 24, JSON: func(b []byte) (any, error) { return len(b), nil }})
	if _, err := h.fetch(nil, true, false); err == nil {
		t.Fatal("fetched from an empty hub")
	}
	var got []agent.Event
	cancel := h.subscribe(1, func(ev agent.Event) { got = append(got, ev) })
	for i := range retainPortions + 2 {
		h.publish(dataset(t, uint64(10*i), 2), model.Notification{Mode: model.ModeLearning})
	}
	if len(got) != retainPortions+2 || got[0].Type != agent.EventDataset || got[0].Portion.Offset != 0 {
		t.Fatalf("events %+v", got)
	}
	offs := h.offsets()
	if len(offs) != retainPortions || offs[0] != 20 {
		t.Fatalf("retained %v, want the last %d", offs, retainPortions)
	}
	if len(h.free) != 2 {
		t.Fatalf("%d datasets handed back, want the 2 evicted", len(h.free))
	}
	old := uint64(0)
	if _, err := h.fetch(&old, false, false); err == nil || !strings.Contains(err.Error(), "OBSOLETE") {
		t.Fatalf("fetching an evicted portion: %v", err)
	}
	p, err := h.fetch(nil, true, true)
	if err != nil || p.Offset != offs[len(offs)-1] || len(p.Records) != 2 || string(p.Records[0]) != "24" || len(p.Data) != 48 {
		t.Fatalf("newest: %+v %v", p, err)
	}
	// The subscriber discards a portion: released, but not the newest.
	if _, err := h.discard(&offs[0], 1); err != nil {
		t.Fatal(err)
	}
	if n := len(h.offsets()); n != retainPortions-1 {
		t.Fatalf("%d retained after a discard", n)
	}
	newest := offs[len(offs)-1]
	if _, err := h.discard(&newest, 1); err != nil {
		t.Fatal(err)
	}
	if n := len(h.offsets()); n != retainPortions-1 {
		t.Fatalf("the newest portion was released: %d retained", n)
	}
	// A client that is not subscribed (the CLI) releases everything.
	if n, err := h.discard(nil, 99); err != nil || n != retainPortions-1 || len(h.offsets()) != 0 {
		t.Fatalf("discard all: %d %v", n, err)
	}
	cancel()
	if n, _ := h.agents(); n != 0 {
		t.Fatalf("%d agents after cancel", n)
	}
}

// TestHubSpoolFailing: a spool that cannot be read or written (its
// directory is a file) does not stop the hub: it starts empty, keeps
// publishing, and says so once while it fails and once when it works again.
func TestHubSpoolFailing(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "portions")
	if err := os.WriteFile(dir, []byte("not a directory"), 0o600); err != nil {
		t.Fatal(err)
	}
	var logs testutil.SyncBuffer
	log := slog.New(slog.NewTextHandler(&logs, nil))
	h := newHub("synthetic/demo", pipeline.RecordFormat{Kind: 1, Size: 24})
	if next := h.restore(dir, log); next != 0 || len(h.offsets()) != 0 {
		t.Fatalf("restore from a broken spool: next %d, offsets %v", next, h.offsets())
	}
	for i := range 3 {
		h.publish(dataset(t, uint64(10*i), 2), model.Notification{Mode: model.ModeLearning})
	}
	if n := len(h.offsets()); n != 3 {
		t.Fatalf("%d portions retained, want 3: publishing must go on", n)
	}
	if err := os.Remove(dir); err != nil {
		t.Fatal(err)
	}
	h.publish(dataset(t, 30, 2), model.Notification{Mode: model.ModeLearning})
	out := logs.String()
	if strings.Count(out, "unreadable") != 1 || strings.Count(out, "spooling dataset portions failed") != 1 ||
		strings.Count(out, "spooling dataset portions works again") != 1 {
		t.Fatalf("logs:\n%s", out)
	}
	if files, _ := filepath.Glob(filepath.Join(dir, "*.portion")); len(files) != 1 {
		t.Fatalf("%d files spooled once the spool works, want 1", len(files))
	}
}

func TestMain(m *testing.M) {
	Register(subsystems.All()...)
	before := testutil.OpenFDs()
	code := m.Run()
	if after := testutil.OpenFDs(); code == 0 && after > before {
		fmt.Fprintf(os.Stderr, "file descriptors leaked: %d open before the tests, %d after\n", before, after)
		code = 1
	}
	os.Exit(code)
}
