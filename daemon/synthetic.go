package daemon

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"time"

	"github.com/mlbpf/mlbpf/loader"
	"github.com/mlbpf/mlbpf/model"
	"github.com/mlbpf/mlbpf/ringbuf"
	"github.com/mlbpf/mlbpf/synthetic"
)

// SyntheticConfig configures a run of the synthetic subsystem.
type SyntheticConfig struct {
	// PinRoot is the root of the pins (default loader.DefaultPinRoot).
	PinRoot string
	// Model names the model (default "demo").
	Model string
	// Options are the model's options (lease, shares, modes, controller).
	Options model.Options
	// Duration stops the run after this long; 0 runs until ctx ends.
	Duration time.Duration
	// FilterTgid restricts the live hook to one process (0: every process).
	FilterTgid uint32
	// Adversarial makes the learner recommend the worst values (a bad
	// model, which the controller must never promote).
	Adversarial bool
	// Destroy removes the pins at the end instead of leaving them for the
	// next run to adopt.
	Destroy bool
}

// Status is what a run reports after every period and at the end.
type Status struct {
	Subsystem string            `json:"subsystem"`
	Model     string            `json:"model"`
	State     string            `json:"state"`
	Mode      string            `json:"mode"`
	Uptime    time.Duration     `json:"uptime_ns"`
	Records   uint64            `json:"records"`
	Lost      uint64            `json:"lost"`
	Corrupted uint64            `json:"corrupted"`
	Arms      map[string]uint64 `json:"arms"`
	Keys      int               `json:"keys"`
	Renewals  uint64            `json:"lease_renewals"`
	Changes   []ModeChange      `json:"mode_changes,omitempty"`
}

// ModeChange is one decision of the mode controller.
type ModeChange struct {
	At     time.Duration `json:"at_ns"`
	From   string        `json:"from"`
	To     string        `json:"to"`
	Reason string        `json:"reason"`
}

// RunSynthetic runs the synthetic subsystem live on raw_syscalls:sys_enter
// until ctx is done or cfg.Duration has passed. progress, if not nil, is
// called with the status after every period. On return the model is
// STOPPED in the kernel (or destroyed with cfg.Destroy).
func RunSynthetic(ctx context.Context, cfg SyntheticConfig, log *slog.Logger, progress func(Status)) (Status, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if cfg.Model == "" {
		cfg.Model = "demo"
	}
	opts := cfg.Options.WithDefaults()
	if err := opts.Validate(); err != nil {
		return Status{}, err
	}
	if err := loader.CheckPrivileges(); err != nil {
		return Status{}, err
	}
	root := cfg.PinRoot
	if root == "" {
		root = loader.DefaultPinRoot
	}
	if err := loader.EnsureBPFFS(root, true); err != nil {
		return Status{}, err
	}

	// The daemon's own syscalls would feed the ring it drains.
	var exclude uint32
	if cfg.FilterTgid == 0 {
		exclude = uint32(os.Getpid())
	}
	sub, err := synthetic.Open(synthetic.Config{PinRoot: root, Model: cfg.Model,
		FilterTgid: cfg.FilterTgid, ExcludeTgid: exclude, Live: true})
	if err != nil {
		return Status{}, err
	}
	defer sub.Close()

	m, err := model.Create(synthetic.Name, cfg.Model, sub, sub.Control())
	if err != nil {
		return Status{}, err
	}
	if err := m.Init(opts); err != nil {
		return Status{}, err
	}
	rd, err := ringbuf.NewReader(sub.Events())
	if err != nil {
		return Status{}, fmt.Errorf("reading synthetic records: %w", err)
	}
	defer rd.Close()

	if err := m.Start(model.RunConfig{}); err != nil {
		return Status{}, err
	}
	log.Info("model started", "model", synthetic.Name+"/"+cfg.Model, "pins", sub.Dir(),
		"mode", m.Mode(), "max_mode", opts.MaxMode, "lease", opts.Lease)

	r := &synthRun{
		sub: sub, m: m, rd: rd, log: log,
		ctrl:    model.NewController(opts.Controller),
		learner: &synthetic.Learner{Adversarial: cfg.Adversarial},
		start:   time.Now(),
	}
	r.st = Status{Subsystem: synthetic.Name, Model: cfg.Model}

	var deadline <-chan time.Time
	if cfg.Duration > 0 {
		t := time.NewTimer(cfg.Duration)
		defer t.Stop()
		deadline = t.C
	}
	tick := time.NewTicker(opts.SleepTimeout)
	defer tick.Stop()

	runErr := r.step()
	for runErr == nil {
		select {
		case <-ctx.Done():
			log.Info("stopping", "reason", context.Cause(ctx))
		case <-deadline:
			log.Info("stopping", "reason", "duration reached")
		case <-tick.C:
			runErr = r.step()
			if runErr == nil && progress != nil {
				progress(r.status())
			}
			continue
		}
		break
	}

	// Leave the kernel on its default behaviour whatever happened above.
	if err := m.Stop(); err != nil {
		runErr = errors.Join(runErr, err)
	}
	_ = r.drain()
	st := r.status()
	if cfg.Destroy {
		if err := m.Destroy(); err != nil {
			runErr = errors.Join(runErr, err)
		}
		st.State = model.StateShuttingDown.String()
	}
	log.Info("model stopped", "model", synthetic.Name+"/"+cfg.Model, "state", st.State,
		"records", st.Records, "lost", st.Lost)
	return st, runErr
}

