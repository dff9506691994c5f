package synthetic

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/cilium/ebpf"

	"github.com/mlbpf/mlbpf/internal/testutil"
	"github.com/mlbpf/mlbpf/loader"
	"github.com/mlbpf/mlbpf/model"
	"github.com/mlbpf/mlbpf/ringbuf"
)

func TestMain(m *testing.M) {
	before := testutil.OpenFDs()
	code := m.Run()
	if after := testutil.OpenFDs(); code == 0 && after > before {
		fmt.Fprintf(os.Stderr, "file descriptors leaked: %d open before the tests, %d after\n", before, after)
		code = 1
	}
	os.Exit(code)
}

// rig is one synthetic model under test with a reader on its ring buffer.
type rig struct {
	t     *testing.T
	s     *Objects
	m     *model.Model
	rd    *ringbuf.Reader
	clock uint64
}

func newRig(t *testing.T, opts model.Options) *rig {
	t.Helper()
	testutil.RequireBPF(t)
	root := testutil.PinRoot(t)
	s, err := Open(Config{PinRoot: root, Model: "test"})
	if err != nil {
		t.Fatal(err)
	}
	m, err := model.Create(Name, "test", s, s.Control())
	if err != nil {
		s.Close()
		t.Fatal(err)
	}
	rd, err := ringbuf.NewReader(s.Events())
	if err != nil {
		s.Close()
		t.Fatal(err)
	}
	r := &rig{t: t, s: s, m: m, rd: rd}
	t.Cleanup(func() {
		rd.Close()
		if m.State() != model.StateShuttingDown {
			_ = m.Destroy()
		}
		s.Close()
	})
	if err := m.Init(opts); err != nil {
		t.Fatal(err)
	}
	return r
}

// run applies n decisions for key and returns the arms taken (from the
// per-CPU stats map) and the values the applier returned.
func (r *rig) run(key uint32, n int) (arms [loader.ArmCount]uint64, values map[uint32]int) {
	r.t.Helper()
	before, err := r.s.ArmCounts()
	if err != nil {
		r.t.Fatal(err)
	}
	values = make(map[uint32]int)
	for range n {
		v, err := r.s.Apply(key)
		if err != nil {
			r.t.Fatal(err)
		}
		values[v]++
	}
	after, err := r.s.ArmCounts()
	if err != nil {
		r.t.Fatal(err)
	}
	for i := range arms {
		arms[i] = after[i] - before[i]
	}
	return arms, values
}

// drain reads every record currently in the ring buffer.
func (r *rig) drain() []Record {
	r.t.Helper()
	var out []Record
	var rec ringbuf.Record
	for {
		r.rd.SetDeadline(time.Now().Add(50 * time.Millisecond))
		err := r.rd.ReadInto(&rec)
		if errors.Is(err, os.ErrDeadlineExceeded) {
			return out
		}
		if err != nil {
			r.t.Fatal(err)
		}
		var d Record
		if err := DecodeRecord(rec.RawSample, &d); err != nil {
			r.t.Fatal(err)
		}
		out = append(out, d)
	}
}

func only(arm model.Arm, n uint64) [loader.ArmCount]uint64 {
	var want [loader.ArmCount]uint64
	want[arm] = n
	return want
}

