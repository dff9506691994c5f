package pipeline

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/mlbpf/mlbpf/agent"
	"github.com/mlbpf/mlbpf/loader"
	"github.com/mlbpf/mlbpf/model"
	"github.com/mlbpf/mlbpf/ringbuf"
)

// Loop runs one model, whatever its subsystem: every period it calls the
// RFC's operations on the model in the RFC's order (see the package
// documentation). It is built by New from a subsystem's Parts.
type Loop struct {
	name string // "subsystem/model"
	m    *model.Model
	obj  Objects
	env  Env
	log  *slog.Logger
	core core

	// Used by Run's goroutine only.
	rd       *ringbuf.Reader
	lost     *ringbuf.LostCounter
	builder  *ringbuf.DatasetBuilder
	capacity int // records per portion
	// portions bounds the portions one period takes
	// (Parts.PortionsPerPeriod).
	portions int
	res      Result
	hist     *historian // nil: no state directory

	mu        sync.Mutex
	operator  map[string]bool // keys an operator recommended
	keys      map[string]*keyStats
	records   uint64
	corrupted uint64
	partial   uint64
	bstats    ringbuf.DatasetStats // the builder's, as of the last portion
	fb        periodFeedback
	decision  string
	eff       *agent.Efficiency
}

// core is the part of the loop typed by the subsystem's records.
type core interface {
	// decode decodes every record of ds once, counting those that do not
	// decode as corrupted.
	decode(ds *model.Dataset)
	// learn hands the records decoded last to the learner; forget drops
	// them.
	learn(out *Result)
	forget()
	resumer() Resumer
}

type typed[R any] struct {
	decodeRecord func(raw []byte, r *R) error
	learner      Learner[R]
	recs         []R
}

func (t *typed[R]) decode(ds *model.Dataset) {
	n, size := ds.Len(), ds.RecordSize
	if cap(t.recs) < n {
		t.recs = make([]R, n)
	}
	recs, data := t.recs[:n], ds.Data[:n*size]
	decode := t.decodeRecord
	j := 0
	for off := 0; off+size <= len(data); off += size {
		if j >= len(recs) {
			break // cannot happen: n records
		}
		if decode(data[off:off+size:off+size], &recs[j]) != nil {
			ds.Corrupted++
			continue
		}
		j++
	}
	t.recs = recs[:j]
}

func (t *typed[R]) learn(out *Result) {
	if t.learner != nil {
		t.learner.Learn(t.recs, out)
	}
	t.recs = t.recs[:0]
}

func (t *typed[R]) forget() { t.recs = t.recs[:0] }

func (t *typed[R]) resumer() Resumer {
	r, _ := t.learner.(Resumer)
	return r
}

