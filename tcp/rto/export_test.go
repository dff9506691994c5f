package rto

import (
	"bytes"
	"reflect"
	"testing"

	"github.com/mlbpf/mlbpf/export"
)

// TestExportFormats: tcp/rto's records export like every dataset's.
func TestExportFormats(t *testing.T) {
	for _, f := range []string{"jsonl", "csv", "parquet"} {
		ff, err := export.ParseFormat(f)
		if err != nil {
			t.Fatal(err)
		}
		var b bytes.Buffer
		w, err := export.NewWriter(&b, ff, reflect.TypeFor[Record]())
		if err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		if err := w.Close(); err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		if f == "csv" && !bytes.Contains(b.Bytes(), []byte("fct_ns")) {
			t.Errorf("csv header %q lacks fct_ns", b.String())
		}
	}
}