func TestLifecycleEveryMode(t *testing.T) {
	r := newRig(t, model.Options{
		SleepTimeout:    time.Second,
		Lease:           time.Hour,
		CollabPermille:  500,
		HoldoutPermille: 100,
		InitialMode:     model.ModeLearning,
	})
	const key, rec, n = 5, 42, 2000
	const dflt = key % DefaultModulus
	if err := r.s.Recommend(key, rec, 1); err != nil {
		t.Fatal(err)
	}

	// INITIALIZED, not started: the kernel keeps its default.
	arms, values := r.run(key, 10)
	if arms != only(model.ArmFallback, 10) || values[dflt] != 10 {
		t.Fatalf("initialized: arms %v values %v, want 10 fallbacks answering %d", arms, values, dflt)
	}

	if err := r.m.Start(model.RunConfig{SleepTimeout: time.Second}); err != nil {
		t.Fatal(err)
	}
	// STARTED but no lease granted yet: still the default.
	if arms, _ := r.run(key, 10); arms != only(model.ArmFallback, 10) {
		t.Fatalf("started without lease: arms %v, want fallbacks", arms)
	}
	if err := r.m.RenewLease(loader.MonotonicNs()); err != nil {
		t.Fatal(err)
	}
	if got := r.m.State(); got != model.StateRunning {
		t.Fatalf("state after first lease: %v, want RUNNING", got)
	}

	// LEARNING: looked up, not applied (shadow); no recommendation: no_rec.
	arms, values = r.run(key, 100)
	if arms != only(model.ArmShadow, 100) || values[dflt] != 100 {
		t.Fatalf("learning: arms %v values %v, want 100 shadow answering %d", arms, values, dflt)
	}
	if arms, _ := r.run(key+1, 10); arms != only(model.ArmNoRec, 10) {
		t.Fatalf("learning without recommendation: arms %v, want no_rec", arms)
	}

	// COLLABORATION: applied with probability 500/1000.
	if err := r.m.SetMode(model.ModeCollaboration, "test"); err != nil {
		t.Fatal(err)
	}
	arms, values = r.run(key, n)
	checkShare(t, "collaboration model share", arms[model.ArmModel], n, 0.5)
	if arms[model.ArmModel]+arms[model.ArmControl] != n || uint64(values[rec]) != arms[model.ArmModel] {
		t.Fatalf("collaboration: arms %v values %v", arms, values)
	}

	// RECOMMENDATION: applied except a 100/1000 holdout.
	if err := r.m.SetMode(model.ModeRecommendation, "test"); err != nil {
		t.Fatal(err)
	}
	arms, values = r.run(key, n)
	checkShare(t, "recommendation holdout share", arms[model.ArmControl], n, 0.1)
	if arms[model.ArmModel]+arms[model.ArmControl] != n || uint64(values[rec]) != arms[model.ArmModel] {
		t.Fatalf("recommendation: arms %v values %v", arms, values)
	}

	// EMERGENCY: the model is ignored.
	if err := r.m.SetMode(model.ModeEmergency, "operator"); err != nil {
		t.Fatal(err)
	}
	if arms, values := r.run(key, 50); arms != only(model.ArmFallback, 50) || values[dflt] != 50 {
		t.Fatalf("emergency: arms %v values %v, want fallbacks", arms, values)
	}

	// Back to RECOMMENDATION, then STOPPED: the default again.
	if err := r.m.SetMode(model.ModeRecommendation, "operator"); err != nil {
		t.Fatal(err)
	}
	if err := r.m.Stop(); err != nil {
		t.Fatal(err)
	}
	if arms, _ := r.run(key, 20); arms != only(model.ArmFallback, 20) {
		t.Fatalf("stopped: arms %v, want fallbacks", arms)
	}

	// Every decision produced one record, in order, with the arm the
	// stats map counted.
	recs := r.drain()
	total := 10 + 10 + 100 + 10 + 2*n + 50 + 20
	if len(recs) != total {
		t.Fatalf("read %d records, want %d", len(recs), total)
	}
	var fromRecords [loader.ArmCount]uint64
	for i, d := range recs {
		fromRecords[d.Hdr.Arm]++
		if i > 0 && d.Hdr.TsNs < recs[i-1].Hdr.TsNs {
			t.Fatalf("record %d out of order", i)
		}
		if d.Hdr.Arm == uint8(model.ArmModel) && d.Applied != rec || d.Hdr.Arm != uint8(model.ArmModel) && d.Applied != d.DefaultValue {
			t.Fatalf("record %d: arm %d applied %d (default %d, recommended %d)", i, d.Hdr.Arm, d.Applied, d.DefaultValue, d.Recommended)
		}
	}
	totals, err := r.s.ArmCounts()
	if err != nil {
		t.Fatal(err)
	}
	if fromRecords != totals {
		t.Fatalf("arms from records %v, stats map %v", fromRecords, totals)
	}

	// Destroy removes every pin.
	dir := r.s.Dir()
	if err := r.m.Destroy(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("pin directory %s still there after destroy (err %v)", dir, err)
	}
	if err := r.m.Destroy(); err == nil {
		t.Fatal("destroying twice succeeded")
	}
}

