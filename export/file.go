package export

import (
	"bufio"
	"context"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"reflect"
)

// fileBufferSize is the write buffer between a Writer and its file; a
// cancelled context is noticed at the next flush of it.
const fileBufferSize = 256 << 10

// WriteFile exports records of type recordType to the file at path in
// format f: it creates a Writer over a temporary file in path's
// directory, calls write with it (write calls WriteDataset for each
// dataset), closes the Writer, syncs the file and renames it to path. It
// returns the Writer's stats.
//
// Nothing half-written is ever left at path: if write or anything else
// fails, or ctx is cancelled (a SIGTERM during the export), the temporary
// file is removed and a file already at path is left untouched. A
// cancelled ctx stops the export at the next 256 KiB written; write
// itself should return when ctx is done if it waits for datasets.
//
// A new file gets mode 0644; a file replaced keeps its mode.
func WriteFile(ctx context.Context, path string, f Format, recordType reflect.Type, write func(*Writer) error) (Stats, error) {
	stats, err := writeFile(ctx, path, f, recordType, write)
	if err != nil {
		return stats, fmt.Errorf("exporting %v to %s: %w", f, path, err)
	}
	return stats, nil
}

func writeFile(ctx context.Context, path string, f Format, recordType reflect.Type, write func(*Writer) error) (stats Stats, err error) {
	if err := ctx.Err(); err != nil {
		return stats, err
	}
	if !f.valid() {
		return stats, fmt.Errorf("%w: %v", ErrUnknownFormat, f)
	}
	mode := fs.FileMode(0o644)
	if fi, err := os.Stat(path); err == nil {
		if !fi.Mode().IsRegular() {
			return stats, fmt.Errorf("%s is not a regular file", path)
		}
		mode = fi.Mode().Perm()
	}
	dir, base := filepath.Split(path)
	if dir == "" {
		dir = "."
	}
	tmp, err := os.CreateTemp(dir, "."+base+".*.tmp")
	if err != nil {
		return stats, err
	}
	defer func() {
		if err != nil {
			tmp.Close()
			os.Remove(tmp.Name())
		}
	}()

	bw := bufio.NewWriterSize(&contextWriter{ctx: ctx, f: tmp}, fileBufferSize)
	w, err := NewWriter(bw, f, recordType)
	if err != nil {
		return stats, err
	}
	err = write(w)
	stats = w.Stats()
	if err != nil {
		return stats, err
	}
	if err = w.Close(); err != nil {
		return stats, err
	}
	if err = bw.Flush(); err != nil {
		return stats, err
	}
	// The last chance to give up: past the rename, the export is done.
	if err = ctx.Err(); err != nil {
		return stats, err
	}
	if err = tmp.Chmod(mode); err != nil {
		return stats, err
	}
	if err = tmp.Sync(); err != nil {
		return stats, err
	}
	if err = tmp.Close(); err != nil {
		return stats, err
	}
	if err = os.Rename(tmp.Name(), path); err != nil {
		return stats, err
	}
	syncDir(dir)
	return stats, nil
}

// contextWriter fails writes once its context is done.
type contextWriter struct {
	ctx context.Context
	f   *os.File
}

func (w *contextWriter) Write(p []byte) (int, error) {
	if err := w.ctx.Err(); err != nil {
		return 0, err
	}
	return w.f.Write(p)
}

// syncDir makes a rename in dir durable, best effort: a file system may
// not support syncing a directory, and the file is complete either way.
func syncDir(dir string) {
	d, err := os.Open(dir)
	if err != nil {
		return
	}
	_ = d.Sync()
	_ = d.Close()
}
