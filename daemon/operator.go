package daemon

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/mlbpf/mlbpf/agent"
	"github.com/mlbpf/mlbpf/loader"
	"github.com/mlbpf/mlbpf/model"
	"github.com/mlbpf/mlbpf/pipeline"
)

// An operator's command ('mlbpf mode', 'start', 'stop') with a daemon
// running comes on the agent socket (agent.OpControl) and is carried out
// by the model's supervisor, in its own loop, one command at a time. It
// refuses what it will not do (a mode above max_mode; a mode other than
// EMERGENCY for a stopped model, where the kernel takes its default
// whatever the mode). A mode it sets on its model, which stores it at
// once; a start or a stop it writes into the block as the operator's
// (the kernel follows at once) and adopts at once, as it adopts any
// other writer's block. The command is answered once the kernel holds a
// block where it asked: the mode set, and acting in it (RUNNING, a live
// lease) unless it is EMERGENCY; the model running; the model stopped.
// Only the daemon knows its max_mode, whether its model is open yet and
// what its adoption makes of a block: a command that wrote the block
// itself, with a daemon running, could report a success the daemon then
// undid.

// operatorWait bounds how long an operator's command waits for the
// supervisor to take it, and then for the kernel to reach it.
const operatorWait = 30 * time.Second

// operatorOp is an operator's command on its way to a model's supervisor.
type operatorOp struct {
	action string // agent.ActionMode, ActionStart, ActionStop
	mode   model.Mode
	who    string
	reply  chan operatorReply
	// retune is a reload's (actionRetune).
	retune *retune
}

// actionRetune is a reload's retuning of the model's options, carried out
// in the supervisor's loop as an operator's command is.
const actionRetune = "retune"

type operatorReply struct {
	res agent.ControlResult
	// w, when not nil, is to be waited on: the kernel has not reached
	// the command yet (a model starting).
	w   *watcher
	err error
}

func (op *operatorOp) String() string {
	if op.action == agent.ActionMode {
		return "mode " + strings.ToLower(op.mode.String())
	}
	return op.action
}

// reached reports whether the kernel, reading c, is where op asked.
func (op *operatorOp) reached(c model.Control) bool {
	acting := c.State == model.StateRunning && c.LeaseExpiresNs > loader.MonotonicNs()
	switch op.action {
	case agent.ActionMode:
		return c.Mode == op.mode && (op.mode == model.ModeEmergency || acting)
	case agent.ActionStart:
		return acting
	default:
		return !active(c.State)
	}
}

// watcher waits for the first block the daemon stores that reaches an
// operator's command.
type watcher struct {
	reached func(model.Control) bool
	seen    chan watched // buffered: one
}

type watched struct {
	c          model.Control
	superseded bool // another operator's command came first
}

// watch registers a watcher for the daemon's next stores.
func (g *guard) watch(reached func(model.Control) bool) *watcher {
	w := &watcher{reached: reached, seen: make(chan watched, 1)}
	g.mu.Lock()
	defer g.mu.Unlock()
	g.watchers = append(g.watchers, w)
	return w
}

// unwatch removes w, if still there.
func (g *guard) unwatch(w *watcher) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.endWatch(func(x *watcher) bool { return x == w }, watched{})
}

// supersede ends every watcher but w: another operator's command
// changed the block.
func (g *guard) supersede(w *watcher) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.endWatch(func(x *watcher) bool { return x != w }, watched{superseded: true})
}

// notify tells the watchers c reaches of it. Under g.mu.
func (g *guard) notify(c model.Control) {
	g.endWatch(func(w *watcher) bool { return w.reached(c) }, watched{c: c})
}

// endWatch sends v to, and removes, the watchers that match. Under g.mu.
func (g *guard) endWatch(match func(*watcher) bool, v watched) {
	kept := g.watchers[:0]
	for _, w := range g.watchers {
		if match(w) {
			w.seen <- v
			continue
		}
		kept = append(kept, w)
	}
	clear(g.watchers[len(kept):])
	g.watchers = kept
}

// operatorChans returns the channel operators' commands come on and the
// one closed when the supervisor's loop has ended.
func (s *supervisor) operatorChans() (chan *operatorOp, chan struct{}) {
	s.opsOnce.Do(func() {
		s.ops, s.exited = make(chan *operatorOp), make(chan struct{})
	})
	return s.ops, s.exited
}

