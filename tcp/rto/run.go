package rto

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"os"
	"slices"
	"sync"
	"time"

	"github.com/cilium/ebpf/ringbuf"

	"github.com/mlbpf/mlbpf/loader"
	"github.com/mlbpf/mlbpf/model"
)

// DefaultOptions are tcp/rto's model options: it starts in COLLABORATION,
// since an RTO setting cannot be judged without applying it (no
// counterfactual: a timer that never fired says nothing of a shorter
// one), with three quarters of the flows drawing a candidate setting and
// the rest on the default. RECOMMENDATION keeps 1 % on the default, not
// the usual 5 %: the reward is the tail of the flow completion time, and
// on a path where the setting pays, holdout flows are that tail by
// construction; at 5 % they alone would set the p99.
func DefaultOptions() model.Options {
	return model.Options{
		SleepTimeout:    250 * time.Millisecond,
		InitialMode:     model.ModeCollaboration,
		CollabPermille:  750,
		HoldoutPermille: 10,
	}
}

// withDefaultOptions gives opts tcp/rto's initial mode and shares where
// they are zero.
func withDefaultOptions(opts model.Options) model.Options {
	d := DefaultOptions()
	if opts.InitialMode == 0 {
		opts.InitialMode = d.InitialMode
		if opts.MaxMode != 0 {
			opts.InitialMode = min(opts.InitialMode, opts.MaxMode)
		}
	}
	if opts.CollabPermille == 0 {
		opts.CollabPermille = d.CollabPermille
	}
	if opts.HoldoutPermille == 0 {
		opts.HoldoutPermille = d.HoldoutPermille
	}
	return opts
}

// Runner runs the tcp/rto model: the lifecycle and mode in the control
// block, the lease, the outcome records into the learner, the learner's
// recommendations into the map.
type Runner struct {
	o       *Objects
	learner *Learner
	model   *model.Model
	rd      *ringbuf.Reader

	mu      sync.Mutex
	flows   uint64
	bad     uint64
	onFlow  func(*Flow)
	written map[string]string
}

// NewRunner creates and initializes the model over o. opts' zero fields
// take DefaultOptions'.
func NewRunner(o *Objects, learn LearnConfig, opts model.Options) (*Runner, error) {
	if err := learn.Validate(); err != nil {
		return nil, fmt.Errorf("creating %s: learner: %w", ModelPath, err)
	}
	if opts.SleepTimeout == 0 {
		opts.SleepTimeout = DefaultOptions().SleepTimeout
	}
	opts = withDefaultOptions(opts)
	m, err := model.Create(SubsystemName, ModelName, o, o.Control())
	if err != nil {
		return nil, err
	}
	if err := m.Init(opts); err != nil {
		return nil, err
	}
	rd, err := ringbuf.NewReader(o.Events())
	if err != nil {
		return nil, fmt.Errorf("creating %s: opening the ring buffer: %w", ModelPath, err)
	}
	return &Runner{o: o, learner: NewLearner(learn), model: m, rd: rd, written: map[string]string{}}, nil
}

// Model is the model.
func (r *Runner) Model() *model.Model { return r.model }

// Learner is the learner.
func (r *Runner) Learner() *Learner { return r.learner }

// OnFlow sets a function that sees every decoded flow (for datasets and
// benchmarks), before the learner.
func (r *Runner) OnFlow(fn func(*Flow)) {
	r.mu.Lock()
	r.onFlow = fn
	r.mu.Unlock()
}

// Start attaches the program, starts the model and grants the first lease:
// from then on the kernel follows the control block.
func (r *Runner) Start() error {
	if err := r.o.Attach(); err != nil {
		return err
	}
	if err := r.model.Start(model.RunConfig{}); err != nil {
		return err
	}
	return r.model.RenewLease(loader.MonotonicNs())
}

// Step renews the lease, drains the records into the learner, writes the
// recommendations and sets the mode: COLLABORATION while a prefix
// explores, RECOMMENDATION once all have chosen. It leaves an EMERGENCY
// alone.
func (r *Runner) Step() error {
	if err := r.model.RenewLease(loader.MonotonicNs()); err != nil {
		return err
	}
	if err := r.Drain(); err != nil {
		return err
	}
	if err := r.syncRecommendations(); err != nil {
		return err
	}
	mode, why, ok := r.learner.Mode()
	if cur := r.model.Mode(); ok && cur != mode && cur != model.ModeEmergency {
		return r.model.SetMode(mode, why)
	}
	return nil
}

// Drain reads every record the ring buffer holds now.
func (r *Runner) Drain() error {
	var rec ringbuf.Record
	var f Flow
	r.rd.SetDeadline(time.Now())
	for {
		err := r.rd.ReadInto(&rec)
		if errors.Is(err, os.ErrDeadlineExceeded) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("reading %s records: %w", ModelPath, err)
		}
		if err := DecodeFlow(rec.RawSample, &f); err != nil {
			r.mu.Lock()
			r.bad++
			r.mu.Unlock()
			continue
		}
		r.mu.Lock()
		r.flows++
		fn := r.onFlow
		r.mu.Unlock()
		if fn != nil {
			fn(&f)
		}
		r.learner.Observe(&f)
	}
}

func (r *Runner) syncRecommendations() error {
	want := r.learner.Recommendations()
	for _, p := range slices.Collect(maps.Keys(want)) {
		s := want[p]
		key := fmt.Sprint(s)
		if r.written[p.String()] == key {
			continue
		}
		if err := r.o.write(p, s, false); err != nil {
			return err
		}
		r.written[p.String()] = key
	}
	for ps := range r.written {
		if _, ok := want[mustPrefix(ps)]; !ok {
			if err := r.o.remove(mustPrefix(ps), false); err != nil {
				return err
			}
			delete(r.written, ps)
		}
	}
	return nil
}

// Run starts the model and steps it every SleepTimeout until ctx is done;
// then it stops the model (the kernel is on its defaults at once).
func (r *Runner) Run(ctx context.Context) (err error) {
	if err := r.Start(); err != nil {
		return err
	}
	defer func() { err = errors.Join(err, r.model.Stop()) }()
	t := time.NewTicker(r.model.Options().SleepTimeout)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		if err := r.Step(); err != nil {
			return err
		}
	}
}

// Flows returns how many records were decoded and how many refused.
func (r *Runner) Flows() (decoded, bad uint64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.flows, r.bad
}

// Close closes the ring buffer reader; the objects are the caller's.
func (r *Runner) Close() error { return r.rd.Close() }
