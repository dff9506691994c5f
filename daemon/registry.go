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
// before anything else runs. Two packages may serve one subsystem name
// with different models (tcp/cc and tcp/rto); registering a model twice
// panics.
func Register(subs ...*pipeline.Subsystem) {
	registryMu.Lock()
	defer registryMu.Unlock()
	for _, s := range subs {
		for _, r := range registry {
			if r.Name == s.Name && (len(r.Models) == 0 || len(s.Models) == 0 ||
				slices.ContainsFunc(s.Models, func(m string) bool { return slices.Contains(r.Models, m) })) {
				panic("daemon: subsystem " + s.Name + " registered twice for the same models")
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

// Lookup returns the subsystem of a model name: the one providing the
// model of "tcp/cc", or the first of the name for "tcp" (or for a model
// none provides, which SplitName and Check then refuse); an error lists
// the known subsystems.
func Lookup(name string) (*pipeline.Subsystem, error) {
	sub, modelName, _ := strings.Cut(name, "/")
	var names []string
	var first *pipeline.Subsystem
	for _, s := range Subsystems() {
		if s.Name != sub {
			if !slices.Contains(names, s.Name) {
				names = append(names, s.Name)
			}
			continue
		}
		if modelName != "" && (len(s.Models) == 0 || slices.Contains(s.Models, modelName)) {
			return s, nil
		}
		if first == nil {
			first = s
		}
	}
	switch {
	case first != nil:
		return first, nil
	case len(names) == 0:
		return nil, fmt.Errorf("unknown subsystem %q: no subsystem is registered (call daemon.Register(subsystems.All()...) before anything else)", sub)
	}
	return nil, fmt.Errorf("unknown subsystem %q (want %s)", sub, strings.Join(names, ", "))
}

// models lists the models the subsystems of name provide (none: any).
func models(name string) []string {
	var out []string
	for _, s := range Subsystems() {
		if s.Name == name {
			if len(s.Models) == 0 {
				return nil
			}
			out = append(out, s.Models...)
		}
	}
	return out
}

// SplitName splits "subsystem/model" and checks both names and that the
// subsystem provides the model.
func SplitName(name string) (*pipeline.Subsystem, string, error) {
	subName, modelName, ok := strings.Cut(name, "/")
	if !ok || loader.ValidName(subName) != nil || loader.ValidName(modelName) != nil {
		return nil, "", fmt.Errorf("model %q: want subsystem/model, e.g. tcp/cc or synthetic/demo", name)
	}
	s, err := Lookup(name)
	if err != nil {
		return nil, "", err
	}
	if ms := models(s.Name); len(ms) > 0 && !slices.Contains(ms, modelName) {
		return nil, "", fmt.Errorf("model %q: %s has only %s", name, s.Name, strings.Join(ms, ", "))
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
	if ms := models(s.Name); len(ms) > 0 && !slices.Contains(ms, m.ModelName()) {
		return nil, c.ModelError(m, "name", "%s has only the model%s %s", s.Name, plural(len(ms)), strings.Join(ms, ", "))
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
