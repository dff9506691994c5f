package daemon

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/mlbpf/mlbpf/agent"
	"github.com/mlbpf/mlbpf/model"
	"github.com/mlbpf/mlbpf/pipeline"
)

// The spool keeps on disk the dataset portions a model retains for agents
// (the hub's), one file each under <state-dir>/<subsystem>/<model>/portions/:
// a JSON header line (spoolHeader), then the records back to back. A
// portion is written when it is published and removed when it is evicted
// or discarded, so a daemon that restarts, cleanly or after a SIGKILL,
// offers the same portions again and continues the record stream's
// offsets after them: datasets already extracted are not lost. Files are
// renamed into place, not synced: they outlive the process, not a power
// cut (the records are measurements, not transactions).

const spoolVersion = 1

// spoolHeader is the first line of a portion file.
type spoolHeader struct {
	Version int           `json:"version"`
	Portion agent.Portion `json:"portion"`
}

type spool struct {
	dir string
}

func (s *spool) path(offset uint64) string {
	return filepath.Join(s.dir, fmt.Sprintf("%020d.portion", offset))
}

// save writes a published portion.
func (s *spool) save(meta agent.Portion, ds *model.Dataset) error {
	meta.Data, meta.Records = nil, nil
	h, err := json.Marshal(spoolHeader{Version: spoolVersion, Portion: meta})
	if err != nil {
		return err
	}
	b := make([]byte, 0, len(h)+1+len(ds.Data))
	b = append(append(append(b, h...), '\n'), ds.Data...)
	return writeFileAtomic(s.path(meta.Offset), b, false)
}

// remove forgets a portion evicted or discarded.
func (s *spool) remove(offset uint64) error {
	if err := os.Remove(s.path(offset)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	return nil
}

// load reads the spooled portions of records of format, oldest first, at
// most keep of them (the newest). A file that does not hold a portion of
// this model's records is set aside (renamed *.bad, for inspection) and
// reported; the others are still loaded.
func (s *spool) load(format pipeline.RecordFormat, keep int, log *slog.Logger, name string) ([]*portion, error) {
	entries, err := os.ReadDir(s.dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("reading the spooled dataset portions: %w", err)
	}
	var out []*portion
	for _, e := range entries {
		if !e.Type().IsRegular() || !strings.HasSuffix(e.Name(), ".portion") {
			continue
		}
		path := filepath.Join(s.dir, e.Name())
		p, err := readSpooled(path, format, name)
		if err != nil {
			log.Warn("a spooled dataset portion is unreadable: set aside", "model", name, "file", path+".bad", "err", err)
			_ = os.Rename(path, path+".bad")
			continue
		}
		out = append(out, p)
	}
	slices.SortFunc(out, func(a, b *portion) int {
		switch {
		case a.meta.Offset < b.meta.Offset:
			return -1
		case a.meta.Offset > b.meta.Offset:
			return 1
		}
		return 0
	})
	// Overlapping portions cannot both be right: keep the later one.
	for i := 0; i+1 < len(out); {
		if out[i].ds.NextOffset() > out[i+1].meta.Offset {
			log.Warn("spooled dataset portions overlap: dropping the older", "model", name,
				"offset", out[i].meta.Offset, "next", out[i+1].meta.Offset)
			_ = s.remove(out[i].meta.Offset)
			out = slices.Delete(out, i, i+1)
			continue
		}
		i++
	}
	for len(out) > keep {
		_ = s.remove(out[0].meta.Offset)
		out = out[1:]
	}
	return out, nil
}

func readSpooled(path string, format pipeline.RecordFormat, name string) (*portion, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	line, data, ok := bytes.Cut(b, []byte{'\n'})
	if !ok {
		return nil, errors.New("no header line")
	}
	var h spoolHeader
	dec := json.NewDecoder(bytes.NewReader(line))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&h); err != nil {
		return nil, fmt.Errorf("header: %w", err)
	}
	m := h.Portion
	switch {
	case h.Version != spoolVersion:
		return nil, fmt.Errorf("version %d, want %d", h.Version, spoolVersion)
	case m.Model != name:
		return nil, fmt.Errorf("a portion of %q, not of %s", m.Model, name)
	case m.RecordKind != format.Kind || m.RecordSize <= 0:
		return nil, fmt.Errorf("records of kind %d, %d bytes: want kind %d", m.RecordKind, m.RecordSize, format.Kind)
	case uint64(len(data)) != uint64(m.Size)*uint64(m.RecordSize):
		return nil, fmt.Errorf("%d bytes of records, want %d × %d", len(data), m.Size, m.RecordSize)
	case filepath.Base(path) != fmt.Sprintf("%020d.portion", m.Offset):
		return nil, fmt.Errorf("holds offset %d", m.Offset)
	}
	typ, err1 := parseEnum[model.DatasetType](m.Type)
	state, err2 := parseEnum[model.DatasetState](m.State)
	if err := errors.Join(err1, err2); err != nil {
		return nil, err
	}
	ds := &model.Dataset{
		Type: typ, State: state, AllocatedSize: len(data),
		PortionOffset: m.Offset, PortionSize: m.Size, RecordSize: m.RecordSize,
		Data: data, Lost: m.Lost, Corrupted: m.Corrupted,
	}
	return &portion{ds: ds, meta: m, pending: map[uint64]bool{}}, nil
}

// parseEnum finds the value of a small enum whose String is s.
func parseEnum[E interface {
	~uint32
	String() string
}](s string) (E, error) {
	for v := range E(64) {
		if v.String() == s {
			return v, nil
		}
	}
	var zero E
	return zero, fmt.Errorf("unknown %T %q", zero, s)
}
