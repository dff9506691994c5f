package daemon

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/mlbpf/mlbpf/agent"
	"github.com/mlbpf/mlbpf/model"
)

// The state directory holds, per model, under <state-dir>/<subsystem>/<model>/:
//
//	daemon.json   what the daemon must remember across restarts (an
//	              operator's stop), written atomically and synced
//	status.json   the evidence the daemon publishes for 'mlbpf status'
//	              (Evidence), rewritten every few seconds
//	controller.json  the mode controller's evidence in its current mode
//	              (model.ControllerSnapshot), rewritten with status.json,
//	              so that a restart in the same mode continues its tests
//	portions/     the dataset portions retained for agents, one file
//	              each (see spool.go), so they outlive the daemon
//	history/      the model's history, a line a period, for 'mlbpf
//	              report' (package history; kept by pipeline.Loop)
//	...           the subsystem's learned state (tcp-cc.json for tcp/cc)

// ModelStateDir returns a model's directory under the state directory.
func ModelStateDir(stateDir, name string) string {
	return filepath.Join(stateDir, filepath.FromSlash(name))
}

// persisted is what the daemon remembers of a model across restarts.
type persisted struct {
	Version int `json:"version"`
	// OperatorStopped: an operator stopped the model ('mlbpf stop'); the
	// daemon does not start it until 'mlbpf start'.
	OperatorStopped bool      `json:"operator_stopped"`
	SavedAt         time.Time `json:"saved_at"`
}

const persistedVersion = 1

func loadPersisted(dir string) (persisted, error) {
	var p persisted
	b, err := os.ReadFile(filepath.Join(dir, "daemon.json"))
	if errors.Is(err, os.ErrNotExist) {
		return p, nil
	}
	if err != nil {
		return p, fmt.Errorf("reading the daemon's state: %w", err)
	}
	if err := json.Unmarshal(b, &p); err != nil || p.Version != persistedVersion {
		return persisted{}, nil // unreadable or another version: start afresh
	}
	return p, nil
}

func savePersisted(dir string, p persisted) error {
	p.Version, p.SavedAt = persistedVersion, time.Now().UTC()
	b, err := json.MarshalIndent(p, "", "  ")
	if err != nil {
		return err
	}
	return writeFileAtomic(filepath.Join(dir, "daemon.json"), append(b, '\n'), true)
}

// savedController is the mode controller's evidence as saved in
// controller.json.
type savedController struct {
	Version int       `json:"version"`
	SavedAt time.Time `json:"saved_at"`
	// Generation is the control block's generation when it was saved.
	Generation uint32                   `json:"generation"`
	Evidence   model.ControllerSnapshot `json:"evidence"`
}

const savedControllerVersion = 1

// loadController reads controller.json: nil and no error when there is
// none, an error when it cannot be read or decoded.
func loadController(dir string) (*savedController, error) {
	path := filepath.Join(dir, "controller.json")
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var s savedController
	if err := json.Unmarshal(b, &s); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	if s.Version != savedControllerVersion {
		return nil, fmt.Errorf("%s: version %d, want %d", path, s.Version, savedControllerVersion)
	}
	return &s, nil
}

func saveController(dir string, generation uint32, ev model.ControllerSnapshot) error {
	b, err := json.MarshalIndent(savedController{
		Version: savedControllerVersion, SavedAt: time.Now().UTC(), Generation: generation, Evidence: ev,
	}, "", "  ")
	if err != nil {
		return err
	}
	return writeFileAtomic(filepath.Join(dir, "controller.json"), append(b, '\n'), false)
}