// Control implements agent.Backend: see above.
func (d *Daemon) Control(ctx context.Context, req agent.ControlRequest, who string) (agent.ControlResult, error) {
	s, err := d.find(req.Model)
	if err != nil {
		return agent.ControlResult{}, err
	}
	op := &operatorOp{action: req.Action, who: who, reply: make(chan operatorReply, 1)}
	switch req.Action {
	case agent.ActionMode:
		m, err := model.ParseMode(req.Mode)
		if err != nil || !m.Valid() {
			return agent.ControlResult{}, fmt.Errorf("unknown mode %q (want emergency, learning, collaboration, recommendation)", req.Mode)
		}
		op.mode = m
	case agent.ActionStart, agent.ActionStop:
	default:
		return agent.ControlResult{}, fmt.Errorf("unknown action %q (want mode, start, stop)", req.Action)
	}
	ops, exited := s.operatorChans()
	timeout := time.NewTimer(operatorWait)
	defer timeout.Stop()
	gone := fmt.Errorf("%s: the daemon is stopping the model: nothing was changed; run the command again once a daemon runs", s.name)
	select {
	case ops <- op:
	case <-exited:
		return agent.ControlResult{}, gone
	case <-timeout.C:
		return agent.ControlResult{}, fmt.Errorf("%s: the daemon did not take the command within %v: nothing was changed; see its logs, and retry", s.name, operatorWait)
	case <-ctx.Done():
		return agent.ControlResult{}, context.Cause(ctx)
	}
	rep := <-op.reply // the supervisor answers every command it takes
	if rep.err != nil || rep.w == nil {
		return rep.res, rep.err
	}
	var why string
	select {
	case v := <-rep.w.seen:
		if !v.superseded {
			rep.res.Kernel = ControlBlock(v.c)
			return rep.res, nil
		}
		why = "another operator's command came first"
	case <-exited:
		why = "the daemon stopped the model (see its logs)"
	case <-timeout.C:
		why = fmt.Sprintf("it did not within %v (see the daemon's logs)", operatorWait)
	case <-ctx.Done():
		why = context.Cause(ctx).Error()
	}
	s.g.unwatch(rep.w)
	if c, err := s.g.ctl.LoadControl(); err == nil {
		rep.res.Kernel = ControlBlock(c)
	}
	return rep.res, fmt.Errorf("%s: %s: the kernel has not reached it: %s; the kernel has %s %s",
		s.name, op, why, rep.res.Kernel.State, rep.res.Kernel.Mode)
}

// serveOperator carries out an operator's command and answers it; an
// error it returns (the adoption failed) ends the supervisor.
func (s *supervisor) serveOperator(ctx context.Context, op *operatorOp) error {
	if op.action == actionRetune {
		op.reply <- operatorReply{err: s.applyRetune(op.retune)}
		return nil
	}
	rep, err := s.operate(ctx, op)
	if rep.err != nil && rep.w != nil {
		s.g.unwatch(rep.w)
		rep.w = nil
	}
	op.reply <- rep
	return err
}

func (s *supervisor) operate(ctx context.Context, op *operatorOp) (operatorReply, error) {
	fail := func(format string, args ...any) (operatorReply, error) {
		err := fmt.Errorf("%s: "+format, append([]any{s.name}, args...)...)
		s.log.Warn("operator command refused", "model", s.name, "command", op.String(), "from", op.who, "err", err)
		return operatorReply{err: err}, nil
	}
	running := s.isRunning()
	if op.action == agent.ActionMode {
		switch {
		case op.mode > s.maxMode:
			return fail("%v is above the daemon's max_mode %v: nothing was changed; raise max_mode in its configuration and reload it ('mlbpf reload', or systemctl reload mlbpf)", op.mode, s.maxMode)
		case op.mode != model.ModeEmergency && !running:
			return fail("the model is stopped, so the kernel takes its default whatever the mode: nothing was changed; 'mlbpf start %s' first, then set the mode", s.name)
		}
	}
	w := s.g.watch(op.reached)
	rep := operatorReply{w: w}
	var before, written model.Control
	var err error
	if op.action == agent.ActionMode {
		before, written, err = s.setMode(ctx, op)
	} else {
		before, written, err = s.g.ctl.Update(func(c *model.Control) error {
			switch {
			case c.State == model.StateShuttingDown:
				return errors.New("the model is being destroyed: run 'mlbpf run' again to create it")
			case op.action == agent.ActionStart && !running:
				c.State, c.LeaseExpiresNs = model.StateStarted, 0
			case op.action == agent.ActionStop && running:
				c.State, c.LeaseExpiresNs = model.StateStopped, 0
			}
			return nil
		})
	}
	if err != nil {
		rep.err = fmt.Errorf("%s: %w", s.name, err)
		return rep, nil
	}
	rep.res = agent.ControlResult{Model: s.name, Changed: written != before, Before: ControlBlock(before), Written: ControlBlock(written)}
	if op.action == agent.ActionMode {
		rep.res.Changed = before.Mode != op.mode
	}
	if rep.res.Changed {
		s.g.supersede(w)
		s.log.Info("operator command", "model", s.name, "command", op.String(), "from", op.who,
			"state", written.State, "mode", written.Mode, "generation", written.Generation)
	}
	if err := s.reconcile(ctx); err != nil {
		rep.err = err
		return rep, err
	}
	// What the daemon made of it (a mode is judged by the kernel's
	// blocks alone: the controller may change it again at once).
	switch {
	case op.action == agent.ActionStart && !s.isRunning():
		rep.err = fmt.Errorf("%s: the daemon did not start the model (see its logs)", s.name)
		return rep, nil
	case op.action == agent.ActionStop && s.isRunning():
		rep.err = fmt.Errorf("%s: the daemon did not stop the model (see its logs)", s.name)
		return rep, nil
	}
	kernel, err := s.g.ctl.LoadControl()
	if err != nil {
		rep.err = fmt.Errorf("%s: %w", s.name, err)
		return rep, nil
	}
	rep.res.Kernel = ControlBlock(kernel)
	if op.reached(kernel) || (op.reached(written) && rep.res.Changed) {
		s.g.unwatch(w)
		rep.w = nil
	}
	return rep, nil
}

