package tcp

import (
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"golang.org/x/sys/unix"

	"github.com/mlbpf/mlbpf/config"
	"github.com/mlbpf/mlbpf/loader"
	"github.com/mlbpf/mlbpf/model"
	"github.com/mlbpf/mlbpf/pipeline"
)

// Name is the subsystem's name and ModelName the model's: the model is
// "tcp/cc", pinned under <PinRoot>/tcp/cc/.
const (
	Name      = "tcp"
	ModelName = "cc"
)

// linkPin is the pin name of the sock_ops link, beside the maps.
const linkPin = "link"

// Config configures the tcp/cc model. The fields with a cfg tag are its
// section of the daemon's configuration ("tcp:"), decoded straight into
// it; Validate checks them.
type Config struct {
	// Cgroup is the cgroup v2 directory the sock_ops program is attached
	// to; it covers every process below it (default: the root of the
	// cgroup v2 mount, that is, the whole host).
	Cgroup string `cfg:"cgroup"`
	// Allowed lists the algorithms the learner may recommend and an
	// operator may set; empty allows every algorithm the kernel offers.
	Allowed []string `cfg:"allowed"`
	// Default is the algorithm connections get when the model does not
	// act: default the host's net.ipv4.tcp_congestion_control. Set it to
	// the default of the namespaces the connections live in when that
	// differs.
	Default string `cfg:"default"`
	// Passive handles accepted connections too, not only connect()ed
	// ones (default true).
	Passive *bool `cfg:"passive"`
	// RateProbe samples the delivery rate of connections on the default
	// algorithm (default true). Without it the counterfactual model
	// cannot predict a rate-based algorithm's gain, and nothing is
	// promoted.
	RateProbe *bool `cfg:"rate_probe"`
	// Learn tunes the learner.
	Learn LearnConfig `cfg:"learn"`
	// PortionBytes caps a dataset portion (default 128 KiB).
	PortionBytes int `cfg:"portion_bytes"`
	// RingBytes sizes the records' ring buffer (0: the BPF object's, 1
	// MiB): a power of two, a multiple of the page size.
	RingBytes uint32 `cfg:"ring_bytes"`

	// PinRoot is the root of mlbpf's pins (default loader.DefaultPinRoot).
	PinRoot string
	// StateDir keeps the learner's state across restarts (StateFile in
	// it); empty keeps it in memory only.
	StateDir string
	// Options are the model's options. Zero fields take the tcp/cc
	// defaults (DefaultOptions), then model.Options' own.
	Options model.Options
	// Logger receives the subsystem's logs (default: discarded).
	Logger *slog.Logger
	// Seed seeds the learner's Thompson sampling (default: the time).
	Seed uint64
}

// Validate implements config.Section: it checks the fields of the
// configuration's section, with nothing on the host looked at.
func (c *Config) Validate() error {
	if c.Cgroup != "" && !filepath.IsAbs(c.Cgroup) {
		return config.Field("cgroup", "%q: want an absolute path to a cgroup v2 directory", c.Cgroup)
	}
	for _, a := range c.Allowed {
		if loader.ValidName(a) != nil {
			return config.Field("allowed", "%q is not a congestion control name", a)
		}
	}
	if c.PortionBytes != 0 && c.PortionBytes < RecordSize {
		return config.Field("portion_bytes", "%d: want at least one record, %d bytes", c.PortionBytes, RecordSize)
	}
	if n := c.RingBytes; n != 0 && (n&(n-1) != 0 || int(n)%os.Getpagesize() != 0) {
		return config.Field("ring_bytes", "%d: want a power of two, a multiple of the page size (%d)", n, os.Getpagesize())
	}
	return c.Learn.validate()
}

func on(b *bool) bool { return b == nil || *b }

