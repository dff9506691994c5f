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

	"github.com/mlbpf/mlbpf/loader"
	"github.com/mlbpf/mlbpf/model"
)

// Name is the subsystem's name and ModelName the model's: the model is
// "tcp/cc", pinned under <PinRoot>/tcp/cc/.
const (
	Name      = "tcp"
	ModelName = "cc"
)

// linkPin is the pin name of the sock_ops link, beside the maps.
const linkPin = "link"

// Config configures the tcp/cc subsystem.
type Config struct {
	// PinRoot is the root of mlbpf's pins (default loader.DefaultPinRoot).
	PinRoot string
	// Cgroup is the cgroup v2 directory the sock_ops program is attached
	// to; it covers every process below it (default: the root of the
	// cgroup v2 mount, that is, the whole host).
	Cgroup string
	// StateDir keeps the learner's state across restarts (StateFile in
	// it); empty keeps it in memory only.
	StateDir string
	// Allowed lists the algorithms the learner may recommend and an
	// operator may set; empty allows every algorithm the kernel offers.
	Allowed []string
	// Default is the algorithm connections get when the model does not
	// act: default the host's net.ipv4.tcp_congestion_control. Set it to
	// the default of the namespaces the connections live in when that
	// differs.
	Default string
	// NoPassive leaves accepted connections alone (only connect()ed ones
	// are handled).
	NoPassive bool
	// NoRateProbe stops sampling the delivery rate of connections on the
	// default algorithm; the counterfactual model then cannot predict a
	// rate-based algorithm's gain, and nothing is promoted.
	NoRateProbe bool
	// RingBytes sizes the records' ring buffer (0: the BPF object's, 1
	// MiB): a power of two, a multiple of the page size.
	RingBytes uint32
	// Learn tunes the learner.
	Learn LearnConfig
	// Options are the model's options. Zero fields take the tcp/cc
	// defaults (DefaultOptions), then model.Options' own.
	Options model.Options
	// NewSource opens the ring buffer reader (default NewRingbufSource).
	NewSource func(*ebpf.Map) (RecordSource, error)
	// Drained, if not nil, sees every dataset portion Run drains from the
	// ring buffer, before the learner consumes it. The portion is the
	// model's and reused afterwards: copy what you keep.
	Drained func(ds *model.Dataset)
	// Logger receives the subsystem's logs (default: discarded).
	Logger *slog.Logger
	// Seed seeds the learner's Thompson sampling (default: the time).
	Seed uint64
}

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
	if c.NewSource == nil {
		c.NewSource = NewRingbufSource
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

// Subsystem is the loaded, pinned tcp/cc model object. It implements
// model.ModelOps on top of model.GenericModelOps.
type Subsystem struct {
	model.GenericModelOps

	cfg     Config
	dir     string
	coll    *ebpf.Collection
	objs    tcpccObjects
	control *loader.ControlMap
	learner *Learner
	model   *model.Model

	mu     sync.Mutex
	link   link.Link
	source RecordSource
	conn   Conn
	stats  runStats
	// feedbackAlg is the algorithm of the connection whose feedback is
	// being propagated (set by the run loop, which is the only caller).
	feedbackAlg string
	// lostSeen is the kernel's lost counter as of the last portion.
	lostSeen uint64
	closed   bool
}

// Open loads the tcp/cc objects, pinning their maps under
// <PinRoot>/tcp/cc/ (adopting the pins of an earlier run), loads the
// learner's state, and creates and initializes the model. The sock_ops
// program is attached by Start (Run), or adopted there if an earlier run
// left it pinned.
func Open(cfg Config) (*Subsystem, error) {
	s, err := open(cfg)
	if err != nil {
		return nil, err
	}
	if err := s.initModel(); err != nil {
		s.close()
		return nil, err
	}
	return s, nil
}

// OpenPinned opens the maps a running daemon pinned, without creating a
// model or attaching anything: for the CLI's recommend, withdraw and
// status commands. Recommend validates against cfg.Allowed.
func OpenPinned(cfg Config) (*Subsystem, error) {
	if cfg.PinRoot == "" {
		cfg.PinRoot = loader.DefaultPinRoot
	}
	dir := loader.PinDir(cfg.PinRoot, Name, ModelName)
	if _, err := os.Stat(filepath.Join(dir, "recommend")); err != nil {
		return nil, fmt.Errorf("opening %s: no pinned maps under %s: %w (is the daemon running? start it with 'mlbpf run')", ModelPath, dir, err)
	}
	return open(cfg)
}

func open(cfg Config) (*Subsystem, error) {
	const verb = "opening " + ModelPath
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, fmt.Errorf("%s: %w", verb, err)
	}
	if err := cfg.Learn.validate(); err != nil {
		return nil, fmt.Errorf("%s: learner: %w", verb, err)
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
		"handle_passive":   b2u(!cfg.NoPassive),
		"rate_probe":       b2u(!cfg.NoRateProbe),
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
	s := &Subsystem{cfg: cfg, dir: dir, coll: coll}
	if err := coll.Assign(&s.objs); err != nil {
		s.close()
		return nil, fmt.Errorf("%s: %w", verb, err)
	}
	if s.control, err = loader.NewControlMap(s.objs.Control); err != nil {
		s.close()
		return nil, fmt.Errorf("%s: %w", verb, err)
	}
	// Records lost before this run are not this run's portions'.
	if s.lostSeen, err = s.LostRecords(); err != nil {
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

func (s *Subsystem) statePath() string {
	if s.cfg.StateDir == "" {
		return ""
	}
	return filepath.Join(s.cfg.StateDir, StateFile)
}

func (s *Subsystem) initModel() error {
	m, err := model.Create(Name, ModelName, s, s.control,
		model.WithDatasetOps(datasetOps{s: s}))
	if err != nil {
		return err
	}
	if err := m.Init(s.cfg.Options); err != nil {
		return err
	}
	s.model = m
	return nil
}

// Model returns the model (nil from OpenPinned).
func (s *Subsystem) Model() *model.Model { return s.model }

// Learner returns the learner.
func (s *Subsystem) Learner() *Learner { return s.learner }

// Dir is the model's pin directory.
func (s *Subsystem) Dir() string { return s.dir }

// Cgroup is the cgroup the program is (to be) attached to.
func (s *Subsystem) Cgroup() string { return s.cfg.Cgroup }

// Default is the algorithm the learner compares with.
func (s *Subsystem) Default() string { return s.cfg.Default }

// Allowed lists the algorithms that may be recommended.
func (s *Subsystem) Allowed() []string { return s.cfg.Allowed }

// Program is the sock_ops program.
func (s *Subsystem) Program() *ebpf.Program { return s.objs.TcpCcSockops }

// ArmCounts returns how many connections took each arm.
func (s *Subsystem) ArmCounts() ([loader.ArmCount]uint64, error) {
	return loader.ArmCounts(s.objs.Stats)
}

// LostRecords returns how many records the program could not reserve.
func (s *Subsystem) LostRecords() (uint64, error) { return loader.LostRecords(s.objs.Lost) }

func (s *Subsystem) generation() uint32 {
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
func (s *Subsystem) Attach() error {
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
func (s *Subsystem) Detach() error {
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
func (s *Subsystem) Close() error {
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

func (s *Subsystem) close() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.source != nil {
		_ = s.source.Close()
		s.source = nil
	}
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

func (s *Subsystem) saveState() error {
	if p := s.statePath(); p != "" && s.learner != nil {
		return s.learner.Save(p)
	}
	return nil
}

// Rollback removes everything the model put in the kernel: the sock_ops
// program is detached and every pin removed. Connections fall back to the
// host's default at once. The learner's state file is kept. Use it on a
// Subsystem from OpenPinned (mlbpf rollback) or instead of Close.
func (s *Subsystem) Rollback() error {
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
func (s *Subsystem) Start(m *model.Model, cfg model.RunConfig) error { return s.Attach() }

// Stop implements model.ModelOps: the control block already says STOPPED,
// so the program keeps the kernel's default; it stays attached for the
// next start, and the learner's state is saved.
func (s *Subsystem) Stop(m *model.Model) error { return s.saveState() }

// Destroy implements model.ModelOps: it detaches the program and removes
// every pin (rollback).
func (s *Subsystem) Destroy(m *model.Model) error {
	_ = s.saveState()
	return s.Rollback()
}

// GetSystemState implements model.ModelOps: the generic snapshot plus the
// arm counts, lost records and learner gauges.
func (s *Subsystem) GetSystemState(m *model.Model) (model.SystemState, error) {
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
func (s *Subsystem) PreprocessRecommendation(m *model.Model, rec *model.Recommendation) error {
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
func (s *Subsystem) ApplyRecommendation(m *model.Model, rec model.Recommendation) error {
	p, err := netip.ParsePrefix(rec.Key)
	if err != nil {
		return fmt.Errorf("%w: %v", model.ErrInvalidRecommendation, err)
	}
	return s.write(p, rec.Value, false)
}

// ErrorBackpropagation implements model.ModelOps: the outcome calibrates
// the learner's counterfactual model (MODEL-arm outcomes against their
// prediction), then goes to the mode controller as evidence.
func (s *Subsystem) ErrorBackpropagation(m *model.Model, fb model.Feedback, n *model.Notification) error {
	s.learner.Backpropagate(fb, s.feedbackAlg)
	return s.GenericModelOps.ErrorBackpropagation(m, fb, n)
}

// CorrectSystemState implements model.ModelOps: the mode controller's
// decision, except that a model in COLLABORATION or RECOMMENDATION with
// nothing left in the recommendation map (the learner withdrew what the
// randomised comparison disproved) goes back to LEARNING, where the next
// recommendation has to earn its promotion again.
func (s *Subsystem) CorrectSystemState(m *model.Model) (model.Decision, error) {
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

// --- datasets ---

// datasetOps moves connection records from the ring buffer into the
// model's datasets.
type datasetOps struct {
	model.GenericDatasetOps
	s *Subsystem
}

// datasetCapacity is how many records one dataset portion holds.
const datasetCapacity = 1024

func (d datasetOps) Init(m *model.Model, ds *model.Dataset) error {
	return ds.Allocate(model.DatasetStructure, RecordSize, datasetCapacity)
}

// Extract reads the records available now, up to the portion's capacity.
// Records that do not decode are counted as corrupted and left out.
func (d datasetOps) Extract(m *model.Model, ds *model.Dataset) error {
	src, err := d.s.recordSource()
	if err != nil {
		_ = ds.Fail()
		return err
	}
	for !ds.Full() {
		raw, err := src.Next(time.Now())
		if isTimeout(err) {
			break
		}
		if err != nil {
			_ = ds.Fail()
			return fmt.Errorf("reading tcp connection records: %w", err)
		}
		if err := DecodeConn(raw, &d.s.conn); err != nil {
			ds.Corrupted++
			continue
		}
		if err := ds.Append(raw[:RecordSize]); err != nil {
			return err
		}
	}
	// The kernel's counter is cumulative: the portion misses what it
	// lost since the last portion.
	if lost, err := d.s.LostRecords(); err == nil {
		ds.Lost = lost - d.s.lostSeen
		d.s.lostSeen = lost
	}
	return ds.Extracted(false)
}

func (s *Subsystem) recordSource() (RecordSource, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.source == nil {
		src, err := s.cfg.NewSource(s.objs.Events)
		if err != nil {
			return nil, err
		}
		s.source = src
	}
	return s.source, nil
}
