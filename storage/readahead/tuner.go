package readahead

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"sync"
	"time"

	"github.com/mlbpf/mlbpf/loader"
	"github.com/mlbpf/mlbpf/model"
)

// Config configures a Tuner, the storage/readahead model.
type Config struct {
	// Devices are the block devices to tune, by name ("sda", "loop0").
	Devices []string
	// PinDir pins the model's maps; "" means loader.PinDir's default for
	// storage/readahead.
	PinDir string
	// StateDir holds the record of original values; required.
	StateDir string
	// Grid is the settings to choose from, in KB; nil means DefaultGrid.
	Grid []uint32
	// Window is the features' window (default 250 ms), Block the time
	// block a device keeps one arm for (default 1 s), Lease the lease
	// (default 2 s).
	Window, Block, Lease time.Duration
	// Mode is the starting mode (default LEARNING); MaxMode caps
	// promotion (default RECOMMENDATION).
	Mode, MaxMode model.Mode
	// CollabPermille is COLLABORATION's share of blocks on the model
	// (default 500), HoldoutPermille RECOMMENDATION's share kept on the
	// default (default 50).
	CollabPermille, HoldoutPermille uint32
	// Controller decides promotions from the blocks' rewards.
	Controller model.ControllerConfig
	// Watchdog is the command that runs RunWatchdog (its flags are
	// appended); nil runs none, and a SIGKILL then leaves the devices as
	// they were until the next start or `mlbpf rollback`.
	Watchdog []string
	// Logf receives what the model says; nil discards it.
	Logf func(string, ...any)
	// Without names optional tracepoints the collector does without, as
	// on a kernel that lacks them (CollectorConfig.Without; for tests).
	Without []string
}

func (c *Config) defaults() error {
	if len(c.Devices) == 0 {
		return errors.New("configuring storage/readahead: no devices: name at least one block device, e.g. devices: [sda]")
	}
	if c.StateDir == "" {
		return errors.New("configuring storage/readahead: no state directory")
	}
	if c.PinDir == "" {
		c.PinDir = loader.PinDir("", "storage", "readahead")
	}
	if c.Window == 0 {
		c.Window = 250 * time.Millisecond
	}
	if c.Block == 0 {
		c.Block = time.Second
	}
	if c.Lease == 0 {
		c.Lease = 2 * time.Second
	}
	if c.Mode == model.ModeUnknown {
		c.Mode = model.ModeLearning
	}
	if c.MaxMode == model.ModeUnknown {
		c.MaxMode = model.ModeRecommendation
	}
	if c.CollabPermille == 0 {
		c.CollabPermille = 500
	}
	if c.HoldoutPermille == 0 {
		c.HoldoutPermille = 50
	}
	if c.Controller.MaxMode == model.ModeUnknown {
		c.Controller.MaxMode = c.MaxMode
	}
	if c.Logf == nil {
		c.Logf = func(string, ...any) {}
	}
	return c.Controller.Validate()
}

// device is the tuner's state of one device.
type device struct {
	Device
	original  uint32 // its setting when the model started: the default arm
	arm       model.Arm
	kb        uint32 // in force
	exploring bool
	choice    uint32 // the block's setting
	checked   time.Time
	blockEnd  time.Time
	// blockPhase is the phase the block's choice was made for.
	blockPhase Phase
	changedNs  uint64 // when kb last changed (CLOCK_MONOTONIC)
	phase      Phase
	// exploreFrom is how many windows the exploring choice had when it
	// was made: once it has MinWindows more, the next is tried.
	exploreFrom int
	// pending is the device's last window, judged when the next one
	// comes (see feedback); before is the phase of the one before it.
	pending   *pendingWindow
	before    Phase
	override  uint32 // an operator's recommendation, 0 for none
	backedOff bool
	// draws draws the arms of the device's blocks.
	draws permuted
}