// New creates and initializes the model of p's objects with env's
// options and plugs it into a loop. The loop owns the objects from then
// on: they are closed when New fails, and by Close.
func New[R any](env Env, p Parts[R]) (*Loop, error) {
	name := p.Subsystem + "/" + env.Model
	if env.Log == nil {
		env.Log = slog.New(slog.DiscardHandler)
	}
	l := &Loop{name: name, obj: p.Objects, env: env, log: env.Log, operator: map[string]bool{}, keys: map[string]*keyStats{}}
	fail := func(err error) (*Loop, error) {
		l.Close()
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	if p.Decode == nil || p.Records.Size <= 0 {
		return fail(errors.New("plugging into the loop: the subsystem gave no record decoder or size"))
	}
	var err error
	if l.m, err = model.Create(p.Subsystem, env.Model, p.Objects, p.Objects.Control(), p.CreateOptions...); err != nil {
		return fail(err)
	}
	if err := l.m.Init(env.Options); err != nil {
		return fail(err)
	}
	if l.rd, err = ringbuf.NewReader(p.Objects.Events()); err != nil {
		return fail(fmt.Errorf("reading records: %w", err))
	}
	if l.lost, err = ringbuf.NewLostCounter(p.Objects.Lost()); err != nil {
		return fail(err)
	}
	pb := p.PortionBytes
	if pb == 0 {
		pb = DefaultPortionBytes
	}
	if l.builder, err = ringbuf.NewDatasetBuilder(ringbuf.DatasetConfig{
		Kind: p.Records.Kind, RecordSize: p.Records.Size, MaxBytes: pb, FirstOffset: env.FirstOffset,
	}); err != nil {
		return fail(err)
	}
	l.capacity = pb / p.Records.Size
	l.portions = l.rd.Size()/(l.capacity*p.Records.Size) + 1
	if p.PortionsPerPeriod > 0 {
		l.portions = p.PortionsPerPeriod
	}
	l.core = &typed[R]{decodeRecord: p.Decode, learner: p.Learner, recs: make([]R, 0, l.capacity)}
	l.hist = openHistorian(env, name)
	return l, nil
}

// Name is the model's "subsystem/model".
func (l *Loop) Name() string { return l.name }

// Model is the model.
func (l *Loop) Model() *model.Model { return l.m }

// Objects are the model's objects.
func (l *Loop) Objects() Objects { return l.obj }

// Control is the model's control block.
func (l *Loop) Control() *loader.ControlMap { return l.obj.Control() }

// Dir is the model's pin directory.
func (l *Loop) Dir() string { return l.obj.Dir() }

// Close releases the reader and the objects, leaving the pins for the
// next run.
func (l *Loop) Close() error {
	if l.rd != nil {
		l.rd.Close()
	}
	l.saveKeys()
	l.hist.close()
	return l.obj.Close()
}

// Run starts the model, runs a period every Options.SleepTimeout until
// ctx is done, then stops it (STOPPED: the kernel on its default) and
// takes the records that came meanwhile to the learner. Called again
// after an operator's stop and start.
func (l *Loop) Run(ctx context.Context) (err error) {
	m := l.m
	if err := m.Start(model.RunConfig{}); err != nil {
		return err
	}
	defer func() {
		// Leave the kernel on its default whatever happened.
		if serr := m.Stop(); serr != nil {
			err = errors.Join(err, serr)
		}
		l.drain(false) // what closed meanwhile, for the learner
		l.saveKeys()
	}()
	if r := l.core.resumer(); r != nil {
		l.res.reset()
		if err := r.Resume(&l.res); err != nil {
			return fmt.Errorf("%s: resuming the learner's recommendations: %w", l.name, err)
		}
		l.recommend()
	}
	opts := m.Options()
	l.log.Info("model running", "model", l.name, "pins", l.obj.Dir(), "mode", m.Mode(), "max_mode", opts.MaxMode, "period", opts.SleepTimeout)
	period := opts.SleepTimeout
	tick := time.NewTicker(period)
	defer tick.Stop()
	for {
		if err := l.Period(); err != nil {
			return err
		}
		if p := m.Options().SleepTimeout; p != period {
			// Retuned (a reloaded configuration): the new period.
			period = p
			tick.Reset(p)
		}
		if l.env.AfterPeriod != nil {
			l.env.AfterPeriod()
		}
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
		}
	}
}

// Period runs one period now: the RFC's operations in the RFC's order.
// Run calls it every Options.SleepTimeout; a benchmark or a test may call
// it on a started model (model.Model.Start) instead, from one goroutine.
func (l *Loop) Period() error {
	m := l.m
	t0 := time.Now()
	// renew_lease: the kernel follows the model for one more lease.
	if err := m.RenewLease(loader.MonotonicNs()); err != nil {
		return err
	}
	t1 := time.Now()
	// get_dataset ... error_backpropagation, portion by portion.
	l.drain(true)
	t2 := time.Now()
	// estimate_efficiency, from the arms' outcomes fed back so far.
	eff := l.efficiency()
	l.hintFleet()
	// estimate_system_state and correct_system_state: the mode
	// controller's decision, applied.
	d, err := m.CorrectSystemState()
	if slow := m.Options().Lease / 2; time.Since(t0) > slow {
		// Half the lease gone: say where the time went.
		l.log.Warn("slow period: the lease is at risk", "model", l.name,
			"renew", t1.Sub(t0), "portions", t2.Sub(t1), "correct", time.Since(t2))
	}
	if err != nil && !errors.Is(err, model.ErrModeChanged) {
		return err
	}
	l.mu.Lock()
	l.eff, l.decision = eff, d.String()
	l.mu.Unlock()
	l.record(eff, d)
	if d.Changed {
		l.log.Info("mode changed", "model", l.name, "from", d.From, "to", d.To, "reason", d.Reason)
	}
	return nil
}

