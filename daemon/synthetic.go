package daemon

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"reflect"
	"strconv"
	"sync"
	"time"

	"github.com/cilium/ebpf"

	"github.com/mlbpf/mlbpf/agent"
	"github.com/mlbpf/mlbpf/config"
	"github.com/mlbpf/mlbpf/loader"
	"github.com/mlbpf/mlbpf/model"
	"github.com/mlbpf/mlbpf/ringbuf"
	"github.com/mlbpf/mlbpf/synthetic"
)

// syntheticOptions is a synthetic model's section of the configuration.
type syntheticOptions struct {
	// MaxValue is the largest value a recommendation may carry (default
	// 1<<20).
	MaxValue uint32 `cfg:"max_value"`
	// PID restricts the live hook to one process; 0: every process but
	// the daemon. The hook is on every system call, so a host-wide
	// synthetic model costs every process a little: give a PID outside
	// demos.
	PID uint32 `cfg:"pid"`
	// PortionBytes caps a dataset portion (default 128 KiB): records
	// beyond it wait in the ring for the next period, or are lost.
	PortionBytes int `cfg:"portion_bytes"`
	// Adversarial makes the built-in learner recommend the worst value
	// for every key: a bad model, which the mode controller must never
	// promote (a test of the controller).
	Adversarial bool `cfg:"adversarial"`
}

const defaultPortionBytes = 128 << 10

func syntheticSubsystem() *Subsystem {
	return &Subsystem{
		Name:    synthetic.Name,
		Summary: "the RFC's test device: answers a key, by default key % 64; live on raw_syscalls:sys_enter",
		Records: RecordFormat{
			Kind: loader.RecordSynthetic, Size: synthetic.RecordSize,
			Type: reflect.TypeFor[synthetic.Record](),
			JSON: syntheticJSON,
		},
		Datasets:       true,
		Programs:       []ebpf.ProgramType{ebpf.RawTracepoint},
		RecommendUsage: "synthetic/demo KEY VALUE (e.g. 5 42: answer key 5 with 42)",
		check: func(c *config.Config, m *config.Model) error {
			var o syntheticOptions
			if err := c.DecodeSection(m, &o); err != nil {
				return err
			}
			if o.PortionBytes != 0 && o.PortionBytes < synthetic.RecordSize {
				return c.SectionError(m, "portion_bytes", "%d: want at least one record, %d bytes", o.PortionBytes, synthetic.RecordSize)
			}
			return nil
		},
		open:            openSynthetic,
		recommendPinned: recommendSyntheticPinned,
	}
}

// syntheticRecord is a synthetic record as JSON.
type syntheticRecord struct {
	TsNs         uint64 `json:"ts_ns"`
	Arm          string `json:"arm"`
	Mode         string `json:"mode"`
	Generation   uint32 `json:"generation"`
	CPU          uint32 `json:"cpu"`
	Key          uint32 `json:"key"`
	DefaultValue uint32 `json:"default_value"`
	Recommended  uint32 `json:"recommended"`
	Applied      uint32 `json:"applied"`
}

func syntheticJSON(raw []byte) (any, error) {
	var r synthetic.Record
	if err := synthetic.DecodeRecord(raw, &r); err != nil {
		return nil, err
	}
	return syntheticRecord{
		TsNs: r.Hdr.TsNs, Arm: model.Arm(r.Hdr.Arm).String(), Mode: model.Mode(r.Hdr.Mode).String(),
		Generation: r.Hdr.Generation, CPU: r.Hdr.Cpu,
		Key: r.Key, DefaultValue: r.DefaultValue, Recommended: r.Recommended, Applied: r.Applied,
	}, nil
}

func syntheticConfig(c *config.Config, m *config.Model, pinRoot string) (synthetic.Config, syntheticOptions, error) {
	var o syntheticOptions
	if err := c.DecodeSection(m, &o); err != nil {
		return synthetic.Config{}, o, err
	}
	return synthetic.Config{PinRoot: pinRoot, Model: m.ModelName(), MaxValue: o.MaxValue}, o, nil
}

