package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"

	"github.com/mlbpf/mlbpf/agent"
	"github.com/mlbpf/mlbpf/daemon"
	"github.com/mlbpf/mlbpf/export"
	"github.com/mlbpf/mlbpf/loader"
	"github.com/mlbpf/mlbpf/model"
	"github.com/mlbpf/mlbpf/pipeline"
)

const datasetAbout = `
A model's dataset is its ring buffer's record stream, taken in portions
(the RFC's ml_lib_dataset: portion_offset, portion_size). With a daemon
running, the daemon owns the ring: it publishes a portion every period and
keeps the last few for agents and for these commands. With no daemon, the
portion is read from the pinned ring buffer directly, and what is read is
consumed.

  get      print a portion's metadata and its records, as JSON
  discard  mark portions consumed (OBSOLETE): the daemon releases them;
           with no daemon, the records waiting in the ring are dropped
  export   write portions to a file, --format jsonl, csv or parquet`

func cmdDataset(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	usage := func(w io.Writer) {
		fmt.Fprintf(w, "Usage: mlbpf dataset get|discard|export [flags] SUBSYSTEM/MODEL\n%s\n\nExamples:\n%s\n", datasetAbout, datasetExamples)
	}
	if len(args) == 0 {
		usage(stderr)
		return errUsage
	}
	switch args[0] {
	case "get":
		return cmdDatasetGet(ctx, args[1:], stdout, stderr)
	case "discard":
		return cmdDatasetDiscard(ctx, args[1:], stdout, stderr)
	case "export":
		return cmdDatasetExport(ctx, args[1:], stdout, stderr)
	case "-h", "--help", "-help", "help":
		usage(stdout)
		return nil
	}
	fmt.Fprintf(stderr, "mlbpf dataset: unknown subcommand %q\n\n", args[0])
	usage(stderr)
	return errUsage
}

const datasetExamples = `  mlbpf dataset get synthetic/demo
  mlbpf dataset get synthetic/demo --offset 4096 --max-records 10
  mlbpf dataset discard synthetic/demo
  mlbpf dataset export synthetic/demo --format parquet -o demo.parquet`

// portionSource gets portions from the daemon or the pins.
type portionSource struct {
	p    *paths
	name string
	c    *agent.Client
	pid  int
}

func openPortions(ctx context.Context, p *paths, name string) (*portionSource, error) {
	if _, _, err := daemon.SplitName(name); err != nil {
		return nil, err
	}
	if _, err := p.load(); err != nil {
		return nil, err
	}
	if err := loader.CheckPrivileges(); err != nil {
		return nil, err
	}
	s := &portionSource{p: p, name: name, pid: p.daemonPID()}
	if s.pid != 0 {
		c, err := agent.Dial(ctx, p.socket)
		if err != nil {
			return nil, err
		}
		if _, err := c.Hello(ctx, "mlbpf dataset"); err != nil {
			c.Close()
			return nil, err
		}
		s.c = c
	}
	return s, nil
}

func (s *portionSource) Close() {
	if s.c != nil {
		s.c.Close()
	}
}

// pinnedPortion reads a portion from the pinned ring.
func (s *portionSource) pinnedPortion(maxRecords int) (*model.Dataset, *pipeline.Subsystem, error) {
	return daemon.ReadDataset(s.p.pinRoot, s.name, maxRecords)
}

func cmdDatasetGet(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("dataset get", "dataset get [flags] SUBSYSTEM/MODEL", datasetAbout, datasetExamples, stdout, stderr)
	p := addPaths(fs)
	offset := fs.String("offset", "", "the portion at this stream offset (default: the newest the daemon holds)")
	maxRecords := fs.Int("max-records", 0, "print at most this many records (0: all)")
	raw := fs.Bool("raw", false, "include the raw records (base64) as well")
	if err := fs.parse(args); err != nil {
		return err
	}
	if err := fs.want(1, "a model: mlbpf dataset get synthetic/demo"); err != nil {
		return err
	}
	src, err := openPortions(ctx, p, fs.Arg(0))
	if err != nil {
		return err
	}
	defer src.Close()
	var portion *agent.Portion
	if src.c != nil {
		var o agent.FetchOptions
		if o.Offset, err = parseOffset(*offset); err != nil {
			return err
		}
		o.Records, o.Raw = true, *raw
		if portion, err = src.c.Fetch(ctx, src.name, o); err != nil {
			return unwrapRemote(err)
		}
	} else {
		if *offset != "" {
			return fmt.Errorf("--offset: with no daemon running the portion is what the ring holds now")
		}
		ds, sub, err := src.pinnedPortion(0)
		if err != nil {
			return err
		}
		if portion, err = portionOf(src.name, ds, sub, *raw); err != nil {
			return err
		}
	}
	if *maxRecords > 0 && len(portion.Records) > *maxRecords {
		portion.Records = portion.Records[:*maxRecords]
	}
	return writeJSON(stdout, portion)
}

