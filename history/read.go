package history

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
)

// ErrNoHistory is returned by Read when a model has no history yet.
var ErrNoHistory = errors.New("no history yet")

// History is what a model's history directory holds.
type History struct {
	// Model is the model's "subsystem/model", as its segments say.
	Model string
	// Periods are the periods kept, oldest first.
	Periods []Period
	// Keys is the latest key snapshot, nil when there is none.
	Keys *Keys
	// Damaged lists the segments that were skipped, or read only up to
	// the damage, with what is wrong.
	Damaged []string
}

// Read reads the history in dir, for model ("" accepts any). It leaves
// the directory as it is (a daemon may be writing it): a damaged segment
// is skipped, or read up to the damage, and named in Damaged. It returns
// ErrNoHistory when dir holds no period.
func Read(dir, model string) (*History, error) {
	if _, err := os.Stat(dir); err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, fmt.Errorf("reading the history in %s: %w", dir, ErrNoHistory)
		}
		return nil, fmt.Errorf("reading the history: %w", err)
	}
	h := &History{Model: model}
	for _, s := range segments(dir) {
		ps, err := readSegment(s.path, model)
		if errors.Is(err, fs.ErrNotExist) {
			continue // removed by the daemon meanwhile, the oldest first
		}
		if err != nil {
			h.Damaged = append(h.Damaged, fmt.Sprintf("%s: %v", s.path, err))
		}
		h.Periods = append(h.Periods, ps...)
		if h.Model == "" && len(ps) > 0 {
			h.Model = modelOf(s.path)
		}
	}
	if b, err := os.ReadFile(filepath.Join(dir, keysFile)); err == nil {
		var k Keys
		if err := json.Unmarshal(b, &k); err != nil {
			h.Damaged = append(h.Damaged, fmt.Sprintf("%s: %v", filepath.Join(dir, keysFile), err))
		} else {
			h.Keys = &k
		}
	}
	if len(h.Periods) == 0 {
		return h, fmt.Errorf("reading the history in %s: %w", dir, ErrNoHistory)
	}
	return h, nil
}

// modelOf returns the model a segment's header names.
func modelOf(path string) string {
	f, err := os.Open(path)
	if err != nil {
		return ""
	}
	defer f.Close()
	var h header
	if json.NewDecoder(f).Decode(&h) != nil {
		return ""
	}
	return h.Model
}