// drain takes the records available now through the pipeline, a portion
// at a time, up to Parts.PortionsPerPeriod portions; the rest waits in the
// ring for the next period. A model no longer active (stopped) only
// learns: its recommendations would not be applied.
func (l *Loop) drain(active bool) {
	for i := range l.portions {
		ds := l.getDataset(i == 0)
		if ds == nil {
			return
		}
		full := ds.Full()
		l.portion(ds, active)
		if !full {
			return
		}
	}
}

// getDataset is the RFC's get_dataset: it takes the records available now
// from the ring into a portion, up to its capacity, and, in the first
// portion of a drain, the records the kernel lost since the last drain.
// It returns nil when there was nothing to take and nothing missed.
func (l *Loop) getDataset(first bool) *model.Dataset {
	for ds := l.publisherFree(); ds != nil; ds = l.publisherFree() {
		_ = l.builder.Discard(ds)
	}
	b := l.builder
	lost := l.lost
	if !first {
		lost = nil // counted in the drain's first portion: one system call a period
	}
	if err := b.Fill(l.rd, lost); err != nil {
		l.log.Warn("reading records failed", "model", l.name, "err", err)
	}
	ds, err := b.Take()
	if err != nil {
		l.log.Warn("taking dataset portion", "model", l.name, "err", err)
		return nil
	}
	if ds.State == model.DatasetClean {
		_ = b.Discard(ds)
		return nil
	}
	return ds
}

func (l *Loop) publisherFree() *model.Dataset {
	if l.env.Publisher == nil {
		return nil
	}
	return l.env.Publisher.Free()
}

// portion takes one portion through preprocess_data, publish_data, the
// learner, preprocess_recommendation and apply_recommendation, and
// error_backpropagation.
func (l *Loop) portion(ds *model.Dataset, active bool) {
	// preprocess_data: every record decoded once, then the portion judged
	// (a corrupted one trips the controller: EMERGENCY).
	l.core.decode(ds)
	perr := l.m.PreprocessData(ds)
	l.mu.Lock()
	l.records += uint64(ds.Len())
	l.corrupted += ds.Corrupted
	if ds.State == model.DatasetExtractedPartially {
		l.partial++
	}
	l.bstats = l.builder.Stats()
	l.mu.Unlock()
	// publish_data: to the agents, who get a corrupted portion too.
	if p := l.env.Publisher; p != nil {
		p.Publish(l.m, ds)
	} else {
		if _, err := l.m.PublishData(ds); err != nil {
			l.log.Warn("publishing dataset", "model", l.name, "err", err)
		}
		defer func() { _ = l.builder.Discard(ds) }()
	}
	if perr != nil {
		l.log.Warn("dataset rejected", "model", l.name, "offset", ds.PortionOffset, "err", perr)
		l.core.forget()
		return
	}
	// The learner, then its recommendations.
	l.res.reset()
	l.core.learn(&l.res)
	if active {
		l.recommend()
	}
	l.backpropagate()
}

// recommend preprocesses and applies the learner's recommendations, and
// its withdrawals, unless only agents recommend. A key an operator
// recommended is left alone.
func (l *Loop) recommend() {
	if l.env.External {
		return
	}
	for _, rec := range l.res.Recommend {
		l.mu.Lock()
		op := l.operator[rec.Key]
		l.mu.Unlock()
		if op {
			continue
		}
		// preprocess_recommendation and apply_recommendation, then
		// execute_operation (the BPF applier's at its hook; the
		// subsystem's objects may add to it).
		if err := l.m.ApplyRecommendation(rec); err != nil {
			l.log.Warn("recommendation refused", "model", l.name, "key", rec.Key, "value", rec.Value, "err", err)
			continue
		}
		if err := l.m.ExecuteOperation(rec, model.Request{Key: rec.Key}); err != nil {
			l.log.Warn("executing the recommendation", "model", l.name, "key", rec.Key, "err", err)
		}
		l.mu.Lock()
		l.wroteLocked(rec.Key)
		l.mu.Unlock()
		l.log.Debug("recommendation made", "model", l.name, "key", rec.Key, "value", rec.Value)
	}
	for _, key := range l.res.Withdraw {
		if err := l.obj.WithdrawLearned(key); err != nil {
			l.log.Warn("withdrawing recommendation", "model", l.name, "key", key, "err", err)
			continue
		}
		l.log.Info("recommendation withdrawn", "model", l.name, "key", key)
	}
}

