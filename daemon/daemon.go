package daemon

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/features"
	"github.com/cilium/ebpf/rlimit"

	"github.com/mlbpf/mlbpf/agent"
	"github.com/mlbpf/mlbpf/config"
	"github.com/mlbpf/mlbpf/fleet/natsbus"
	"github.com/mlbpf/mlbpf/loader"
	"github.com/mlbpf/mlbpf/model"
	"github.com/mlbpf/mlbpf/pipeline"
)

// Options configure a Daemon.
type Options struct {
	// Config is the configuration; its paths and models are used as
	// they are.
	Config *config.Config
	// Log receives the daemon's logs (default: discarded).
	Log *slog.Logger
	// Version is reported to agents ("mlbpf <version>").
	Version string
	// DropCapabilities makes the daemon drop every capability it no
	// longer needs once each of its models has started (loaded, pinned
	// and attached), on every thread: see loader.DropCapabilities and
	// loader.KeepAfterAttach. The daemon's process must be its own: a
	// test running a daemon in-process leaves it false.
	DropCapabilities bool
	// Reread re-reads the configuration for a reload (SIGHUP, 'mlbpf
	// reload'), as the daemon was started with it; nil: reloads are
	// refused. SetLogLevel changes the level of Log ("debug", ...); nil:
	// a reload changing it is refused.
	Reread      func() (*config.Config, error)
	SetLogLevel func(level string) error
}

// Daemon runs the configured models: see the package documentation.
type Daemon struct {
	cfg      *config.Config
	log      *slog.Logger
	version  string
	dropCaps bool
	ready    chan struct{}

	stopOnce sync.Once
	stop     chan string // a shutdown asked on the socket, with its reason

	// Reloads (reload.go), carried out by Run's goroutine.
	reread      func() (*config.Config, error)
	setLevel    func(string) error
	reloads     chan *reloadReq
	done        chan struct{} // closed when Run returns
	stopMetrics func()

	mu          sync.Mutex
	sups        []*supervisor
	byName      map[string]*supervisor
	server      *agent.Server
	metricsAddr string
	// caps says what became of the daemon's capabilities, for the
	// evidence: "" before the models started, then "dropped", "kept
	// CAP_BPF" or "kept: <why>".
	caps string
	// fleet shares the learners with other hosts (startFleet).
	fleet *natsbus.Bus
}

// New checks the configuration against the subsystems and returns a
// daemon ready to Run.
func New(o Options) (*Daemon, error) {
	if o.Config == nil {
		o.Config = config.Default()
	}
	if err := Check(o.Config); err != nil {
		return nil, err
	}
	if len(o.Config.Enabled()) == 0 {
		return nil, fmt.Errorf("%s: no model to run: every model is disabled or none is configured", o.Config.File)
	}
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	if o.Version == "" {
		o.Version = "dev"
	}
	return &Daemon{cfg: o.Config, log: o.Log, version: o.Version, dropCaps: o.DropCapabilities,
		ready: make(chan struct{}), stop: make(chan string, 1), byName: map[string]*supervisor{},
		reread: o.Reread, setLevel: o.SetLogLevel, reloads: make(chan *reloadReq), done: make(chan struct{})}, nil
}

// Ready is closed once every model runs and the agent socket listens.
func (d *Daemon) Ready() <-chan struct{} { return d.ready }

// Preflight checks what the configured models need, mounting bpffs and
// tracefs where they are missing, and returns one error saying what to do
// about the first thing that is not there.
func Preflight(c *config.Config) error {
	if err := loader.CheckPrivileges(); err != nil {
		return err
	}
	if err := loader.EnsureBPFFS(c.PinRoot, true); err != nil {
		return err
	}
	if err := rlimit.RemoveMemlock(); err != nil {
		if loader.SeccompFiltered() {
			// cilium/ebpf raises the limit when its bpf() probe fails,
			// as it does when a seccomp filter refuses bpf().
			return fmt.Errorf("%w: raising RLIMIT_MEMLOCK: %v: this process runs under a seccomp filter, which may refuse bpf() (container runtimes' default profiles allow it only with CAP_SYS_ADMIN): run it unconfined (Kubernetes: securityContext.seccompProfile.type: Unconfined, as deploy/kubernetes/daemonset.yaml does; podman: --security-opt seccomp=unconfined)",
				loader.ErrMissingPrivilege, err)
		}
		return fmt.Errorf("raising RLIMIT_MEMLOCK: %w", err)
	}
	if err := features.HaveMapType(ebpf.RingBuf); err != nil {
		return fmt.Errorf("%w: BPF ring buffers (Linux 5.8 or later): %v", loader.ErrMissingFeature, err)
	}
	var needs pipeline.Needs
	probed := map[*pipeline.Subsystem]bool{}
	for _, m := range c.Enabled() {
		s, err := Lookup(m.Name)
		if err != nil || probed[s] {
			continue
		}
		probed[s] = true
		needs |= s.Needs
		for _, pt := range s.Programs {
			if err := features.HaveProgramType(pt); err != nil {
				return fmt.Errorf("%w: %s programs, which %s needs: %v", loader.ErrMissingFeature, pt, m.Name, err)
			}
		}
	}
	if needs&pipeline.NeedCgroup2 != 0 {
		if _, err := loader.Cgroup2Root(); err != nil {
			return err
		}
	}
	if needs&pipeline.NeedTracefs != 0 {
		if err := loader.EnsureTracefs(true); err != nil {
			return err
		}
	}
	return nil
}

