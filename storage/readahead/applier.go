package readahead

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"

	"github.com/mlbpf/mlbpf/internal/atomicfile"
)

// sysBlock is where the kernel lists block devices.
var sysBlock = "/sys/class/block"

// Device is one block device the model may tune.
type Device struct {
	// Name is the device's name under /sys/class/block ("sda", "loop0").
	Name string
	// Dev is major << 20 | minor, as the tracepoints encode it.
	Dev uint32
	// Path is the read_ahead_kb file: the whole disk's, for a partition.
	Path string
}

// LookupDevice finds the block device called name ("loop0", or
// "/dev/loop0").
func LookupDevice(name string) (Device, error) {
	name = strings.TrimPrefix(name, "/dev/")
	if name == "" || strings.Contains(name, "/") || name == "." || name == ".." {
		return Device{}, fmt.Errorf("looking up block device %q: give a name from /sys/class/block, e.g. sda", name)
	}
	dir := filepath.Join(sysBlock, name)
	b, err := os.ReadFile(filepath.Join(dir, "dev"))
	if err != nil {
		return Device{}, fmt.Errorf("looking up block device %q: %w (list them with lsblk)", name, err)
	}
	var major, minor uint32
	if _, err := fmt.Sscanf(strings.TrimSpace(string(b)), "%d:%d", &major, &minor); err != nil {
		return Device{}, fmt.Errorf("looking up block device %q: reading its number: %w", name, err)
	}
	queue := filepath.Join(dir, "queue")
	if _, err := os.Stat(filepath.Join(dir, "partition")); err == nil {
		queue = filepath.Join(dir, "..", "queue") // a partition reads ahead as its disk
	}
	return Device{Name: name, Dev: major<<20 | minor, Path: filepath.Join(queue, "read_ahead_kb")}, nil
}

// ReadKB reads the device's read_ahead_kb from the kernel.
func (d Device) ReadKB() (uint32, error) {
	b, err := os.ReadFile(d.Path)
	if err != nil {
		return 0, fmt.Errorf("reading %s: %w", d.Path, err)
	}
	v, err := strconv.ParseUint(strings.TrimSpace(string(b)), 10, 32)
	if err != nil {
		return 0, fmt.Errorf("reading %s: %w", d.Path, err)
	}
	return uint32(v), nil
}

// WriteKB sets the device's read_ahead_kb.
func (d Device) WriteKB(kb uint32) error {
	if err := os.WriteFile(d.Path, []byte(strconv.FormatUint(uint64(kb), 10)), 0); err != nil {
		return fmt.Errorf("writing %d to %s: %w", kb, d.Path, err)
	}
	return nil
}

// ErrBackedOff is returned by Set for a device whose readahead someone
// else changed while the model ran: the model leaves it alone.
var ErrBackedOff = errors.New("read_ahead_kb was changed by someone else: the model backs off this device")

// changed is one device's entry in the state file.
type changed struct {
	Device   string `json:"device"`
	Path     string `json:"path"`
	Original uint32 `json:"original_kb"`
	// Set is what the model last wrote; a value other than Set or
	// Original in the kernel was written by someone else.
	Set uint32 `json:"set_kb"`
}

// stateFile is the applier's record of every device it changed.
const stateFile = "readahead-originals.json"

// Applier sets devices' readahead and puts it back. The original value of
// each device is written to the state directory before the first change,
// so that a restarted daemon, `mlbpf rollback` or the watchdog can
// restore it even if this process is killed.
type Applier struct {
	path string

	mu        sync.Mutex
	changed   map[string]changed
	backedOff map[string]uint32 // device → the value someone else wrote
	logf      func(format string, args ...any)
}

// NewApplier returns an applier keeping its record in stateDir. Devices a
// previous run left changed are restored first (see Restore).
func NewApplier(stateDir string, logf func(string, ...any)) (*Applier, error) {
	if logf == nil {
		logf = func(string, ...any) {}
	}
	if err := os.MkdirAll(stateDir, 0o700); err != nil {
		return nil, fmt.Errorf("creating the state directory: %w", err)
	}
	a := &Applier{path: filepath.Join(stateDir, stateFile), changed: map[string]changed{}, backedOff: map[string]uint32{}, logf: logf}
	restored, err := Restore(stateDir)
	for _, r := range restored {
		logf("readahead: %s", r)
	}
	if err != nil {
		return nil, err
	}
	return a, nil
}

// Set writes kb to the device's read_ahead_kb, recording its original
// value first. If someone else changed the value since the model last
// set it, Set changes nothing, backs off the device for good and returns
// ErrBackedOff.
func (a *Applier) Set(d Device, kb uint32) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	if v, ok := a.backedOff[d.Name]; ok {
		return fmt.Errorf("setting readahead of %s: %w (it holds %d KB)", d.Name, ErrBackedOff, v)
	}
	cur, err := d.ReadKB()
	if err != nil {
		return err
	}
	c, ok := a.changed[d.Name]
	if !ok {
		c = changed{Device: d.Name, Path: d.Path, Original: cur, Set: cur}
	}
	if cur != c.Set && cur != c.Original {
		a.backOff(d, cur, c.Set)
		return fmt.Errorf("setting readahead of %s: %w (it holds %d KB)", d.Name, ErrBackedOff, cur)
	}
	if cur == kb && !ok {
		return nil // nothing to change, nothing to record
	}
	// Record the original, and the value about to be written, first.
	c.Set = kb
	a.changed[d.Name] = c
	if err := a.save(); err != nil {
		return err
	}
	return d.WriteKB(kb)
}

