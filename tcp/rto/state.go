package rto

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"slices"
	"time"

	"github.com/mlbpf/mlbpf/internal/atomicfile"
)

// stateVersion is bumped when the state file's meaning changes; a file of
// another version, or learned over another grid, is ignored.
const stateVersion = 1

// StateFile is the learner's state file name in a state directory.
const StateFile = "tcp-rto.json"

type destState struct {
	Flows        int         `json:"flows"`
	LearnedAfter int         `json:"learned_after"`
	Chosen       int         `json:"chosen"`
	FCT          [][]float64 `json:"fct_ms"`
	// Dropped are the grid indexes no longer explored (Learner.decide).
	Dropped []int `json:"dropped,omitempty"`
}

type learnerState struct {
	Version      int                   `json:"version"`
	SavedAt      time.Time             `json:"saved_at"`
	Grid         []Setting             `json:"grid"`
	Destinations map[string]*destState `json:"destinations"`
}

// Save writes the learner's state to path atomically (a temporary file in
// the same directory, synced, renamed over path).
func (l *Learner) Save(path string) error {
	l.mu.Lock()
	st := learnerState{Version: stateVersion, SavedAt: time.Now().UTC(), Grid: l.cfg.Grid,
		Destinations: make(map[string]*destState, len(l.dests))}
	for p, d := range l.dests {
		ds := &destState{Flows: d.Flows, LearnedAfter: d.LearnedAfter, Chosen: d.Chosen, FCT: d.fct}
		for i, out := range d.dropped {
			if out {
				ds.Dropped = append(ds.Dropped, i)
			}
		}
		st.Destinations[p.String()] = ds
	}
	data, err := json.Marshal(&st)
	l.mu.Unlock()
	if err != nil {
		return fmt.Errorf("saving %s learner state: %w", ModelPath, err)
	}
	if err := atomicfile.Write(path, append(data, '\n'), 0o600); err != nil {
		return fmt.Errorf("saving %s learner state: %w", ModelPath, err)
	}
	return nil
}

// Load replaces the learner's state with the one saved at path. It
// reports false, and changes nothing, if there is no file or it is of
// another version or grid.
func (l *Learner) Load(path string) (bool, error) {
	data, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("loading %s learner state: %w", ModelPath, err)
	}
	var st learnerState
	if err := json.Unmarshal(data, &st); err != nil {
		return false, fmt.Errorf("loading %s learner state %s: %w (remove it to start afresh)", ModelPath, path, err)
	}
	if st.Version != stateVersion || !slices.Equal(st.Grid, l.cfg.Grid) {
		return false, nil
	}
	dests := make(map[netip.Prefix]*Destination, len(st.Destinations))
	for k, d := range st.Destinations {
		p, err := netip.ParsePrefix(k)
		if err != nil || len(d.FCT) != len(l.cfg.Grid) || d.Chosen < -1 || d.Chosen >= len(l.cfg.Grid) {
			return false, fmt.Errorf("loading %s learner state %s: bad destination %q (remove the file to start afresh)", ModelPath, path, k)
		}
		nd := &Destination{Prefix: p, Flows: d.Flows, LearnedAfter: d.LearnedAfter, Chosen: d.Chosen, fct: d.FCT,
			dropped: make([]bool, len(l.cfg.Grid))}
		for _, i := range d.Dropped {
			if i <= 0 || i >= len(l.cfg.Grid) {
				return false, fmt.Errorf("loading %s learner state %s: bad destination %q: dropped setting %d (remove the file to start afresh)", ModelPath, path, k, i)
			}
			nd.dropped[i] = true
		}
		if d.Chosen >= 0 {
			nd.Setting = l.cfg.Grid[d.Chosen]
		}
		dests[p] = nd
	}
	l.mu.Lock()
	l.dests = dests
	l.mu.Unlock()
	return true, nil
}