func recommendSyntheticPinned(c *config.Config, m *config.Model, pinRoot string, rec model.Recommendation) (model.Recommendation, error) {
	sc, _, err := syntheticConfig(c, m, pinRoot)
	if err != nil {
		return rec, err
	}
	dir := loader.PinDir(pinRoot, synthetic.Name, sc.Model)
	if _, err := os.Stat(filepath.Join(dir, "recommend")); err != nil {
		return rec, fmt.Errorf("%s: no pinned maps under %s (start the model once with 'mlbpf run')", m.Name, dir)
	}
	sub, err := synthetic.Open(sc)
	if err != nil {
		return rec, err
	}
	defer sub.Close()
	k, v, err := sub.ParseRecommendation(rec.Key, rec.Value)
	if err != nil {
		return rec, err
	}
	pm, err := loader.ReadPinned(pinRoot, synthetic.Name, sc.Model)
	if err != nil {
		return rec, err
	}
	rec = model.Recommendation{Key: strconv.FormatUint(uint64(k), 10), Value: strconv.FormatUint(uint64(v), 10), Generation: pm.Control.Generation}
	return rec, sub.Recommend(k, v, rec.Generation)
}

// syntheticRunner runs a synthetic model live: every period it renews the
// lease, reads a portion of the ring buffer, feeds the outcomes back to
// the mode controller, publishes the portion to the agents and gives it to
// the learner, applies the learner's recommendations and lets the
// controller correct the mode.
type syntheticRunner struct {
	name    string
	sub     *synthetic.Subsystem
	m       *model.Model
	opts    syntheticOptions
	log     *slog.Logger
	hub     *hub
	learner agent.Learner // nil: external agents only

	rd      *ringbuf.Reader
	lost    *ringbuf.LostCounter
	builder *ringbuf.DatasetBuilder

	mu        sync.Mutex
	operator  map[uint32]bool // keys an operator recommended
	records   uint64
	corrupted uint64
	partial   uint64
	bstats    ringbuf.DatasetStats // the builder's, as of the last portion
	fb        periodFeedback
	decision  string
}

func openSynthetic(e *env, m *config.Model, mopts model.Options) (runner, error) {
	sc, o, err := syntheticConfig(e.cfg, m, e.cfg.PinRoot)
	if err != nil {
		return nil, err
	}
	sc.Live = true
	sc.FilterTgid = o.PID
	if o.PID == 0 {
		// The daemon's own system calls would feed the ring it drains.
		sc.ExcludeTgid = uint32(os.Getpid())
	}
	sub, err := synthetic.Open(sc)
	if err != nil {
		return nil, err
	}
	r := &syntheticRunner{name: m.Name, sub: sub, opts: o, log: e.log, hub: e.hub, operator: map[uint32]bool{}}
	fail := func(err error) (runner, error) {
		r.Close()
		return nil, err
	}
	if r.m, err = model.Create(synthetic.Name, sc.Model, sub, sub.Control()); err != nil {
		return fail(err)
	}
	if err := r.m.Init(mopts); err != nil {
		return fail(err)
	}
	if r.rd, err = ringbuf.NewReader(sub.Events()); err != nil {
		return fail(fmt.Errorf("%s: reading records: %w", m.Name, err))
	}
	if r.lost, err = ringbuf.NewLostCounter(sub.Lost()); err != nil {
		return fail(fmt.Errorf("%s: %w", m.Name, err))
	}
	pb := o.PortionBytes
	if pb == 0 {
		pb = defaultPortionBytes
	}
	if r.builder, err = ringbuf.NewDatasetBuilder(ringbuf.DatasetConfig{
		Kind: loader.RecordSynthetic, RecordSize: synthetic.RecordSize, MaxBytes: pb, FirstOffset: e.firstOffset,
	}); err != nil {
		return fail(err)
	}
	if m.Learner == config.LearnerBuiltin {
		l := &syntheticLearner{l: synthetic.Learner{Adversarial: o.Adversarial}}
		// Keys already in the map (an operator's, or learned before a
		// restart) are known: the learner leaves them alone.
		var k uint32
		var v [8]byte
		it := sub.RecommendationMap().Iterate()
		for it.Next(&k, &v) {
			l.l.Observe(k)
		}
		r.learner = l
	}
	return r, nil
}

