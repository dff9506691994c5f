package synthetic

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"unsafe"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"

	"github.com/mlbpf/mlbpf/config"
	"github.com/mlbpf/mlbpf/loader"
	"github.com/mlbpf/mlbpf/model"
)

// Name is the subsystem's name, the first part of its pin path.
const Name = "synthetic"

// DefaultModulus is the synthetic default algorithm: value = key % 64.
const DefaultModulus = 64

// Record is one decision of the applier, as read from the ring buffer.
type Record = synthSynthRecord

// RecordSize is the size in bytes of a Record in the ring buffer.
const RecordSize = int(unsafe.Sizeof(Record{}))

// Config configures a synthetic model. The fields with a cfg tag are its
// section of the daemon's configuration ("synthetic:").
type Config struct {
	// PinRoot is the root of mlbpf's pins (default loader.DefaultPinRoot).
	PinRoot string
	// Model names the model (default "demo").
	Model string
	// MaxValue is the largest value the applier accepts from a
	// recommendation (default 1<<20); Recommend refuses larger ones and
	// the applier rejects them if written to the map by hand.
	MaxValue uint32 `cfg:"max_value"`
	// FilterTgid restricts the live hook to one process (0: every one
	// but ExcludeTgid). The hook is on every system call, so a host-wide
	// synthetic model costs every process a little: give a PID outside
	// demos.
	FilterTgid uint32 `cfg:"pid"`
	// PortionBytes caps a dataset portion (default 128 KiB): records
	// beyond it wait in the ring for the next period, or are lost.
	PortionBytes int `cfg:"portion_bytes"`
	// Adversarial makes the built-in learner recommend the worst value
	// for every key: a bad model, which the mode controller must never
	// promote (a test of the controller).
	Adversarial bool `cfg:"adversarial"`
	// ExcludeTgid makes the live hook ignore one thread group, the
	// daemon's own (0: none).
	ExcludeTgid uint32
	// Live attaches the applier to raw_syscalls:sys_enter on Start.
	Live bool
}

// Validate implements config.Section.
func (c *Config) Validate() error {
	if c.PortionBytes != 0 && c.PortionBytes < RecordSize {
		return config.Field("portion_bytes", "%d: want at least one record, %d bytes", c.PortionBytes, RecordSize)
	}
	return nil
}

func (c *Config) withDefaults() Config {
	out := *c
	if out.PinRoot == "" {
		out.PinRoot = loader.DefaultPinRoot
	}
	if out.Model == "" {
		out.Model = "demo"
	}
	if out.MaxValue == 0 {
		out.MaxValue = 1 << 20
	}
	return out
}

// Objects is a loaded, pinned synthetic model object. It implements
// model.ModelOps on top of model.GenericModelOps.
type Objects struct {
	model.GenericModelOps

	cfg     Config
	dir     string
	coll    *ebpf.Collection
	objs    synthObjects
	control *loader.ControlMap
	live    link.Link
}

// Open loads the synthetic objects and pins their maps under
// <PinRoot>/synthetic/<Model>/, adopting pins left by an earlier run.
func Open(cfg Config) (*Objects, error) {
	cfg = cfg.withDefaults()
	if err := loader.ValidName(cfg.Model); err != nil {
		return nil, fmt.Errorf("opening synthetic subsystem: %w", err)
	}
	spec, err := loadSynth()
	if err != nil {
		return nil, fmt.Errorf("opening synthetic subsystem: %w", err)
	}
	if err := spec.Variables["max_value"].Set(cfg.MaxValue); err != nil {
		return nil, fmt.Errorf("opening synthetic subsystem: %w", err)
	}
	if err := spec.Variables["filter_tgid"].Set(cfg.FilterTgid); err != nil {
		return nil, fmt.Errorf("opening synthetic subsystem: %w", err)
	}
	if err := spec.Variables["exclude_tgid"].Set(cfg.ExcludeTgid); err != nil {
		return nil, fmt.Errorf("opening synthetic subsystem: %w", err)
	}
	dir := loader.PinDir(cfg.PinRoot, Name, cfg.Model)
	coll, err := loader.LoadPinned(spec, dir)
	if err != nil {
		return nil, fmt.Errorf("opening synthetic subsystem: %w", err)
	}
	s := &Objects{cfg: cfg, dir: dir, coll: coll}
	if err := coll.Assign(&s.objs); err != nil {
		coll.Close()
		return nil, fmt.Errorf("opening synthetic subsystem: %w", err)
	}
	if s.control, err = loader.NewControlMap(s.objs.Control); err != nil {
		s.close()
		return nil, fmt.Errorf("opening synthetic subsystem: %w", err)
	}
	return s, nil
}

// Dir is the model's pin directory.
func (s *Objects) Dir() string { return s.dir }

// Control is the model's control block in the kernel.
func (s *Objects) Control() *loader.ControlMap { return s.control }

// Events is the model's ring buffer of Records.
func (s *Objects) Events() *ebpf.Map { return s.objs.Events }

