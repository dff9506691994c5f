package history

import (
	"bufio"
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
	"time"

	"github.com/mlbpf/mlbpf/internal/atomicfile"
)

// Dir is a model's history directory under its state directory.
func Dir(modelStateDir string) string { return filepath.Join(modelStateDir, "history") }

const (
	segmentSuffix = ".history"
	keysFile      = "keys.json"
)

// Limits bound a model's history.
type Limits struct {
	// SegmentPeriods is the number of periods in a segment (default 600:
	// ten minutes at the default one-second period).
	SegmentPeriods int
	// MaxBytes caps the segments' total size (default 64 MiB), MaxAge
	// their age (default 7 days): the oldest go first.
	MaxBytes int64
	MaxAge   time.Duration
}

// Default limits.
const (
	DefaultSegmentPeriods = 600
	DefaultMaxBytes       = 64 << 20
	DefaultMaxAge         = 7 * 24 * time.Hour
)

func (l Limits) withDefaults() Limits {
	if l.SegmentPeriods <= 0 {
		l.SegmentPeriods = DefaultSegmentPeriods
	}
	if l.MaxBytes <= 0 {
		l.MaxBytes = DefaultMaxBytes
	}
	if l.MaxAge <= 0 {
		l.MaxAge = DefaultMaxAge
	}
	return l
}

// header is a segment's first line.
type header struct {
	Version int    `json:"version"`
	Model   string `json:"model"`
}

// Writer appends a model's periods to its history. It is used from one
// goroutine.
type Writer struct {
	dir, model string
	lim        Limits
	log        *slog.Logger
	f          *os.File
	n          int // periods in f
	buf        bytes.Buffer
}

// Open opens the history of model in dir for appending, creating dir,
// setting aside damaged segments and removing those past lim. The first
// Append starts a new segment.
func Open(dir, model string, lim Limits, log *slog.Logger) (*Writer, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("opening the history: %w", err)
	}
	w := &Writer{dir: dir, model: model, lim: lim.withDefaults(), log: log}
	for _, s := range segments(dir) {
		if err := checkHeader(s.path, model); err != nil {
			log.Warn("a history segment is damaged: set aside", "model", model, "file", s.path+".bad", "err", err)
			_ = os.Rename(s.path, s.path+".bad")
		}
	}
	w.prune()
	return w, nil
}

// Append appends one period, in one write, starting a new segment when
// the current one is full.
func (w *Writer) Append(p *Period) error {
	if w.f == nil || w.n >= w.lim.SegmentPeriods {
		if err := w.rotate(p.Time); err != nil {
			return err
		}
	}
	w.buf.Reset()
	enc := json.NewEncoder(&w.buf)
	if err := enc.Encode(p); err != nil { // with its newline
		return fmt.Errorf("appending to the history: %w", err)
	}
	if _, err := w.f.Write(w.buf.Bytes()); err != nil {
		w.closeSegment()
		return fmt.Errorf("appending to the history: %w", err)
	}
	w.n++
	return nil
}

// rotate closes the current segment, removes the segments past the
// limits and starts a new one whose header is written atomically.
func (w *Writer) rotate(t time.Time) error {
	w.closeSegment()
	w.prune()
	h, err := json.Marshal(header{Version: Version, Model: w.model})
	if err != nil {
		return err
	}
	name := fmt.Sprintf("%020d%s", t.UnixNano(), segmentSuffix)
	path := filepath.Join(w.dir, name)
	if err := atomicfile.Write(path, append(h, '\n'), 0o644); err != nil {
		return fmt.Errorf("starting a history segment: %w", err)
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		return fmt.Errorf("starting a history segment: %w", err)
	}
	w.f, w.n = f, 0
	return nil
}

func (w *Writer) closeSegment() {
	if w.f != nil {
		_ = w.f.Close()
		w.f = nil
	}
}

// prune removes the oldest segments, but the current one, while the
// total exceeds MaxBytes or they are older than MaxAge.
func (w *Writer) prune() {
	segs := segments(w.dir)
	var total int64
	for _, s := range segs {
		total += s.size
	}
	cutoff := time.Now().Add(-w.lim.MaxAge)
	for _, s := range segs {
		if w.f != nil && s.path == w.f.Name() {
			break
		}
		if total <= w.lim.MaxBytes && !s.mod.Before(cutoff) {
			break
		}
		if err := os.Remove(s.path); err != nil && !errors.Is(err, fs.ErrNotExist) {
			w.log.Warn("removing an old history segment", "model", w.model, "err", err)
			return
		}
		total -= s.size
	}
}

// SaveKeys replaces the key snapshot.
func (w *Writer) SaveKeys(k *Keys) error {
	b, err := json.Marshal(k)
	if err != nil {
		return err
	}
	return atomicfile.Write(filepath.Join(w.dir, keysFile), append(b, '\n'), 0o644)
}

// Close closes the current segment.
func (w *Writer) Close() error {
	w.closeSegment()
	return nil
}

type segment struct {
	path string
	size int64
	mod  time.Time
}

// segments lists dir's segments, oldest first.
func segments(dir string) []segment {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil
	}
	var out []segment
	for _, e := range entries {
		if !e.Type().IsRegular() || !strings.HasSuffix(e.Name(), segmentSuffix) || strings.HasPrefix(e.Name(), ".") {
			continue
		}
		info, err := e.Info()
		if err != nil {
			continue
		}
		out = append(out, segment{path: filepath.Join(dir, e.Name()), size: info.Size(), mod: info.ModTime()})
	}
	// Names are zero-padded times: their order is the segments'.
	slices.SortFunc(out, func(a, b segment) int { return strings.Compare(a.path, b.path) })
	return out
}

// checkHeader checks a segment's header line, without reading its
// periods (a reader skips a damaged line).
func checkHeader(path, model string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	line, err := bufio.NewReader(f).ReadSlice('\n')
	if err != nil {
		return fmt.Errorf("no header line: %w", err)
	}
	return parseHeader(line, model)
}

func parseHeader(line []byte, model string) error {
	var h header
	if err := json.Unmarshal(line, &h); err != nil {
		return fmt.Errorf("header: %w", err)
	}
	if h.Version != Version {
		return fmt.Errorf("version %d, want %d", h.Version, Version)
	}
	if model != "" && h.Model != model {
		return fmt.Errorf("the history of %q, not of %s", h.Model, model)
	}
	return nil
}

// readSegment reads one segment's periods. A torn last line (a write cut
// by a crash: no newline) is ignored; anything else that does not decode
// is an error, returned with the periods before it.
func readSegment(path, model string) ([]Period, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	lines := bytes.Split(b, []byte{'\n'})
	// The last element follows the last newline: empty, or a torn line.
	lines = lines[:len(lines)-1]
	if len(lines) == 0 {
		return nil, errors.New("no header line")
	}
	if err := parseHeader(lines[0], model); err != nil {
		return nil, err
	}
	out := make([]Period, 0, len(lines)-1)
	for i, line := range lines[1:] {
		var p Period
		if err := json.Unmarshal(line, &p); err != nil {
			return out, fmt.Errorf("line %d: %w", i+2, err)
		}
		out = append(out, p)
	}
	return out, nil
}