// DefaultOptions returns tcp/cc's model options: the model's defaults with
// a mode controller sized for connections, which are few and slow compared
// with other events: 15 outcomes per compared arm, 99 % confidence, a 5 %
// minimum effect.
func DefaultOptions() model.Options {
	return model.Options{Controller: model.ControllerConfig{MinSamples: 15, Confidence: 0.99, MinEffect: 0.05}}
}

func (c Config) withDefaults() (Config, error) {
	if c.PinRoot == "" {
		c.PinRoot = loader.DefaultPinRoot
	}
	if c.Cgroup == "" {
		root, err := loader.Cgroup2Root()
		if err != nil {
			return c, err
		}
		c.Cgroup = root
	}
	if c.Default == "" {
		d, err := DefaultAlgorithm()
		if err != nil {
			return c, err
		}
		c.Default = d
	}
	if c.Options.Controller == (model.ControllerConfig{}) {
		c.Options.Controller = DefaultOptions().Controller
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.Seed == 0 {
		c.Seed = uint64(time.Now().UnixNano())
	}
	c.Learn = c.Learn.withDefaults()
	return c, nil
}

// Objects is the loaded, pinned tcp/cc model object. It implements
// model.ModelOps on top of model.GenericModelOps.
type Objects struct {
	model.GenericModelOps

	cfg     Config
	dir     string
	coll    *ebpf.Collection
	objs    tcpccObjects
	control *loader.ControlMap
	learner *Learner
	model   *model.Model

	mu       sync.Mutex
	link     link.Link
	loop     *pipeline.Loop // nil from OpenPinned
	stats    runStats
	progress func(Status)
	closed   bool
}

// Open loads the tcp/cc objects, pinning their maps under
// <PinRoot>/tcp/cc/ (adopting the pins of an earlier run), loads the
// learner's state, and creates and initializes the model on the period
// loop (package pipeline). The sock_ops program is attached by Start
// (Run), or adopted there if an earlier run left it pinned.
func Open(cfg Config) (*Objects, error) {
	s, err := open(cfg)
	if err != nil {
		return nil, err
	}
	if err := s.plug(pipeline.Env{Model: ModelName, PinRoot: s.cfg.PinRoot, StateDir: s.cfg.StateDir, Log: s.cfg.Logger}); err != nil {
		return nil, err
	}
	return s, nil
}

// plug plugs the objects into the period loop, with the model's options;
// on failure the objects are closed.
func (s *Objects) plug(env pipeline.Env) error {
	env.Options = s.cfg.Options
	env.AfterPeriod = s.afterPeriod
	l, err := pipeline.New(env, pipeline.Parts[Conn]{
		Subsystem: Name, Objects: s, Records: records, Decode: DecodeConn,
		Learner: learn{s}, PortionBytes: s.cfg.PortionBytes,
	})
	if err != nil {
		return err
	}
	s.loop, s.model = l, l.Model()
	return nil
}

// OpenPinned opens the maps a running daemon pinned, without creating a
// model or attaching anything: for the CLI's recommend, withdraw and
// status commands. Recommend validates against cfg.Allowed.
func OpenPinned(cfg Config) (*Objects, error) {
	if cfg.PinRoot == "" {
		cfg.PinRoot = loader.DefaultPinRoot
	}
	dir := loader.PinDir(cfg.PinRoot, Name, ModelName)
	if _, err := os.Stat(filepath.Join(dir, "recommend")); err != nil {
		return nil, fmt.Errorf("opening %s: no pinned maps under %s: %w (is the daemon running? start it with 'mlbpf run')", ModelPath, dir, err)
	}
	return open(cfg)
}

func open(cfg Config) (*Objects, error) {
	const verb = "opening " + ModelPath
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, fmt.Errorf("%s: %w", verb, err)
	}
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("%s: %w", verb, err)
	}
	available, err := Available()
	if err != nil {
		return nil, fmt.Errorf("%s: %w", verb, err)
	}
	allowed, err := resolveAllowed(cfg.Allowed, available, cfg.Default)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", verb, err)
	}
	cfg.Allowed = allowed

	spec, err := loadTcpcc()
	if err != nil {
		return nil, fmt.Errorf("%s: %w", verb, err)
	}
	for name, v := range map[string]any{
		"handle_passive":   b2u(on(cfg.Passive)),
		"rate_probe":       b2u(on(cfg.RateProbe)),
		"record_min_bytes": cfg.Learn.MinBytes,
	} {
		if err := spec.Variables[name].Set(v); err != nil {
			return nil, fmt.Errorf("%s: setting %s: %w", verb, name, err)
		}
	}
	if cfg.RingBytes != 0 {
		spec.Maps["events"].MaxEntries = cfg.RingBytes
	}
	dir := loader.PinDir(cfg.PinRoot, Name, ModelName)
	coll, err := loader.LoadPinned(spec, dir)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", verb, err)
	}
	s := &Objects{cfg: cfg, dir: dir, coll: coll}
	if err := coll.Assign(&s.objs); err != nil {
		s.close()
		return nil, fmt.Errorf("%s: %w", verb, err)
	}
	if s.control, err = loader.NewControlMap(s.objs.Control); err != nil {
		s.close()
		return nil, fmt.Errorf("%s: %w", verb, err)
	}
	s.learner = NewLearner(cfg.Learn, cfg.Default, cfg.Allowed, cfg.Seed)
	if p := s.statePath(); p != "" {
		loaded, err := s.learner.Load(p)
		if err != nil {
			s.close()
			return nil, fmt.Errorf("%s: %w", verb, err)
		}
		if loaded {
			cfg.Logger.Info("learner state loaded", "model", ModelPath, "path", p,
				"destinations", len(s.learner.Destinations()))
		}
	}
	return s, nil
}

