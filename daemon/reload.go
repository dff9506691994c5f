package daemon

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"slices"
	"strings"
	"time"

	"github.com/mlbpf/mlbpf/agent"
	"github.com/mlbpf/mlbpf/config"
	"github.com/mlbpf/mlbpf/model"
	"github.com/mlbpf/mlbpf/pipeline"
)

// A reload (SIGHUP, 'mlbpf reload', agent.OpReload) re-reads the
// configuration (Options.Reread) and applies what can apply to a running
// daemon, all of it or nothing:
//
//   - a model's options (max_mode, interval, lease, shares, controller,
//     agent_timeout) are retuned in place: the model keeps its mode
//     (lowered to a lower max_mode), its evidence, its portions and its
//     pins, and stays attached;
//   - a model's subsystem section applies only if its objects can take it
//     live (pipeline.Reconfigurer);
//   - a model added is opened and started (while the daemon still holds
//     the capabilities to load and attach); a model removed (or disabled)
//     is stopped, its kernel on its default, its pins and state kept for
//     a later run;
//   - the log level, and the metrics endpoint, change;
//   - pin_root, state_dir, socket, the log format, the fleet section, a
//     model's learner cannot change under a running daemon, nor can a
//     model shared with the fleet be removed: the reload is refused
//     saying so, as is a file that does not load or check; the running
//     configuration stays.

// ErrReloadRefused is wrapped by the error of a reload that changed
// nothing.
var ErrReloadRefused = errors.New("reload refused: the running configuration stays")

// reloadReq is a reload on its way to Run's goroutine.
type reloadReq struct {
	who   string
	reply chan reloadReply
}

type reloadReply struct {
	res agent.ReloadResult
	err error
}

// retune is a reloaded model's configuration, for its supervisor.
type retune struct {
	cm   *config.Model
	opts model.Options
}

// Reload implements agent.Backend: see above. It answers once every
// change is in place.
func (d *Daemon) Reload(ctx context.Context, who string) (agent.ReloadResult, error) {
	req := &reloadReq{who: who, reply: make(chan reloadReply, 1)}
	select {
	case d.reloads <- req:
	case <-d.done:
		return agent.ReloadResult{}, fmt.Errorf("%w: the daemon is stopping", ErrReloadRefused)
	case <-d.ready:
		select {
		case d.reloads <- req:
		case <-d.done:
			return agent.ReloadResult{}, fmt.Errorf("%w: the daemon is stopping", ErrReloadRefused)
		case <-ctx.Done():
			return agent.ReloadResult{}, context.Cause(ctx)
		}
	case <-ctx.Done():
		return agent.ReloadResult{}, context.Cause(ctx)
	}
	rep := <-req.reply
	return rep.res, rep.err
}

// reload is Reload, in Run's goroutine.
func (d *Daemon) reload(ctx context.Context, req *reloadReq, launch func(*supervisor)) (agent.ReloadResult, error) {
	log := d.log.With("from", req.who)
	if d.reread == nil {
		return agent.ReloadResult{}, fmt.Errorf("%w: this daemon has no configuration file to re-read", ErrReloadRefused)
	}
	next, err := d.reread()
	if err == nil {
		err = Check(next)
	}
	if err != nil {
		log.Warn("reload refused", "err", err)
		return agent.ReloadResult{}, fmt.Errorf("%w: %w", ErrReloadRefused, err)
	}
	res := agent.ReloadResult{File: next.File}
	plan, err := d.plan(next)
	if err != nil {
		log.Warn("reload refused", "file", next.File, "err", err)
		return res, fmt.Errorf("%w: %w", ErrReloadRefused, err)
	}
	// What can fail first: the models added, the metrics endpoint.
	var opened []*supervisor
	undo := func() {
		for _, s := range opened {
			s.close()
		}
	}
	for _, cm := range plan.added {
		s, err := d.openWith(next, cm)
		if err != nil {
			undo()
			log.Warn("reload refused", "file", next.File, "err", err)
			return res, fmt.Errorf("%w: adding %s: %w", ErrReloadRefused, cm.Name, err)
		}
		opened = append(opened, s)
	}
	if plan.metrics {
		stop, err := d.serveMetricsOf(ctx, next.Metrics)
		if err != nil {
			undo()
			return res, fmt.Errorf("%w: %w", ErrReloadRefused, err)
		}
		d.stopMetrics()
		d.stopMetrics = stop
		if next.Metrics.Addr == "" {
			d.mu.Lock()
			d.metricsAddr = ""
			d.mu.Unlock()
		}
		res.Changes = append(res.Changes, fmt.Sprintf("metrics: %q", next.Metrics.Addr))
	}
	// Then what cannot.
	for _, c := range plan.commits {
		c()
	}
	res.Changes = append(res.Changes, plan.sections...)
	if plan.level != nil {
		plan.level(next.Log.Level)
		res.Changes = append(res.Changes, "log level: "+next.Log.Level)
	}
	for _, t := range plan.retunes {
		if err := t.s.retune(ctx, t.r); err != nil {
			// Validated beforehand: a model that cannot take them is
			// in a state no reload should find it in.
			log.Error("retuning a model failed", "model", t.s.name, "err", err)
			res.Changes = append(res.Changes, fmt.Sprintf("%s: not retuned: %v", t.s.name, err))
			continue
		}
		res.Changes = append(res.Changes, t.s.name+": "+t.what)
	}
	for _, s := range plan.removed {
		d.retire(s)
		res.Changes = append(res.Changes, s.name+": removed (stopped, the kernel on its default; pins and state kept)")
	}
	for _, s := range opened {
		d.mu.Lock()
		d.sups = append(d.sups, s)
		d.byName[s.name] = s
		d.mu.Unlock()
		launch(s)
		res.Changes = append(res.Changes, s.name+": added")
		d.mu.Lock()
		bus := d.fleet
		d.mu.Unlock()
		if l := s.r.Fleet(); bus != nil && l != nil {
			bus.Add(s.name, l)
			res.Changes = append(res.Changes, s.name+": shared with the fleet")
		}
	}
	d.mu.Lock()
	d.cfg = next
	d.mu.Unlock()
	if len(res.Changes) == 0 {
		res.Changes = []string{}
	}
	log.Info("configuration reloaded", "file", next.File, "changes", strings.Join(res.Changes, "; "))
	return res, nil
}