// Evidence is what the daemon publishes about a model in its state
// directory (status.json): what the pins do not hold, the mode
// controller's view above all. 'mlbpf status' shows it beside what the
// pins say.
type Evidence struct {
	Model   string    `json:"model"`
	PID     int       `json:"pid"`
	Updated time.Time `json:"updated"`
	// Running: the daemon was running the model (not operator-stopped)
	// at Updated.
	Running         bool `json:"running"`
	OperatorStopped bool `json:"operator_stopped"`
	// State and Mode are the model's as the daemon holds them (the
	// pinned control block is what the kernel sees).
	State   string `json:"state"`
	Mode    string `json:"mode"`
	MaxMode string `json:"max_mode"`
	Learner string `json:"learner"`
	// Interval is the main loop period, Lease the lease.
	Interval time.Duration `json:"interval_ns"`
	Lease    time.Duration `json:"lease_ns"`
	// Records and Corrupted count what the daemon read since it started.
	Records   uint64 `json:"records"`
	Corrupted uint64 `json:"corrupted"`
	// Lost counts the records the kernel could not reserve while the
	// daemon ran (the ring was full: records came faster than it read
	// them), Dropped those it read past a portion's memory cap, and
	// PartialPortions the dataset portions that missed some
	// (EXTRACTED_PARTIALLY), all since it started.
	Lost            uint64 `json:"lost"`
	Dropped         uint64 `json:"dropped"`
	PartialPortions uint64 `json:"partial_portions"`
	// LeaseRenewals and HeldWrites count the daemon's renewals, and the
	// writes it held back while adopting an operator's change.
	LeaseRenewals uint64 `json:"lease_renewals"`
	HeldWrites    uint64 `json:"held_writes"`
	// Agents is the number of agents subscribed on the socket.
	Agents int `json:"agents"`
	// Capabilities says what became of the daemon's capabilities once
	// its models started: "dropped", "kept CAP_BPF" or "kept: <why>"
	// (empty before, or when the daemon was told to keep them).
	Capabilities string            `json:"capabilities,omitempty"`
	Efficiency   *agent.Efficiency `json:"efficiency,omitempty"`
	Decision     string            `json:"decision,omitempty"`
	Tripped      string            `json:"tripped,omitempty"`
	Changes      []ModeChange      `json:"mode_changes,omitempty"`
}

// ModeChange is one change of a model's mode.
type ModeChange struct {
	Time       time.Time `json:"time"`
	From       string    `json:"from"`
	To         string    `json:"to"`
	Reason     string    `json:"reason"`
	Generation uint32    `json:"generation"`
}

// ReadEvidence reads the evidence a daemon published for a model; a
// missing file returns nil and no error.
func ReadEvidence(stateDir, name string) (*Evidence, error) {
	b, err := os.ReadFile(filepath.Join(ModelStateDir(stateDir, name), "status.json"))
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("reading the daemon's evidence for %s: %w", name, err)
	}
	var e Evidence
	if err := json.Unmarshal(b, &e); err != nil {
		return nil, fmt.Errorf("reading the daemon's evidence for %s: %w", name, err)
	}
	return &e, nil
}

func writeEvidence(dir string, e *Evidence) error {
	b, err := json.MarshalIndent(e, "", "  ")
	if err != nil {
		return err
	}
	// Rewritten often and only informative: renamed into place, not
	// synced.
	return writeFileAtomic(filepath.Join(dir, "status.json"), append(b, '\n'), false)
}

// writeFileAtomic writes data to a temporary file in path's directory and
// renames it over path, so a reader sees the old file or the new one,
// never a part; with sync the data reach the disk before the rename.
func writeFileAtomic(path string, data []byte, sync bool) error {
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	f, err := os.CreateTemp(dir, "."+filepath.Base(path)+".*")
	if err != nil {
		return err
	}
	tmp := f.Name()
	_, err = f.Write(data)
	if err == nil && sync {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Chmod(tmp, 0o644)
	}
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err != nil {
		_ = os.Remove(tmp)
		return fmt.Errorf("writing %s: %w", path, err)
	}
	if sync {
		if d, err := os.Open(dir); err == nil {
			_ = d.Sync()
			d.Close()
		}
	}
	return nil
}