func b2u(b bool) uint8 {
	if b {
		return 1
	}
	return 0
}

func (s *Objects) statePath() string {
	if s.cfg.StateDir == "" {
		return ""
	}
	return filepath.Join(s.cfg.StateDir, StateFile)
}

// Model returns the model (nil from OpenPinned).
func (s *Objects) Model() *model.Model { return s.model }

// Learner returns the learner.
func (s *Objects) Learner() *Learner { return s.learner }

// Dir is the model's pin directory.
func (s *Objects) Dir() string { return s.dir }

// Cgroup is the cgroup the program is (to be) attached to.
func (s *Objects) Cgroup() string { return s.cfg.Cgroup }

// Default is the algorithm the learner compares with.
func (s *Objects) Default() string { return s.cfg.Default }

// Allowed lists the algorithms that may be recommended.
func (s *Objects) Allowed() []string { return s.cfg.Allowed }

// Program is the sock_ops program.
func (s *Objects) Program() *ebpf.Program { return s.objs.TcpCcSockops }

// ArmCounts returns how many connections took each arm.
func (s *Objects) ArmCounts() ([loader.ArmCount]uint64, error) {
	return loader.ArmCounts(s.objs.Stats)
}

// LostRecords returns how many records the program could not reserve.
func (s *Objects) LostRecords() (uint64, error) { return loader.LostRecords(s.objs.Lost) }

func (s *Objects) generation() uint32 {
	if s.model != nil {
		return s.model.Control().Generation
	}
	c, err := s.control.LoadControl()
	if err != nil {
		return 0
	}
	return c.Generation
}