// Run runs the daemon until ctx is done: it checks the host, takes the
// daemon's lock, opens every enabled model (adopting the pins and learned
// state of an earlier run), serves agents on the socket, and supervises
// the models. On return every model is STOPPED, in configuration order:
// the kernel is on its defaults, and the pins stay for the next run.
func (d *Daemon) Run(ctx context.Context) (err error) {
	cfg := d.cfg
	if err := Preflight(cfg); err != nil {
		return err
	}
	lock, err := AcquireLock(LockPath(cfg.Socket))
	if err != nil {
		return err
	}
	defer lock.Release()
	defer close(d.done)

	defer func() {
		for _, s := range d.supervisors() {
			if cerr := s.close(); cerr != nil {
				err = errors.Join(err, cerr)
			}
		}
	}()
	for _, cm := range cfg.Enabled() {
		s, err := d.open(cm)
		if err != nil {
			return err
		}
		d.mu.Lock()
		d.sups = append(d.sups, s)
		d.byName[s.name] = s
		d.mu.Unlock()
	}

	srv, err := agent.Listen(cfg.Socket, d, d.log)
	if err != nil {
		return err
	}
	d.mu.Lock()
	d.server = srv
	d.mu.Unlock()
	defer srv.Close()
	if d.stopMetrics, err = d.serveMetricsOf(ctx, cfg.Metrics); err != nil {
		return err
	}
	defer func() { d.stopMetrics() }()
	stopFleet, err := d.startFleet(ctx)
	if err != nil {
		return err
	}
	defer stopFleet()

	type result struct {
		s   *supervisor
		err error
	}
	results := make(chan result, 1)
	launch := func(s *supervisor) {
		sctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
		s.cancelRun, s.runDone = cancel, make(chan error, 1)
		go func() {
			err := s.run(sctx)
			s.runDone <- err
			s.mu.Lock()
			retired := s.retired
			s.mu.Unlock()
			if !retired {
				select {
				case results <- result{s, err}:
				default: // another model failed first
				}
			}
		}()
	}
	for _, s := range d.sups {
		launch(s)
	}
	names := make([]string, len(d.sups))
	for i, s := range d.sups {
		names[i] = s.name
	}
	d.log.Info("daemon running", "pid", os.Getpid(), "models", strings.Join(names, ","), "pins", cfg.PinRoot,
		"state", cfg.StateDir, "socket", cfg.Socket)
	if d.dropCaps {
		cctx, cancel := context.WithCancel(ctx)
		dropped := make(chan struct{})
		go func() {
			defer close(dropped)
			d.dropCapabilities(cctx)
		}()
		defer func() {
			cancel()
			<-dropped
		}()
	}
	close(d.ready)

	var runErr error
	var failed *supervisor
wait:
	for {
		select {
		case <-ctx.Done():
			d.log.Info("stopping", "reason", context.Cause(ctx))
		case why := <-d.stop:
			d.log.Info("stopping", "reason", why)
		case r := <-results:
			failed, runErr = r.s, r.err
			d.log.Error("model failed: stopping every model", "model", r.s.name, "err", r.err)
		case req := <-d.reloads:
			res, err := d.reload(ctx, req, launch)
			req.reply <- reloadReply{res, err}
			continue
		}
		break wait
	}
	// Stop the models one after the other, in configuration order.
	for _, s := range d.supervisors() {
		if s == failed {
			continue
		}
		s.cancelRun()
		if err := <-s.runDone; err != nil {
			runErr = errors.Join(runErr, err)
		}
		d.log.Info("model stopped: the kernel is on its default", "model", s.name, "mode", s.m.Mode(), "state", s.m.State())
	}
	return runErr
}