func parseOffset(s string) (*uint64, error) {
	if s == "" {
		return nil, nil
	}
	v, err := strconv.ParseUint(s, 10, 64)
	if err != nil {
		return nil, fmt.Errorf("--offset %q: want a record stream offset, a non-negative integer", s)
	}
	return &v, nil
}

// portionOf describes a dataset read from the pins as the daemon would
// publish it.
func portionOf(name string, ds *model.Dataset, sub *pipeline.Subsystem, raw bool) (*agent.Portion, error) {
	p := &agent.Portion{
		Model: name, Offset: ds.PortionOffset, Size: ds.PortionSize, Type: ds.Type.String(), State: ds.State.String(),
		RecordKind: sub.Records.Kind, RecordSize: sub.Records.Size, Lost: ds.Lost, Corrupted: ds.Corrupted,
		Records: []json.RawMessage{},
	}
	if raw {
		p.Data = ds.Data
	}
	for _, rec := range ds.All() {
		v, err := sub.Records.JSON(rec)
		if err != nil {
			v = map[string]string{"error": err.Error()}
		}
		b, err := json.Marshal(v)
		if err != nil {
			return nil, err
		}
		p.Records = append(p.Records, b)
	}
	return p, nil
}

func cmdDatasetDiscard(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("dataset discard", "dataset discard [flags] SUBSYSTEM/MODEL", datasetAbout, datasetExamples, stdout, stderr)
	p := addPaths(fs)
	offset := fs.String("offset", "", "only the portion at this stream offset (default: every portion the daemon holds)")
	if err := fs.parse(args); err != nil {
		return err
	}
	if err := fs.want(1, "a model: mlbpf dataset discard synthetic/demo"); err != nil {
		return err
	}
	src, err := openPortions(ctx, p, fs.Arg(0))
	if err != nil {
		return err
	}
	defer src.Close()
	if src.c != nil {
		off, err := parseOffset(*offset)
		if err != nil {
			return err
		}
		if err := src.c.Discard(ctx, src.name, off); err != nil {
			return unwrapRemote(err)
		}
		what := "every portion it held"
		if off != nil {
			what = fmt.Sprintf("the portion at offset %d", *off)
		}
		fmt.Fprintf(stdout, "%s: the daemon (pid %d) released %s (OBSOLETE)\n", src.name, src.pid, what)
		return nil
	}
	if *offset != "" {
		return fmt.Errorf("--offset: with no daemon running there is no portion to choose from")
	}
	ds, _, err := src.pinnedPortion(0)
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "%s: %d records dropped from the ring (offset %d to %d)\n", src.name, ds.Len(), ds.PortionOffset, ds.NextOffset())
	return nil
}

