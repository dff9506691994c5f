package tcp

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/mlbpf/mlbpf/learner"
	"github.com/mlbpf/mlbpf/model"
	"github.com/mlbpf/mlbpf/pipeline"
)

// saveEvery is how often Run saves the learner's state while it runs.
const saveEvery = 10 * time.Second

type runStats struct {
	start     time.Time
	records   uint64
	transfers uint64
	// goodput per arm, in bytes/s, of the transfers decided in the
	// current mode.
	goodput [model.ArmCount]learner.Estimate
	mode    model.Mode // of goodput
	saved   time.Time
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
func (s *Objects) Status() Status {
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
	st.Records, st.Transfers = s.stats.records, s.stats.transfers
	if s.loop != nil {
		ls := s.loop.Stats()
		st.Corrupted, st.Decision = ls.Corrupted, ls.Decision
	}
	for i, e := range s.stats.goodput {
		if e.W > 0 {
			st.Goodput[model.Arm(i).String()] = ArmGoodput{Transfers: int(e.W), Mean: e.Mean}
		}
	}
	return st
}

// Run runs the model until ctx is done on the period loop every model
// runs on (package pipeline): it starts the model (attaching the sock_ops
// program), and every SleepTimeout renews the kernel's lease, drains the
// connection records into the learner, writes the learner's
// recommendations, feeds the outcomes back (error backpropagation and the
// mode controller's evidence) and lets the controller correct the mode.
// progress, if not nil, gets the status after every period. On return the
// model is STOPPED: the kernel is on its default at once, the program
// stays attached and the pins stay for the next Run to adopt.
func (s *Objects) Run(ctx context.Context, progress func(Status)) error {
	if s.loop == nil {
		return fmt.Errorf("running %s: opened without a model (OpenPinned)", ModelPath)
	}
	s.mu.Lock()
	s.progress = progress
	s.mu.Unlock()
	err := s.loop.Run(ctx)
	if serr := s.saveState(); serr != nil {
		err = errors.Join(err, serr)
	}
	s.cfg.Logger.Info("model stopped", "model", ModelPath, "mode", s.model.Mode(), "records", s.Status().Records)
	return err
}

func (s *Objects) afterPeriod() {
	s.mu.Lock()
	p := s.progress
	s.mu.Unlock()
	if p != nil {
		p(s.Status())
	}
}

// learn is tcp/cc's learner as the loop sees it (pipeline.Learner): the
// per-destination Learner, fed the decoded connections.
type learn struct{ s *Objects }

// Learn implements pipeline.Learner: every transfer is an outcome for
// its arm, with the algorithm it ran; a change of the learner's mind is a
// recommendation or a withdrawal.
func (l learn) Learn(conns []Conn, out *pipeline.Result) {
	s := l.s
	log := s.cfg.Logger
	debug := log.Enabled(context.Background(), slog.LevelDebug)
	mode := s.model.Mode()
	s.mu.Lock()
	if mode != s.stats.mode {
		// Goodput is per arm in the current mode.
		s.stats.goodput, s.stats.mode = [model.ArmCount]learner.Estimate{}, mode
	}
	s.mu.Unlock()
	for i := range conns {
		c := &conns[i]
		fb, ok, ch := s.learner.Observe(c)
		if debug {
			log.Debug("connection", "model", ModelPath, "peer", c.Peer, "arm", c.Arm, "cc", c.CC,
				"recommended", c.Recommended, "bytes", c.BytesAcked, "duration", c.Duration, "loss", c.Loss(),
				"retrans", c.Retrans, "segs", c.SegsOut, "max_rate", c.MaxRate, "srtt", c.SRTT, "learned", ok, "reward", fb.Reward, "predicted", fb.Predicted)
		}
		s.mu.Lock()
		s.stats.records++
		if ok {
			s.stats.transfers++
			if c.Mode == mode {
				s.stats.goodput[c.Arm].Add(c.Goodput(), 1)
			}
		}
		s.mu.Unlock()
		if ch != nil {
			out.Recommend, out.Withdraw = change(ch, out.Recommend, out.Withdraw)
			log.Info("learner changed its mind", "model", ModelPath, "prefix", ch.Prefix, "cc", ch.CC, "reason", ch.Reason)
		}
		if ok {
			out.Feedback = append(out.Feedback, fb)
		}
	}
	s.mu.Lock()
	save := time.Since(s.stats.saved) > saveEvery
	if save {
		s.stats.saved = time.Now()
	}
	s.mu.Unlock()
	if save {
		if err := s.saveState(); err != nil {
			log.Warn("saving learner state", "model", ModelPath, "err", err)
		}
	}
}

// change adds a change of the learner's mind to the recommendations or
// the withdrawals.
func change(ch *Change, recs []model.Recommendation, withdraw []string) ([]model.Recommendation, []string) {
	if ch.CC == "" {
		return recs, append(withdraw, ch.Prefix.String())
	}
	return append(recs, model.Recommendation{Key: ch.Prefix.String(), Value: ch.CC}), withdraw
}

// Resume implements pipeline.Resumer: the map is to hold the learner's
// recommendations (after a restart with a saved state, or pins from
// another run), and an operator's.
func (l learn) Resume(out *pipeline.Result) error {
	s := l.s
	want := s.learner.Recommendations()
	have, err := s.Recommendations()
	if err != nil {
		return err
	}
	for _, r := range have {
		if !r.Operator && want[r.Prefix] != r.CC {
			out.Withdraw = append(out.Withdraw, r.Prefix.String())
		}
	}
	for p, cc := range want {
		out.Recommend = append(out.Recommend, model.Recommendation{Key: p.String(), Value: cc})
	}
	return nil
}