// Lost is the model's per-CPU count of records the applier could not
// reserve.
func (s *Objects) Lost() *ebpf.Map { return s.objs.Lost }

// Program is the applier.
func (s *Objects) Program() *ebpf.Program { return s.objs.SynthApply }

// ArmCounts returns how many decisions took each arm.
func (s *Objects) ArmCounts() ([loader.ArmCount]uint64, error) {
	return loader.ArmCounts(s.objs.Stats)
}

// LostRecords returns how many records the applier could not reserve.
func (s *Objects) LostRecords() (uint64, error) {
	return loader.LostRecords(s.objs.Lost)
}

// Apply runs the applier once for key through BPF_PROG_TEST_RUN and
// returns the value it chose.
func (s *Objects) Apply(key uint32) (uint32, error) {
	args := [2]uint64{0, uint64(key)}
	v, err := s.objs.SynthApply.Run(&ebpf.RunOptions{Context: args[:]})
	if err != nil {
		return 0, fmt.Errorf("applying key %d: %w", key, err)
	}
	return v, nil
}

// ErrOutOfRange is returned for a recommendation above Config.MaxValue.
var ErrOutOfRange = errors.New("recommendation out of range")

// Recommend validates value and writes it as the recommendation for key.
func (s *Objects) Recommend(key, value uint32, generation uint32) error {
	if value > s.cfg.MaxValue {
		return fmt.Errorf("recommending %d for key %d: %w (max %d)", value, key, ErrOutOfRange, s.cfg.MaxValue)
	}
	rec := synthSynthRecommendation{Value: value, Generation: generation}
	if err := s.objs.Recommend.Update(key, &rec, ebpf.UpdateAny); err != nil {
		return fmt.Errorf("recommending %d for key %d: %w", value, key, err)
	}
	return nil
}

// ParseRecommendation parses a recommendation's key and value, both
// unsigned 32-bit integers ("5", "42"), and checks the value against
// Config.MaxValue.
func (s *Objects) ParseRecommendation(key, value string) (k, v uint32, err error) {
	return ParseRecommendation(key, value, s.cfg.MaxValue)
}

// ParseRecommendation parses a recommendation's key and value, unsigned
// 32-bit integers in decimal with spaces around allowed (" 007 " is 7),
// and checks the value is at most maxValue (0: the default, 1<<20).
// Errors wrap model.ErrInvalidRecommendation, and ErrOutOfRange for a
// value above maxValue.
func ParseRecommendation(key, value string, maxValue uint32) (k, v uint32, err error) {
	if maxValue == 0 {
		maxValue = (&Config{}).withDefaults().MaxValue
	}
	k64, err := strconv.ParseUint(strings.TrimSpace(key), 10, 32)
	if err != nil {
		return 0, 0, fmt.Errorf("%w: key %q: want an unsigned 32-bit integer", model.ErrInvalidRecommendation, key)
	}
	v64, err := strconv.ParseUint(strings.TrimSpace(value), 10, 32)
	if err != nil {
		return 0, 0, fmt.Errorf("%w: value %q: want an unsigned 32-bit integer", model.ErrInvalidRecommendation, value)
	}
	if uint32(v64) > maxValue {
		return 0, 0, fmt.Errorf("%w: value %d for key %d: %w (max %d)", model.ErrInvalidRecommendation, v64, k64, ErrOutOfRange, maxValue)
	}
	return uint32(k64), uint32(v64), nil
}

// PreprocessRecommendation implements model.ModelOps: Key is a request
// key and Value the value to answer it with, both unsigned 32-bit
// integers, Value at most Config.MaxValue. Both are normalized.
func (s *Objects) PreprocessRecommendation(m *model.Model, rec *model.Recommendation) error {
	if err := s.GenericModelOps.PreprocessRecommendation(m, rec); err != nil {
		return err
	}
	k, v, err := s.ParseRecommendation(rec.Key, rec.Value)
	if err != nil {
		return err
	}
	rec.Key, rec.Value = strconv.FormatUint(uint64(k), 10), strconv.FormatUint(uint64(v), 10)
	return nil
}

// ApplyRecommendation implements model.ModelOps: it writes a preprocessed
// recommendation into the recommendation map.
func (s *Objects) ApplyRecommendation(m *model.Model, rec model.Recommendation) error {
	k, v, err := s.ParseRecommendation(rec.Key, rec.Value)
	if err != nil {
		return err
	}
	return s.Recommend(k, v, rec.Generation)
}

// Forget removes the recommendation for key.
func (s *Objects) Forget(key uint32) error {
	if err := s.objs.Recommend.Delete(key); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
		return fmt.Errorf("forgetting key %d: %w", key, err)
	}
	return nil
}

// RecommendationMap is the raw recommendation map (tests write garbage
// into it by hand).
func (s *Objects) RecommendationMap() *ebpf.Map { return s.objs.Recommend }