// Tuner is the storage/readahead model running on its devices.
type Tuner struct {
	cfg      Config
	coll     *Collector
	applier  *Applier
	learner  *Learner
	ctrl     *model.Controller
	watchdog *exec.Cmd
	// watchdogDone is closed once the watchdog has exited.
	watchdogDone chan struct{}
	// external: the daemon's loop owns the control block (lease, mode,
	// promotion); the tuner reads it and applies.
	external bool

	mu         sync.Mutex
	devices    []*device
	control    model.Control
	started    time.Time
	promotedAt time.Duration
	windows    uint64
	lastDecide time.Time
	// lastDecision is the controller's last word, for status.
	lastDecision string
	// blockMode is the mode the devices' blocks were drawn in: a block
	// drawn in another mode ends at once (a control block of
	// COLLABORATION does not outlive a promotion).
	blockMode model.Mode
	closed    bool
}

// New loads the collector, records the devices' settings and starts the
// watchdog. Devices a killed predecessor left changed are restored first.
func New(cfg Config) (*Tuner, error) {
	return open(cfg, false)
}

func open(cfg Config, external bool) (_ *Tuner, err error) {
	if err := cfg.defaults(); err != nil {
		return nil, err
	}
	t := &Tuner{cfg: cfg, external: external, learner: NewLearner(cfg.Grid), ctrl: model.NewController(cfg.Controller), started: time.Now(), promotedAt: -1}
	defer func() {
		if err != nil {
			t.Close()
		}
	}()
	t.applier, err = NewApplier(cfg.StateDir, cfg.Logf)
	if err != nil {
		return nil, err
	}
	for _, name := range cfg.Devices {
		d, err := LookupDevice(name)
		if err != nil {
			return nil, err
		}
		kb, err := d.ReadKB()
		if err != nil {
			return nil, err
		}
		t.devices = append(t.devices, &device{Device: d, original: kb, kb: kb, choice: kb, arm: model.ArmFallback})
	}
	t.coll, err = NewCollector(CollectorConfig{PinDir: cfg.PinDir, Window: cfg.Window, Without: cfg.Without})
	if err != nil {
		return nil, err
	}
	for _, m := range t.coll.Missing {
		cfg.Logf("readahead: the kernel lacks tracepoint %s: the model works without it (fewer features)", m)
	}
	if contains(t.coll.Missing, "filemap:mm_filemap_get_pages") || contains(t.coll.Missing, "filemap:mm_filemap_fault") {
		// Without them the windows carry no bytes asked for: no reward.
		cfg.Logf("readahead: without filemap:mm_filemap_get_pages and mm_filemap_fault the model has no reward on this kernel: it collects, and stays in LEARNING")
		t.cfg.MaxMode, t.cfg.Mode = model.ModeLearning, model.ModeLearning
		t.ctrl = model.NewController(model.ControllerConfig{MaxMode: model.ModeLearning})
	}
	for _, d := range t.devices {
		if err := t.coll.Watch(d.Dev, d.arm, d.kb); err != nil {
			return nil, err
		}
	}
	if external {
		return t, nil
	}
	t.control = model.Control{State: model.StateRunning, Mode: t.cfg.Mode, CollabPermille: cfg.CollabPermille, HoldoutPermille: cfg.HoldoutPermille}
	if err := t.renew(); err != nil {
		return nil, err
	}
	if err := t.startWatchdog(); err != nil {
		return nil, err
	}
	return t, nil
}

// startWatchdog starts the watchdog if the configuration names one and
// none runs.
func (t *Tuner) startWatchdog() error {
	if t.cfg.Watchdog == nil || t.watchdog != nil {
		return nil
	}
	cmd, err := StartWatchdog(t.cfg.Watchdog, WatchdogConfig{PinDir: t.cfg.PinDir, StateDir: t.cfg.StateDir, PID: osPID()})
	if err != nil {
		return err
	}
	t.watchdog, t.watchdogDone = cmd, make(chan struct{})
	go func(done chan struct{}) { _ = cmd.Wait(); close(done) }(t.watchdogDone) // reaped whenever it exits
	return nil
}

// renew writes the control block with a fresh lease.
func (t *Tuner) renew() error {
	t.control.LeaseExpiresNs = loader.MonotonicNs() + uint64(t.cfg.Lease)
	if err := t.coll.Control().StoreControl(t.control); err != nil {
		return err
	}
	c, err := t.coll.Control().LoadControl()
	if err != nil {
		return err
	}
	t.control = c
	return nil
}

