package export

import (
	"errors"
	"fmt"
	"path/filepath"
	"strings"
)

// Format is a file format datasets export to.
type Format uint8

// Formats.
const (
	FormatUnknown Format = iota
	JSONL                // JSON lines: one object per record
	CSV                  // comma-separated values with a header line
	Parquet              // Apache Parquet, typed columns
)

var formatNames = [...]string{"unknown", "jsonl", "csv", "parquet"}

// ErrUnknownFormat is returned for a format name that is not one of
// jsonl, csv and parquet.
var ErrUnknownFormat = errors.New("unknown export format")

// String returns the format's name as ParseFormat accepts it, "jsonl" for
// example.
func (f Format) String() string {
	if int(f) < len(formatNames) {
		return formatNames[f]
	}
	return fmt.Sprintf("Format(%d)", uint8(f))
}

// Extension returns the usual file name extension of the format, with its
// dot: ".jsonl", ".csv", ".parquet".
func (f Format) Extension() string {
	if f == FormatUnknown || int(f) >= len(formatNames) {
		return ""
	}
	return "." + formatNames[f]
}

// ParseFormat parses a format name case-insensitively: jsonl (or ndjson),
// csv, parquet.
func ParseFormat(s string) (Format, error) {
	switch strings.ToLower(strings.TrimSpace(s)) {
	case "jsonl", "ndjson":
		return JSONL, nil
	case "csv":
		return CSV, nil
	case "parquet":
		return Parquet, nil
	}
	return FormatUnknown, fmt.Errorf("parsing export format %q: %w: want jsonl, csv or parquet", s, ErrUnknownFormat)
}

// FormatOf returns the format a file name's extension names (.jsonl,
// .ndjson, .csv, .parquet, in any case), or FormatUnknown.
func FormatOf(path string) Format {
	ext := strings.TrimPrefix(filepath.Ext(path), ".")
	if ext == "" {
		return FormatUnknown
	}
	f, err := ParseFormat(ext)
	if err != nil {
		return FormatUnknown
	}
	return f
}

// MarshalText implements encoding.TextMarshaler.
func (f Format) MarshalText() ([]byte, error) {
	if f == FormatUnknown || int(f) >= len(formatNames) {
		return nil, fmt.Errorf("marshaling %v: %w", f, ErrUnknownFormat)
	}
	return []byte(f.String()), nil
}

// UnmarshalText implements encoding.TextUnmarshaler, accepting what
// ParseFormat accepts, so a Format can be a flag.TextVar.
func (f *Format) UnmarshalText(text []byte) error {
	v, err := ParseFormat(string(text))
	if err != nil {
		return err
	}
	*f = v
	return nil
}

func (f Format) valid() bool { return f > FormatUnknown && int(f) < len(formatNames) }