// reloadPlan is what a reload changes, checked before anything is.
type reloadPlan struct {
	added   []*config.Model
	removed []*supervisor
	retunes []plannedRetune
	commits []func()
	// sections say which sections the commits apply.
	sections []string
	metrics  bool
	level    func(string)
}

type plannedRetune struct {
	s    *supervisor
	r    retune
	what string
}

// plan compares next with the running configuration, refusing what
// cannot apply live.
func (d *Daemon) plan(next *config.Config) (*reloadPlan, error) {
	cur := d.config()
	var fixed []string
	for _, f := range []struct{ name, a, b string }{
		{"pin_root", cur.PinRoot, next.PinRoot},
		{"state_dir", cur.StateDir, next.StateDir},
		{"socket", cur.Socket, next.Socket},
		{"log.format", cur.Log.Format, next.Log.Format},
	} {
		if f.a != f.b {
			fixed = append(fixed, fmt.Sprintf("%s (%q → %q)", f.name, f.a, f.b))
		}
	}
	if !reflect.DeepEqual(cur.Fleet, next.Fleet) {
		fixed = append(fixed, "fleet")
	}
	d.mu.Lock()
	bus := d.fleet
	d.mu.Unlock()
	// allow_remote only says which addresses the file may give.
	p := &reloadPlan{metrics: cur.Metrics.Addr != next.Metrics.Addr}
	if cur.Log.Level != next.Log.Level {
		if d.setLevel == nil {
			fixed = append(fixed, "log.level")
		} else {
			p.level = func(l string) { _ = d.setLevel(l) }
		}
	}
	if len(next.Enabled()) == 0 {
		return nil, fmt.Errorf("%s: no model to run: every model is disabled or none is configured", next.File)
	}
	running := map[string]bool{}
	for _, s := range d.supervisors() {
		running[s.name] = true
		cm := enabled(next, s.name)
		if cm == nil {
			if bus != nil && s.r.Fleet() != nil {
				fixed = append(fixed, fmt.Sprintf("%s removed: its learner is shared with the fleet", s.name))
			}
			p.removed = append(p.removed, s)
			continue
		}
		old := enabled(cur, s.name)
		if old == nil {
			old = s.cm
		}
		if old.Learner != cm.Learner {
			fixed = append(fixed, fmt.Sprintf("%s: learner (%s → %s)", s.name, old.Learner, cm.Learner))
		}
		oldSec, err1 := section(cur, old)
		newSec, err2 := section(next, cm)
		if err := errors.Join(err1, err2); err != nil {
			return nil, err
		}
		if !reflect.DeepEqual(oldSec, newSec) {
			rc, ok := s.r.Objects().(pipeline.Reconfigurer)
			if !ok {
				fixed = append(fixed, fmt.Sprintf("%s: its %s: section (its subsystem applies it only at start)", s.name, s.sub.Name))
			} else if commit, err := rc.Reconfigure(oldSec, newSec); err != nil {
				fixed = append(fixed, fmt.Sprintf("%s: its %s: section: %v", s.name, s.sub.Name, err))
			} else {
				p.commits = append(p.commits, commit)
				p.sections = append(p.sections, fmt.Sprintf("%s: its %s: section, applied live", s.name, s.sub.Name))
			}
		}
		opts := cm.Options(next.Interval)
		if err := opts.Validate(); err != nil {
			return nil, fmt.Errorf("%s: %w", s.name, err)
		}
		if what := optionChanges(old.Options(cur.Interval), opts, old.AgentTimeout, cm.AgentTimeout); what != "" {
			p.retunes = append(p.retunes, plannedRetune{s: s, r: retune{cm: cm, opts: opts}, what: what})
		}
	}
	for _, cm := range next.Enabled() {
		if !running[cm.Name] {
			p.added = append(p.added, cm)
		}
	}
	if len(p.added) > 0 {
		if c := d.capabilities(); c != "" && !strings.HasPrefix(c, "kept:") {
			fixed = append(fixed, fmt.Sprintf("models added (%s): the daemon dropped its capabilities once its models were attached (%s), and cannot load or attach others", names(p.added), c))
		}
	}
	if len(fixed) > 0 {
		return nil, fmt.Errorf("%s: these cannot change under a running daemon: %s: restart it to apply them (systemctl restart mlbpf)", next.File, strings.Join(fixed, "; "))
	}
	return p, nil
}

