package rto

import (
	"errors"
	"fmt"
	"net/netip"
	"path/filepath"
	"slices"
	"sync"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"

	"github.com/mlbpf/mlbpf/loader"
	"github.com/mlbpf/mlbpf/model"
)

// Subsystem and model names: the model is "tcp/rto", pinned under
// <PinRoot>/tcp/rto/, beside tcp/cc's <PinRoot>/tcp/cc/.
const (
	SubsystemName = "tcp"
	ModelName     = "rto"
	ModelPath     = SubsystemName + "/" + ModelName
)

const linkPin = "link"

// Config configures the tcp/rto objects.
type Config struct {
	// PinRoot is the root of mlbpf's pins (default loader.DefaultPinRoot).
	PinRoot string
	// Cgroup is the cgroup v2 directory the program is attached to
	// (default: the root of the cgroup v2 mount, the whole host).
	Cgroup string
	// MinBytes: connections that sent less end without a record.
	MinBytes uint64
}

// Objects are the loaded, pinned tcp/rto program and maps, and the model's
// operations on them (ops.go).
type Objects struct {
	model.GenericModelOps

	cfg     Config
	dir     string
	coll    *ebpf.Collection
	objs    tcprtoObjects
	control *loader.ControlMap
	hz      int
	// learner, when the objects run on the period loop, sets the mode
	// (EstimateSystemState) unless external (an agent recommends); its
	// state is saved at statePath on Stop.
	learner   *Learner
	statePath string
	external  bool

	mu   sync.Mutex
	link link.Link
}

// Open loads the tcp/rto objects, pinning the maps under
// <PinRoot>/tcp/rto/ (adopting the pins of an earlier run). Attach
// attaches the program.
func Open(cfg Config) (*Objects, error) {
	const verb = "opening " + ModelPath
	if cfg.PinRoot == "" {
		cfg.PinRoot = loader.DefaultPinRoot
	}
	if cfg.Cgroup == "" {
		root, err := loader.Cgroup2Root()
		if err != nil {
			return nil, fmt.Errorf("%s: %w", verb, err)
		}
		cfg.Cgroup = root
	}
	spec, err := loadTcprto()
	if err != nil {
		return nil, fmt.Errorf("%s: %w", verb, err)
	}
	if err := spec.Variables["record_min_bytes"].Set(cfg.MinBytes); err != nil {
		return nil, fmt.Errorf("%s: setting record_min_bytes: %w", verb, err)
	}
	dir := loader.PinDir(cfg.PinRoot, SubsystemName, ModelName)
	coll, err := loader.LoadPinned(spec, dir)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", verb, err)
	}
	o := &Objects{cfg: cfg, dir: dir, coll: coll, hz: KernelHZ()}
	if err := coll.Assign(&o.objs); err != nil {
		o.Close()
		return nil, fmt.Errorf("%s: %w", verb, err)
	}
	if o.control, err = loader.NewControlMap(o.objs.Control); err != nil {
		o.Close()
		return nil, fmt.Errorf("%s: %w", verb, err)
	}
	return o, nil
}

// Dir is the pin directory.
func (o *Objects) Dir() string { return o.dir }

// Control is the model's control block, a model.ControlStore.
func (o *Objects) Control() *loader.ControlMap { return o.control }

// Program is the sock_ops program.
func (o *Objects) Program() *ebpf.Program { return o.objs.TcpRtoSockops }

// Learner is the learner of the model's loop (Subsystem's Open), nil
// for objects opened without one.
func (o *Objects) Learner() *Learner { return o.learner }

// Events is the ring buffer of outcome records.
func (o *Objects) Events() *ebpf.Map { return o.objs.Events }

// HZ is the kernel tick rate settings are validated against (0: unknown,
// validated as 250).
func (o *Objects) HZ() int { return o.hz }

// ArmCounts returns how many connections took each arm.
func (o *Objects) ArmCounts() ([loader.ArmCount]uint64, error) {
	return loader.ArmCounts(o.objs.Stats)
}

// LostRecords returns how many records the program could not reserve.
func (o *Objects) LostRecords() (uint64, error) { return loader.LostRecords(o.objs.Lost) }

// Attach attaches the program to the configured cgroup and pins the link,
// or adopts the link an earlier run pinned for the same cgroup.
func (o *Objects) Attach() error {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.link != nil {
		return nil
	}
	l, err := loader.AttachSockOps(o.cfg.Cgroup, filepath.Join(o.dir, linkPin), o.objs.TcpRtoSockops)
	if err != nil {
		return fmt.Errorf("attaching %s: %w", ModelPath, err)
	}
	o.link = l
	return nil
}

// Detach detaches the program and removes its pin; the maps stay.
func (o *Objects) Detach() error {
	o.mu.Lock()
	defer o.mu.Unlock()
	err := loader.DetachPinned(o.link, filepath.Join(o.dir, linkPin))
	o.link = nil
	return err
}

// Close releases the objects and leaves the pins.
func (o *Objects) Close() error {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.link != nil {
		_ = o.link.Close()
		o.link = nil
	}
	if o.coll != nil {
		// Assign moved the program and maps out of the collection.
		_ = o.objs.Close()
		o.coll.Close()
		o.coll = nil
	}
	return nil
}

// Remove detaches the program and removes every pin (rollback).
func (o *Objects) Remove() error {
	err := o.Detach()
	o.Close()
	return errors.Join(err, loader.RemovePins(o.dir))
}

// Recommendation is one entry of the recommendation map: the candidate
// settings for a prefix (one once chosen).
type Recommendation struct {
	Prefix     netip.Prefix `json:"prefix"`
	Settings   []Setting    `json:"settings"`
	Operator   bool         `json:"operator"`
	Generation uint32       `json:"generation"`
}

