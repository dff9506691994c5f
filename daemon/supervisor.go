package daemon

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"time"

	"github.com/mlbpf/mlbpf/agent"
	"github.com/mlbpf/mlbpf/config"
	"github.com/mlbpf/mlbpf/loader"
	"github.com/mlbpf/mlbpf/model"
	"github.com/mlbpf/mlbpf/pipeline"
)

// procLock serializes a model's control block writers: goroutines of
// this process with its mutex, other processes (an operator's CLI) with
// the flock on the pin directory. A flock alone does not exclude another
// goroutine using the same file.
type procLock struct {
	mu  sync.Mutex
	dir *loader.DirLock
}

func (l *procLock) Lock()   { l.mu.Lock(); l.dir.Lock() }
func (l *procLock) Unlock() { l.dir.Unlock(); l.mu.Unlock() }

// classMode is what an operator's change is judged by: whether the model
// is active (STARTED or RUNNING, what 'mlbpf start' asks) or not
// (STOPPED, what 'mlbpf stop' asks), and its mode.
type classMode struct {
	active bool
	mode   model.Mode
}

func active(s model.State) bool { return s == model.StateStarted || s == model.StateRunning }

func (w classMode) agrees(c model.Control) bool {
	return active(c.State) == w.active && c.Mode == w.mode
}

// guard implements loader.ControlGuard for one model: the daemon's side of
// the operator handshake (see the package documentation).
type guard struct {
	ctl  *loader.ControlMap
	lock sync.Locker

	mu       sync.Mutex
	last     model.Control  // the block the daemon last stored (or settled on)
	pending  *model.Control // a foreign block found, until settled
	want     *classMode     // what the daemon decided to adopt
	nudge    chan struct{}
	renewals uint64
	held     uint64
}

func newGuard(ctl *loader.ControlMap, lock sync.Locker) (*guard, error) {
	g := &guard{ctl: ctl, lock: lock, nudge: make(chan struct{}, 1)}
	lock.Lock()
	defer lock.Unlock()
	cur, err := ctl.LoadControl()
	if err != nil {
		return nil, err
	}
	g.last = cur
	return g, nil
}

// Admit implements loader.ControlGuard. With no adoption under way, a
// store passes if the kernel holds the daemon's last block; while one is,
// a store passes if it agrees with what is being adopted and the kernel
// holds that block or the daemon's own since. A block someone else wrote
// meanwhile is never overwritten: it becomes the one to adopt next.
func (g *guard) Admit(kernel, next model.Control) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	foreign := kernel != g.last
	switch {
	case !foreign && g.pending == nil:
		return true
	case foreign && (g.pending == nil || kernel != *g.pending):
		k := kernel
		g.pending = &k
		select {
		case g.nudge <- struct{}{}:
		default:
		}
	case g.want != nil && g.want.agrees(next):
		return true
	}
	g.held++
	return false
}

// Stored implements loader.ControlGuard.
func (g *guard) Stored(c model.Control) {
	g.mu.Lock()
	defer g.mu.Unlock()
	a, b := g.last, c
	a.LeaseExpiresNs, b.LeaseExpiresNs = 0, 0
	if a == b && c.LeaseExpiresNs != 0 {
		g.renewals++
	}
	g.last = c
}

// check returns the foreign block found in the kernel, if any: one a
// store of the daemon's ran into, or one found now.
func (g *guard) check() (*model.Control, error) {
	g.lock.Lock()
	defer g.lock.Unlock()
	kernel, err := g.ctl.LoadControl()
	if err != nil {
		return nil, err
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.pending == nil && kernel != g.last {
		g.pending = &kernel
	}
	if g.pending == nil {
		return nil, nil
	}
	p := *g.pending
	return &p, nil
}

// begin makes the daemon's writes that agree with w pass while it adopts
// the pending change.
func (g *guard) begin(w classMode) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.want = &w
}