// dropCapabilities waits until every model has started once (its
// programs attached), then drops every capability the daemon no longer
// needs. From then on it works with the file descriptors it holds:
// renewing leases and writing recommendations are map updates, reading
// records is reading a mapped ring, an operator's start re-attaches a
// program already loaded, and the pins, the state directory and the
// socket are root's files in root's 0700 directories.
func (d *Daemon) dropCapabilities(ctx context.Context) {
	sups := d.supervisors()
	seen := make([]bool, len(sups))
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		all := true
		for i, s := range sups {
			seen[i] = seen[i] || active(s.m.State())
			all = all && seen[i]
		}
		if all {
			break
		}
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
	keep := loader.KeepAfterAttach()
	status := "dropped"
	if len(keep) > 0 {
		status = "kept CAP_BPF" // the only one KeepAfterAttach keeps
	}
	if err := loader.DropCapabilities(keep...); err != nil {
		status = "kept: " + err.Error()
		d.log.Warn("capabilities not dropped: the daemon keeps root's", "err", err)
	} else {
		d.log.Info("capabilities dropped: every model is attached; the daemon works on with the descriptors it holds", "capabilities", status)
	}
	d.mu.Lock()
	d.caps = status
	d.mu.Unlock()
}

// capabilities returns what became of the daemon's capabilities.
func (d *Daemon) capabilities() string {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.caps
}

func (d *Daemon) supervisors() []*supervisor {
	d.mu.Lock()
	defer d.mu.Unlock()
	return append([]*supervisor(nil), d.sups...)
}

func (d *Daemon) open(cm *config.Model) (*supervisor, error) {
	return d.openWith(d.cfg, cm)
}

// openWith opens a model of cfg.
func (d *Daemon) openWith(cfg *config.Config, cm *config.Model) (*supervisor, error) {
	sub, err := Lookup(cm.Name)
	if err != nil {
		return nil, err
	}
	sec, err := section(cfg, cm)
	if err != nil {
		return nil, err
	}
	dir := ModelStateDir(cfg.StateDir, cm.Name)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("%s: creating the state directory: %w", cm.Name, err)
	}
	pers, err := loadPersisted(dir)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", cm.Name, err)
	}
	opts := cm.Options(cfg.Interval)
	log := d.log
	// Resume the mode the pins were left in, capped by max_mode:
	// EMERGENCY, an operator's or the controller's, stays until an
	// operator leaves it.
	if pm, err := loader.ReadPinned(cfg.PinRoot, cm.SubsystemName(), cm.ModelName()); err == nil {
		prev := model.Mode(pm.Control.Mode)
		fresh := pm.Control.State == uint32(model.StateCreated) || pm.Control == (loader.Control{})
		if !fresh && !prev.Valid() {
			// No version of mlbpf writes such a block: a hand-made or
			// damaged one is not trusted to act.
			d.log.Warn("the pinned control block holds a mode that is not one (written by hand, or damaged): EMERGENCY until an operator sets a mode",
				"model", cm.Name, "pinned_mode", pm.Control.Mode, "pinned_state", pm.Control.State, "generation", pm.Control.Generation)
			opts.InitialMode = model.ModeEmergency
		}
		if prev.Valid() && !fresh {
			resume := min(prev, opts.MaxMode)
			if resume != opts.InitialMode {
				d.log.Info("resuming the mode the pins were left in", "model", cm.Name, "mode", resume,
					"pinned", prev, "max_mode", opts.MaxMode, "generation", pm.Control.Generation)
			}
			opts.InitialMode = resume
		}
	}
	h := newHub(cm.Name, sub.Records)
	next := h.restore(filepath.Join(dir, "portions"), d.log)
	r, err := sub.Open(pipeline.Env{
		Model: cm.ModelName(), PinRoot: cfg.PinRoot, StateDir: dir, Log: d.log, Options: opts,
		External: cm.Learner == config.LearnerExternal, Publisher: h, FirstOffset: next,
	}, sec)
	if err != nil {
		return nil, err
	}
	fail := func(err error) (*supervisor, error) {
		r.Close()
		return nil, fmt.Errorf("%s: %w", cm.Name, err)
	}
	ctl := r.Control()
	if ctl == nil {
		return fail(errors.New("no control block"))
	}
	dl, err := loader.LockDir(r.Dir())
	if err != nil {
		return fail(err)
	}
	pl := &procLock{dir: dl}
	g, err := newGuard(ctl, pl)
	if err != nil {
		dl.Close()
		return fail(err)
	}
	ctl.SetGuard(pl, g)
	m := r.Model()
	s := &supervisor{
		d: d, name: cm.Name, cm: cm, sub: sub, r: r, m: m, g: g, lock: pl, hub: h, log: d.log, dir: dir,
		maxMode: m.Options().MaxMode, period: m.Options().SleepTimeout,
		operatorStopped: pers.OperatorStopped, lastMode: m.Mode(), lastState: m.State(),
	}
	s.restoreController()
	log.Info("model opened", "model", cm.Name, "pins", r.Dir(), "mode", m.Mode(), "max_mode", s.maxMode,
		"interval", s.period, "lease", m.Options().Lease, "learner", cm.Learner, "generation", m.Control().Generation)
	if s.maxMode == model.ModeLearning {
		log.Info("max_mode is LEARNING: the model learns but never acts; raise max_mode in the configuration to let it", "model", cm.Name)
	}
	return s, nil
}