// Attach attaches the sock_ops program to the configured cgroup, or
// adopts the link an earlier run pinned (updating it to this program), and
// pins the link. Start does it; attaching twice does nothing.
func (s *Objects) Attach() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.link != nil {
		return nil
	}
	pin := filepath.Join(s.dir, linkPin)
	cgid, err := cgroupID(s.cfg.Cgroup)
	if err != nil {
		return err
	}
	if l, err := link.LoadPinnedLink(pin, nil); err == nil {
		info, ierr := l.Info()
		if c := info.Cgroup(); ierr == nil && c != nil && c.CgroupId == cgid {
			if err := l.Update(s.objs.TcpCcSockops); err != nil {
				l.Close()
				return fmt.Errorf("updating the pinned sock_ops link %s: %w", pin, err)
			}
			s.link = l
			s.cfg.Logger.Info("sock_ops link adopted", "model", ModelPath, "cgroup", s.cfg.Cgroup, "pin", pin)
			return nil
		}
		// Pinned for another cgroup: replace it.
		_ = l.Unpin()
		l.Close()
	}
	l, err := link.AttachCgroup(link.CgroupOptions{
		Path: s.cfg.Cgroup, Attach: ebpf.AttachCGroupSockOps, Program: s.objs.TcpCcSockops,
	})
	if err != nil {
		return fmt.Errorf("attaching sock_ops to cgroup %s: %w (is it a cgroup v2 directory?)", s.cfg.Cgroup, err)
	}
	if err := l.Pin(pin); err != nil {
		l.Close()
		return fmt.Errorf("pinning the sock_ops link: %w", err)
	}
	s.link = l
	s.cfg.Logger.Info("sock_ops attached", "model", ModelPath, "cgroup", s.cfg.Cgroup, "pin", pin)
	return nil
}

// cgroupID returns the id of a cgroup v2 directory (its inode number).
func cgroupID(dir string) (uint64, error) {
	var st unix.Stat_t
	if err := unix.Stat(dir, &st); err != nil {
		return 0, fmt.Errorf("reading cgroup %s: %w", dir, err)
	}
	return st.Ino, nil
}

// Detach detaches the sock_ops program and removes its pin; the maps stay.
func (s *Objects) Detach() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	pin := filepath.Join(s.dir, linkPin)
	if s.link == nil {
		l, err := link.LoadPinnedLink(pin, nil)
		if errors.Is(err, os.ErrNotExist) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("detaching sock_ops: %w", err)
		}
		s.link = l
	}
	err := s.link.Unpin()
	err = errors.Join(err, s.link.Close())
	s.link = nil
	if err != nil {
		return fmt.Errorf("detaching sock_ops: %w", err)
	}
	return nil
}

// Close releases the objects and leaves the pins: the program stays
// attached on the kernel's default (the model is STOPPED, or its lease
// runs out) and the next Open adopts everything. It saves the learner's
// state.
func (s *Objects) Close() error {
	if l := s.takeLoop(); l != nil {
		return l.Close() // its reader, then the objects
	}
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	s.mu.Unlock()
	err := s.saveState()
	s.close()
	return err
}

// takeLoop returns the loop, if any, and forgets it: closing it closes
// the objects.
func (s *Objects) takeLoop() *pipeline.Loop {
	s.mu.Lock()
	defer s.mu.Unlock()
	l := s.loop
	s.loop = nil
	return l
}

func (s *Objects) close() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.link != nil {
		_ = s.link.Close()
		s.link = nil
	}
	s.objs.Close()
	if s.coll != nil {
		s.coll.Close()
		s.coll = nil
	}
}

func (s *Objects) saveState() error {
	if p := s.statePath(); p != "" && s.learner != nil {
		return s.learner.Save(p)
	}
	return nil
}

// Rollback removes everything the model put in the kernel: the sock_ops
// program is detached and every pin removed. Connections fall back to the
// host's default at once. The learner's state file is kept. Use it on
// Objects from OpenPinned (mlbpf rollback) or instead of Close.
func (s *Objects) Rollback() error {
	if l := s.takeLoop(); l != nil {
		_ = l.Close() // the learner's state saved, the objects closed
	}
	err := s.Detach()
	s.mu.Lock()
	s.closed = true
	s.mu.Unlock()
	s.close()
	return errors.Join(err, loader.RemovePins(s.dir))
}

// --- model.ModelOps ---