func (r *syntheticRunner) Model() *model.Model         { return r.m }
func (r *syntheticRunner) Control() *loader.ControlMap { return r.sub.Control() }
func (r *syntheticRunner) Dir() string                 { return r.sub.Dir() }

func (r *syntheticRunner) Close() error {
	if r.rd != nil {
		r.rd.Close()
	}
	return r.sub.Close()
}

func (r *syntheticRunner) Stats() runnerStats {
	r.mu.Lock()
	defer r.mu.Unlock()
	st := runnerStats{Records: r.records, Corrupted: r.corrupted, Decision: r.decision,
		Lost: r.bstats.Lost, Dropped: r.bstats.Dropped, Partial: r.partial}
	st.Feedback = r.fb.take()
	return st
}

func (r *syntheticRunner) Recommend(rec model.Recommendation, operator bool) (model.Recommendation, error) {
	if !operator {
		rec, err := r.m.PreprocessRecommendation(rec)
		if err != nil {
			return rec, err
		}
		return rec, r.m.ApplyRecommendation(rec)
	}
	// An operator may recommend while the model is stopped.
	rec, err := r.m.PreprocessRecommendation(rec)
	if err != nil {
		return rec, err
	}
	k, v, err := r.sub.ParseRecommendation(rec.Key, rec.Value)
	if err != nil {
		return rec, err
	}
	r.mu.Lock()
	r.operator[k] = true
	r.mu.Unlock()
	return rec, r.sub.Recommend(k, v, rec.Generation)
}

func (r *syntheticRunner) Run(ctx context.Context) (err error) {
	if err := r.m.Start(model.RunConfig{}); err != nil {
		return err
	}
	defer func() {
		// Leave the kernel on its default whatever happened.
		if serr := r.m.Stop(); serr != nil {
			err = errors.Join(err, serr)
		}
	}()
	tick := time.NewTicker(r.m.Options().SleepTimeout)
	defer tick.Stop()
	for {
		if err := r.step(ctx); err != nil {
			return err
		}
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
		}
	}
}

// step is one period.
func (r *syntheticRunner) step(ctx context.Context) error {
	if err := r.m.RenewLease(loader.MonotonicNs()); err != nil {
		return err
	}
	r.hub.recycle(r.builder)
	ds, err := r.read()
	if err != nil {
		return err
	}
	if ds.State != model.DatasetClean { // something was read, or missed
		r.consume(ctx, ds)
	} else {
		_ = r.builder.Discard(ds)
	}
	d, err := r.m.CorrectSystemState()
	if err != nil && !errors.Is(err, model.ErrModeChanged) {
		return err
	}
	r.mu.Lock()
	r.decision = d.String()
	r.mu.Unlock()
	if d.Changed {
		r.log.Info("mode changed", "model", r.name, "from", d.From, "to", d.To, "reason", d.Reason)
	}
	return nil
}

// read takes the records available now into a portion, up to its cap;
// the rest wait in the ring for the next period.
func (r *syntheticRunner) read() (*model.Dataset, error) {
	r.rd.SetDeadline(time.Now())
	capacity := max(r.builderCap(), 1)
	for r.builder.Len() < capacity {
		_, err := r.builder.ReadFrom(r.rd, r.lost)
		if errors.Is(err, os.ErrDeadlineExceeded) {
			break
		}
		if err != nil {
			r.builder.Fail()
			r.log.Warn("reading records failed", "model", r.name, "err", err)
			break
		}
	}
	return r.builder.Take()
}

