package model

import (
	"errors"
	"fmt"
	"math"
	"slices"
	"strings"
	"sync"
	"time"
)

// Operation is a state-changing operation of a Model.
type Operation uint32

// Operations, as named in the RFC (ml_model_create, ml_model_init, ...).
const (
	OpCreate Operation = iota
	OpInit
	OpReInit
	OpStart
	OpRenewLease
	OpStop
	OpDestroy
	OpSetMode
	// OperationCount is the number of operations.
	OperationCount
)

var opNames = [OperationCount]string{"create", "init", "re_init", "start", "renew_lease", "stop", "destroy", "set_mode"}

// verbs name operations in error messages: "<verb> tcp/cc: ...".
var opVerbs = [OperationCount]string{"creating", "initializing", "re-initializing", "starting",
	"renewing the lease of", "stopping", "destroying", "setting the mode of"}

// String returns the operation's name, "re_init" for example.
func (o Operation) String() string { return enumName(opNames[:], uint32(o), "Operation") }

func (o Operation) verb() string {
	if o < OperationCount {
		return opVerbs[o]
	}
	return "running " + o.String() + " on"
}

// transitions is the legal-transition table: transitions[from][op] is the
// state op leads to from state from, StateUnknown where op is illegal.
var transitions = [StateCount][OperationCount]State{
	StateUnknown: {
		OpCreate: StateCreated,
	},
	StateCreated: {
		OpInit:    StateInitialized,
		OpDestroy: StateShuttingDown,
	},
	StateInitialized: {
		OpReInit:  StateInitialized,
		OpStart:   StateStarted,
		OpSetMode: StateInitialized,
		OpDestroy: StateShuttingDown,
	},
	StateStarted: {
		OpRenewLease: StateRunning,
		OpStop:       StateStopped,
		OpSetMode:    StateStarted,
		OpDestroy:    StateShuttingDown,
	},
	StateRunning: {
		OpRenewLease: StateRunning,
		OpStop:       StateStopped,
		OpSetMode:    StateRunning,
		OpDestroy:    StateShuttingDown,
	},
	StateStopped: {
		OpReInit:  StateInitialized,
		OpStart:   StateStarted,
		OpSetMode: StateStopped,
		OpDestroy: StateShuttingDown,
	},
	StateShuttingDown: {},
}

// opTargets is where each operation leads when it is legal (StateUnknown
// for set_mode, which keeps the state).
var opTargets = [OperationCount]State{
	OpCreate: StateCreated, OpInit: StateInitialized, OpReInit: StateInitialized, OpStart: StateStarted,
	OpRenewLease: StateRunning, OpStop: StateStopped, OpDestroy: StateShuttingDown,
}

// NextState returns the state op leads to from state from, and whether op
// is legal there.
func NextState(from State, op Operation) (State, bool) {
	if from >= StateCount || op >= OperationCount {
		return StateUnknown, false
	}
	to := transitions[from][op]
	return to, to != StateUnknown
}

// TransitionError is returned for an operation that is illegal in the
// model's state. It wraps ErrIllegalTransition, and ErrDestroyed when the
// model is SHUTTING_DOWN.
type TransitionError struct {
	Model string // "subsystem/name"
	Op    Operation
	From  State
	// To is where Op leads when it is legal; StateUnknown for set_mode.
	To State
}

func (e *TransitionError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s %s: %v", e.Op.verb(), e.Model, ErrIllegalTransition)
	if e.To != StateUnknown {
		fmt.Fprintf(&b, " from %v to %v", e.From, e.To)
	} else {
		fmt.Fprintf(&b, ": %s not allowed in state %v", e.Op, e.From)
	}
	if e.From == StateShuttingDown {
		fmt.Fprintf(&b, ": %v", ErrDestroyed)
	}
	return b.String()
}

// Unwrap returns ErrIllegalTransition, and ErrDestroyed when the model is
// SHUTTING_DOWN.
func (e *TransitionError) Unwrap() []error {
	if e.From == StateShuttingDown {
		return []error{ErrIllegalTransition, ErrDestroyed}
	}
	return []error{ErrIllegalTransition}
}

// ModeChange records one change of a model's mode.
type ModeChange struct {
	From, To   Mode
	Reason     string
	Generation uint32 // control block generation that carries the new mode
	Time       time.Time
}

// modeHistoryLen bounds Model.ModeHistory.
const modeHistoryLen = 32