// Run drives the model until ctx ends, then stops it (every device back
// to its original setting).
func (t *Tuner) Run(ctx context.Context) error {
	defer t.Close()
	lastRenew := time.Now()
	for ctx.Err() == nil {
		if time.Since(lastRenew) >= t.cfg.Lease/4 {
			t.mu.Lock()
			// An operator's change of mode (mlbpf mode) is in the kernel's
			// block; adopt it before renewing.
			if c, err := t.coll.Control().LoadControl(); err == nil {
				t.control.Mode, t.control.State = c.Mode, c.State
			}
			if loader.MonotonicNs() > t.control.LeaseExpiresNs {
				// This process stalled past its lease: the watchdog may
				// have restored the devices. Fall back, then start over.
				t.cfg.Logf("readahead: the lease ran out before it was renewed: every device back to its original, new blocks")
				t.restoreLocked()
				for _, d := range t.devices {
					d.blockEnd = time.Time{}
				}
			}
			err := t.renew()
			t.mu.Unlock()
			if err != nil {
				return err
			}
			lastRenew = time.Now()
		}
		if err := t.coll.Read(time.Now().Add(50*time.Millisecond), t.observe); err != nil {
			return fmt.Errorf("reading readahead windows: %w", err)
		}
		t.step(time.Now())
	}
	return nil
}

// settle is how long after a change of setting a window is not credited:
// the setting reaches files as they are opened.
const settle = 150 * time.Millisecond

func (t *Tuner) observe(w *Window) {
	if fb, ok := t.feedback(w); ok {
		t.mu.Lock()
		t.ctrl.Observe(model.Outcome{Arm: fb.Arm, Reward: fb.Reward})
		t.mu.Unlock()
	}
}

// pendingWindow is a window waiting for its successor, with what the
// tuner knew when it came.
type pendingWindow struct {
	w         Window
	phase     Phase
	unsettled bool // it saw the setting change
	exploring bool // its setting was an exploration
	override  bool // its setting was an operator's
}

// feedback learns from one window, and returns the outcome it is for the
// mode controller: a model block (not an exploration) or a control
// block, its reward relative to the default's in the same phase.
//
// The window's phase is acted on at once (step chooses for it), but the
// window itself is judged one window later: a window at a phase boundary
// (its phase differs from the one before or the one after it) holds the
// end of one phase and the start of the next, bytes of a fast phase in a
// slow phase's window (a sequential tail among random preads is 40 times
// their rate), and is nobody's outcome, for the learner nor the
// controller. The outcome returned is the previous window's.
func (t *Tuner) feedback(w *Window) (model.Feedback, bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.windows++
	var d *device
	for _, x := range t.devices {
		if x.Dev == w.Dev {
			d = x
		}
	}
	if d == nil {
		return model.Feedback{}, false
	}
	// A window with too little I/O to tell its phase is still an outcome
	// (a setting may make the workload that slow): it counts for the
	// device's current phase.
	phase := w.Classify()
	if phase != PhaseIdle {
		if phase != d.phase {
			t.learner.Follow(d.Dev, d.phase, phase)
		}
		d.phase = phase
	}
	cur := &pendingWindow{w: *w, phase: d.phase, unsettled: w.Hdr.TsNs-w.WindowNs < d.changedNs+uint64(settle),
		exploring: d.exploring, override: d.override != 0}
	p, before := d.pending, d.before
	d.pending, d.before = cur, PhaseIdle
	if p == nil {
		return model.Feedback{}, false
	}
	d.before = p.phase
	if p.phase != before || p.phase != cur.phase {
		return model.Feedback{}, false // a phase boundary
	}
	return t.judge(d, p)
}