// Start implements model.ModelOps: it attaches (or adopts) the sock_ops
// program.
func (s *Objects) Start(m *model.Model, cfg model.RunConfig) error {
	if err := s.Attach(); err != nil {
		return err
	}
	s.mu.Lock()
	s.stats.start, s.stats.saved = time.Now(), time.Now()
	s.mu.Unlock()
	return nil
}

// Stop implements model.ModelOps: the control block already says STOPPED,
// so the program keeps the kernel's default; it stays attached for the
// next start, and the learner's state is saved.
func (s *Objects) Stop(m *model.Model) error { return s.saveState() }

// Destroy implements model.ModelOps: it detaches the program and removes
// every pin (rollback).
func (s *Objects) Destroy(m *model.Model) error {
	_ = s.saveState()
	return s.Rollback()
}

// GetSystemState implements model.ModelOps: the generic snapshot plus the
// arm counts, lost records and learner gauges.
func (s *Objects) GetSystemState(m *model.Model) (model.SystemState, error) {
	st, err := s.GenericModelOps.GetSystemState(m)
	if err != nil {
		return st, err
	}
	if arms, err := s.ArmCounts(); err == nil {
		st.Arms = arms
	}
	if lost, err := s.LostRecords(); err == nil {
		st.Lost = lost
	}
	dests := s.learner.Destinations()
	recs := 0
	for _, d := range dests {
		if d.Recommended != "" {
			recs++
		}
	}
	st.Values = map[string]float64{"destinations": float64(len(dests)), "recommendations": float64(recs)}
	return st, nil
}

// PreprocessRecommendation implements model.ModelOps: Key must be a
// destination prefix and Value an algorithm the kernel offers and the
// allow-list admits. The prefix is normalized.
func (s *Objects) PreprocessRecommendation(m *model.Model, rec *model.Recommendation) error {
	if err := s.GenericModelOps.PreprocessRecommendation(m, rec); err != nil {
		return err
	}
	p, err := ParsePrefix(rec.Key)
	if err != nil {
		return err
	}
	if err := s.validate(p, rec.Value); err != nil {
		return err
	}
	rec.Key = p.String()
	return nil
}

// ApplyRecommendation implements model.ModelOps: it writes the learner's
// recommendation into the map, unless an operator's is in place.
func (s *Objects) ApplyRecommendation(m *model.Model, rec model.Recommendation) error {
	p, err := netip.ParsePrefix(rec.Key)
	if err != nil {
		return fmt.Errorf("%w: %v", model.ErrInvalidRecommendation, err)
	}
	return s.write(p, rec.Value, false)
}

// ErrorBackpropagation implements model.ModelOps: the outcome calibrates
// the learner's counterfactual model (MODEL-arm outcomes against their
// prediction), then goes to the mode controller as evidence.
func (s *Objects) ErrorBackpropagation(m *model.Model, fb model.Feedback, n *model.Notification) error {
	s.learner.Backpropagate(fb)
	return s.GenericModelOps.ErrorBackpropagation(m, fb, n)
}

// CorrectSystemState implements model.ModelOps: the mode controller's
// decision, except that a model in COLLABORATION or RECOMMENDATION with
// nothing left in the recommendation map (the learner withdrew what the
// randomised comparison disproved) goes back to LEARNING, where the next
// recommendation has to earn its promotion again.
func (s *Objects) CorrectSystemState(m *model.Model) (model.Decision, error) {
	mode := m.Mode()
	if mode == model.ModeCollaboration || mode == model.ModeRecommendation {
		var k tcpccTcpCcKey
		if err := s.objs.Recommend.NextKey(nil, &k); errors.Is(err, ebpf.ErrKeyNotExist) {
			d := model.Decision{From: mode, To: model.ModeLearning, Changed: true,
				Reason: "nothing left to recommend: the learner withdrew every recommendation"}
			return d, m.ApplyDecision(d)
		}
	}
	return s.GenericModelOps.CorrectSystemState(m)
}
