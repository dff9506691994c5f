package rto

import (
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"time"

	"github.com/cilium/ebpf"

	"github.com/mlbpf/mlbpf/config"
	"github.com/mlbpf/mlbpf/loader"
	"github.com/mlbpf/mlbpf/model"
	"github.com/mlbpf/mlbpf/pipeline"
)

// SectionConfig is tcp/rto's section of the daemon's configuration
// ("tcp:" of a model named tcp/rto), decoded straight into it.
type SectionConfig struct {
	// Cgroup is the cgroup v2 directory the program is attached to
	// (default: the root of the cgroup v2 mount, the whole host).
	Cgroup string `cfg:"cgroup"`
	// MinBytes: connections that sent less end without a record.
	MinBytes uint64 `cfg:"min_bytes"`
	// Quantile of the flow completion time minimised (default 0.9);
	// MinSamples flows per setting before a prefix decides (default 40),
	// MaxFlows after which it decides on what it has (default 300);
	// MinGain, how much shorter than the default's a setting's tail must
	// be to be chosen (default 0.1: 10 %).
	Quantile   float64 `cfg:"quantile"`
	MinGain    float64 `cfg:"min_gain"`
	MinSamples int     `cfg:"min_samples"`
	MaxFlows   int     `cfg:"max_flows"`
	// PrefixBits4 and PrefixBits6 group destinations (default 24, 64).
	PrefixBits4 int `cfg:"prefix_bits4"`
	PrefixBits6 int `cfg:"prefix_bits6"`
	// PortionBytes caps a dataset portion (default 128 KiB).
	PortionBytes int `cfg:"portion_bytes"`
	// Grid replaces the learner's grid (default Grid); a program's
	// setting (the benchmark's -settings), not the file's.
	Grid []Setting `cfg:"-"`
}

func (c *SectionConfig) learn() LearnConfig {
	return LearnConfig{Quantile: c.Quantile, MinGain: c.MinGain, MinSamples: c.MinSamples, MaxFlows: c.MaxFlows,
		Bits4: c.PrefixBits4, Bits6: c.PrefixBits6, Grid: c.Grid}
}

// Validate implements config.Section.
func (c *SectionConfig) Validate() error {
	if c.Cgroup != "" && !filepath.IsAbs(c.Cgroup) {
		return config.Field("cgroup", "%q: want an absolute path to a cgroup v2 directory", c.Cgroup)
	}
	if c.PortionBytes != 0 && c.PortionBytes < RecordSize {
		return config.Field("portion_bytes", "%d: want at least one record, %d bytes", c.PortionBytes, RecordSize)
	}
	if err := c.learn().Validate(); err != nil {
		return config.Field("", "learner: %v", err)
	}
	return nil
}

// Subsystem describes tcp/rto for the daemon and the CLI: model "rto" of
// subsystem "tcp", beside tcp/cc.
func Subsystem() *pipeline.Subsystem {
	return &pipeline.Subsystem{
		Name:    SubsystemName,
		Summary: "TCP loss-recovery timers (SYN timeout, RTO floor, delayed-ACK ceiling, IW) per destination, minimising the tail of the flow completion time",
		Models:  []string{ModelName},
		Needs:   pipeline.NeedCgroup2,
		Records: pipeline.RecordFormat{
			Kind: RecordKind, Size: RecordSize, Type: reflect.TypeFor[Record](),
			JSON: func(raw []byte) (any, error) {
				var f Flow
				return f, DecodeFlow(raw, &f)
			},
		},
		Programs:        []ebpf.ProgramType{ebpf.SockOps},
		RecommendUsage:  "tcp/rto PREFIX SETTING (e.g. 10.0.0.0/8 syn=20ms,rto_min=8ms; knobs syn, rto_min, delack_max, iw; or default)",
		Config:          func() config.Section { return &SectionConfig{} },
		Open:            openLoop,
		RecommendPinned: recommendPinned,
		Pinned:          pinnedKeys,
	}
}

func openLoop(env pipeline.Env, sec config.Section) (*pipeline.Loop, error) {
	cfg := sec.(*SectionConfig)
	o, err := Open(Config{PinRoot: env.PinRoot, Cgroup: cfg.Cgroup, MinBytes: cfg.MinBytes})
	if err != nil {
		return nil, err
	}
	l := &learnAdapter{o: o, l: NewLearner(cfg.learn()), written: map[string]string{}}
	if env.StateDir != "" {
		l.path = filepath.Join(env.StateDir, StateFile)
		if _, err := l.l.Load(l.path); err != nil {
			o.Close()
			return nil, err
		}
	}
	o.learner, o.statePath, o.external = l.l, l.path, env.External
	env.Options = withDefaultOptions(env.Options)
	loop, err := pipeline.New(env, pipeline.Parts[Flow]{
		Subsystem: SubsystemName, Objects: o, Records: Subsystem().Records,
		Decode: DecodeFlow, Learner: l, PortionBytes: cfg.PortionBytes,
	})
	if err != nil {
		o.Close()
		return nil, err
	}
	return loop, nil
}