// settle ends an adoption: the block in the kernel is the daemon's
// baseline from now on, unless another foreign write came meanwhile,
// which is returned to be adopted in turn.
func (g *guard) settle(decidedOn model.Control) (*model.Control, error) {
	g.lock.Lock()
	defer g.lock.Unlock()
	kernel, err := g.ctl.LoadControl()
	if err != nil {
		return nil, err
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	agreed := g.want != nil && g.want.agrees(kernel)
	g.want = nil
	if kernel == decidedOn || kernel == g.last || agreed {
		g.pending, g.last = nil, kernel
		return nil, nil
	}
	g.pending = &kernel
	return &kernel, nil
}

// lastGeneration is the generation of the block the daemon last stored or
// settled on.
func (g *guard) lastGeneration() uint32 {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.last.Generation
}

func (g *guard) counters() (renewals, held uint64) {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.renewals, g.held
}

// supervisor runs one model for the daemon: it runs the subsystem's loop
// (runner.Run), adopts operators' changes to the control block, publishes
// the evidence, and tells the agents.
type supervisor struct {
	d       *Daemon
	name    string
	cm      *config.Model
	sub     *pipeline.Subsystem
	r       *pipeline.Loop
	m       *model.Model
	g       *guard
	lock    *procLock
	hub     *hub
	log     *slog.Logger
	dir     string // state directory
	maxMode model.Mode
	period  time.Duration

	mu              sync.Mutex
	running         bool
	cancel          context.CancelFunc
	done            chan error
	operatorStopped bool
	lastMode        model.Mode
	lastState       model.State
	evidence        Evidence
	stats           pipeline.Stats
	published       time.Time
}

// evidenceEvery bounds how often status.json is rewritten.
const evidenceEvery = 2 * time.Second

// start starts the runner's loop.
func (s *supervisor) start(ctx context.Context) {
	rctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	s.mu.Lock()
	s.running, s.cancel, s.done = true, cancel, done
	s.mu.Unlock()
	go func() { done <- s.r.Run(rctx) }()
}

// stopRunner stops the runner's loop and waits for it: the model is then
// STOPPED.
func (s *supervisor) stopRunner() error {
	s.mu.Lock()
	running, cancel, done := s.running, s.cancel, s.done
	s.running = false
	s.mu.Unlock()
	if !running {
		return nil
	}
	cancel()
	return <-done
}

func (s *supervisor) isRunning() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.running
}

// run supervises until ctx is done, then stops the model. An error of
// the subsystem's loop ends it.
func (s *supervisor) run(ctx context.Context) error {
	if !s.operatorStopped {
		s.start(ctx)
	} else {
		s.log.Info("model left stopped by an operator: 'mlbpf start' starts it", "model", s.name)
	}
	tick := time.NewTicker(s.period)
	defer tick.Stop()
	for {
		s.mu.Lock()
		done := s.done
		s.mu.Unlock()
		select {
		case <-ctx.Done():
			err := s.stopRunner()
			s.periodic(true)
			return err
		case err := <-done:
			s.mu.Lock()
			s.running = false
			s.done = nil
			s.mu.Unlock()
			s.periodic(true)
			if ctx.Err() != nil {
				// Shutting down: the runner's context is a child of
				// ctx, and it saw the cancellation first.
				return err
			}
			if err == nil {
				err = errors.New("the model's loop ended on its own")
			}
			return fmt.Errorf("%s: %w", s.name, err)
		case <-s.g.nudge:
		case <-tick.C:
			s.periodic(false)
		}
		if err := s.reconcile(ctx); err != nil {
			_ = s.stopRunner()
			return err
		}
	}
}

// reconcile adopts the operator's changes found in the control block.
func (s *supervisor) reconcile(ctx context.Context) error {
	for range 8 {
		p, err := s.g.check()
		if err != nil {
			return fmt.Errorf("%s: %w", s.name, err)
		}
		if p == nil {
			return nil
		}
		if err := s.adopt(ctx, *p); err != nil {
			return err
		}
		again, err := s.g.settle(*p)
		if err != nil {
			return fmt.Errorf("%s: %w", s.name, err)
		}
		if again == nil {
			// The block settled on may be a later operator's, which
			// agreed with the adoption: continue after its generation.
			s.m.AdoptGeneration(s.g.lastGeneration())
			return nil
		}
	}
	s.log.Warn("control block keeps changing under the daemon: will look again next period", "model", s.name)
	return nil
}

