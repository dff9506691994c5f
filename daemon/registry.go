package daemon

import (
	"errors"
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
// with disjoint lists of models (tcp/cc and tcp/rto); registering a name
// twice otherwise panics.
func Register(subs ...*pipeline.Subsystem) {
	registryMu.Lock()
	defer registryMu.Unlock()
	for _, s := range subs {
		for _, r := range registry {
			if r.Name == s.Name && !disjoint(r.Models, s.Models) {
				panic("daemon: subsystem " + s.Name + " registered twice")
			}
		}
		registry = append(registry, s)
	}
}

// disjoint reports whether two model lists name different models (an
// empty list names every model).
func disjoint(a, b []string) bool {
	if len(a) == 0 || len(b) == 0 {
		return false
	}
	for _, m := range a {
		if slices.Contains(b, m) {
			return false
		}
	}
	return true
}

// Subsystems returns every registered subsystem, in registration order.
func Subsystems() []*pipeline.Subsystem {
	registryMu.RLock()
	defer registryMu.RUnlock()
	return slices.Clone(registry)
}

// Lookup returns the subsystem of a model name ("tcp/cc", or "tcp" for
// the first subsystem of that name), or an error listing the known ones.
func Lookup(name string) (*pipeline.Subsystem, error) {
	sub, modelName, _ := strings.Cut(name, "/")
	var names, models []string
	var named *pipeline.Subsystem
	for _, s := range Subsystems() {
		if s.Name != sub {
			if !slices.Contains(names, s.Name) {
				names = append(names, s.Name)
			}
			continue
		}
		if modelName == "" || len(s.Models) == 0 || slices.Contains(s.Models, modelName) {
			return s, nil
		}
		if named == nil {
			named = s
		}
		models = append(models, s.Models...)
	}
	if named != nil {
		// No package of the subsystem has the model: the first one
		// stands for the subsystem, and the error names every model.
		return named, &unknownModelError{name: name, sub: sub, models: models}
	}
	if len(names) == 0 {
		return nil, fmt.Errorf("unknown subsystem %q: no subsystem is registered (call daemon.Register(subsystems.All()...) before anything else)", sub)
	}
	return nil, fmt.Errorf("unknown subsystem %q (want %s)", sub, strings.Join(names, ", "))
}

type unknownModelError struct {
	name, sub string
	models    []string
}

func (e *unknownModelError) Error() string {
	return fmt.Sprintf("model %q: %s has only %s", e.name, e.sub, strings.Join(e.models, ", "))
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
	var um *unknownModelError
	if errors.As(err, &um) {
		return nil, c.ModelError(m, "name", "%s has only the model%s %s", um.sub, plural(len(um.models)), strings.Join(um.models, ", "))
	}
	if err != nil {
		return nil, c.ModelError(m, "name", "%v", err)
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