// Model is an ML model attached to a kernel subsystem (the RFC's struct
// ml_lib_model): its lifecycle state, its mode, its options, its current
// dataset and its operations. Every state-changing call writes the control
// block through the ControlStore, which is how the kernel learns about it.
//
// Lifecycle (see NextState for the full table):
//
//	Create → CREATED ─Init→ INITIALIZED ─Start→ STARTED ─RenewLease→ RUNNING
//	RUNNING, STARTED ─Stop→ STOPPED ─Start→ STARTED (or ─ReInit→ INITIALIZED)
//	any but SHUTTING_DOWN ─Destroy→ SHUTTING_DOWN
//
// A call that is illegal in the current state, or whose callback or
// control block write fails, changes nothing. Transitions that activate
// the model (init, start, lease renewal) run the ops callback first and
// then write the control block, so the kernel never sees a state the
// subsystem is not ready for; those that deactivate it (stop, destroy)
// write the control block first, so the kernel is back on its default
// before the subsystem tears anything down, and restore it if the callback
// fails.
//
// A Model is safe for concurrent use. The zero Model is UNKNOWN and every
// operation on it fails; use Create.
type Model struct {
	subsystem, name string
	ops             ModelOps
	stateOps        SubsystemStateOps
	dsOps           DatasetOps
	store           ControlStore

	// lifecycle serializes the operations that write the control block.
	lifecycle sync.Mutex

	mu         sync.RWMutex // guards the fields below; written with lifecycle held
	state      State
	control    Control // as last written
	raw        Options // as given to Init or ReInit
	opts       Options // in effect: raw, corrected by the run config, with defaults
	controller *Controller
	modeGen    uint32 // generation at which the current mode was entered
	history    []ModeChange

	dsMu     sync.Mutex // guards the dataset and serializes its operations
	dataset  *Dataset
	dsClosed bool
	// published is PublishData's notification, handed to the ops by
	// pointer: kept here rather than on the stack, where the interface
	// call would move it to the heap at every portion.
	published Notification
}

// CreateOption configures Create.
type CreateOption func(*Model)

// WithSubsystemStateOps sets the subsystem-state operations (default
// GenericSubsystemStateOps).
func WithSubsystemStateOps(ops SubsystemStateOps) CreateOption {
	return func(m *Model) { m.stateOps = ops }
}

// WithDatasetOps sets the dataset operations (default the zero
// GenericDatasetOps, an EMPTY dataset).
func WithDatasetOps(ops DatasetOps) CreateOption {
	return func(m *Model) { m.dsOps = ops }
}

// Create creates the model subsystem/name (ml_model_create): it calls
// ops.Create and writes the control block {state CREATED, mode EMERGENCY}
// with a generation after the one found in the store, so outcomes
// recorded before a restart are never taken for new ones. Names are pin
// directory components: letters, digits, '_', '-' and '.'. A nil ops
// means GenericModelOps.
func Create(subsystem, name string, ops ModelOps, store ControlStore, opts ...CreateOption) (*Model, error) {
	for _, n := range []struct{ what, v string }{{"subsystem", subsystem}, {"model", name}} {
		if err := checkName(n.v); err != nil {
			return nil, fmt.Errorf("creating %s/%s: %s name: %w", subsystem, name, n.what, err)
		}
	}
	if store == nil {
		return nil, fmt.Errorf("creating %s/%s: no control store", subsystem, name)
	}
	if ops == nil {
		ops = GenericModelOps{}
	}
	m := &Model{
		subsystem: subsystem, name: name, ops: ops, store: store,
		stateOps: GenericSubsystemStateOps{}, dsOps: GenericDatasetOps{},
	}
	for _, o := range opts {
		o(m)
	}
	if m.stateOps == nil || m.dsOps == nil {
		return nil, fmt.Errorf("creating %s: nil subsystem-state or dataset operations", m)
	}
	prev, err := store.LoadControl()
	if err != nil {
		return nil, fmt.Errorf("creating %s: loading control block: %w", m, err)
	}
	m.control = prev
	err = m.run(transition{
		op:     OpCreate,
		reason: "created",
		mutate: func(c *Control) {
			*c = Control{State: StateCreated, Mode: ModeEmergency, Generation: nextGeneration(prev.Generation)}
		},
		call: func() error { return ops.Create(m) },
	})
	if err != nil {
		return nil, err
	}
	return m, nil
}

