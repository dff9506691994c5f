package loader

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"

	"github.com/cilium/ebpf"
)

// DefaultPinRoot is where every model's maps are pinned.
const DefaultPinRoot = "/sys/fs/bpf/mlbpf"

var nameRE = regexp.MustCompile(`^[a-z][a-z0-9_-]{0,31}$`)

// ValidName reports whether s may name a subsystem or a model: lower case
// letters, digits, '-' and '_', starting with a letter, at most 32 bytes.
func ValidName(s string) error {
	if !nameRE.MatchString(s) {
		return fmt.Errorf("invalid name %q: use 1-32 lower-case letters, digits, '-' or '_', starting with a letter", s)
	}
	return nil
}

// PinDir returns the pin directory of one model.
func PinDir(root, subsystem, model string) string {
	if root == "" {
		root = DefaultPinRoot
	}
	return filepath.Join(root, subsystem, model)
}

// LoadPinned loads spec with every map pinned by name under dir. Maps
// already pinned there (by an earlier run of the daemon) are adopted
// instead of created, so state survives a restart. A pin that does not
// match the spec (wrong type, size or flags) is an error saying how to
// clear it; nothing is removed behind the caller's back.
//
// The caller owns the returned collection; closing it leaves the pins.
func LoadPinned(spec *ebpf.CollectionSpec, dir string) (*ebpf.Collection, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("creating pin directory: %w (is bpffs mounted? mount -t bpf bpf /sys/fs/bpf)", err)
	}
	spec = spec.Copy()
	for _, m := range spec.Maps {
		if m.Name == "" || m.Name[0] == '.' {
			continue // .rodata, .bss: per load, never pinned
		}
		m.Pinning = ebpf.PinByName
	}
	coll, err := loadPinnedRacing(spec, dir)
	if errors.Is(err, ebpf.ErrMapIncompatible) {
		return nil, fmt.Errorf("loading objects: a map pinned under %s does not match this version of mlbpf: %w (remove it with 'mlbpf rollback' or 'rm -r %s')", dir, err, dir)
	}
	if err != nil {
		return nil, fmt.Errorf("loading objects: %w", explain(err))
	}
	return coll, nil
}

// loadPinnedRacing loads spec pinned under dir while other loaders (a
// daemon starting, an operator's command with no daemon to talk to yet)
// may be loading it too. cilium/ebpf adopts a pin it finds and pins a map
// it creates; a map pinned by another loader between the two makes the
// pin fail with EEXIST. The map the loser created is discarded with its
// collection, and the next attempt adopts the winner's pin. Each lost
// race means another loader pinned one more of the spec's maps, so a
// load loses at most once per map.
func loadPinnedRacing(spec *ebpf.CollectionSpec, dir string) (*ebpf.Collection, error) {
	var err error
	for range len(spec.Maps) + 1 {
		var coll *ebpf.Collection
		coll, err = ebpf.NewCollectionWithOptions(spec, ebpf.CollectionOptions{
			Maps: ebpf.MapOptions{PinPath: dir},
		})
		if !errors.Is(err, fs.ErrExist) {
			return coll, err
		}
	}
	return nil, err
}

// RemovePins unpins every object under dir and removes dir, then its
// parent (the subsystem directory) and the pin root if they are left
// empty. Removing a directory that does not exist is not an error.
func RemovePins(dir string) error {
	entries, err := os.ReadDir(dir)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("removing pins: %w", err)
	}
	for _, e := range entries {
		if err := os.RemoveAll(filepath.Join(dir, e.Name())); err != nil {
			return fmt.Errorf("removing pin: %w", err)
		}
	}
	if err := os.Remove(dir); err != nil {
		return fmt.Errorf("removing pin directory: %w", err)
	}
	// Best effort: the parents may hold other models.
	parent := filepath.Dir(dir)
	if os.Remove(parent) == nil {
		_ = os.Remove(filepath.Dir(parent))
	}
	return nil
}

// Pins lists the pinned objects under dir by name.
func Pins(dir string) ([]string, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	names := make([]string, 0, len(entries))
	for _, e := range entries {
		names = append(names, e.Name())
	}
	return names, nil
}