func names(ms []*config.Model) string {
	out := make([]string, len(ms))
	for i, m := range ms {
		out[i] = m.Name
	}
	return strings.Join(out, ", ")
}

func enabled(c *config.Config, name string) *config.Model {
	for _, m := range c.Enabled() {
		if m.Name == name {
			return m
		}
	}
	return nil
}

// optionChanges says what differs between two models' options ("" if
// nothing does); InitialMode is the start's, not a running model's.
func optionChanges(a, b model.Options, ta, tb time.Duration) string {
	var out []string
	add := func(name string, x, y any) {
		if !reflect.DeepEqual(x, y) {
			out = append(out, fmt.Sprintf("%s %v → %v", name, x, y))
		}
	}
	ea, eb := a.WithDefaults(), b.WithDefaults()
	ea.Controller.MaxMode, eb.Controller.MaxMode = 0, 0 // max_mode's
	add("max_mode", ea.MaxMode, eb.MaxMode)
	add("interval", ea.SleepTimeout, eb.SleepTimeout)
	add("lease", ea.Lease, eb.Lease)
	add("collab_permille", ea.CollabPermille, eb.CollabPermille)
	add("holdout_permille", ea.HoldoutPermille, eb.HoldoutPermille)
	add("controller", ea.Controller, eb.Controller)
	add("agent_timeout", ta, tb)
	return strings.Join(out, ", ")
}

// retune has the supervisor take r, in its own loop, and waits for it.
func (s *supervisor) retune(ctx context.Context, r retune) error {
	op := &operatorOp{action: actionRetune, retune: &r, who: "reload", reply: make(chan operatorReply, 1)}
	ops, exited := s.operatorChans()
	select {
	case ops <- op:
	case <-exited:
		return errors.New("the model's supervisor has ended")
	case <-ctx.Done():
		return context.Cause(ctx)
	}
	return (<-op.reply).err
}

// applyRetune is retune, in the supervisor's loop.
func (s *supervisor) applyRetune(r *retune) error {
	// The model's options were r.opts's, but for the ones the start set
	// (its initial mode) and the extra ones of the subsystem (kept).
	cur := s.m.Options()
	opts := r.opts
	opts.InitialMode = cur.InitialMode
	if r.opts.Controller == (model.ControllerConfig{}) {
		opts.Controller = cur.Controller
		opts.Controller.MaxMode = 0
	}
	if err := s.m.Retune(opts, "configuration reloaded"); err != nil {
		return err
	}
	eff := s.m.Options()
	s.maxMode, s.period = eff.MaxMode, eff.SleepTimeout
	s.cm.AgentTimeout = r.cm.AgentTimeout
	s.log.Info("model retuned", "model", s.name, "max_mode", eff.MaxMode, "interval", eff.SleepTimeout, "lease", eff.Lease, "mode", s.m.Mode())
	return nil
}

// retire stops a supervisor a reload removed, and closes its model,
// leaving its pins and state.
func (d *Daemon) retire(s *supervisor) {
	s.mu.Lock()
	s.retired = true
	s.mu.Unlock()
	if s.cancelRun != nil {
		s.cancelRun()
		<-s.runDone
	}
	d.mu.Lock()
	d.sups = slices.DeleteFunc(d.sups, func(x *supervisor) bool { return x == s })
	delete(d.byName, s.name)
	d.mu.Unlock()
	s.close()
	d.log.Info("model removed by a reload: stopped, the kernel on its default; its pins and state stay", "model", s.name)
}

func (d *Daemon) config() *config.Config {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.cfg
}