func checkName(s string) error {
	switch {
	case s == "":
		return fmt.Errorf("%w: empty", ErrInvalidName)
	case s == "." || s == "..":
		return fmt.Errorf("%w: %q", ErrInvalidName, s)
	case len(s) > 64:
		return fmt.Errorf("%w: %q is longer than 64 bytes", ErrInvalidName, s)
	}
	for _, r := range s {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '_' || r == '-' || r == '.') {
			return fmt.Errorf("%w: %q has %q, want letters, digits, '_', '-' or '.'", ErrInvalidName, s, r)
		}
	}
	return nil
}

// transition describes one state-changing operation for run.
type transition struct {
	op     Operation
	reason string // recorded in the mode history when the mode changes
	// prepare checks the operation once it is known to be legal, with the
	// lifecycle lock held; skip means there is nothing to do.
	prepare func(from State, cur Control) (skip bool, err error)
	// mutate edits the next control block (a copy of the current one with
	// the target state).
	mutate func(c *Control)
	// call is the ops callback.
	call func() error
	// storeFirst writes the control block before the callback.
	storeFirst bool
	// commit updates in-memory fields beyond state and control; m.mu is
	// held.
	commit func()
}

func (m *Model) run(t transition) error {
	m.lifecycle.Lock()
	defer m.lifecycle.Unlock()

	m.mu.RLock()
	from, cur := m.state, m.control
	m.mu.RUnlock()

	to, ok := NextState(from, t.op)
	if !ok {
		target := StateUnknown
		if t.op < OperationCount {
			target = opTargets[t.op]
		}
		return &TransitionError{Model: m.String(), Op: t.op, From: from, To: target}
	}
	if t.prepare != nil {
		skip, err := t.prepare(from, cur)
		if err != nil {
			return fmt.Errorf("%s %s: %w", t.op.verb(), m, err)
		}
		if skip {
			return nil
		}
	}
	next := cur
	next.State = to
	if t.mutate != nil {
		t.mutate(&next)
	}
	if next.Generation == cur.Generation && !sameButLease(cur, next) {
		next.Generation = nextGeneration(cur.Generation)
	}
	if err := m.write(t, cur, next); err != nil {
		return fmt.Errorf("%s %s: %w", t.op.verb(), m, err)
	}

	m.mu.Lock()
	defer m.mu.Unlock()
	m.state, m.control = to, next
	if t.commit != nil {
		t.commit()
	}
	if next.Mode != cur.Mode || t.op == OpCreate {
		m.modeGen = next.Generation
		m.history = append(m.history, ModeChange{From: cur.Mode, To: next.Mode, Reason: t.reason, Generation: next.Generation, Time: time.Now()})
		if len(m.history) > modeHistoryLen {
			m.history = slices.Delete(m.history, 0, len(m.history)-modeHistoryLen)
		}
		if m.controller != nil {
			m.controller.Reset()
		}
	}
	return nil
}

// write runs the callback and stores the control block in the order the
// transition asks for, restoring the previous block if a callback fails
// after the store.
func (m *Model) write(t transition, cur, next Control) error {
	store := func() error {
		if err := m.store.StoreControl(next); err != nil {
			return fmt.Errorf("storing control block: %w", err)
		}
		return nil
	}
	call := func() error {
		if t.call == nil {
			return nil
		}
		return t.call()
	}
	if !t.storeFirst {
		if err := call(); err != nil {
			return err
		}
		return store()
	}
	if err := store(); err != nil {
		return err
	}
	if err := call(); err != nil {
		if rerr := m.store.StoreControl(cur); rerr != nil {
			return errors.Join(err, fmt.Errorf("restoring control block: %w", rerr))
		}
		return err
	}
	return nil
}

// Init initializes the model with opts (ml_model_init): CREATED →
// INITIALIZED, mode opts.InitialMode. It calls ops.Init with the options
// in effect (defaults applied).
func (m *Model) Init(opts Options) error {
	return m.initialize(OpInit, opts, "initialized", func(eff Options) error { return m.ops.Init(m, eff) })
}

// ReInit replaces the options (ml_model_re_init): INITIALIZED or STOPPED →
// INITIALIZED, mode the new opts.InitialMode, evidence reset. The options
// are validated first; on any error nothing changes.
func (m *Model) ReInit(opts Options) error {
	return m.initialize(OpReInit, opts, "re-initialized", func(eff Options) error { return m.ops.ReInit(m, eff) })
}