// judge learns from window p of d, of a known phase and inside it, and
// returns its outcome for the mode controller.
func (t *Tuner) judge(d *device, p *pendingWindow) (model.Feedback, bool) {
	w, phase := &p.w, p.phase
	if p.unsettled || phase == PhaseIdle {
		return model.Feedback{}, false // the window saw the setting change, or nothing is known yet
	}
	reward := w.Throughput()
	if w.RaMaxPages != 0 && w.RaMaxPages*4 != uint64(w.RaKb) {
		// A reader still runs under another setting: the kernel copies
		// read_ahead_kb into a file when it is opened, so a file opened
		// before the change keeps the old one. Not this setting's outcome
		// nor its block's: the learner has it for the setting the reader
		// runs under (the largest in the window, for the rare window of
		// two readers).
		t.learner.Observe(d.Dev, phase, uint32(w.RaMaxPages*4), reward)
		return model.Feedback{}, false
	}
	t.learner.Observe(d.Dev, phase, w.RaKb, reward)
	if p.exploring || p.override {
		return model.Feedback{}, false
	}
	ref, n := t.learner.Mean(d.Dev, phase, d.original)
	if n == 0 || ref <= 0 {
		return model.Feedback{}, false
	}
	switch arm := model.Arm(w.Hdr.Arm); arm {
	case model.ArmModel, model.ArmControl:
		return model.Feedback{Arm: arm, Reward: reward / ref, Key: d.Name, Value: strconv.FormatUint(uint64(w.RaKb), 10),
			Mode: model.Mode(w.Hdr.Mode), Generation: w.Hdr.Generation}, true
	}
	return model.Feedback{}, false
}

func (t *Tuner) step(now time.Time) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		return
	}
	if t.external {
		c, err := t.coll.Control().LoadControl()
		if err != nil {
			c = model.Control{} // unreadable: fall back
		}
		t.control = c
	}
	nowNs := loader.MonotonicNs()
	if t.control.Mode != t.blockMode {
		t.blockMode = t.control.Mode
		for _, d := range t.devices {
			d.blockEnd = time.Time{}
		}
	}
	for _, d := range t.devices {
		if d.backedOff {
			continue
		}
		t.check(d, now)
		if d.backedOff {
			continue
		}
		newBlock := now.After(d.blockEnd) || nowNs > t.control.LeaseExpiresNs
		if newBlock {
			_, have := t.learner.Best(d.Dev, d.phase)
			have = have || d.override != 0 || t.control.Mode == model.ModeCollaboration
			d.arm = decide(t.control, nowNs, have, &d.draws)
			d.blockEnd = now.Add(t.cfg.Block)
		}
		// The model's choice is made once per block, again when the
		// workload's phase changes within it, and when an exploration has
		// its windows (the next is tried at once: exploring setting by
		// setting a block apiece took most of a minute per phase).
		explored := d.exploring && t.learner.Count(d.Dev, d.phase, d.choice) >= d.exploreFrom+t.learner.MinWindows
		if newBlock || d.phase != d.blockPhase || explored {
			d.blockPhase = d.phase
			d.choice, d.exploring = d.original, false
			switch {
			case d.arm != model.ArmModel:
			case d.override != 0:
				d.choice = d.override
			default:
				d.choice, d.exploring = t.learner.Choose(d.Dev, d.phase, d.original, t.control.Mode == model.ModeCollaboration)
				d.exploreFrom = t.learner.Count(d.Dev, d.phase, d.choice)
			}
		}
		t.apply(d, d.choice)
	}
	if !t.external && now.Sub(t.lastDecide) >= t.cfg.Block {
		t.lastDecide = now
		t.correct()
	}
}

// checkEvery is how often the tuner reads a device's setting back to
// notice another writer.
const checkEvery = 250 * time.Millisecond

// check reads d's setting back from the kernel: a value other than the
// one in force is someone else's, and the model backs off the device,
// unless it is the original the watchdog wrote back after a lapse.
func (t *Tuner) check(d *device, now time.Time) {
	if now.Sub(d.checked) < checkEvery {
		return
	}
	d.checked = now
	cur, err := d.ReadKB()
	if err != nil || cur == d.kb {
		return
	}
	if _, ours := t.applier.Original(d.Device); ours && cur == d.original {
		d.kb, d.changedNs = cur, loader.MonotonicNs()
		return
	}
	t.applier.BackOff(d.Device, cur, d.kb)
	d.backedOff, d.arm, d.kb = true, model.ArmSkipped, cur
	_ = t.coll.Watch(d.Dev, d.arm, d.kb)
}

