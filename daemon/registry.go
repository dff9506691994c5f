package daemon

import (
	"fmt"
	"slices"
	"strings"
	"sync"

	"github.com/mlbpf/mlbpf/config"
	"github.com/mlbpf/mlbpf/loader"
	"github.com/mlbpf/mlbpf/pipeline"
)

var (
	registryMu sync.RWMutex
	registry   []*pipeline.Subsystem
)

// Register adds subsystems to those the daemon and the CLI know. The
// binary registers every subsystem, in one place (package subsystems),
// before anything else runs; registering a name twice panics.
func Register(subs ...*pipeline.Subsystem) {
	registryMu.Lock()
	defer registryMu.Unlock()
	for _, s := range subs {
		for _, r := range registry {
			if r.Name == s.Name {
				panic("daemon: subsystem " + s.Name + " registered twice")
			}
		}
		registry = append(registry, s)
	}
}

// Subsystems returns every registered subsystem, in registration order.
func Subsystems() []*pipeline.Subsystem {
	registryMu.RLock()
	defer registryMu.RUnlock()
	return slices.Clone(registry)
}

// Lookup returns the subsystem of a model name ("tcp/cc" or "tcp"), or an
// error listing the known ones.
func Lookup(name string) (*pipeline.Subsystem, error) {
	sub, _, _ := strings.Cut(name, "/")
	var names []string
	for _, s := range Subsystems() {
		if s.Name == sub {
			return s, nil
		}
		names = append(names, s.Name)
	}
	if len(names) == 0 {
		return nil, fmt.Errorf("unknown subsystem %q: no subsystem is registered (call daemon.Register(subsystems.All()...) before anything else)", sub)
	}
	return nil, fmt.Errorf("unknown subsystem %q (want %s)", sub, strings.Join(names, ", "))
}

// SplitName splits "subsystem/model" and checks both names and that the
// subsystem provides the model.
func SplitName(name string) (*pipeline.Subsystem, string, error) {
	subName, modelName, ok := strings.Cut(name, "/")
	if !ok || loader.ValidName(subName) != nil || loader.ValidName(modelName) != nil {
		return nil, "", fmt.Errorf("model %q: want subsystem/model, e.g. tcp/cc or synthetic/demo", name)
	}
	s, err := Lookup(subName)
	if err != nil {
		return nil, "", err
	}
	if len(s.Models) > 0 && !slices.Contains(s.Models, modelName) {
		return nil, "", fmt.Errorf("model %q: %s has only %s", name, s.Name, strings.Join(s.Models, ", "))
	}
	return s, modelName, nil
}

// Check checks a configuration against the subsystems: every model's
// subsystem exists and provides it, and its section decodes into the
// subsystem's configuration and validates. Errors name the file, line and
// field.
func Check(c *config.Config) error {
	for i := range c.Models {
		if _, err := section(c, &c.Models[i]); err != nil {
			return err
		}
	}
	return nil
}

// section checks a model's subsystem and returns its section, decoded
// into the subsystem's configuration and validated.
func section(c *config.Config, m *config.Model) (config.Section, error) {
	s, err := Lookup(m.Name)
	if err != nil {
		return nil, c.ModelError(m, "name", "%v", err)
	}
	if len(s.Models) > 0 && !slices.Contains(s.Models, m.ModelName()) {
		return nil, c.ModelError(m, "name", "%s has only the model%s %s", s.Name, plural(len(s.Models)), strings.Join(s.Models, ", "))
	}
	sec := s.Config()
	if err := c.CheckSection(m, sec); err != nil {
		return nil, err
	}
	return sec, nil
}

func plural(n int) string {
	if n == 1 {
		return ""
	}
	return "s"
}