// MaxCandidates is how many settings one recommendation may hold.
const MaxCandidates = 4

func keyOf(p netip.Prefix) tcprtoMlbpfPeerKey {
	p = p.Masked()
	k := tcprtoMlbpfPeerKey{Prefixlen: uint32(p.Bits())}
	a := p.Addr()
	if a.Is4() {
		k.Prefixlen += 96
	}
	k.Addr = a.As16()
	return k
}

func prefixOf(k tcprtoMlbpfPeerKey) netip.Prefix {
	a := netip.AddrFrom16(k.Addr)
	bits := int(k.Prefixlen)
	if a.Is4In6() && bits >= 96 {
		return netip.PrefixFrom(a.Unmap(), bits-96).Masked()
	}
	return netip.PrefixFrom(a, bits).Masked()
}

// Validate checks a recommendation's settings against the kernel (see
// Setting.Validate).
func (o *Objects) Validate(settings []Setting) error {
	if len(settings) == 0 || len(settings) > MaxCandidates {
		return fmt.Errorf("%w: %d settings, want 1 to %d", model.ErrInvalidRecommendation, len(settings), MaxCandidates)
	}
	for _, s := range settings {
		if err := s.Validate(o.hz); err != nil {
			return fmt.Errorf("%w: %w", model.ErrInvalidRecommendation, err)
		}
	}
	return nil
}

// Recommend writes an operator's setting for a prefix, after validating
// it: the learner never overwrites or withdraws it.
func (o *Objects) Recommend(p netip.Prefix, s Setting) error {
	if err := o.Validate([]Setting{s}); err != nil {
		return fmt.Errorf("recommending %s for %s: %w", s, p, err)
	}
	return o.write(p, []Setting{s}, true)
}

// Write stores candidate settings for p as the learner does (an
// operator's entry is left alone), after validating them.
func (o *Objects) Write(p netip.Prefix, settings []Setting) error {
	if err := o.Validate(settings); err != nil {
		return fmt.Errorf("writing %v for %s: %w", settings, p, err)
	}
	return o.write(p, settings, false)
}

// write stores settings for p. A learner's write (operator false) leaves
// an operator's entry alone.
func (o *Objects) write(p netip.Prefix, settings []Setting, operator bool) error {
	k := keyOf(p)
	var cur tcprtoTcpRtoValue
	if !operator {
		if err := o.objs.Recommend.Lookup(&k, &cur); err == nil && cur.Flags&uint32(tcprtoTcpRtoValueFlagsTCP_RTO_VALUE_OPERATOR) != 0 {
			return nil
		}
	}
	v := tcprtoTcpRtoValue{N: uint32(len(settings)), Generation: o.generation()}
	copy(v.Cand[:], settings)
	if operator {
		v.Flags = uint32(tcprtoTcpRtoValueFlagsTCP_RTO_VALUE_OPERATOR)
	}
	if err := o.objs.Recommend.Update(&k, &v, ebpf.UpdateAny); err != nil {
		return fmt.Errorf("writing the %s recommendation for %s: %w", ModelPath, p, err)
	}
	return nil
}

// writeRaw stores a value without validation: tests use it to check that
// the program refuses what the kernel would.
func (o *Objects) writeRaw(p netip.Prefix, settings []Setting) error {
	v := tcprtoTcpRtoValue{N: uint32(len(settings))}
	copy(v.Cand[:], settings)
	k := keyOf(p)
	return o.objs.Recommend.Update(&k, &v, ebpf.UpdateAny)
}

// Withdraw removes the recommendation for p, whoever wrote it.
func (o *Objects) Withdraw(p netip.Prefix) error { return o.remove(p, true) }

func (o *Objects) remove(p netip.Prefix, operator bool) error {
	k := keyOf(p)
	if !operator {
		var cur tcprtoTcpRtoValue
		if err := o.objs.Recommend.Lookup(&k, &cur); err == nil && cur.Flags&uint32(tcprtoTcpRtoValueFlagsTCP_RTO_VALUE_OPERATOR) != 0 {
			return nil
		}
	}
	if err := o.objs.Recommend.Delete(&k); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
		return fmt.Errorf("withdrawing the %s recommendation for %s: %w", ModelPath, p, err)
	}
	return nil
}

// Recommendations lists the map's entries by prefix.
func (o *Objects) Recommendations() ([]Recommendation, error) {
	var out []Recommendation
	var k tcprtoMlbpfPeerKey
	var v tcprtoTcpRtoValue
	it := o.objs.Recommend.Iterate()
	for it.Next(&k, &v) {
		n := min(int(v.N), MaxCandidates)
		out = append(out, Recommendation{
			Prefix: prefixOf(k), Settings: slices.Clone(v.Cand[:n]),
			Operator:   v.Flags&uint32(tcprtoTcpRtoValueFlagsTCP_RTO_VALUE_OPERATOR) != 0,
			Generation: v.Generation,
		})
	}
	if err := it.Err(); err != nil {
		return nil, fmt.Errorf("reading %s recommendations: %w", ModelPath, err)
	}
	slices.SortFunc(out, func(a, b Recommendation) int { return a.Prefix.Addr().Compare(b.Prefix.Addr()) })
	return out, nil
}

func (o *Objects) generation() uint32 {
	c, err := o.control.LoadControl()
	if err != nil {
		return 0
	}
	return c.Generation
}

func mustPrefix(s string) netip.Prefix {
	p, _ := netip.ParsePrefix(s)
	return p
}