func (m *Model) initialize(op Operation, opts Options, reason string, call func(Options) error) error {
	if err := opts.Validate(); err != nil {
		return fmt.Errorf("%s %s: %w", op.verb(), m, err)
	}
	eff := opts.WithDefaults()
	return m.run(transition{
		op:     op,
		reason: reason,
		mutate: func(c *Control) {
			c.Mode = eff.InitialMode
			c.CollabPermille, c.HoldoutPermille = eff.CollabPermille, eff.HoldoutPermille
			c.LeaseExpiresNs = 0
		},
		call: func() error { return call(eff) },
		commit: func() {
			m.raw, m.opts = opts, eff
			next := NewController(eff.Controller)
			next.inheritBudget(m.controller)
			m.controller = next
		},
	})
}

// Start starts the model (ml_model_start): INITIALIZED or STOPPED →
// STARTED, with cfg correcting the options for this run. The kernel still
// runs its default until the first RenewLease.
func (m *Model) Start(cfg RunConfig) error {
	if err := cfg.Validate(); err != nil {
		return fmt.Errorf("%s %s: %w", OpStart.verb(), m, err)
	}
	var eff Options
	return m.run(transition{
		op: OpStart,
		prepare: func(State, Control) (bool, error) {
			raw := cfg.apply(m.raw)
			if err := raw.Validate(); err != nil {
				return false, err
			}
			eff = raw.WithDefaults()
			return false, nil
		},
		mutate: func(c *Control) { c.LeaseExpiresNs = 0 },
		call:   func() error { return m.ops.Start(m, cfg) },
		commit: func() { m.opts = eff },
	})
}

// RenewLease renews the lease (STARTED → RUNNING on the first renewal):
// the kernel follows the model until nowNs+Lease, nowNs being
// CLOCK_MONOTONIC as bpf_ktime_get_ns sees it. A plain renewal does not
// bump the generation. Renewing a lease that had already expired trips the
// mode controller: the kernel ran its default meanwhile, and the next
// CorrectSystemState goes to EMERGENCY.
func (m *Model) RenewLease(nowNs uint64) error {
	var lapsed bool
	var expired uint64
	return m.run(transition{
		op: OpRenewLease,
		prepare: func(from State, cur Control) (bool, error) {
			expired = cur.LeaseExpiresNs
			lapsed = from == StateRunning && expired != 0 && nowNs > expired
			return false, nil
		},
		mutate: func(c *Control) {
			lease := uint64(m.opts.Lease)
			if nowNs > math.MaxUint64-lease {
				c.LeaseExpiresNs = math.MaxUint64
			} else {
				c.LeaseExpiresNs = nowNs + lease
			}
		},
		commit: func() {
			if lapsed && m.controller != nil && m.control.Mode != ModeEmergency {
				m.controller.TripLeaseLost(expired, nowNs)
			}
		},
	})
}

// Stop stops the model (ml_model_stop): STARTED or RUNNING → STOPPED, the
// lease cleared; the kernel falls back to its default. Then ops.Stop is
// called.
func (m *Model) Stop() error {
	return m.run(transition{
		op:         OpStop,
		mutate:     func(c *Control) { c.LeaseExpiresNs = 0 },
		call:       func() error { return m.ops.Stop(m) },
		storeFirst: true,
	})
}

// Destroy destroys the model (ml_model_destroy): any state but
// SHUTTING_DOWN → SHUTTING_DOWN. The control block is written first, then
// ops.Destroy (which removes the pins) is called and the dataset is
// destroyed. A second Destroy returns an error wrapping ErrDestroyed.
func (m *Model) Destroy() error {
	return m.run(transition{
		op:         OpDestroy,
		mutate:     func(c *Control) { c.LeaseExpiresNs = 0 },
		storeFirst: true,
		call: func() error {
			if err := m.ops.Destroy(m); err != nil {
				return err
			}
			m.dsMu.Lock()
			defer m.dsMu.Unlock()
			if m.dataset != nil {
				if err := m.dsOps.Destroy(m, m.dataset); err != nil {
					return fmt.Errorf("destroying dataset: %w", err)
				}
			}
			m.dataset, m.dsClosed = nil, true
			return nil
		},
	})
}

// SetMode sets the mode, as an operator or a controller (the RFC's
// correct_system_state, by hand). It is legal from INITIALIZED to STOPPED.
// A mode above MaxMode returns ErrAboveMaxMode; EMERGENCY is always
// allowed. Setting the current mode again writes nothing. A change resets
// the controller's evidence.
func (m *Model) SetMode(mode Mode, reason string) error {
	return m.setMode(nil, mode, reason)
}