func cmdDatasetExport(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("dataset export", "dataset export [flags] --format jsonl|csv|parquet -o FILE SUBSYSTEM/MODEL", datasetAbout, datasetExamples, stdout, stderr)
	p := addPaths(fs)
	format := fs.String("format", "", "jsonl, csv or parquet (default: from the file's extension)")
	file := fs.String("o", "", "the file to write (replaced atomically)")
	offset := fs.String("offset", "", "only the portion at this stream offset (default: every portion the daemon holds)")
	if err := fs.parse(args); err != nil {
		return err
	}
	if err := fs.want(1, "a model: mlbpf dataset export synthetic/demo --format parquet -o demo.parquet"); err != nil {
		return err
	}
	if *file == "" {
		return fmt.Errorf("-o FILE: name the file to write")
	}
	f := export.FormatOf(*file)
	if *format != "" {
		var err error
		if f, err = export.ParseFormat(*format); err != nil {
			return fmt.Errorf("--format: %w", err)
		}
	}
	if f == export.FormatUnknown {
		return fmt.Errorf("--format: name a format (jsonl, csv, parquet) or give the file one of their extensions")
	}
	src, err := openPortions(ctx, p, fs.Arg(0))
	if err != nil {
		return err
	}
	defer src.Close()
	sub, _, err := daemon.SplitName(src.name)
	if err != nil {
		return err
	}
	var datasets []*model.Dataset
	evicted := 0
	if src.c != nil {
		off, err := parseOffset(*offset)
		if err != nil {
			return err
		}
		offsets := []*uint64{off}
		if off == nil {
			if offsets, err = retained(ctx, src.c, src.name); err != nil {
				return err
			}
		}
		for _, o := range offsets {
			portion, err := src.c.Fetch(ctx, src.name, agent.FetchOptions{Offset: o, Raw: true})
			if off == nil && isEvicted(err) {
				// The daemon moved on while we fetched the ones before
				// (a slow machine): what it evicted is gone, say so.
				evicted++
				continue
			}
			if err != nil {
				return unwrapRemote(err)
			}
			ds, err := datasetOf(portion)
			if err != nil {
				return err
			}
			datasets = append(datasets, ds)
		}
	} else {
		if *offset != "" {
			return fmt.Errorf("--offset: with no daemon running the portion is what the ring holds now")
		}
		ds, _, err := src.pinnedPortion(0)
		if err != nil {
			return err
		}
		datasets = append(datasets, ds)
	}
	if len(datasets) == 0 && evicted > 0 {
		// Every portion listed went while we fetched: the daemon is
		// stopping, or moved on faster than we read. An empty file is
		// not the export asked for; the old file stays.
		return fmt.Errorf("exporting %s: the daemon evicted all %d portion(s) it listed before they could be fetched (is it stopping?): nothing written, %s unchanged; run the export again", src.name, evicted, *file)
	}
	st, err := export.WriteFile(ctx, *file, f, sub.Records.Type, func(w *export.Writer) error {
		for _, ds := range datasets {
			if err := w.WriteDataset(ds); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "%s: %s written to %s (%s)\n", src.name, st, *file, f)
	if st.Rows == 0 && src.c == nil {
		fmt.Fprintf(stderr, "%s: no daemon was running, and the pinned ring held no record (a daemon drains it as it runs, and did so as it stopped)\n", src.name)
	}
	if evicted > 0 {
		fmt.Fprintf(stdout, "%s: %d portion(s) evicted by the daemon during the export, not in the file\n", src.name, evicted)
	}
	return nil
}

// isEvicted says whether err is the daemon's answer for a portion it has
// evicted (OBSOLETE) since it listed it.
func isEvicted(err error) bool {
	var re *agent.RemoteError
	return errors.As(err, &re) && strings.Contains(re.Msg, "is OBSOLETE: evicted")
}

// retained returns the offsets of the portions the daemon holds for a
// model, oldest first.
func retained(ctx context.Context, c *agent.Client, name string) ([]*uint64, error) {
	models, err := c.Models(ctx)
	if err != nil {
		return nil, err
	}
	for _, m := range models {
		if m.Model != name {
			continue
		}
		if !m.Datasets {
			return nil, fmt.Errorf("%s: the daemon does not publish this model's datasets", name)
		}
		if len(m.Portions) == 0 {
			return nil, fmt.Errorf("%s: the daemon holds no portion yet", name)
		}
		out := make([]*uint64, len(m.Portions))
		for i := range m.Portions {
			out[i] = &m.Portions[i]
		}
		return out, nil
	}
	return nil, fmt.Errorf("%s: not run by the daemon", name)
}

// datasetOf rebuilds a dataset from a portion fetched raw.
func datasetOf(p *agent.Portion) (*model.Dataset, error) {
	if p.RecordSize <= 0 || len(p.Data) != int(p.Size)*p.RecordSize {
		return nil, fmt.Errorf("portion %d: %d bytes of data for %d records of %d bytes", p.Offset, len(p.Data), p.Size, p.RecordSize)
	}
	ds, err := model.NewDataset(model.DatasetStructure, p.RecordSize, max(int(p.Size), 1))
	if err != nil {
		return nil, err
	}
	if err := ds.MarkClean(); err != nil {
		return nil, err
	}
	ds.PortionOffset = p.Offset
	for i := range int(p.Size) {
		if err := ds.Append(p.Record(i)); err != nil {
			return nil, err
		}
	}
	ds.Lost, ds.Corrupted = p.Lost, p.Corrupted
	if err := ds.Extracted(p.Lost > 0); err != nil {
		return nil, err
	}
	if p.State == model.DatasetCorrupted.String() {
		if err := ds.Corrupt(); err != nil {
			return nil, err
		}
	}
	return ds, nil
}
