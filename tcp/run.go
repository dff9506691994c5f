package tcp

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/mlbpf/mlbpf/learner"
	"github.com/mlbpf/mlbpf/loader"
	"github.com/mlbpf/mlbpf/model"
)

// saveEvery is how often Run saves the learner's state while it runs.
const saveEvery = 10 * time.Second

type runStats struct {
	start     time.Time
	records   uint64
	transfers uint64
	corrupted uint64
	// goodput per arm, in bytes/s, of the transfers decided in the
	// current mode.
	goodput  [model.ArmCount]learner.Estimate
	decision string
	saved    time.Time
}

// ArmGoodput summarizes the goodput of one arm's transfers.
type ArmGoodput struct {
	Transfers int     `json:"transfers"`
	Mean      float64 `json:"mean_bytes_per_second"`
}

// Status is a snapshot of the tcp/cc model.
type Status struct {
	Model     string        `json:"model"`
	State     model.State   `json:"state"`
	Mode      model.Mode    `json:"mode"`
	Uptime    time.Duration `json:"uptime_ns"`
	Records   uint64        `json:"records"`
	Transfers uint64        `json:"transfers"`
	Corrupted uint64        `json:"corrupted"`
	Lost      uint64        `json:"lost"`
	// Arms counts the kernel's decisions per arm since the maps were
	// created.
	Arms map[string]uint64 `json:"arms"`
	// Goodput is per arm, over the transfers decided in the current mode.
	Goodput      map[string]ArmGoodput `json:"goodput"`
	Destinations []DestinationView     `json:"destinations"`
	// Decision is the mode controller's last verdict.
	Decision string             `json:"decision"`
	Changes  []model.ModeChange `json:"mode_changes,omitempty"`
}

// Status returns a snapshot of the model.
func (s *Subsystem) Status() Status {
	st := Status{Model: ModelPath, Arms: map[string]uint64{}, Goodput: map[string]ArmGoodput{}}
	if arms, err := s.ArmCounts(); err == nil {
		for i, n := range arms {
			st.Arms[model.Arm(i).String()] = n
		}
	}
	st.Lost, _ = s.LostRecords()
	st.Destinations = s.learner.Destinations()
	if s.model != nil {
		st.State, st.Mode = s.model.State(), s.model.Mode()
		st.Changes = s.model.ModeHistory()
	} else if c, err := s.control.LoadControl(); err == nil {
		st.State, st.Mode = c.State, c.Mode
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.stats.start.IsZero() {
		st.Uptime = time.Since(s.stats.start)
	}
	st.Records, st.Transfers, st.Corrupted = s.stats.records, s.stats.transfers, s.stats.corrupted
	st.Decision = s.stats.decision
	for i, e := range s.stats.goodput {
		if e.W > 0 {
			st.Goodput[model.Arm(i).String()] = ArmGoodput{Transfers: int(e.W), Mean: e.Mean}
		}
	}
	return st
}

// Run runs the model until ctx is done: it starts the model (attaching the
// sock_ops program), and every SleepTimeout renews the kernel's lease,
// drains the connection records into the learner, writes the learner's
// recommendations, feeds the outcomes back (error backpropagation and the
// mode controller's evidence) and lets the controller correct the mode.
// progress, if not nil, gets the status after every period. On return the
// model is STOPPED: the kernel is on its default at once, the program
// stays attached and the pins stay for the next Run to adopt.
func (s *Subsystem) Run(ctx context.Context, progress func(Status)) (err error) {
	m := s.model
	if m == nil {
		return fmt.Errorf("running %s: opened without a model (OpenPinned)", ModelPath)
	}
	if err := m.Start(model.RunConfig{}); err != nil {
		return err
	}
	log := s.cfg.Logger.With("model", ModelPath)
	s.mu.Lock()
	s.stats.start, s.stats.saved = time.Now(), time.Now()
	s.mu.Unlock()
	defer func() {
		if serr := m.Stop(); serr != nil {
			err = errors.Join(err, serr)
		}
		_ = s.drain() // what closed meanwhile, for the learner
		if serr := s.saveState(); serr != nil {
			err = errors.Join(err, serr)
		}
		log.Info("model stopped", "mode", m.Mode(), "records", s.Status().Records)
	}()
	if err := m.RenewLease(loader.MonotonicNs()); err != nil {
		return err
	}
	if err := s.syncRecommendations(); err != nil {
		return err
	}
	opts := m.Options()
	log.Info("model running", "cgroup", s.cfg.Cgroup, "pins", s.dir, "default", s.cfg.Default,
		"allowed", s.cfg.Allowed, "mode", m.Mode(), "max_mode", opts.MaxMode, "period", opts.SleepTimeout)

	tick := time.NewTicker(opts.SleepTimeout)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
		}
		if err := s.step(); err != nil {
			return err
		}
		if progress != nil {
			progress(s.Status())
		}
	}
}