// apply sets d to kb through the applier and tells the collector.
func (t *Tuner) apply(d *device, kb uint32) {
	if kb == 0 {
		kb = d.original // never "no readahead" by mistake
	}
	if kb != d.kb {
		if err := t.applier.Set(d.Device, kb); err != nil {
			if errors.Is(err, ErrBackedOff) {
				d.backedOff, d.arm = true, model.ArmSkipped
				_ = t.coll.Watch(d.Dev, d.arm, d.kb)
				return
			}
			t.cfg.Logf("readahead: %v", err)
			return
		}
		d.kb, d.changedNs = kb, loader.MonotonicNs()
	}
	_ = t.coll.Watch(d.Dev, d.arm, d.kb)
}

// correct is estimate_system_state/correct_system_state: the controller
// promotes, demotes or trips the model from the blocks' rewards.
func (t *Tuner) correct() {
	dec := t.ctrl.Decide(t.control.Mode)
	t.lastDecision = dec.String()
	if !dec.Changed {
		return
	}
	t.cfg.Logf("readahead: %v", dec)
	t.control.Mode = dec.To
	if dec.To == model.ModeRecommendation && t.promotedAt < 0 {
		t.promotedAt = time.Since(t.started)
	}
	if err := t.renew(); err != nil {
		t.cfg.Logf("readahead: %v", err)
	}
	if dec.To == model.ModeEmergency {
		t.restoreLocked()
	}
}

func (t *Tuner) restoreLocked() {
	if err := t.applier.RestoreAll(); err != nil {
		t.cfg.Logf("readahead: restoring: %v", err)
	}
	for _, d := range t.devices {
		if !d.backedOff {
			d.kb, d.choice, d.arm, d.changedNs = d.original, d.original, model.ArmFallback, loader.MonotonicNs()
			d.blockEnd, d.exploring = time.Time{}, false
			_ = t.coll.Watch(d.Dev, d.arm, d.kb)
		}
	}
}

// SetMode sets the model's mode (an operator's command, or a test's).
// EMERGENCY restores every device at once.
func (t *Tuner) SetMode(m model.Mode) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	if !m.Valid() {
		return fmt.Errorf("setting mode: invalid mode %v", m)
	}
	t.control.Mode = m
	t.ctrl.Reset()
	if m == model.ModeRecommendation && t.promotedAt < 0 {
		t.promotedAt = time.Since(t.started)
	}
	for _, d := range t.devices {
		d.blockEnd = time.Time{} // a new block at once
	}
	if err := t.renew(); err != nil {
		return err
	}
	if m == model.ModeEmergency {
		t.restoreLocked()
	}
	return nil
}

// Recommend sets an operator's recommendation for a device: kb in every
// phase, applied as the mode allows; 0 clears it.
func (t *Tuner) Recommend(name string, kb uint32) error {
	if err := ValidateKB(kb); err != nil && kb != 0 {
		return err
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	for _, d := range t.devices {
		if d.Name == name {
			d.override = kb
			d.blockEnd = time.Time{}
			return nil
		}
	}
	return fmt.Errorf("recommending readahead for %s: the model does not tune it (its devices: %v)", name, t.cfg.Devices)
}

// ValidateKB checks a readahead setting a recommendation may carry.
func ValidateKB(kb uint32) error {
	if kb < 4 || kb > 65536 || kb%4 != 0 {
		return fmt.Errorf("invalid readahead %d KB: want a multiple of 4 from 4 to 65536", kb)
	}
	return nil
}

// Close stops the model: every device back to its original setting, the
// model STOPPED in its control block (the watchdog then exits), the
// collector detached. Pins stay.
func (t *Tuner) Close() error {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		return nil
	}
	t.closed = true
	var errs []error
	if t.applier != nil {
		errs = append(errs, t.applier.RestoreAll())
	}
	if t.coll != nil && !t.external {
		t.control.State = model.StateStopped
		errs = append(errs, t.coll.Control().StoreControl(t.control))
	}
	errs = append(errs, t.waitWatchdog())
	if t.coll != nil {
		errs = append(errs, t.coll.Close())
	}
	return errors.Join(errs...)
}