type synthRun struct {
	sub     *synthetic.Subsystem
	m       *model.Model
	rd      *ringbuf.Reader
	log     *slog.Logger
	ctrl    *model.Controller
	learner *synthetic.Learner
	start   time.Time
	st      Status
	gen     uint32
	dec     synthetic.Record
}

// step is one period: renew the lease, read the records, learn, and let
// the controller correct the mode.
func (r *synthRun) step() error {
	if err := r.m.RenewLease(loader.MonotonicNs()); err != nil {
		return err
	}
	r.st.Renewals++
	if err := r.drain(); err != nil {
		return err
	}
	d := r.ctrl.Decide(r.m.Mode())
	if d.Changed {
		if err := r.m.SetMode(d.To, d.Reason); err != nil {
			return err
		}
		r.ctrl.Reset()
		r.st.Changes = append(r.st.Changes, ModeChange{At: time.Since(r.start), From: d.From.String(), To: d.To.String(), Reason: d.Reason})
		r.log.Info("mode changed", "model", synthetic.Name+"/"+r.st.Model, "from", d.From, "to", d.To, "reason", d.Reason)
	}
	return nil
}

// drain reads the records available now, at most one ring's worth, so a
// flood cannot keep the loop from renewing the lease.
func (r *synthRun) drain() error {
	budget := r.rd.Size() / synthetic.RecordSize
	r.rd.SetDeadline(time.Now())
	for budget > 0 {
		n, err := r.rd.ReadBatch(r.handle)
		if errors.Is(err, os.ErrDeadlineExceeded) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("reading synthetic records: %w", err)
		}
		budget -= n
	}
	return nil
}

// handle takes one record; a record that does not decode is counted and
// skipped.
func (r *synthRun) handle(rec []byte) error {
	r.st.Records++
	if err := synthetic.DecodeRecord(rec, &r.dec); err != nil {
		r.st.Corrupted++
		return nil
	}
	r.observe(&r.dec)
	return nil
}

func (r *synthRun) observe(d *synthetic.Record) {
	if v, isNew := r.learner.Observe(d.Key); isNew {
		r.gen++
		if err := r.sub.Recommend(d.Key, v, r.gen); err != nil {
			r.log.Warn("recommendation refused", "key", d.Key, "value", v, "err", err)
		} else {
			r.st.Keys++
		}
	}
	arm := model.Arm(d.Hdr.Arm)
	switch arm {
	case model.ArmShadow:
		// LEARNING: the recommendation was only looked up. The synthetic
		// device's objective is known, so the recommendation is checked
		// against it: the counterfactual reward it would have earned.
		r.ctrl.Observe(model.Outcome{Arm: arm, Reward: synthetic.Reward(d.Key, d.Applied),
			Predicted: synthetic.Reward(d.Key, d.Recommended), HasPrediction: true})
	case model.ArmModel, model.ArmControl:
		r.ctrl.Observe(model.Outcome{Arm: arm, Reward: synthetic.Reward(d.Key, d.Applied)})
	}
}

func (r *synthRun) status() Status {
	st := r.st
	st.State = r.m.State().String()
	st.Mode = r.m.Mode().String()
	st.Uptime = time.Since(r.start)
	if arms, err := r.sub.ArmCounts(); err == nil {
		st.Arms = make(map[string]uint64, len(arms))
		for i, n := range arms {
			st.Arms[model.Arm(i).String()] = n
		}
	}
	if lost, err := r.sub.LostRecords(); err == nil {
		st.Lost = lost
	}
	st.Changes = append([]ModeChange(nil), r.st.Changes...)
	return st
}
