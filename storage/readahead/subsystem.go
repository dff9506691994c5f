package readahead

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strconv"
	"time"

	"github.com/cilium/ebpf"

	"github.com/mlbpf/mlbpf/config"
	"github.com/mlbpf/mlbpf/loader"
	"github.com/mlbpf/mlbpf/model"
	"github.com/mlbpf/mlbpf/pipeline"
)

// Name is the subsystem's name; its one model is "readahead".
const Name = "storage"

// SectionConfig is the model's section of the daemon's configuration
// ("storage:").
type SectionConfig struct {
	// Devices are the block devices to tune ("sda", "nvme0n1").
	Devices []string `cfg:"devices"`
	// Grid is the settings to choose from, in KB (default 16 … 2048).
	Grid []uint32 `cfg:"grid"`
	// Window is the collector's window (default 250ms), Block the time
	// block a device keeps one arm (default 1s).
	Window time.Duration `cfg:"window"`
	Block  time.Duration `cfg:"block"`
	// Watchdog starts the restoring watchdog (default true): without it a
	// SIGKILLed daemon leaves the devices as they were until the next
	// start or 'mlbpf rollback'.
	Watchdog *bool `cfg:"watchdog"`
}

// Validate implements config.Section.
func (c *SectionConfig) Validate() error {
	if len(c.Devices) == 0 {
		return config.Field("devices", "none: name the block devices to tune, e.g. [sda]")
	}
	for _, d := range c.Devices {
		if d == "" || filepath.Base(d) != d && filepath.Dir(d) != "/dev" {
			return config.Field("devices", "%q: want a name from /sys/class/block, e.g. sda", d)
		}
	}
	for _, kb := range c.Grid {
		if err := ValidateKB(kb); err != nil {
			return config.Field("grid", "%v", err)
		}
	}
	if c.Window < 0 || c.Window > 0 && c.Window < 10*time.Millisecond {
		return config.Field("window", "%v: want at least 10ms", c.Window)
	}
	if c.Block < 0 || c.Block > 0 && c.Block < 100*time.Millisecond {
		return config.Field("block", "%v: want at least 100ms", c.Block)
	}
	return nil
}

// Subsystem describes storage/readahead for the daemon and the CLI.
func Subsystem() *pipeline.Subsystem {
	return &pipeline.Subsystem{
		Name:    Name,
		Summary: "readahead (read_ahead_kb) per block device and workload phase, from readahead, filemap and block tracepoints; applied by the daemon, restored by a watchdog",
		Models:  []string{"readahead"},
		Needs:   pipeline.NeedTracefs,
		Programs: []ebpf.ProgramType{
			ebpf.TracePoint,
		},
		Records: pipeline.RecordFormat{
			Kind: RecordKind, Size: RecordSize,
			Type: reflect.TypeFor[Record](),
			JSON: recordJSON,
		},
		RecommendUsage: "storage/readahead DEVICE KB (e.g. sda 1024)",
		Config:         func() config.Section { return &SectionConfig{} },
		Open:           openLoop,
		Rollback:       rollback,
		Pinned:         pinnedKeys,
	}
}

// WatchdogCommand is the command the daemon starts its watchdog with:
// this executable's "watchdog" command. Nil runs none.
var WatchdogCommand = func() []string {
	exe, err := os.Executable()
	if err != nil {
		return nil
	}
	return []string{exe, "watchdog"}
}

func openLoop(env pipeline.Env, sec config.Section) (*pipeline.Loop, error) {
	sc := sec.(*SectionConfig)
	state := env.StateDir
	if state == "" {
		return nil, errors.New("opening storage/readahead: it needs a state directory for the devices' original values")
	}
	cfg := Config{
		Devices: sc.Devices, PinDir: loader.PinDir(env.PinRoot, Name, env.Model), StateDir: state,
		Grid: sc.Grid, Window: sc.Window, Block: sc.Block,
		Logf: func(f string, a ...any) { env.Log.Info(fmt.Sprintf(f, a...), "model", Name+"/"+env.Model) },
	}
	if env.Log == nil {
		cfg.Logf = nil
	}
	if sc.Watchdog == nil || *sc.Watchdog {
		cfg.Watchdog = WatchdogCommand()
	}
	t, err := open(cfg, true)
	if err != nil {
		return nil, err
	}
	obj := &objects{t: t}
	return pipeline.New(env, pipeline.Parts[Window]{
		Subsystem: Name, Objects: obj, Records: Subsystem().Records,
		Decode: Decode, Learner: obj,
	})
}

// objects are the model's objects and its learner, for the loop.
type objects struct {
	model.GenericModelOps
	t *Tuner
}

// Start implements model.ModelOps: the watchdog starts with the model.
func (o *objects) Start(*model.Model, model.RunConfig) error {
	o.t.mu.Lock()
	defer o.t.mu.Unlock()
	o.t.closed = false
	return o.t.startWatchdog()
}

// Stop implements model.ModelOps: every device back to its original
// setting (the watchdog exits once it sees the model STOPPED).
func (o *objects) Stop(*model.Model) error {
	o.t.mu.Lock()
	defer o.t.mu.Unlock()
	o.t.restoreLocked()
	o.t.watchdog = nil
	return nil
}