// DecodeRecord decodes one ring buffer record, refusing anything that is
// not a synthetic record of the right size.
func DecodeRecord(b []byte, r *Record) error {
	if len(b) < RecordSize {
		return fmt.Errorf("decoding synthetic record: %d bytes, want %d", len(b), RecordSize)
	}
	r.Hdr.TsNs = binary.LittleEndian.Uint64(b[0:])
	r.Hdr.Kind = binary.LittleEndian.Uint16(b[8:])
	r.Hdr.Size = binary.LittleEndian.Uint16(b[10:])
	r.Hdr.Arm = b[12]
	r.Hdr.Mode = b[13]
	r.Hdr.Reserved = binary.LittleEndian.Uint16(b[14:])
	r.Hdr.Generation = binary.LittleEndian.Uint32(b[16:])
	r.Hdr.Cpu = binary.LittleEndian.Uint32(b[20:])
	r.Key = binary.LittleEndian.Uint32(b[24:])
	r.DefaultValue = binary.LittleEndian.Uint32(b[28:])
	r.Recommended = binary.LittleEndian.Uint32(b[32:])
	r.Applied = binary.LittleEndian.Uint32(b[36:])
	if r.Hdr.Kind != loader.RecordSynthetic || int(r.Hdr.Size) != RecordSize {
		return fmt.Errorf("decoding synthetic record: kind %d size %d, want kind %d size %d",
			r.Hdr.Kind, r.Hdr.Size, loader.RecordSynthetic, RecordSize)
	}
	if r.Hdr.Arm >= uint8(loader.ArmCount) {
		return fmt.Errorf("decoding synthetic record: arm %d out of range", r.Hdr.Arm)
	}
	return nil
}

// LinkPin is the pin name, beside the maps, of the live hook's link.
const LinkPin = "link"

// Start implements model.ModelOps: with Config.Live it attaches the
// applier to raw_syscalls:sys_enter and pins the link (LinkPin), so that
// the applier outlives the process: if the daemon dies, its lease, not
// its exit, returns the kernel to the default, and the records of what
// the kernel did meanwhile wait in the ring for the next daemon.
//
// A link an earlier process left pinned (it died without stopping the
// model) runs that process's program, with its settings (filter_tgid,
// exclude_tgid): it is detached first, then this program attached. In
// between no applier runs, which is the kernel's default; two appliers
// never run at once.
func (s *Objects) Start(m *model.Model, cfg model.RunConfig) error {
	if !s.cfg.Live || s.live != nil {
		return nil
	}
	pin := filepath.Join(s.dir, LinkPin)
	if err := detachPinned(pin); err != nil {
		return err
	}
	l, err := link.AttachRawTracepoint(link.RawTracepointOptions{Name: "sys_enter", Program: s.objs.SynthApply})
	if err != nil {
		return fmt.Errorf("attaching synth_apply to raw_syscalls:sys_enter: %w", err)
	}
	if err := l.Pin(pin); err != nil {
		l.Close()
		return fmt.Errorf("pinning the live hook's link: %w", err)
	}
	s.live = l
	return nil
}

// detachPinned detaches the link pinned at pin, if any, and removes the
// pin.
func detachPinned(pin string) error {
	l, err := link.LoadPinnedLink(pin, nil)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("adopting the live hook's link: %w (a stale or foreign pin? remove it with 'mlbpf rollback')", err)
	}
	defer l.Close()
	info, err := l.Info()
	if err != nil {
		return fmt.Errorf("reading the link pinned at %s: %w", pin, err)
	}
	if info.Type != link.RawTracepointType {
		return fmt.Errorf("%s is a %v link, not the live hook's raw tracepoint (a stale or foreign pin? remove it with 'mlbpf rollback')", pin, info.Type)
	}
	if err := l.Unpin(); err != nil {
		return fmt.Errorf("detaching the live hook left pinned at %s: %w", pin, err)
	}
	return nil
}

// Stop implements model.ModelOps: it detaches the live hook and removes
// its pin. The model is STOPPED, so the kernel's default would run
// anyway; detaching also spares every system call the hook's cost.
func (s *Objects) Stop(m *model.Model) error {
	if s.live == nil {
		return nil
	}
	err := s.live.Unpin()
	err = errors.Join(err, s.live.Close())
	s.live = nil
	if err != nil {
		return fmt.Errorf("detaching synth_apply: %w", err)
	}
	return nil
}

// Destroy implements model.ModelOps: it closes the objects and removes
// every pin of the model.
func (s *Objects) Destroy(m *model.Model) error {
	_ = s.Stop(m)
	s.close()
	return loader.RemovePins(s.dir)
}

// Close releases the objects and leaves the pins (the daemon's restart
// path adopts them). A live hook not stopped first stays attached by its
// pin, on the kernel's default once its lease runs out.
func (s *Objects) Close() error {
	if s.live != nil {
		_ = s.live.Close()
		s.live = nil
	}
	s.close()
	return nil
}

func (s *Objects) close() {
	s.objs.Close()
	if s.coll != nil {
		s.coll.Close()
		s.coll = nil
	}
}