// learnAdapter feeds the Learner a portion at a time and tells the loop
// what changed in its recommendations.
type learnAdapter struct {
	o       *Objects
	l       *Learner
	path    string
	saved   time.Time
	written map[string]string // prefix → settings, as last recommended
}

func (a *learnAdapter) Learn(recs []Flow, out *pipeline.Result) {
	for i := range recs {
		if fb, ok := a.l.Observe(&recs[i]); ok {
			out.Feedback = append(out.Feedback, fb)
		}
	}
	a.sync(out)
	if a.path != "" && time.Since(a.saved) > 10*time.Second {
		if a.l.Save(a.path) == nil {
			a.saved = time.Now()
		}
	}
}

// Resume implements pipeline.Resumer: the recommendations learned before
// a restart go back into the map.
func (a *learnAdapter) Resume(out *pipeline.Result) error {
	clear(a.written)
	a.sync(out)
	return nil
}

func (a *learnAdapter) sync(out *pipeline.Result) {
	want := a.l.Recommendations()
	for p, ss := range want {
		v := FormatSettings(ss)
		if a.written[p.String()] != v {
			out.Recommend = append(out.Recommend, model.Recommendation{Key: p.String(), Value: v})
			a.written[p.String()] = v
		}
	}
	for k := range a.written {
		if _, ok := want[mustPrefix(k)]; !ok {
			out.Withdraw = append(out.Withdraw, k)
			delete(a.written, k)
		}
	}
}

// EstimateSystemState implements model.ModelOps: the mode follows the
// learner (COLLABORATION while a prefix explores, RECOMMENDATION once all
// have chosen), under MaxMode, unless the learner is external (its
// recommendations are not applied); the shared controller's trips (a
// lapsed lease, a corrupted dataset) still send the model to EMERGENCY,
// which only an operator leaves.
//
// The shared controller's promotions are not used: it compares the mean
// reward of the flows on the model's settings with the control group's
// (Welch, its α spent over the model's life), and here the default's
// flows are heavy-tailed by the very stalls a setting removes (on a lossy
// path a tenth of them wait a 200 ms to 1 s timer), so that mean is known
// too poorly for a test at 99 % within the few hundred flows per prefix
// the learner's tail test needs: on flows like the testbed's
// (TestSharedControllerIsSlow, both paths, the learner done within 300
// flows per prefix) it promoted after 790 to 1860 flows per prefix, or
// not within 3000, depending on the reward (a stall indicator, the
// completion time relative to the default's mean; its logarithm or square
// root never). Its evidence (mlbpf status, the agents' feedback) is fed
// all the same, from the rewards Learner.Observe returns.
func (o *Objects) EstimateSystemState(m *model.Model) (model.Decision, error) {
	d, err := (model.GenericModelOps{}).EstimateSystemState(m)
	if err != nil || d.To == model.ModeEmergency || m.Mode() == model.ModeEmergency || o.learner == nil || o.external {
		return d, err
	}
	want, why, ok := o.learner.Mode()
	if !ok {
		return d, nil
	}
	want = min(want, m.Options().MaxMode)
	return model.Decision{From: m.Mode(), To: want, Changed: want != m.Mode(), Reason: why}, nil
}

func recommendPinned(sec config.Section, pinRoot, modelName string, rec model.Recommendation) (model.Recommendation, error) {
	cfg := sec.(*SectionConfig)
	dir := loader.PinDir(pinRoot, SubsystemName, modelName)
	if _, err := os.Stat(filepath.Join(dir, "recommend")); err != nil {
		return rec, fmt.Errorf("%s: no pinned maps under %s (start the model once with 'mlbpf run')", ModelPath, dir)
	}
	o, err := Open(Config{PinRoot: pinRoot, Cgroup: cfg.Cgroup})
	if err != nil {
		return rec, err
	}
	defer o.Close()
	p, ss, err := ParseRecommendation(rec, o.hz)
	if err != nil {
		return rec, err
	}
	if len(ss) != 1 {
		return rec, fmt.Errorf("%w: an operator recommends one setting, not %d", model.ErrInvalidRecommendation, len(ss))
	}
	rec.Key, rec.Value = p.String(), ss[0].String()
	return rec, o.write(p, ss, true)
}
