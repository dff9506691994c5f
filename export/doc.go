// Package export writes model datasets (model.Dataset portions of a
// model's record stream) as JSON lines, CSV or Parquet: one row per
// record, one typed column per field of the record, readable as they are
// by pandas, polars or a shell. It backs
// `mlbpf dataset export SUBSYSTEM/MODEL --format jsonl|csv|parquet -o FILE`.
//
//	err := export.WriteFile(ctx, "synthetic.parquet", export.Parquet,
//		reflect.TypeFor[synthetic.Record](), func(w *export.Writer) error {
//			for _, d := range datasets {
//				if err := w.WriteDataset(d); err != nil {
//					return err
//				}
//			}
//			return nil
//		})
//
// # Columns
//
// NewSchema derives the columns once per record type, by reflection, from
// the bpf2go-generated Go type of the record (synthetic.Record for
// example): integers, bools, nested structs and fixed arrays of those.
// Blank fields (structs.HostLayout, bpf2go's padding) are skipped.
// Records are then decoded from the dataset's bytes, little-endian as
// bpf2go's *_bpfel.go types lay them out, with offsets computed once: no
// reflection per record.
//
// Columns are named after the C fields, in the order of the struct:
//
//   - A field's name is its Go name back in snake_case, as the C source
//     spells it: TsNs → ts_ns, DefaultValue → default_value, RttMinUs →
//     rtt_min_us (bpf2go turns ts_ns into TsNs; a C name with an
//     underscore before a digit, a_1, comes back as a1).
//   - The record header, struct mlbpf_record_hdr as the first field
//     (recognized by its layout), contributes its fields unprefixed:
//     ts_ns, kind, size, arm, mode, reserved, generation, cpu.
//   - Any other nested struct prefixes its fields with its own column name
//     and an underscore: a field Ports struct{ Sport, Dport uint16 } gives
//     ports_sport and ports_dport.
//   - An array gives one column per element, suffixed with an underscore
//     and the index from 0: Daddr [16]uint8 gives daddr_0 … daddr_15, Saddr
//     [4]uint32 saddr_0 … saddr_3; nested, the suffixes add up (m_1_2).
//   - An array of int8, bpf2go's type for a C char array (char cc[16]),
//     is one string column: its bytes up to the first NUL, invalid UTF-8
//     replaced by U+FFFD.
//
// Two fields that would give the same column name make NewSchema fail
// rather than guess. Three columns do not come from a field as it is:
//
//   - stream_offset (uint64), first: the record's index in the model's
//     record stream, the dataset's PortionOffset plus the record's index in
//     it, so a row can be traced back to its portion (the RFC's
//     portion_offset) and rows of several exports joined or deduplicated;
//   - arm_name, right after arm, for records with a header: the arm's name
//     ("model", "control", … as model.Arm.String);
//   - mode_name, right after mode: the mode's name ("LEARNING", … as
//     model.Mode.String).
//
// ts_ns is bpf_ktime_get_ns(), nanoseconds since boot, not a wall-clock
// time: it stays a plain uint64.
//
// # Formats
//
// JSONL: one JSON object per line, keys in column order. Integers are
// JSON numbers written exactly, uint64 ones included: Python's json,
// pandas.read_json(path, lines=True) and Go's encoding/json with
// UseNumber read ts_ns, which exceeds 2^53, exactly; a reader that parses
// numbers as float64 (JavaScript's JSON.parse) rounds it.
//
// CSV: a header line of column names, then one line per record, as RFC
// 4180 and encoding/csv read them; only strings are ever quoted. Types
// are left to the reader's inference: pandas.read_csv infers uint64 for
// ts_ns; a reader that infers signed 64-bit integers (polars) needs the
// uint64 columns declared, or Parquet.
//
// Parquet: one required column per schema column, each with its integer
// logical type (INT(64, false) for a uint64, INT(8, false) for a uint8 on
// an INT32 physical column, …), strings as STRING, dictionary-encoded;
// Snappy compression; at most RowGroupRows rows per row group, fewer for
// records of many columns. Arrow readers (pyarrow, so pandas; polars)
// read the integer columns as uint64, uint8, ….
//
// # Datasets
//
// Writer.WriteDataset writes every dataset whose data is consistent,
// whatever its state: a CORRUPTED dataset's records are the ones that
// decoded (the others were skipped when it was built and are counted in
// its Corrupted), an EXTRACTION_FAILURE one's are those read before the
// failure, an OBSOLETE one still holds its records. Stats sums what the
// datasets missed (Lost, Corrupted) and counts the corrupted and failed
// datasets, for the command to report.
//
// # Memory and files
//
// A Writer streams: JSONL and CSV buffer 64 KiB; Parquet buffers one row
// group (at most RowGroupRows rows, about 32 MiB of values) before
// writing it. WriteFile writes to a
// temporary file beside the target and renames it into place once the
// Writer is closed and the file synced: on an error or a cancelled
// context (SIGTERM) the temporary file is removed and nothing
// half-written is ever at the target.
package export