// setMode sets the model's mode as op asks, and returns the block before
// and after. The model stores it (the kernel follows at once), as the
// daemon's own: the adoption of an operator's block would take the state
// of a model still starting (INITIALIZED) for a stop.
func (s *supervisor) setMode(ctx context.Context, op *operatorOp) (before, after model.Control, err error) {
	// A block someone else wrote would hold the model's store back.
	if err := s.reconcile(ctx); err != nil {
		return before, after, err
	}
	if before, err = s.g.ctl.LoadControl(); err != nil {
		return before, after, err
	}
	if s.m.Mode() != op.mode {
		why := "operator command from " + op.who
		if err := s.m.SetMode(op.mode, why); err != nil {
			return before, after, fmt.Errorf("setting the operator's mode: %w", err)
		}
		s.log.Info("mode changed", "model", s.name, "to", op.mode, "reason", why)
	}
	after, err = s.g.ctl.LoadControl()
	return before, after, err
}

// ControlBlock is c as the agent protocol says it.
func ControlBlock(c model.Control) agent.ControlBlock {
	b := agent.ControlBlock{State: c.State.String(), Mode: c.Mode.String(), Generation: c.Generation}
	if now := loader.MonotonicNs(); c.LeaseExpiresNs > now {
		b.LeaseLeftMs = int64(time.Duration(c.LeaseExpiresNs-now) / time.Millisecond)
	}
	return b
}

// Withdraw implements agent.Backend: the key is validated by the model's
// subsystem and removed, an operator's or the learner's; the answer comes
// once the kernel's map no longer holds it.
func (d *Daemon) Withdraw(_ context.Context, rec agent.Recommendation, who string) (agent.Recommendation, error) {
	s, err := d.find(rec.Model)
	if err != nil {
		return rec, err
	}
	key, err := s.r.Withdraw(rec.Key)
	if err != nil {
		s.log.Warn("withdrawal refused", "model", rec.Model, "key", rec.Key, "from", who, "err", err)
		return rec, fmt.Errorf("%s: withdrawing %q: %w", rec.Model, rec.Key, err)
	}
	es, err := s.r.Recommendations()
	if err != nil {
		return rec, err
	}
	if pipeline.Has(es, key) {
		return rec, fmt.Errorf("%s: %s is still in the kernel's map after the withdrawal: the learner wrote it again meanwhile? list it with 'mlbpf recommendations %s'", rec.Model, key, rec.Model)
	}
	s.log.Info("recommendation withdrawn", "model", rec.Model, "key", key, "from", who)
	return agent.Recommendation{Model: rec.Model, Key: key, Operator: true}, nil
}

// Recommendations implements agent.Backend.
func (d *Daemon) Recommendations(name string) ([]agent.Entry, error) {
	s, err := d.find(name)
	if err != nil {
		return nil, err
	}
	es, err := s.r.Recommendations()
	if err != nil {
		return nil, err
	}
	return Entries(es), nil
}

// Entries are es as the agent protocol says them.
func Entries(es []pipeline.Entry) []agent.Entry {
	out := make([]agent.Entry, 0, len(es))
	for _, e := range es {
		a := agent.Entry{Key: e.Key, Value: e.Value, By: e.By, Generation: e.Generation}
		if !e.Written.IsZero() {
			a.Written = e.Written.UTC().Format(time.RFC3339)
		}
		if len(e.Evidence) > 0 {
			a.Evidence = map[string]agent.ArmFeedback{}
			for arm, ev := range e.Evidence {
				a.Evidence[arm] = agent.ArmFeedback{N: ev.N, MeanReward: ev.MeanReward}
			}
		}
		out = append(out, a)
	}
	return out
}