// backpropagate is error_backpropagation: every outcome of the portion
// goes back to the model (its learner's calibration, the mode
// controller's evidence), and into the period's feedback to agents.
func (l *Loop) backpropagate() {
	var pf periodFeedback
	for _, fb := range l.res.Feedback {
		n, err := l.m.ErrorBackpropagation(fb)
		if err != nil {
			l.log.Warn("feedback refused", "model", l.name, "err", err)
			break
		}
		pf.add(fb, n.Accepted)
		l.hist.add(fb)
	}
	l.mu.Lock()
	for _, fb := range l.res.Feedback {
		l.evidenceLocked(fb)
	}
	l.fb.merge(pf)
	l.mu.Unlock()
}

// Recommend validates an agent's or an operator's recommendation with the
// subsystem (preprocess_recommendation) and writes it. An operator's is
// never overwritten by the built-in learner, and may be written while the
// model is stopped.
func (l *Loop) Recommend(rec model.Recommendation, operator bool) (model.Recommendation, error) {
	rec, err := l.m.PreprocessRecommendation(rec)
	if err != nil {
		return rec, err
	}
	if !operator {
		if err := l.m.ApplyRecommendation(rec); err != nil {
			return rec, err
		}
		l.mu.Lock()
		l.wroteLocked(rec.Key)
		l.mu.Unlock()
		return rec, nil
	}
	if err := l.obj.RecommendOperator(rec); err != nil {
		return rec, err
	}
	l.mu.Lock()
	l.operator[rec.Key] = true
	l.wroteLocked(rec.Key)
	l.mu.Unlock()
	return rec, nil
}

// Stats are a loop's counters since it was created.
type Stats struct {
	// Records were kept in portions; Corrupted did not decode.
	Records, Corrupted uint64
	// Lost, Dropped and Partial count the records the kernel lost, those
	// dropped past a portion's cap, and the portions that missed some.
	Lost, Dropped, Partial uint64
	// Decision is the mode controller's last verdict, and Efficiency the
	// last estimate of the model's efficiency (nil before there is any).
	Decision   string
	Efficiency *agent.Efficiency
}

// Stats returns the loop's counters.
func (l *Loop) Stats() Stats {
	l.mu.Lock()
	defer l.mu.Unlock()
	return Stats{Records: l.records, Corrupted: l.corrupted, Decision: l.decision, Efficiency: l.eff,
		Lost: l.bstats.Lost, Dropped: l.bstats.Dropped, Partial: l.partial}
}

// TakeFeedback summarizes the outcomes fed back since the last call, per
// arm, for the agents' feedback event; nil when there were none.
func (l *Loop) TakeFeedback() *agent.Feedback {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.fb.take()
}

// efficiency is estimate_efficiency: the controller's estimate of the
// model's efficiency in its current mode, nil before there is any.
func (l *Loop) efficiency() *agent.Efficiency {
	eff, err := l.m.EstimateEfficiency(model.Recommendation{}, model.Request{})
	if err != nil {
		return nil
	}
	conf := 0.0
	if c := l.m.Controller(); c != nil {
		conf = c.Config().Confidence
	}
	g := eff.Gain
	e := &agent.Efficiency{
		Mode: eff.Mode.String(), N: g.N, BaselineN: g.BaselineN, Baseline: g.BaselineMean,
		Effect: g.Effect, Lower: g.Lower, Upper: g.Upper, Confidence: conf,
		PImprove: g.PImprove, PRegress: g.PRegress, Applied: eff.Applied,
	}
	if g.BaselineMean != 0 {
		e.Relative = g.Effect / max(g.BaselineMean, -g.BaselineMean)
	}
	return e
}