// checkShare fails unless count out of n is within 5 standard deviations
// of the share p (a false failure has odds below one in a million).
func checkShare(t *testing.T, what string, count uint64, n int, p float64) {
	t.Helper()
	mean := float64(n) * p
	sd := math.Sqrt(float64(n) * p * (1 - p))
	if math.Abs(float64(count)-mean) > 5*sd {
		t.Fatalf("%s: %d of %d, want %.0f±%.0f", what, count, n, mean, 5*sd)
	}
}

func TestLeaseExpiryFallsBackWithoutUserSpace(t *testing.T) {
	r := newRig(t, model.Options{
		SleepTimeout: 50 * time.Millisecond,
		Lease:        150 * time.Millisecond,
		InitialMode:  model.ModeRecommendation,
	})
	if err := r.s.Recommend(7, 99, 1); err != nil {
		t.Fatal(err)
	}
	if err := r.m.Start(model.RunConfig{}); err != nil {
		t.Fatal(err)
	}
	// Within the lease the model is applied. A run that outlasted the
	// lease (a paused machine) proves nothing either way: renew and again.
	var expires uint64
	for try := 0; ; try++ {
		if err := r.m.RenewLease(loader.MonotonicNs()); err != nil {
			t.Fatal(err)
		}
		expires = r.m.Control().LeaseExpiresNs
		arms, _ := r.run(7, 200)
		if loader.MonotonicNs() < expires {
			if arms[model.ArmModel] == 0 {
				t.Fatalf("within the lease: arms %v, want the model applied", arms)
			}
			break
		}
		if try == 10 {
			t.Fatal("200 decisions never fitted in a 150ms lease")
		}
	}
	// No renewal: the daemon "died". Wait until the kernel's clock is past
	// the lease.
	for loader.MonotonicNs() <= expires+uint64(10*time.Millisecond) {
		time.Sleep(10 * time.Millisecond)
	}
	if arms, values := r.run(7, 100); arms != only(model.ArmFallback, 100) || values[7] != 100 {
		t.Fatalf("after the lease: arms %v values %v, want the default only", arms, values)
	}
	c, err := r.s.Control().Raw()
	if err != nil {
		t.Fatal(err)
	}
	if model.State(c.State) != model.StateRunning || model.Mode(c.Mode) != model.ModeRecommendation {
		t.Fatalf("control block changed by itself: %+v", c)
	}
}

func TestTamperedStateFallsBack(t *testing.T) {
	r := newRig(t, model.Options{Lease: time.Hour, InitialMode: model.ModeRecommendation, HoldoutPermille: 0})
	if err := r.m.Start(model.RunConfig{}); err != nil {
		t.Fatal(err)
	}
	if err := r.m.RenewLease(loader.MonotonicNs()); err != nil {
		t.Fatal(err)
	}

	// A recommendation written by hand above the applier's limit.
	bad := synthSynthRecommendation{Value: math.MaxUint32}
	if err := r.s.RecommendationMap().Update(uint32(3), &bad, ebpf.UpdateAny); err != nil {
		t.Fatal(err)
	}
	if arms, values := r.run(3, 20); arms != only(model.ArmRejected, 20) || values[3] != 20 {
		t.Fatalf("garbage recommendation: arms %v values %v, want rejected and the default", arms, values)
	}
	if err := r.s.Recommend(3, math.MaxUint32, 1); !errors.Is(err, ErrOutOfRange) {
		t.Fatalf("Recommend out of range: %v, want ErrOutOfRange", err)
	}

	// A control block with a mode no version of mlbpf writes.
	if err := r.s.Recommend(3, 10, 2); err != nil {
		t.Fatal(err)
	}
	raw, err := r.s.Control().Raw()
	if err != nil {
		t.Fatal(err)
	}
	raw.Mode = 42
	if err := r.s.objs.Control.Update(uint32(0), &raw, ebpf.UpdateAny); err != nil {
		t.Fatal(err)
	}
	if arms, _ := r.run(3, 20); arms != only(model.ArmFallback, 20) {
		t.Fatalf("unknown mode: arms %v, want fallbacks", arms)
	}
}