// BackOff leaves d alone for good: someone else set it to cur while the
// model believed it held expected.
func (a *Applier) BackOff(d Device, cur, expected uint32) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.backOff(d, cur, expected)
}

func (a *Applier) backOff(d Device, cur, expected uint32) {
	a.backedOff[d.Name] = cur
	delete(a.changed, d.Name)
	a.logf("readahead: %s: read_ahead_kb is %d, the model expected %d: someone else changed it; backing off this device and leaving %d", d.Name, cur, expected, cur)
	_ = a.save()
}

// BackedOff returns the devices the model backed off, with the value
// someone else wrote.
func (a *Applier) BackedOff() map[string]uint32 {
	a.mu.Lock()
	defer a.mu.Unlock()
	out := make(map[string]uint32, len(a.backedOff))
	for k, v := range a.backedOff {
		out[k] = v
	}
	return out
}

// Original returns the value of d before the model changed it, and
// whether it changed it.
func (a *Applier) Original(d Device) (uint32, bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	c, ok := a.changed[d.Name]
	return c.Original, ok
}

// RestoreAll puts every device the model changed back to its original
// value, except those someone else changed meanwhile, and forgets them.
func (a *Applier) RestoreAll() error {
	a.mu.Lock()
	defer a.mu.Unlock()
	var errs []error
	for name, c := range a.changed {
		msg, err := restoreOne(c)
		if msg != "" {
			a.logf("readahead: %s", msg)
		}
		if err != nil {
			errs = append(errs, err)
			continue
		}
		delete(a.changed, name)
	}
	errs = append(errs, a.save())
	return errors.Join(errs...)
}

func (a *Applier) save() error {
	list := make([]changed, 0, len(a.changed))
	for _, c := range a.changed {
		list = append(list, c)
	}
	sort.Slice(list, func(i, j int) bool { return list[i].Device < list[j].Device })
	return writeState(a.path, list)
}

func writeState(path string, list []changed) error {
	if len(list) == 0 {
		if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("clearing the readahead record: %w", err)
		}
		return nil
	}
	data, err := json.MarshalIndent(list, "", "  ")
	if err != nil {
		return fmt.Errorf("saving the readahead record: %w", err)
	}
	if err := atomicfile.Write(path, append(data, '\n'), 0o600); err != nil {
		return fmt.Errorf("saving the readahead record: %w", err)
	}
	return nil
}

// restoreOne puts one device back, unless someone else changed it.
func restoreOne(c changed) (string, error) {
	d := Device{Name: c.Device, Path: c.Path}
	cur, err := d.ReadKB()
	if errors.Is(err, os.ErrNotExist) || errors.Is(err, syscall.ENODEV) {
		return fmt.Sprintf("%s is gone: nothing to restore", c.Device), nil
	}
	if err != nil {
		return "", err
	}
	switch cur {
	case c.Original:
		return "", nil
	case c.Set:
		if err := d.WriteKB(c.Original); err != nil {
			return "", err
		}
		return fmt.Sprintf("%s: read_ahead_kb restored from %d to its original %d", c.Device, cur, c.Original), nil
	default:
		return fmt.Sprintf("%s: read_ahead_kb is %d, neither the model's %d nor the original %d: someone else set it; left alone", c.Device, cur, c.Set, c.Original), nil
	}
}

// Restore puts back every device recorded in stateDir by an applier that
// is gone (a killed daemon), then clears the record. It returns what it
// did, one line per device. A missing record is not an error.
func Restore(stateDir string) ([]string, error) {
	path := filepath.Join(stateDir, stateFile)
	data, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("reading the readahead record: %w", err)
	}
	var list []changed
	if err := json.Unmarshal(data, &list); err != nil {
		return nil, fmt.Errorf("reading the readahead record %s: %w (restore read_ahead_kb by hand, then remove it)", path, err)
	}
	var msgs []string
	var left []changed
	var errs []error
	for _, c := range list {
		msg, err := restoreOne(c)
		if msg != "" {
			msgs = append(msgs, msg)
		}
		if err != nil {
			errs = append(errs, err)
			left = append(left, c)
		}
	}
	errs = append(errs, writeState(path, left))
	return msgs, errors.Join(errs...)
}

// RestoreCommands returns the shell commands that put back what the
// record in stateDir says the model changed, for an operator.
func RestoreCommands(stateDir string) ([]string, error) {
	data, err := os.ReadFile(filepath.Join(stateDir, stateFile))
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var list []changed
	if err := json.Unmarshal(data, &list); err != nil {
		return nil, err
	}
	var out []string
	for _, c := range list {
		out = append(out, fmt.Sprintf("echo %d > %s", c.Original, c.Path))
	}
	return out, nil
}