func (d *Daemon) find(name string) (*supervisor, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if s := d.byName[name]; s != nil {
		return s, nil
	}
	names := make([]string, 0, len(d.sups))
	for _, s := range d.sups {
		names = append(names, s.name)
	}
	return nil, fmt.Errorf("model %q is not run by this daemon (it runs %s)", name, strings.Join(names, ", "))
}

// ---- agent.Backend ----

// Hello implements agent.Backend.
func (d *Daemon) Hello() agent.Hello {
	return agent.Hello{Protocol: agent.ProtocolVersion, Daemon: "mlbpf " + d.version, PID: os.Getpid()}
}

// Shutdown implements agent.Backend: Run stops every model and returns.
func (d *Daemon) Shutdown(reason string) {
	d.stopOnce.Do(func() { d.stop <- reason })
}

// Models implements agent.Backend.
func (d *Daemon) Models() []agent.ModelInfo {
	var out []agent.ModelInfo
	for _, s := range d.supervisors() {
		out = append(out, agent.ModelInfo{
			Model: s.name, State: s.m.State().String(), Mode: s.m.Mode().String(), MaxMode: s.m.Options().MaxMode.String(),
			Learner: s.cm.Learner, Datasets: true,
			RecordKind: s.sub.Records.Kind, RecordSize: s.sub.Records.Size,
			Portions: s.hub.offsets(),
		})
	}
	return out
}

// Subscribe implements agent.Backend.
func (d *Daemon) Subscribe(name string, client uint64, sink func(agent.Event)) (func(), error) {
	s, err := d.find(name)
	if err != nil {
		return nil, err
	}
	n, _ := s.hub.agents()
	s.log.Info("agent subscribed", "model", name, "client", client, "agents", n+1)
	cancel := s.hub.subscribe(client, sink)
	return func() {
		cancel()
		n, _ := s.hub.agents()
		s.log.Info("agent left", "model", name, "client", client, "agents", n)
	}, nil
}

// Fetch implements agent.Backend.
func (d *Daemon) Fetch(name string, offset *uint64, records, raw bool) (*agent.Portion, error) {
	s, err := d.find(name)
	if err != nil {
		return nil, err
	}
	return s.hub.fetch(offset, records, raw)
}

// Discard implements agent.Backend.
func (d *Daemon) Discard(name string, offset *uint64, client uint64) error {
	s, err := d.find(name)
	if err != nil {
		return err
	}
	_, err = s.hub.discard(offset, client)
	return err
}

// Recommend implements agent.Backend: the recommendation is validated by
// the model's subsystem, exactly as 'mlbpf recommend' is, then written.
func (d *Daemon) Recommend(_ context.Context, rec agent.Recommendation, who string) (agent.Recommendation, error) {
	s, err := d.find(rec.Model)
	if err != nil {
		return rec, err
	}
	applied, err := s.r.Recommend(model.Recommendation{Key: rec.Key, Value: rec.Value}, rec.Operator)
	if err != nil {
		s.log.Warn("recommendation refused", "model", rec.Model, "key", rec.Key, "value", rec.Value, "from", who, "err", err)
		return rec, err
	}
	out := agent.Recommendation{Model: rec.Model, Key: applied.Key, Value: applied.Value, Generation: applied.Generation, Operator: rec.Operator}
	s.log.Info("recommendation written", "model", rec.Model, "key", out.Key, "value", out.Value, "from", who, "operator", rec.Operator)
	return out, nil
}