func TestRestartAdoptsPins(t *testing.T) {
	testutil.RequireBPF(t)
	root := testutil.PinRoot(t)
	s1, err := Open(Config{PinRoot: root, Model: "restart"})
	if err != nil {
		t.Fatal(err)
	}
	if err := s1.Recommend(9, 33, 1); err != nil {
		t.Fatal(err)
	}
	want := loader.Control{Mode: uint32(model.ModeCollaboration), State: uint32(model.StateRunning), LeaseExpiresNs: 123, Generation: 7}
	if err := s1.objs.Control.Update(uint32(0), &want, ebpf.UpdateAny); err != nil {
		t.Fatal(err)
	}
	s1.Close()

	s2, err := Open(Config{PinRoot: root, Model: "restart"})
	if err != nil {
		t.Fatal(err)
	}
	defer s2.Close()
	got, err := s2.Control().Raw()
	if err != nil {
		t.Fatal(err)
	}
	if got != want {
		t.Fatalf("control after restart %+v, want %+v", got, want)
	}
	var rec synthSynthRecommendation
	if err := s2.RecommendationMap().Lookup(uint32(9), &rec); err != nil || rec.Value != 33 {
		t.Fatalf("recommendation after restart: %+v, %v", rec, err)
	}
	pins, err := loader.Pins(s2.Dir())
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(pins)
	if want := []string{"control", "events", "lost", "recommend", "stats"}; !slices.Equal(pins, want) {
		t.Fatalf("pins %v, want %v", pins, want)
	}
}

func TestBpftoolShowsControlFields(t *testing.T) {
	bpftool, err := exec.LookPath("bpftool")
	if err != nil {
		testutil.Missing(t, "bpftool not installed (apt-get install bpftool)")
	}
	r := newRig(t, model.Options{Lease: time.Hour, CollabPermille: 321, HoldoutPermille: 12, InitialMode: model.ModeCollaboration})
	if err := r.m.Start(model.RunConfig{}); err != nil {
		t.Fatal(err)
	}
	if err := r.m.RenewLease(loader.MonotonicNs()); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(bpftool, "-j", "map", "dump", "pinned", filepath.Join(r.s.Dir(), "control")).Output()
	if err != nil {
		t.Fatalf("bpftool: %v", err)
	}
	// bpftool prints raw bytes under "key"/"value" and, with BTF, the
	// fields by name under "formatted".
	var dump []struct {
		Formatted struct {
			Key   uint32         `json:"key"`
			Value map[string]any `json:"value"`
		} `json:"formatted"`
	}
	dec := json.NewDecoder(bytes.NewReader(out))
	dec.UseNumber() // lease_expires_ns does not fit a float64's mantissa
	if err := dec.Decode(&dump); err != nil {
		t.Fatalf("parsing bpftool output %q: %v", out, err)
	}
	if len(dump) != 1 {
		t.Fatalf("bpftool dumped %d entries: %s", len(dump), out)
	}
	c := r.m.Control()
	want := map[string]uint64{
		"mode":             uint64(model.ModeCollaboration),
		"state":            uint64(model.StateRunning),
		"lease_expires_ns": c.LeaseExpiresNs,
		"collab_permille":  321,
		"holdout_permille": 12,
		"generation":       uint64(c.Generation),
	}
	for field, v := range want {
		got, ok := dump[0].Formatted.Value[field].(json.Number)
		if !ok || got.String() != strconv.FormatUint(v, 10) {
			t.Errorf("bpftool field %q = %v, want %v (output %s)", field, dump[0].Formatted.Value[field], v, out)
		}
	}
}
