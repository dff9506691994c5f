package export

import (
	"bytes"
	"encoding/json"
	"fmt"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/mlbpf/mlbpf/internal/testutil"
)

// python returns the Python interpreter to read exports with:
// $MLBPF_PYTHON, or else the first of python3 on PATH and the system's
// /usr/bin/python3 (where apt installs modules) that has the modules. It
// skips the test if none has them: through testutil.Missing (a failure on
// CI, whose setup installs python3-pandas), or, for the modules Debian does
// not package, testutil.NotPackaged.
func python(t *testing.T, modules ...string) string {
	t.Helper()
	candidates := []string{os.Getenv("MLBPF_PYTHON")}
	if candidates[0] == "" {
		candidates = []string{"python3", "/usr/bin/python3"}
	}
	var paths []string
	lacking := map[string]bool{}
	for _, c := range candidates {
		path, err := exec.LookPath(c)
		if err != nil {
			continue
		}
		paths = append(paths, path)
		ok := true
		for _, m := range modules {
			if err := exec.Command(path, "-c", "import "+m).Run(); err != nil {
				lacking[m], ok = true, false
			}
		}
		if ok {
			return path
		}
	}
	if len(paths) == 0 {
		testutil.Missing(t, fmt.Sprintf("needs %s: apt-get install python3 (or set MLBPF_PYTHON)", strings.Join(candidates, " or ")))
	}
	for _, m := range modules {
		if how, ok := notPackaged[m]; ok && lacking[m] {
			testutil.NotPackaged(t, "the Python module "+m, how)
		}
	}
	for _, m := range modules {
		if lacking[m] {
			testutil.Missing(t, fmt.Sprintf("needs the Python module %s in %s: apt-get install python3-%s", m, strings.Join(paths, " or "), m))
		}
	}
	return "" // not reached: Missing ends the test
}

// notPackaged are the Python modules Debian (bookworm, CI's) does not
// package, and how to get them.
var notPackaged = map[string]string{
	"pyarrow": "pip install pyarrow",
	"polars":  "pip install polars",
}

// pyFrame is what readFrameScript prints about a data frame.
type pyFrame struct {
	Columns []string          `json:"columns"`
	Dtypes  map[string]string `json:"dtypes"`
	TsNs    []string          `json:"ts_ns"`
	ArmName []string          `json:"arm_name"`
}

// readFrameScript reads a file with pandas or polars (argv[1]: the
// library, argv[2]: csv or parquet, argv[3]: the file) and prints its
// columns, their dtypes and two columns' values as JSON.
const readFrameScript = `
import json, sys
lib, fmt, path = sys.argv[1:4]
if lib == "pandas":
    import pandas as pd
    df = pd.read_csv(path) if fmt == "csv" else pd.read_parquet(path)
    cols = [str(c) for c in df.columns]
    dtypes = {str(c): str(t) for c, t in df.dtypes.items()}
    ts, arms = df["ts_ns"].tolist(), df["arm_name"].tolist()
else:
    import polars as pl
    df = pl.read_csv(path) if fmt == "csv" else pl.read_parquet(path)
    cols = list(df.columns)
    dtypes = {c: str(t) for c, t in zip(df.columns, df.dtypes)}
    ts, arms = df["ts_ns"].to_list(), df["arm_name"].to_list()
print(json.dumps({"columns": cols, "dtypes": dtypes,
                  "ts_ns": [str(v) for v in ts], "arm_name": [str(v) for v in arms]}))
`

// TestPythonReaders reads the CSV and Parquet exports with pandas and
// polars, as a data scientist would, when they are installed: the
// columns, their dtypes and uint64 values above 2^63 come back as
// written.
func TestPythonReaders(t *testing.T) {
	recs := syntheticRecords(10)
	d := datasetOf(t, 0, recs)
	dir := t.TempDir()
	for _, f := range []Format{CSV, Parquet} {
		path := filepath.Join(dir, "synthetic"+f.Extension())
		if _, err := WriteFile(t.Context(), path, f, syntheticType, writeAll(d)); err != nil {
			t.Fatal(err)
		}
	}
	var wantTs, wantArms []string
	for _, r := range recs {
		row := syntheticRow(0, r)
		wantTs, wantArms = append(wantTs, row[1]), append(wantArms, row[5])
	}
	// Typed columns in Parquet; CSV leaves types to inference: the
	// uint64 above 2^63 is still inferred as such.
	typed := map[string]string{}
	for _, c := range syntheticColumns {
		typed[c.Name] = c.Type.String()
	}
	for _, tc := range []struct {
		lib, format string
		modules     []string
		dtypes      map[string]string
		// values: ts_ns comes back exactly. polars infers CSV integers
		// as Int64, which ts_ns above 2^63 overflows.
		values bool
	}{
		{"pandas", "csv", []string{"pandas"}, map[string]string{"ts_ns": "uint64", "key": "int64", "arm_name": "object"}, true},
		{"pandas", "parquet", []string{"pandas", "pyarrow"}, with(typed, "arm_name", "object", "mode_name", "object"), true},
		{"polars", "csv", []string{"polars"}, map[string]string{"arm_name": "String"}, false},
		{"polars", "parquet", []string{"polars"}, polarsTypes(typed), true},
	} {
		t.Run(tc.lib+"/"+tc.format, func(t *testing.T) {
			py := python(t, tc.modules...)
			path := filepath.Join(dir, "synthetic."+tc.format)
			var stdout, stderr bytes.Buffer
			cmd := exec.Command(py, "-c", readFrameScript, tc.lib, tc.format, path)
			cmd.Stdout, cmd.Stderr = &stdout, &stderr
			if err := cmd.Run(); err != nil {
				t.Fatalf("%s reading %s: %v\n%s", tc.lib, path, err, stderr.Bytes())
			}
			var got pyFrame
			if err := json.Unmarshal(stdout.Bytes(), &got); err != nil {
				t.Fatalf("%v: %s", err, stdout.Bytes())
			}
			if !slices.Equal(got.Columns, syntheticNames()) {
				t.Errorf("columns %q, want %q", got.Columns, syntheticNames())
			}
			for _, c := range slices.Sorted(maps.Keys(tc.dtypes)) {
				if got.Dtypes[c] != tc.dtypes[c] {
					t.Errorf("%s: dtype %s, want %s", c, got.Dtypes[c], tc.dtypes[c])
				}
			}
			if tc.values && !slices.Equal(got.TsNs, wantTs) {
				t.Errorf("ts_ns %q, want %q", got.TsNs, wantTs)
			}
			if !slices.Equal(got.ArmName, wantArms) {
				t.Errorf("arm_name %q, want %q", got.ArmName, wantArms)
			}
		})
	}
}

// with returns m with the key-value pairs kv set.
func with(m map[string]string, kv ...string) map[string]string {
	m = maps.Clone(m)
	for i := 0; i+1 < len(kv); i += 2 {
		m[kv[i]] = kv[i+1]
	}
	return m
}

// polarsTypes maps Go type names to polars' dtypes: uint64 → UInt64.
func polarsTypes(m map[string]string) map[string]string {
	out := make(map[string]string, len(m))
	for c, typ := range m {
		switch {
		case typ == "string":
			out[c] = "String"
		case typ[0] == 'u':
			out[c] = "UInt" + typ[len("uint"):]
		default:
			out[c] = "Int" + typ[len("int"):]
		}
	}
	return out
}
