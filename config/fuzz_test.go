package config_test

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mlbpf/mlbpf/config"
	"github.com/mlbpf/mlbpf/daemon"
	"github.com/mlbpf/mlbpf/loader"
	"github.com/mlbpf/mlbpf/model"
)

// addConfigs adds every configuration of testdata/config (good and bad)
// whose name ends in one of exts as a seed.
func addConfigs(f *testing.F, exts ...string) {
	files, _ := filepath.Glob("../testdata/config/*/*")
	n := 0
	for _, file := range files {
		for _, ext := range exts {
			if strings.HasSuffix(file, ext) {
				data, err := os.ReadFile(file)
				if err != nil {
					f.Fatal(err)
				}
				f.Add(data)
				n++
			}
		}
	}
	if n == 0 {
		f.Fatalf("no %v configurations in testdata/config", exts)
	}
}

// checkParse parses data as the named file and checks what came out: an
// error names the file and wraps config.ErrInvalid; a configuration that
// parses is complete and sound, as the daemon relies on it to be, and the
// subsystems' own checks of it do not panic either.
func checkParse(t *testing.T, name string, data []byte) {
	c, err := config.Parse(name, data)
	if err != nil {
		if !errors.Is(err, config.ErrInvalid) {
			t.Fatalf("error does not wrap ErrInvalid: %v", err)
		}
		if !strings.HasPrefix(err.Error(), name) {
			t.Fatalf("error does not name the file: %v", err)
		}
		return
	}
	for _, p := range []string{c.PinRoot, c.StateDir, c.Socket} {
		if !filepath.IsAbs(p) {
			t.Fatalf("accepted a relative path %q", p)
		}
	}
	if c.Interval < 10*time.Millisecond {
		t.Fatalf("accepted an interval of %v", c.Interval)
	}
	if c.Metrics.Addr != "" {
		if err := config.CheckMetricsAddr(c.Metrics.Addr, c.Metrics.AllowRemote); err != nil {
			t.Fatalf("accepted metrics address %q: %v", c.Metrics.Addr, err)
		}
	}
	seen := map[string]bool{}
	for i := range c.Models {
		m := &c.Models[i]
		if loader.ValidName(m.SubsystemName()) != nil || loader.ValidName(m.ModelName()) != nil {
			t.Fatalf("accepted model name %q", m.Name)
		}
		if seen[m.Name] {
			t.Fatalf("accepted %s twice", m.Name)
		}
		seen[m.Name] = true
		o := m.Options(c.Interval)
		if err := o.Validate(); err != nil {
			t.Fatalf("%s: accepted options that do not validate: %v", m.Name, err)
		}
		if !o.MaxMode.Valid() || !o.InitialMode.Valid() || o.InitialMode > o.MaxMode {
			t.Fatalf("%s: initial mode %v, max_mode %v", m.Name, o.InitialMode, o.MaxMode)
		}
		if o.CollabPermille > model.Permille || o.HoldoutPermille > model.Permille {
			t.Fatalf("%s: shares %d‰ and %d‰", m.Name, o.CollabPermille, o.HoldoutPermille)
		}
		if p := c.Period(m); p < 10*time.Millisecond || (m.Lease != 0 && m.Lease <= p) {
			t.Fatalf("%s: period %v, lease %v", m.Name, p, m.Lease)
		}
		if m.Learner != config.LearnerBuiltin && m.Learner != config.LearnerExternal {
			t.Fatalf("%s: learner %q", m.Name, m.Learner)
		}
	}
	// The daemon's checks: each subsystem decodes its own section.
	if err := daemon.Check(c); err != nil && !errors.Is(err, config.ErrInvalid) {
		t.Fatalf("daemon.Check: error does not wrap ErrInvalid: %v", err)
	}
}

// FuzzParseYAML: no YAML input panics the configuration parser or the
// subsystems' checks, and what they accept is sound.
func FuzzParseYAML(f *testing.F) {
	addConfigs(f, ".yaml", ".yml")
	f.Add(config.DefaultYAML())
	f.Add([]byte("models: [{name: synthetic/demo, synthetic: {max_value: -1}}]"))
	f.Add([]byte("a: &a [*a, *a]\nb: *a\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		checkParse(t, "fuzz.yaml", data)
	})
}

// FuzzParseTOML: the same for TOML.
func FuzzParseTOML(f *testing.F) {
	addConfigs(f, ".toml")
	f.Add([]byte("[[models]]\nname = \"synthetic/demo\"\n[models.synthetic]\nmax_value = 1e3\n"))
	f.Add([]byte("interval = 1979-05-27T07:32:00Z\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		checkParse(t, "fuzz.toml", data)
	})
}