// PreprocessRecommendation implements model.ModelOps: the key is one of
// the model's devices, the value a readahead in KB.
func (o *objects) PreprocessRecommendation(_ *model.Model, rec *model.Recommendation) error {
	kb, err := strconv.ParseUint(rec.Value, 10, 32)
	if err != nil {
		return fmt.Errorf("%w: %q: want a readahead in KB, e.g. 1024", model.ErrInvalidRecommendation, rec.Value)
	}
	if err := ValidateKB(uint32(kb)); err != nil {
		return fmt.Errorf("%w: %v", model.ErrInvalidRecommendation, err)
	}
	for _, d := range o.t.cfg.Devices {
		if d == rec.Key {
			rec.Value = strconv.FormatUint(kb, 10)
			return nil
		}
	}
	return fmt.Errorf("%w: %q is not one of the model's devices %v", model.ErrInvalidRecommendation, rec.Key, o.t.cfg.Devices)
}

// ApplyRecommendation implements model.ModelOps. The learner applies its
// own choices block by block; only an operator's come this way.
func (o *objects) ApplyRecommendation(_ *model.Model, rec model.Recommendation) error {
	return o.RecommendOperator(rec)
}

// RecommendOperator implements pipeline.Objects.
func (o *objects) RecommendOperator(rec model.Recommendation) error {
	kb, err := strconv.ParseUint(rec.Value, 10, 32)
	if err != nil {
		return fmt.Errorf("%w: %q", model.ErrInvalidRecommendation, rec.Value)
	}
	return o.t.Recommend(rec.Key, uint32(kb))
}

// WithdrawLearned implements pipeline.Objects: the learner keeps no
// recommendation map, so there is nothing to withdraw.
func (o *objects) WithdrawLearned(string) error { return nil }

// Dir implements pipeline.Objects.
func (o *objects) Dir() string { return o.t.cfg.PinDir }

// Control implements pipeline.Objects.
func (o *objects) Control() *loader.ControlMap { return o.t.coll.Control() }

// Events implements pipeline.Objects.
func (o *objects) Events() *ebpf.Map { return o.t.coll.Events() }

// Lost implements pipeline.Objects.
func (o *objects) Lost() *ebpf.Map { return o.t.coll.Lost() }

// Close implements pipeline.Objects: devices restored, collector closed,
// pins left.
func (o *objects) Close() error {
	o.t.mu.Lock()
	o.t.watchdog = nil // it exits by itself once the model is stopped
	o.t.mu.Unlock()
	return o.t.Close()
}

// Learn implements pipeline.Learner: every window to the learner, the
// outcomes to the loop's mode controller (the devices' time blocks are
// decided and applied in CorrectSystemState, every period).
func (o *objects) Learn(recs []Window, out *pipeline.Result) {
	for i := range recs {
		if fb, ok := o.t.feedback(&recs[i]); ok {
			out.Feedback = append(out.Feedback, fb)
		}
	}
}

// CorrectSystemState implements model.ModelOps: the mode controller's
// decision (generic), then the devices' time blocks decided and applied
// under the mode now in force, every period, whether or not windows came
// (an idle device still goes back to its original in EMERGENCY, and an
// operator's recommendation applies at once).
func (o *objects) CorrectSystemState(m *model.Model) (model.Decision, error) {
	d, err := o.GenericModelOps.CorrectSystemState(m)
	o.t.step(time.Now())
	return d, err
}

// rollback removes the pins; a running watchdog then restores every
// device (as does the model's next start, from its state directory).
func rollback(pinRoot, modelName string) error {
	return loader.RemovePins(loader.PinDir(pinRoot, Name, modelName))
}

type recordJSONView struct {
	TsNs         uint64  `json:"ts_ns"`
	Arm          string  `json:"arm"`
	Mode         string  `json:"mode"`
	Generation   uint32  `json:"generation"`
	Device       string  `json:"device"`
	RaKB         uint32  `json:"ra_kb"`
	WindowNs     uint64  `json:"window_ns"`
	Phase        string  `json:"phase"`
	Throughput   float64 `json:"asked_bytes_per_s"`
	SeqShare     float64 `json:"seq_share"`
	FaultShare   float64 `json:"fault_share"`
	RqIssued     uint64  `json:"rq_issued"`
	RqBytes      uint64  `json:"rq_bytes"`
	MeanLatNs    int64   `json:"mean_latency_ns"`
	SyncRa       uint64  `json:"sync_ra"`
	AsyncRa      uint64  `json:"async_ra"`
	AddedPages   uint64  `json:"added_pages"`
	EvictedPages uint64  `json:"evicted_pages"`
	AskedBytes   uint64  `json:"asked_bytes"`
}

func recordJSON(raw []byte) (any, error) {
	var w Window
	if err := Decode(raw, &w); err != nil {
		return nil, err
	}
	return recordJSONView{
		TsNs: w.Hdr.TsNs, Arm: w.Arm.String(), Mode: w.Mode.String(), Generation: w.Hdr.Generation,
		Device: w.Device(), RaKB: w.RaKb, WindowNs: w.WindowNs, Phase: w.Classify().String(),
		Throughput: w.Throughput(), SeqShare: w.SeqShare(), FaultShare: w.FaultShare(),
		RqIssued: w.RqIssued, RqBytes: w.RqBytes, MeanLatNs: int64(w.MeanLatency()),
		SyncRa: w.SyncRa, AsyncRa: w.AsyncRa, AddedPages: w.AddedPages, EvictedPages: w.EvictedPages, AskedBytes: w.AskedBytes,
	}, nil
}