func (r *syntheticRunner) builderCap() int {
	pb := r.opts.PortionBytes
	if pb == 0 {
		pb = defaultPortionBytes
	}
	return pb / synthetic.RecordSize
}

// consume feeds a portion's outcomes back, publishes it and lets the
// learner learn from it.
func (r *syntheticRunner) consume(ctx context.Context, ds *model.Dataset) {
	r.mu.Lock()
	r.records += uint64(ds.Len())
	r.corrupted += ds.Corrupted
	if ds.State == model.DatasetExtractedPartially {
		r.partial++
	}
	r.bstats = r.builder.Stats()
	r.mu.Unlock()
	if err := r.m.PreprocessData(ds); err != nil {
		// A corrupted portion trips the controller: EMERGENCY.
		r.log.Warn("dataset rejected", "model", r.name, "offset", ds.PortionOffset, "err", err)
	} else {
		r.feedback(ds)
	}
	p := r.hub.publishModel(r.m, ds, r.log)
	if r.learner == nil || ds.State == model.DatasetCorrupted {
		return
	}
	p.Data = ds.Data
	recs, err := r.learner.Learn(ctx, &p)
	if err != nil {
		r.log.Warn("learner failed", "model", r.name, "err", err)
		return
	}
	for _, rec := range recs {
		k, _ := strconv.ParseUint(rec.Key, 10, 32)
		r.mu.Lock()
		op := r.operator[uint32(k)]
		r.mu.Unlock()
		if op {
			continue
		}
		if err := r.m.ApplyRecommendation(model.Recommendation{Key: rec.Key, Value: rec.Value}); err != nil {
			r.log.Warn("recommendation refused", "model", r.name, "key", rec.Key, "value", rec.Value, "err", err)
			continue
		}
		r.log.Debug("recommendation made", "model", r.name, "key", rec.Key, "value", rec.Value)
	}
}

// feedback back-propagates the outcome of every decision in the portion.
// The synthetic device's objective is known, so a shadow outcome also
// says what the recommendation would have earned.
func (r *syntheticRunner) feedback(ds *model.Dataset) {
	var rec synthetic.Record
	var pf periodFeedback
	for _, raw := range ds.All() {
		if synthetic.DecodeRecord(raw, &rec) != nil {
			continue
		}
		arm := model.Arm(rec.Hdr.Arm)
		fb := model.Feedback{Arm: arm, Reward: synthetic.Reward(rec.Key, rec.Applied), Key: strconv.FormatUint(uint64(rec.Key), 10),
			Mode: model.Mode(rec.Hdr.Mode), Generation: rec.Hdr.Generation}
		switch arm {
		case model.ArmShadow:
			fb.Predicted, fb.HasPrediction = synthetic.Reward(rec.Key, rec.Recommended), true
		case model.ArmModel, model.ArmControl:
		default:
			continue // nothing to learn: the model could not act
		}
		n, err := r.m.ErrorBackpropagation(fb)
		if err != nil {
			r.log.Warn("feedback refused", "model", r.name, "err", err)
			return
		}
		pf.add(fb, n.Accepted)
	}
	r.mu.Lock()
	r.fb.merge(pf)
	r.mu.Unlock()
}

// syntheticLearner is the built-in learner of synthetic models, an
// agent.Learner like any external one.
type syntheticLearner struct {
	l synthetic.Learner
}

func (s *syntheticLearner) Learn(_ context.Context, p *agent.Portion) ([]agent.Recommendation, error) {
	var out []agent.Recommendation
	var rec synthetic.Record
	for i := range int(p.Size) {
		if synthetic.DecodeRecord(p.Record(i), &rec) != nil {
			continue
		}
		if v, isNew := s.l.Observe(rec.Key); isNew {
			out = append(out, agent.Recommendation{Model: p.Model,
				Key: strconv.FormatUint(uint64(rec.Key), 10), Value: strconv.FormatUint(uint64(v), 10)})
		}
	}
	return out, nil
}

func (s *syntheticLearner) Feedback(context.Context, *agent.Feedback) {}