// adopt makes the model follow an operator's change to its control
// block:
//
//   - a stop (the block no longer STARTED or RUNNING) stops the model, and
//     it stays stopped, across restarts, until a start;
//   - a start (STARTED or RUNNING on a stopped model) starts it;
//   - a mode is taken over: EMERGENCY stays until an operator leaves it,
//     a mode above max_mode is capped, an invalid one means EMERGENCY.
func (s *supervisor) adopt(ctx context.Context, k model.Control) error {
	target, why := k.Mode, "operator command"
	switch {
	case !k.Mode.Valid():
		target, why = model.ModeEmergency, fmt.Sprintf("the control block holds an invalid mode %v", k.Mode)
	case k.Mode > s.maxMode:
		s.log.Warn("operator's mode above max_mode: capped", "model", s.name, "asked", k.Mode, "max_mode", s.maxMode)
		target = s.maxMode
	}
	want := classMode{active: active(k.State), mode: target}
	// The operator's write took a generation of its own: the daemon's
	// next block continues after it, never back.
	s.m.AdoptGeneration(k.Generation)
	s.g.begin(want)
	running := s.isRunning()
	s.log.Info("operator changed the control block", "model", s.name, "state", k.State, "mode", k.Mode,
		"generation", k.Generation, "adopting", fmt.Sprintf("%s %v", map[bool]string{true: "active", false: "stopped"}[want.active], target))
	setMode := func() error {
		if s.m.Mode() == target {
			return nil
		}
		if err := s.m.SetMode(target, why); err != nil {
			return fmt.Errorf("%s: adopting the operator's mode: %w", s.name, err)
		}
		s.log.Info("mode changed", "model", s.name, "to", target, "reason", why)
		return nil
	}
	switch {
	case running && !want.active:
		s.setOperatorStopped(true)
		if err := s.stopRunner(); err != nil {
			return fmt.Errorf("%s: stopping on the operator's command: %w", s.name, err)
		}
		s.log.Info("model stopped by the operator: the kernel is on its default", "model", s.name)
		return setMode()
	case !running && want.active:
		s.setOperatorStopped(false)
		if err := setMode(); err != nil {
			return err
		}
		s.start(ctx)
		// Wait for the start to reach the kernel, so the adoption
		// settles on the daemon's own block.
		for i := 0; i < 100 && !active(s.m.State()); i++ {
			time.Sleep(5 * time.Millisecond)
		}
		s.log.Info("model started by the operator", "model", s.name, "mode", s.m.Mode())
		return nil
	default:
		return setMode()
	}
}

func (s *supervisor) setOperatorStopped(v bool) {
	s.mu.Lock()
	s.operatorStopped = v
	s.mu.Unlock()
	if err := savePersisted(s.dir, persisted{OperatorStopped: v}); err != nil {
		s.log.Warn("saving the daemon's state", "model", s.name, "err", err)
	}
}

