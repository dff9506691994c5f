package config

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mlbpf/mlbpf/model"
)

func TestDefault(t *testing.T) {
	c := Default()
	if len(c.Models) != 1 || c.Models[0].Name != "tcp/cc" {
		t.Fatalf("default models: %+v", c.Models)
	}
	m := &c.Models[0]
	o := m.Options(c.Interval)
	if o.InitialMode != model.ModeLearning || o.MaxMode != model.ModeLearning {
		t.Fatalf("default tcp/cc must learn and never act: %+v", o)
	}
	if m.Subsystem == nil || m.Subsystem.Get("cgroup") == nil {
		t.Fatalf("default tcp/cc has no tcp section: %+v", m.Subsystem)
	}
	if c.PinRoot != "/sys/fs/bpf/mlbpf" || c.StateDir != DefaultStateDir || c.Socket != DefaultSocket || c.Interval != time.Second {
		t.Fatalf("default paths: %+v", c)
	}
}

func TestGoodConfigs(t *testing.T) {
	files, _ := filepath.Glob("../testdata/config/good/*")
	if len(files) == 0 {
		t.Fatal("no good configurations in testdata/config/good")
	}
	for _, f := range files {
		t.Run(filepath.Base(f), func(t *testing.T) {
			c, err := Load(f)
			if err != nil {
				t.Fatal(err)
			}
			if len(c.Models) == 0 {
				t.Fatal("no models")
			}
		})
	}
}

// TestBadConfigs checks every file of testdata/config/bad: its first line
// is "# want: <the error>", matched exactly.
func TestBadConfigs(t *testing.T) {
	files, _ := filepath.Glob("../testdata/config/bad/*")
	if len(files) == 0 {
		t.Fatal("no bad configurations in testdata/config/bad")
	}
	for _, f := range files {
		t.Run(filepath.Base(f), func(t *testing.T) {
			data, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			first, _, _ := strings.Cut(string(data), "\n")
			want, ok := strings.CutPrefix(first, "# want: ")
			if !ok {
				t.Fatalf("first line %q: want \"# want: <error>\"", first)
			}
			_, err = Parse(f, data)
			if err == nil {
				t.Fatalf("parsed; want %s", want)
			}
			if !errors.Is(err, ErrInvalid) {
				t.Errorf("error does not wrap ErrInvalid: %v", err)
			}
			if err.Error() != want {
				t.Fatalf("error\n got: %s\nwant: %s", err, want)
			}
		})
	}
}

func TestYAMLAndTOMLAgree(t *testing.T) {
	y, err := Load("../testdata/config/good/synthetic.yaml")
	if err != nil {
		t.Fatal(err)
	}
	tm, err := Load("../testdata/config/good/synthetic.toml")
	if err != nil {
		t.Fatal(err)
	}
	if len(y.Models) != len(tm.Models) {
		t.Fatalf("models: yaml %d toml %d", len(y.Models), len(tm.Models))
	}
	for i := range y.Models {
		a, b := y.Models[i], tm.Models[i]
		if a.Name != b.Name || a.Options(y.Interval) != b.Options(tm.Interval) {
			t.Errorf("model %d: yaml %+v toml %+v", i, a.Options(y.Interval), b.Options(tm.Interval))
		}
	}
	if y.Interval != tm.Interval || y.StateDir != tm.StateDir {
		t.Errorf("yaml %+v toml %+v", y, tm)
	}
}

func TestSection(t *testing.T) {
	c, err := Parse("x.yaml", []byte(`
models:
  - name: synthetic/demo
    max_mode: recommendation
    synthetic:
      max_value: 100
      bogus: 1
`))
	if err != nil {
		t.Fatal(err)
	}
	var s struct {
		MaxValue uint32 `cfg:"max_value"`
	}
	err = c.DecodeSection(&c.Models[0], &s)
	if err == nil || err.Error() != `x.yaml:7: models[0].synthetic.bogus: unknown field (want max_value)` {
		t.Fatalf("got %v", err)
	}
	if s.MaxValue != 100 {
		t.Fatalf("max_value %d", s.MaxValue)
	}
	if err := c.SectionError(&c.Models[0], "max_value", "too big"); err.Error() != "x.yaml:6: models[0].synthetic.max_value: too big" {
		t.Fatalf("got %v", err)
	}
}

func TestMetricsAddr(t *testing.T) {
	for _, ok := range []string{"127.0.0.1:9464", "[::1]:9464", "localhost:1"} {
		if err := CheckMetricsAddr(ok, false); err != nil {
			t.Errorf("%s: %v", ok, err)
		}
	}
	for _, bad := range []string{"0.0.0.0:9464", ":9464", "10.1.2.3:80", "9464", "example.com:80"} {
		if err := CheckMetricsAddr(bad, false); err == nil {
			t.Errorf("%s accepted", bad)
		}
	}
	if err := CheckMetricsAddr(":9464", true); err != nil {
		t.Errorf("allowed remote: %v", err)
	}
}

func TestFleetHostName(t *testing.T) {
	t.Setenv(HostEnv, "node/7.example")
	if got := (&Fleet{Host: "web-17"}).HostName(); got != "web-17" {
		t.Errorf("configured host: %q", got)
	}
	if got := (&Fleet{}).HostName(); got != "node-7-example" {
		t.Errorf("from $%s: %q, want node-7-example", HostEnv, got)
	}
	t.Setenv(HostEnv, "")
	h, _ := os.Hostname()
	if got := (&Fleet{}).HostName(); h != "" && !strings.HasPrefix(got, h[:1]) {
		t.Errorf("from the host name %q: %q", h, got)
	}
}