func osPID() int { return os.Getpid() }

// Mode returns the model's mode.
func (t *Tuner) Mode() model.Mode {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.control.Mode
}

// PromotedAfter returns how long after the start the model reached
// RECOMMENDATION, and whether it did.
func (t *Tuner) PromotedAfter() (time.Duration, bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.promotedAt, t.promotedAt >= 0
}

// Collector returns the model's collector.
func (t *Tuner) Collector() *Collector { return t.coll }

// DeviceStatus is one device as the model sees it.
type DeviceStatus struct {
	Name       string            `json:"name"`
	Dev        string            `json:"dev"`
	OriginalKB uint32            `json:"original_kb"`
	KB         uint32            `json:"kb"`
	Arm        model.Arm         `json:"arm"`
	Phase      string            `json:"phase"`
	BackedOff  bool              `json:"backed_off,omitempty"`
	OperatorKB uint32            `json:"operator_kb,omitempty"`
	Learned    map[string]uint32 `json:"learned,omitempty"`
}

// Status is what `mlbpf status` shows of the model.
type Status struct {
	Mode     model.Mode     `json:"mode"`
	State    model.State    `json:"state"`
	Windows  uint64         `json:"windows"`
	Missing  []string       `json:"missing_tracepoints,omitempty"`
	Devices  []DeviceStatus `json:"devices"`
	Evidence string         `json:"evidence,omitempty"`
}

// Status reports the model's state.
func (t *Tuner) Status() Status {
	t.mu.Lock()
	defer t.mu.Unlock()
	st := Status{Mode: t.control.Mode, State: t.control.State, Windows: t.windows, Missing: t.coll.Missing, Evidence: t.lastDecision}
	known := t.learner.Known()
	for _, d := range t.devices {
		ds := DeviceStatus{Name: d.Name, Dev: fmt.Sprintf("%d:%d", d.Dev>>20, d.Dev&(1<<20-1)), OriginalKB: d.original, KB: d.kb,
			Arm: d.arm, Phase: d.phase.String(), BackedOff: d.backedOff, OperatorKB: d.override}
		if kb, err := d.ReadKB(); err == nil {
			ds.KB = kb
		}
		for p, kb := range known[d.Dev] {
			if ds.Learned == nil {
				ds.Learned = map[string]uint32{}
			}
			ds.Learned[p.String()] = kb
		}
		st.Devices = append(st.Devices, ds)
	}
	return st
}

// waitWatchdog waits for the watchdog to exit once the model is stopped,
// and kills it if it does not.
func (t *Tuner) waitWatchdog() error {
	if t.watchdog == nil {
		return nil
	}
	defer func() { t.watchdog = nil }()
	select {
	case <-t.watchdogDone:
		return nil
	case <-time.After(3 * time.Second):
		_ = t.watchdog.Process.Kill()
		<-t.watchdogDone
		return errors.New("stopping the readahead watchdog: it did not exit; killed")
	}
}

// BlockState is a device's current time block.
type BlockState struct {
	Arm model.Arm // the block's arm
	// Cycles is how many cycles of blocks the device has begun: a cycle
	// holds exactly the mode's share (one holdout block in 20 in
	// RECOMMENDATION at 50 ‰, one control block in 2 in COLLABORATION),
	// so a measurement from the start of one cycle to the start of
	// another sees the share exactly.
	Cycles uint64
	// CycleBlocks is the blocks of the current cycle, Block one block's
	// length.
	CycleBlocks uint32
	Block       time.Duration
}

// Block returns device name's current time block; false if the model
// does not tune name.
func (t *Tuner) Block(name string) (BlockState, bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	for _, d := range t.devices {
		if d.Name == name {
			return BlockState{Arm: d.arm, Cycles: d.draws.cycles, CycleBlocks: max(cycleLen(d.draws.permille), 1), Block: t.cfg.Block}, true
		}
	}
	return BlockState{}, false
}
