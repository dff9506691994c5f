package daemon

import (
	"fmt"
	"os"
	"path/filepath"

	"github.com/cilium/ebpf"

	"github.com/mlbpf/mlbpf/config"
	"github.com/mlbpf/mlbpf/loader"
	"github.com/mlbpf/mlbpf/model"
	"github.com/mlbpf/mlbpf/pipeline"
	"github.com/mlbpf/mlbpf/ringbuf"
)

// What an operator's command does with no daemon running: it works on
// the pins directly.

// PinnedDir returns a model's pin directory, or an error saying how to
// create it when it is not pinned.
func PinnedDir(pinRoot, name string) (string, error) {
	sub, modelName, err := SplitName(name)
	if err != nil {
		return "", err
	}
	dir := loader.PinDir(pinRoot, sub.Name, modelName)
	if _, err := os.Stat(filepath.Join(dir, "control")); err != nil {
		return dir, fmt.Errorf("%s: not pinned under %s (configure it and start 'mlbpf run' once)", name, pinRoot)
	}
	return dir, nil
}

// RecommendPinned validates an operator's recommendation with the model's
// subsystem, configured by c (its allow-list, for example), and writes it
// into the pinned maps.
func RecommendPinned(c *config.Config, pinRoot, name string, rec model.Recommendation) (model.Recommendation, error) {
	sub, modelName, err := SplitName(name)
	if err != nil {
		return rec, err
	}
	if _, err := PinnedDir(pinRoot, name); err != nil {
		return rec, err
	}
	m := c.Find(name)
	if m == nil {
		m = &config.Model{Name: name}
	}
	if sub.RecommendPinned == nil {
		return rec, fmt.Errorf("%s: the subsystem takes no recommendations", name)
	}
	sec, err := section(c, m)
	if err != nil {
		return rec, err
	}
	return sub.RecommendPinned(sec, pinRoot, modelName, rec)
}

// Rollback removes what one pinned model put in the kernel: its pinned
// programs are detached and its pins removed.
func Rollback(pinRoot, name string) error {
	sub, modelName, err := SplitName(name)
	if err != nil {
		return loader.RemovePins(filepath.Join(pinRoot, filepath.FromSlash(name)))
	}
	if sub.Rollback != nil {
		return sub.Rollback(pinRoot, modelName)
	}
	return loader.RemovePins(loader.PinDir(pinRoot, sub.Name, modelName))
}

// SetOperatorStopped records that an operator stopped (or started) a
// model, for the next daemon to respect.
func SetOperatorStopped(stateDir, name string, stopped bool) error {
	if _, _, err := SplitName(name); err != nil {
		return err
	}
	dir := ModelStateDir(stateDir, name)
	p, err := loadPersisted(dir)
	if err != nil {
		return err
	}
	if p.OperatorStopped == stopped {
		return nil
	}
	p.OperatorStopped = stopped
	return savePersisted(dir, p)
}

// ReadDataset takes a dataset portion from a model's pinned ring buffer,
// with no daemon running: the records available now, up to maxRecords
// (0: as many as one ring holds). The records are consumed.
func ReadDataset(pinRoot, name string, maxRecords int) (*model.Dataset, *pipeline.Subsystem, error) {
	sub, _, err := SplitName(name)
	if err != nil {
		return nil, nil, err
	}
	dir, err := PinnedDir(pinRoot, name)
	if err != nil {
		return nil, sub, err
	}
	events, err := ebpf.LoadPinnedMap(filepath.Join(dir, "events"), nil)
	if err != nil {
		return nil, sub, fmt.Errorf("%s: opening the ring buffer: %w", name, err)
	}
	defer events.Close()
	rd, err := ringbuf.NewReader(events)
	if err != nil {
		return nil, sub, fmt.Errorf("%s: reading the ring buffer: %w", name, err)
	}
	defer rd.Close()
	if maxRecords <= 0 {
		maxRecords = rd.Size() / sub.Records.Size
	}
	b, err := ringbuf.NewDatasetBuilder(ringbuf.DatasetConfig{
		Kind: sub.Records.Kind, RecordSize: sub.Records.Size, MaxBytes: maxRecords * sub.Records.Size,
	})
	if err != nil {
		return nil, sub, err
	}
	var lost *ringbuf.LostCounter
	if lm, err := ebpf.LoadPinnedMap(filepath.Join(dir, "lost"), &ebpf.LoadPinOptions{ReadOnly: true}); err == nil {
		defer lm.Close()
		lost, _ = ringbuf.NewLostCounter(lm)
	}
	_ = b.Fill(rd, lost) // a failed read fails the portion
	ds, err := b.Take()
	return ds, sub, err
}
