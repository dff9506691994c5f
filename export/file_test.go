package export

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/mlbpf/mlbpf/model"
)

// writeAll returns a WriteFile callback writing ds.
func writeAll(ds ...*model.Dataset) func(*Writer) error {
	return func(w *Writer) error {
		for _, d := range ds {
			if err := w.WriteDataset(d); err != nil {
				return err
			}
		}
		return nil
	}
}

// dirEntries returns the names in dir.
func dirEntries(t *testing.T, dir string) []string {
	t.Helper()
	es, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range es {
		names = append(names, e.Name())
	}
	return names
}

func TestWriteFile(t *testing.T) {
	ds, want := syntheticExport(t)
	s, err := NewSchema(syntheticType)
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range formats {
		t.Run(f.String(), func(t *testing.T) {
			dir := t.TempDir()
			path := filepath.Join(dir, "out"+f.Extension())
			stats, err := WriteFile(t.Context(), path, f, syntheticType, writeAll(ds...))
			if err != nil {
				t.Fatal(err)
			}
			if stats.Rows != uint64(len(want)) || stats.Datasets != 2 {
				t.Fatalf("stats %+v, want %d rows of 2 datasets", stats, len(want))
			}
			data, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			checkRows(t, readRows(t, f, data, s), want, s.Names())
			fi, err := os.Stat(path)
			if err != nil {
				t.Fatal(err)
			}
			if fi.Mode().Perm() != 0o644 {
				t.Errorf("mode %v, want 0644", fi.Mode())
			}
			if got := dirEntries(t, dir); !slices.Equal(got, []string{filepath.Base(path)}) {
				t.Fatalf("directory holds %q, want only the export", got)
			}
		})
	}
}

func TestWriteFileReplaces(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "out.csv")
	if err := os.WriteFile(path, []byte("old\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	ds, want := syntheticExport(t)
	if _, err := WriteFile(t.Context(), path, CSV, syntheticType, writeAll(ds...)); err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if got := readCSV(t, data, syntheticNames()); len(got) != len(want) {
		t.Fatalf("%d rows, want %d", len(got), len(want))
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("mode %v, want the replaced file's 0600", fi.Mode())
	}
}

// TestWriteFileAtomic checks that a failed or cancelled export leaves
// nothing at its path, nor a temporary file, and an existing file as it
// was.
func TestWriteFileAtomic(t *testing.T) {
	ds, _ := syntheticExport(t)
	big := datasetOf(t, 0, syntheticRecords(50000)) // over the file buffer in every format
	errStop := errors.New("stopped by the test")

	for _, tc := range []struct {
		name  string
		write func(cancel context.CancelFunc) func(*Writer) error
		want  error
	}{
		{
			name: "error midway",
			write: func(context.CancelFunc) func(*Writer) error {
				return func(w *Writer) error {
					if err := w.WriteDataset(big); err != nil {
						return err
					}
					return errStop
				}
			},
			want: errStop,
		},
		{
			name: "refused dataset",
			write: func(context.CancelFunc) func(*Writer) error {
				bad := datasetOf(t, 0, connRecords())
				return writeAll(ds[0], big, bad)
			},
			want: model.ErrInvalidDataset,
		},
		{
			// SIGTERM while datasets are written: the next write to the
			// file fails.
			name: "cancelled midway",
			write: func(cancel context.CancelFunc) func(*Writer) error {
				return func(w *Writer) error {
					if err := w.WriteDataset(ds[0]); err != nil {
						return err
					}
					cancel()
					for range 20 {
						if err := w.WriteDataset(big); err != nil {
							return err
						}
					}
					return nil
				}
			},
			want: context.Canceled,
		},
		{
			// SIGTERM after the last dataset: the file is not renamed.
			name: "cancelled at the end",
			write: func(cancel context.CancelFunc) func(*Writer) error {
				return func(w *Writer) error {
					err := w.WriteDataset(ds[0])
					cancel()
					return err
				}
			},
			want: context.Canceled,
		},
	} {
		for _, f := range formats {
			t.Run(tc.name+"/"+f.String(), func(t *testing.T) {
				for _, existing := range []bool{false, true} {
					dir := t.TempDir()
					path := filepath.Join(dir, "out"+f.Extension())
					if existing {
						if err := os.WriteFile(path, []byte("previous export\n"), 0o640); err != nil {
							t.Fatal(err)
						}
					}
					ctx, cancel := context.WithCancel(t.Context())
					_, err := WriteFile(ctx, path, f, syntheticType, tc.write(cancel))
					cancel()
					if !errors.Is(err, tc.want) {
						t.Fatalf("WriteFile: %v, want %v", err, tc.want)
					}
					data, rerr := os.ReadFile(path)
					switch {
					case !existing && !errors.Is(rerr, os.ErrNotExist):
						t.Fatalf("a failed export left %d bytes at its path (%v)", len(data), rerr)
					case existing && string(data) != "previous export\n":
						t.Fatalf("a failed export changed the file at its path to %d bytes (%v)", len(data), rerr)
					}
					want := []string(nil)
					if existing {
						want = []string{filepath.Base(path)}
					}
					if got := dirEntries(t, dir); !slices.Equal(got, want) {
						t.Fatalf("directory holds %q, want %q", got, want)
					}
				}
			})
		}
	}
}

func TestWriteFileRefuses(t *testing.T) {
	dir := t.TempDir()
	nothing := func(*Writer) error { return nil }
	cancelled, cancel := context.WithCancel(t.Context())
	cancel()
	for _, tc := range []struct {
		name string
		ctx  context.Context
		path string
		f    Format
		want error
	}{
		{"cancelled", cancelled, filepath.Join(dir, "a.csv"), CSV, context.Canceled},
		{"format", t.Context(), filepath.Join(dir, "a.csv"), FormatUnknown, ErrUnknownFormat},
		{"no directory", t.Context(), filepath.Join(dir, "missing", "a.csv"), CSV, os.ErrNotExist},
		{"directory", t.Context(), dir, CSV, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := WriteFile(tc.ctx, tc.path, tc.f, syntheticType, nothing)
			if err == nil || (tc.want != nil && !errors.Is(err, tc.want)) {
				t.Fatalf("WriteFile: %v, want %v", err, tc.want)
			}
		})
	}
	if got := dirEntries(t, dir); len(got) != 0 {
		t.Fatalf("directory holds %q, want nothing", got)
	}
	if _, err := WriteFile(t.Context(), filepath.Join(dir, "a.csv"), CSV, nil, nothing); !errors.Is(err, ErrUnsupportedType) {
		t.Fatalf("WriteFile of no record type: %v", err)
	}
	if got := dirEntries(t, dir); len(got) != 0 {
		t.Fatalf("directory holds %q, want nothing", got)
	}
}
