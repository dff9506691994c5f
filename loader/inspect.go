package loader

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"

	"github.com/cilium/ebpf"
)

// PinnedModel is what the pins of one model say, read without loading any
// program: the daemon need not run.
type PinnedModel struct {
	Subsystem string
	Model     string
	Dir       string
	Control   Control
	Arms      [ArmCount]uint64
	Lost      uint64
}

// ListPinned returns every model pinned under root, sorted by
// subsystem/model. A directory whose pins cannot be read is reported in
// the error and skipped, so one broken model does not hide the others.
func ListPinned(root string) ([]PinnedModel, error) {
	if root == "" {
		root = DefaultPinRoot
	}
	subs, err := os.ReadDir(root)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("listing models: %w", err)
	}
	var out []PinnedModel
	var errs []error
	for _, s := range subs {
		if !s.IsDir() {
			continue
		}
		models, err := os.ReadDir(filepath.Join(root, s.Name()))
		if err != nil {
			errs = append(errs, err)
			continue
		}
		for _, m := range models {
			if !m.IsDir() {
				continue
			}
			pm, err := ReadPinned(root, s.Name(), m.Name())
			if err != nil {
				errs = append(errs, err)
				continue
			}
			out = append(out, pm)
		}
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Subsystem != out[j].Subsystem {
			return out[i].Subsystem < out[j].Subsystem
		}
		return out[i].Model < out[j].Model
	})
	return out, errors.Join(errs...)
}

// ReadPinned reads one model's control block, arm counts and losses from
// its pins.
func ReadPinned(root, subsystem, model string) (PinnedModel, error) {
	dir := PinDir(root, subsystem, model)
	pm := PinnedModel{Subsystem: subsystem, Model: model, Dir: dir}
	ro := &ebpf.LoadPinOptions{ReadOnly: true}

	cm, err := ebpf.LoadPinnedMap(filepath.Join(dir, "control"), ro)
	if errors.Is(err, fs.ErrNotExist) {
		return pm, fmt.Errorf("reading %s/%s: %s has no control block yet: a daemon starting now is creating it (try again in a moment); if none runs, 'mlbpf rollback' removes the rest: %w", subsystem, model, dir, err)
	}
	if err != nil {
		return pm, fmt.Errorf("reading %s/%s: %w", subsystem, model, err)
	}
	defer cm.Close()
	ctl, err := NewControlMap(cm)
	if err != nil {
		return pm, fmt.Errorf("reading %s/%s: %w", subsystem, model, err)
	}
	if pm.Control, err = ctl.Raw(); err != nil {
		return pm, fmt.Errorf("reading %s/%s: %w", subsystem, model, err)
	}

	sm, err := ebpf.LoadPinnedMap(filepath.Join(dir, "stats"), ro)
	if err != nil {
		return pm, fmt.Errorf("reading %s/%s: %w", subsystem, model, err)
	}
	defer sm.Close()
	if pm.Arms, err = ArmCounts(sm); err != nil {
		return pm, fmt.Errorf("reading %s/%s: %w", subsystem, model, err)
	}

	lm, err := ebpf.LoadPinnedMap(filepath.Join(dir, "lost"), ro)
	if err != nil {
		return pm, fmt.Errorf("reading %s/%s: %w", subsystem, model, err)
	}
	defer lm.Close()
	if pm.Lost, err = LostRecords(lm); err != nil {
		return pm, fmt.Errorf("reading %s/%s: %w", subsystem, model, err)
	}
	return pm, nil
}
