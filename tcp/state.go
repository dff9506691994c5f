package tcp

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"time"

	"github.com/mlbpf/mlbpf/learner"
)

// stateVersion is bumped when the state file's meaning changes; a file of
// another version is ignored (and replaced at the next save).
const stateVersion = 1

// StateFile is the learner's state file name under Config.StateDir.
const StateFile = "tcp-cc.json"

type learnerState struct {
	Version      int                          `json:"version"`
	SavedAt      time.Time                    `json:"saved_at"`
	Default      string                       `json:"default"`
	Destinations map[string]*Destination      `json:"destinations"`
	Calibration  map[string]*learner.Estimate `json:"calibration"`
}

// Save writes the learner's state to path atomically: a temporary file in
// the same directory, synced, then renamed over path.
func (l *Learner) Save(path string) error {
	l.mu.Lock()
	st := learnerState{
		Version: stateVersion, SavedAt: time.Now().UTC(), Default: l.dflt,
		Destinations: make(map[string]*Destination, len(l.dests)),
		Calibration:  l.calib,
	}
	for p, d := range l.dests {
		st.Destinations[p.String()] = d
	}
	data, err := json.MarshalIndent(&st, "", "  ")
	l.mu.Unlock()
	if err != nil {
		return fmt.Errorf("saving learner state: %w", err)
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return fmt.Errorf("saving learner state: %w", err)
	}
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*")
	if err != nil {
		return fmt.Errorf("saving learner state: %w", err)
	}
	tmp := f.Name()
	_, err = f.Write(append(data, '\n'))
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err != nil {
		_ = os.Remove(tmp)
		return fmt.Errorf("saving learner state: %w", err)
	}
	return nil
}

// Load replaces the learner's knowledge with the state saved at path. A
// missing file is not an error (nothing learned yet); a file of another
// version is ignored. Destinations keep the arms of algorithms no longer
// allowed, which simply never get recommended.
func (l *Learner) Load(path string) (loaded bool, err error) {
	data, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("loading learner state: %w", err)
	}
	var st learnerState
	if err := json.Unmarshal(data, &st); err != nil {
		return false, fmt.Errorf("loading learner state %s: %w (remove the file to start afresh)", path, err)
	}
	if st.Version != stateVersion {
		return false, nil
	}
	dests := make(map[netip.Prefix]*Destination, len(st.Destinations))
	for k, d := range st.Destinations {
		p, err := netip.ParsePrefix(k)
		if err != nil || d == nil || d.Bandit == nil {
			return false, fmt.Errorf("loading learner state %s: bad destination %q (remove the file to start afresh)", path, k)
		}
		for _, a := range l.allowed {
			if d.Bandit.Arms[a] == nil {
				d.Bandit.Arms[a] = new(learner.Arm)
			}
		}
		dests[p] = d
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	l.dests = dests
	l.calib = st.Calibration
	if l.calib == nil {
		l.calib = make(map[string]*learner.Estimate)
	}
	return true, nil
}