// ApplyDecision applies a controller decision: nothing when it does not
// change the mode, otherwise SetMode(d.To, d.Reason) provided the mode is
// still d.From (ErrModeChanged otherwise, for example when an operator
// set EMERGENCY meanwhile).
func (m *Model) ApplyDecision(d Decision) error {
	if !d.Changed {
		return nil
	}
	return m.setMode(&d.From, d.To, d.Reason)
}

func (m *Model) setMode(from *Mode, mode Mode, reason string) error {
	if !mode.Valid() {
		return fmt.Errorf("%s %s: %w: %v", OpSetMode.verb(), m, ErrInvalidMode, mode)
	}
	return m.run(transition{
		op:     OpSetMode,
		reason: reason,
		prepare: func(_ State, cur Control) (bool, error) {
			if from != nil && cur.Mode != *from {
				return false, fmt.Errorf("%w: decided %v → %v, but the mode is now %v", ErrModeChanged, *from, mode, cur.Mode)
			}
			if mode > m.opts.MaxMode {
				return false, fmt.Errorf("%w: %v is above %v", ErrAboveMaxMode, mode, m.opts.MaxMode)
			}
			return cur.Mode == mode, nil
		},
		mutate: func(c *Control) { c.Mode = mode },
	})
}

// AdoptGeneration tells the model that another writer (an operator's
// command) stored a control block of generation g: the model's next change
// of the block takes a generation after g, so that the generations the
// kernel sees never go back, and a generation never names two different
// blocks. A g not ahead of the model's own generation changes nothing;
// nothing is written.
func (m *Model) AdoptGeneration(g uint32) {
	m.lifecycle.Lock()
	defer m.lifecycle.Unlock()
	m.mu.Lock()
	defer m.mu.Unlock()
	if int32(g-m.control.Generation) > 0 {
		m.control.Generation = g
	}
}

// Trip makes the next CorrectSystemState go to EMERGENCY with reason (for
// example an external agent found dead). Before Init, the model is in
// EMERGENCY anyway and Trip does nothing.
func (m *Model) Trip(reason string) {
	if c := m.Controller(); c != nil {
		c.Trip(reason)
	}
}

// String returns "subsystem/name" ("model" for the zero Model).
func (m *Model) String() string {
	if m.subsystem == "" && m.name == "" {
		return "model"
	}
	return m.subsystem + "/" + m.name
}

// Subsystem returns the subsystem's name.
func (m *Model) Subsystem() string { return m.subsystem }

// Name returns the model's name.
func (m *Model) Name() string { return m.name }

// State returns the lifecycle state.
func (m *Model) State() State {
	m.mu.RLock()
	defer m.mu.RUnlock()
	return m.state
}

// Mode returns the mode.
func (m *Model) Mode() Mode {
	m.mu.RLock()
	defer m.mu.RUnlock()
	return m.control.Mode
}

// Options returns the options in effect: as given to Init or ReInit,
// corrected by the run config, with defaults applied.
func (m *Model) Options() Options {
	m.mu.RLock()
	defer m.mu.RUnlock()
	return m.opts
}

// Control returns the control block as last written.
func (m *Model) Control() Control {
	m.mu.RLock()
	defer m.mu.RUnlock()
	return m.control
}

// Controller returns the mode controller, nil before Init.
func (m *Model) Controller() *Controller {
	m.mu.RLock()
	defer m.mu.RUnlock()
	return m.controller
}

// ModeHistory returns the last mode changes, oldest first.
func (m *Model) ModeHistory() []ModeChange {
	m.mu.RLock()
	defer m.mu.RUnlock()
	return slices.Clone(m.history)
}

// Ops returns the model operations.
func (m *Model) Ops() ModelOps { return m.ops }

// SubsystemStateOps returns the subsystem-state operations.
func (m *Model) SubsystemStateOps() SubsystemStateOps { return m.stateOps }

// DatasetOps returns the dataset operations.
func (m *Model) DatasetOps() DatasetOps { return m.dsOps }

// Store returns the control store.
func (m *Model) Store() ControlStore { return m.store }

// staleFeedback reports whether fb is not evidence for the current mode.
func (m *Model) staleFeedback(fb Feedback) (string, bool) {
	m.mu.RLock()
	defer m.mu.RUnlock()
	if fb.Mode != m.control.Mode {
		return fmt.Sprintf("decided in %v, mode is %v", fb.Mode, m.control.Mode), true
	}
	if fb.Generation != 0 && int32(fb.Generation-m.modeGen) < 0 {
		return fmt.Sprintf("generation %d precedes %d, when %v was entered", fb.Generation, m.modeGen, m.control.Mode), true
	}
	return "", false
}