// syncRecommendations makes the map hold the learner's recommendations
// (after a restart with a saved state, or pins from another run), leaving
// an operator's alone.
func (s *Subsystem) syncRecommendations() error {
	want := s.learner.Recommendations()
	have, err := s.Recommendations()
	if err != nil {
		return err
	}
	for _, r := range have {
		if !r.Operator && want[r.Prefix] != r.CC {
			if err := s.remove(r.Prefix, false); err != nil {
				return err
			}
		}
	}
	for p, cc := range want {
		if err := s.model.ApplyRecommendation(model.Recommendation{Key: p.String(), Value: cc}); err != nil {
			s.cfg.Logger.Warn("saved recommendation refused", "model", ModelPath, "prefix", p, "cc", cc, "err", err)
		}
	}
	return nil
}

// step is one period.
func (s *Subsystem) step() error {
	m := s.model
	t0 := time.Now()
	if err := m.RenewLease(loader.MonotonicNs()); err != nil {
		return err
	}
	t1 := time.Now()
	if err := s.drain(); err != nil {
		return err
	}
	t2 := time.Now()
	d, err := m.CorrectSystemState()
	// A period taking half the lease puts the lease at risk: say where
	// the time went.
	if slow := m.Options().Lease / 2; time.Since(t0) > slow {
		s.cfg.Logger.Warn("slow period: the lease is at risk", "model", ModelPath,
			"renew", t1.Sub(t0), "drain", t2.Sub(t1), "correct", time.Since(t2))
	}
	if err != nil && !errors.Is(err, model.ErrModeChanged) {
		return err
	}
	s.mu.Lock()
	s.stats.decision = d.String()
	if d.Changed {
		s.stats.goodput = [model.ArmCount]learner.Estimate{}
	}
	save := time.Since(s.stats.saved) > saveEvery
	if save {
		s.stats.saved = time.Now()
	}
	s.mu.Unlock()
	if d.Changed {
		s.cfg.Logger.Info("mode changed", "model", ModelPath, "from", d.From, "to", d.To, "reason", d.Reason)
	}
	if save {
		if err := s.saveState(); err != nil {
			s.cfg.Logger.Warn("saving learner state", "model", ModelPath, "err", err)
		}
	}
	return nil
}

// drain moves every record available now through the model's datasets
// into the learner.
func (s *Subsystem) drain() error {
	m := s.model
	for {
		ds, err := m.GetDataset(model.Request{})
		if err != nil {
			_ = m.DiscardDataset()
			return err
		}
		full := ds.Full()
		if s.cfg.Drained != nil {
			s.cfg.Drained(ds)
		}
		if err := m.PreprocessData(ds); err != nil {
			// A corrupted portion trips the controller (EMERGENCY).
			s.cfg.Logger.Warn("dataset rejected", "model", ModelPath, "err", err)
		} else {
			if _, err := m.PublishData(ds); err != nil {
				s.cfg.Logger.Warn("publishing dataset", "model", ModelPath, "err", err)
			}
			s.consume(ds)
		}
		s.mu.Lock()
		s.stats.corrupted += ds.Corrupted
		s.mu.Unlock()
		if err := m.DiscardDataset(); err != nil {
			return err
		}
		if !full {
			return nil
		}
	}
}

func (s *Subsystem) consume(ds *model.Dataset) {
	m := s.model
	var c Conn
	for _, raw := range ds.All() {
		if DecodeConn(raw, &c) != nil {
			continue
		}
		fb, ok, ch := s.learner.Observe(&c)
		s.cfg.Logger.Debug("connection", "model", ModelPath, "peer", c.Peer, "arm", c.Arm, "cc", c.CC,
			"recommended", c.Recommended, "bytes", c.BytesAcked, "duration", c.Duration, "loss", c.Loss(),
			"retrans", c.Retrans, "segs", c.SegsOut, "max_rate", c.MaxRate, "srtt", c.SRTT, "learned", ok, "reward", fb.Reward, "predicted", fb.Predicted)
		s.mu.Lock()
		s.stats.records++
		if ok {
			s.stats.transfers++
			if c.Mode == m.Mode() {
				s.stats.goodput[c.Arm].Add(c.Goodput(), 1)
			}
		}
		s.mu.Unlock()
		if ch != nil {
			s.apply(ch)
		}
		if ok {
			s.feedbackAlg = c.CC
			if _, err := m.ErrorBackpropagation(fb); err != nil {
				s.cfg.Logger.Warn("feedback refused", "model", ModelPath, "err", err)
			}
		}
	}
}

func (s *Subsystem) apply(ch *Change) {
	log := s.cfg.Logger.With("model", ModelPath, "prefix", ch.Prefix, "reason", ch.Reason)
	if ch.CC == "" {
		if err := s.remove(ch.Prefix, false); err != nil {
			log.Warn("withdrawing recommendation", "err", err)
			return
		}
		log.Info("recommendation withdrawn")
		return
	}
	if err := s.model.ApplyRecommendation(model.Recommendation{Key: ch.Prefix.String(), Value: ch.CC}); err != nil {
		log.Warn("recommendation refused", "cc", ch.CC, "err", err)
		return
	}
	log.Info("recommendation made", "cc", ch.CC)
}