// periodic publishes the model's evidence and feedback, tells the agents
// about mode changes, and watches external agents.
func (s *supervisor) periodic(final bool) {
	st := s.r.Stats()
	ctl := s.m.Control()
	state, mode := s.m.State(), ctl.Mode

	// Mode and state changes, with the reason the model recorded.
	hist := s.m.ModeHistory()
	s.mu.Lock()
	changed := mode != s.lastMode || state != s.lastState
	s.lastMode, s.lastState = mode, state
	s.mu.Unlock()
	if changed {
		reason := ""
		if len(hist) > 0 {
			reason = hist[len(hist)-1].Reason
		}
		s.hub.notify(agent.Event{Type: agent.EventMode, Model: s.name, Mode: mode.String(), State: state.String(), Reason: reason})
	}

	// An external learner that has gone away must not be trusted to
	// act: EMERGENCY.
	if s.cm.Learner == config.LearnerExternal && !final {
		n, since := s.hub.agents()
		timeout := s.cm.AgentTimeout
		if timeout == 0 {
			timeout = 10 * s.period
		}
		if n == 0 && mode > model.ModeLearning && time.Since(since) > timeout {
			s.m.Trip(fmt.Sprintf("no external agent connected for %v", time.Since(since).Round(time.Second)))
		}
	}

	eff := st.Efficiency
	fb := s.r.TakeFeedback()
	if fb == nil {
		fb = &agent.Feedback{}
	}
	fb.Model, fb.Mode, fb.Generation = s.name, mode.String(), ctl.Generation
	fb.Efficiency, fb.Decision = eff, st.Decision
	if !final {
		s.hub.notify(agent.Event{Type: agent.EventFeedback, Model: s.name, Feedback: fb})
	}

	renewals, held := s.g.counters()
	agents, _ := s.hub.agents()
	s.mu.Lock()
	s.stats = st
	e := Evidence{
		Model: s.name, PID: os.Getpid(), Updated: time.Now().UTC(),
		Running: s.running, OperatorStopped: s.operatorStopped, State: state.String(), Mode: mode.String(),
		MaxMode: s.maxMode.String(), Learner: s.cm.Learner,
		Interval: s.period, Lease: s.m.Options().Lease,
		Records: st.Records, Corrupted: st.Corrupted,
		Lost: st.Lost, Dropped: st.Dropped, PartialPortions: st.Partial,
		Capabilities:  s.d.capabilities(),
		LeaseRenewals: renewals, HeldWrites: held, Agents: agents,
		Efficiency: eff, Decision: st.Decision,
	}
	if c := s.m.Controller(); c != nil {
		e.Tripped, _ = c.Tripped()
	}
	for _, h := range hist[max(0, len(hist)-8):] {
		e.Changes = append(e.Changes, ModeChange{Time: h.Time.UTC(), From: h.From.String(), To: h.To.String(), Reason: h.Reason, Generation: h.Generation})
	}
	s.evidence = e
	due := final || changed || time.Since(s.published) >= evidenceEvery
	if due {
		s.published = time.Now()
	}
	s.mu.Unlock()
	if due {
		if err := writeEvidence(s.dir, &e); err != nil {
			s.log.Warn("publishing the evidence", "model", s.name, "err", err)
		}
		s.saveController(ctl.Generation)
	}
}

// saveController saves the mode controller's evidence for a restart, when
// there is evidence anything is decided on.
func (s *supervisor) saveController(generation uint32) {
	c := s.m.Controller()
	if c == nil {
		return
	}
	snap := c.Snapshot()
	if !snap.Mode.Valid() || snap.Mode == model.ModeEmergency {
		return
	}
	if err := saveController(s.dir, generation, snap); err != nil {
		s.log.Warn("saving the mode controller's evidence", "model", s.name, "err", err)
	}
}

// snapshot returns the last evidence and stats (for metrics).
func (s *supervisor) snapshot() (Evidence, pipeline.Stats) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.evidence, s.stats
}

// restoreController continues the mode controller's evidence saved by the
// previous daemon, when it was gathered in the mode the model resumes and
// under the same test parameters; otherwise the controller starts afresh
// and the log says why.
func (s *supervisor) restoreController() {
	c := s.m.Controller()
	if c == nil {
		return
	}
	saved, err := loadController(s.dir)
	switch {
	case err != nil:
		s.log.Warn("the saved mode controller evidence is unreadable: starting afresh", "model", s.name, "err", err)
		return
	case saved == nil:
		return
	}
	mode := s.m.Mode()
	if err := c.Restore(saved.Evidence, mode); err != nil {
		lvl := slog.LevelWarn
		if errors.Is(err, model.ErrSnapshotMismatch) {
			lvl = slog.LevelInfo
		}
		s.log.Log(context.Background(), lvl, "not continuing the saved mode controller evidence: starting afresh",
			"model", s.name, "reason", err, "saved_at", saved.SavedAt)
		return
	}
	ev := c.Evidence()
	n := 0
	for _, a := range ev.Arms {
		n += a.N
	}
	s.log.Info("continuing the mode controller's evidence from before the restart", "model", s.name, "mode", mode,
		"outcomes", n, "next_test", ev.NextTest, "saved_at", saved.SavedAt, "generation", saved.Generation)
}
