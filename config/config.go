package config

import (
	_ "embed"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"time"

	"github.com/mlbpf/mlbpf/loader"
	"github.com/mlbpf/mlbpf/model"
)

//go:embed default.yaml
var defaultYAML []byte

// DefaultName is the file name errors in the embedded default name.
const DefaultName = "default.yaml"

// DefaultYAML returns the embedded default configuration, as
// 'mlbpf config default' prints it.
func DefaultYAML() []byte { return append([]byte(nil), defaultYAML...) }

// Default returns the embedded default configuration, parsed.
func Default() *Config {
	c, err := Parse(DefaultName, defaultYAML)
	if err != nil {
		panic("config: the embedded default does not parse: " + err.Error())
	}
	return c
}

// Defaults of the daemon's paths and period.
const (
	DefaultStateDir = "/var/lib/mlbpf"
	DefaultSocket   = "/run/mlbpf/agent.sock"
	DefaultInterval = time.Second
)

// Config is the daemon's configuration. Zero fields take their defaults
// (see default.yaml).
type Config struct {
	// PinRoot is where the models' maps are pinned.
	PinRoot string `cfg:"pin_root"`
	// StateDir keeps what the models learned, across restarts.
	StateDir string `cfg:"state_dir"`
	// Socket is the agent socket; the daemon's lock file sits beside it.
	Socket string `cfg:"socket"`
	// Interval is the default main loop period of every model.
	Interval time.Duration `cfg:"interval"`
	Log      Log           `cfg:"log"`
	Metrics  Metrics       `cfg:"metrics"`
	Models   []Model       `cfg:"models"`

	// File is the name of the file the configuration came from.
	File string `cfg:"-"`
}

// Log configures the daemon's logs.
type Log struct {
	Format string `cfg:"format"` // text or json
	Level  string `cfg:"level"`  // debug, info, warn, error
}

// Metrics configures the Prometheus endpoint.
type Metrics struct {
	// Addr is host:port to serve /metrics on; empty: no endpoint.
	Addr string `cfg:"addr"`
	// AllowRemote permits an address that is not loopback.
	AllowRemote bool `cfg:"allow_remote"`
}

// Learner values of Model.Learner.
const (
	// LearnerBuiltin: the subsystem's in-process learner recommends.
	LearnerBuiltin = "builtin"
	// LearnerExternal: only agents on the socket recommend; the model
	// falls to EMERGENCY when none has been connected for AgentTimeout
	// while it acts (COLLABORATION or RECOMMENDATION).
	LearnerExternal = "external"
)

// Model configures one model.
type Model struct {
	// Name is "subsystem/model", "tcp/cc" for example.
	Name string `cfg:"name"`
	// Disabled keeps the entry without running the model.
	Disabled bool `cfg:"disabled"`
	// Mode is the mode at start (default LEARNING, capped by MaxMode).
	// After a restart the model resumes the mode its pins were left in,
	// capped by MaxMode; EMERGENCY stays until an operator leaves it.
	Mode Mode `cfg:"mode"`
	// MaxMode caps promotion (default LEARNING: the model never acts
	// unless the configuration says so).
	MaxMode Mode `cfg:"max_mode"`
	// Interval overrides the daemon's period for this model.
	Interval time.Duration `cfg:"interval"`
	// Lease is how long the kernel follows the model without a renewal
	// (default 3 × interval).
	Lease time.Duration `cfg:"lease"`
	// CollabPermille is COLLABORATION's share of decisions applying the
	// model (default 500).
	CollabPermille uint32 `cfg:"collab_permille"`
	// HoldoutPermille is RECOMMENDATION's share kept on the default
	// (default 50).
	HoldoutPermille uint32     `cfg:"holdout_permille"`
	Controller      Controller `cfg:"controller"`
	// Learner is builtin (default) or external.
	Learner string `cfg:"learner"`
	// AgentTimeout is how long an external-learner model acts without a
	// connected agent before it falls to EMERGENCY (default 10 × interval).
	AgentTimeout time.Duration `cfg:"agent_timeout"`

	// Subsystem holds the section named after the model's subsystem
	// ("tcp:" for tcp/cc), decoded by the subsystem itself.
	Subsystem *Node `cfg:"-"`
	// Line is where the entry starts.
	Line int `cfg:"-"`

	node  *Node // the entry, for the lines of later errors
	index int   // in Config.Models
}

// Controller configures a model's mode controller; zero fields take the
// subsystem's defaults.
type Controller struct {
	MinSamples int      `cfg:"min_samples"`
	Confidence float64  `cfg:"confidence"`
	MinEffect  *float64 `cfg:"min_effect"`
}

// Mode is a model mode in a configuration: emergency, learning,
// collaboration or recommendation.
type Mode model.Mode

// UnmarshalText accepts the four mode names, in any case.
func (m *Mode) UnmarshalText(b []byte) error {
	v, err := model.ParseMode(string(b))
	if err != nil || !v.Valid() {
		return fmt.Errorf("unknown mode %q (want emergency, learning, collaboration, recommendation)", string(b))
	}
	*m = Mode(v)
	return nil
}

// MarshalText returns the mode's name in lower case.
func (m Mode) MarshalText() ([]byte, error) {
	return []byte(strings.ToLower(model.Mode(m).String())), nil
}

// Subsystem returns the subsystem part of the model's name.
func (m *Model) SubsystemName() string { s, _, _ := strings.Cut(m.Name, "/"); return s }

// ModelName returns the model part of the model's name.
func (m *Model) ModelName() string { _, n, _ := strings.Cut(m.Name, "/"); return n }

// Options returns the model's options for model.Model.Init. interval is
// the daemon's period, used when the model sets none. Zero controller
// fields stay zero, for the subsystem's defaults.
func (m *Model) Options(interval time.Duration) model.Options {
	if m.Interval > 0 {
		interval = m.Interval
	}
	o := model.Options{
		SleepTimeout:    interval,
		Lease:           m.Lease,
		CollabPermille:  m.CollabPermille,
		HoldoutPermille: m.HoldoutPermille,
		MaxMode:         model.Mode(m.MaxMode),
		InitialMode:     model.Mode(m.Mode),
	}
	if o.MaxMode == model.ModeUnknown {
		o.MaxMode = model.ModeLearning
	}
	if o.InitialMode == model.ModeUnknown {
		o.InitialMode = min(model.ModeLearning, o.MaxMode)
	}
	c := m.Controller
	o.Controller = model.ControllerConfig{MinSamples: c.MinSamples, Confidence: c.Confidence}
	if c.MinEffect != nil {
		o.Controller.MinEffect = *c.MinEffect
	}
	return o
}

// Period returns the model's main loop period.
func (c *Config) Period(m *Model) time.Duration {
	if m.Interval > 0 {
		return m.Interval
	}
	return c.Interval
}

// Load reads and parses a configuration file.
func Load(path string) (*Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("reading configuration: %w", err)
	}
	return Parse(path, data)
}

// Parse parses a YAML or TOML configuration (by name's extension), checks
// it and fills in the defaults. Errors name the file, the line and the
// field: "config.yaml:7: models[0].max_mode: unknown mode "turbo" (want
// emergency, learning, collaboration, recommendation)". A subsystem's own
// section is only checked for its place; the subsystem decodes it.
func Parse(name string, data []byte) (*Config, error) {
	root, err := parseTree(name, data)
	if err != nil {
		return nil, err
	}
	file := filepath.Base(name)
	d := &decoder{file: file}
	if root.Kind != KindMap {
		return nil, d.errorf(root, "", "want a map of settings at the top, found %s", kindName(root))
	}
	c := &Config{File: file}
	// Models are decoded one by one below: each may carry its
	// subsystem's section.
	top := *root
	top.Keys, top.Values = nil, nil
	var models *Node
	for i, k := range root.Keys {
		if k == "models" {
			models = root.Values[i]
			continue
		}
		top.Keys, top.Values = append(top.Keys, k), append(top.Values, root.Values[i])
	}
	if err := d.structure(&top, "", reflectValue(c)); err != nil {
		return nil, err
	}
	if models != nil && models.Kind != KindNull {
		if models.Kind != KindList {
			return nil, d.errorf(models, "models", "want a list of models, found %s", kindName(models))
		}
		for i, n := range models.Items {
			m, err := d.model(n, fmt.Sprintf("models[%d]", i))
			if err != nil {
				return nil, err
			}
			m.index = i
			c.Models = append(c.Models, m)
		}
	}
	c.fill()
	if err := c.check(d, root); err != nil {
		return nil, err
	}
	return c, nil
}

func (d *decoder) model(n *Node, path string) (Model, error) {
	m := Model{Line: n.Line, node: n}
	if n.Kind != KindMap {
		return m, d.errorf(n, path, "want a map with name, mode, max_mode, ..., found %s", kindName(n))
	}
	nameNode := n.Get("name")
	if nameNode == nil {
		return m, d.errorf(n, path+".name", "missing: name the model \"subsystem/model\", e.g. \"tcp/cc\"")
	}
	if err := d.decode(nameNode, path+".name", reflectValue(&m.Name)); err != nil {
		return m, err
	}
	sub, name, ok := strings.Cut(m.Name, "/")
	if !ok || loader.ValidName(sub) != nil || loader.ValidName(name) != nil {
		return m, d.errorf(nameNode, path+".name", "%q: want \"subsystem/model\" with lower-case names, e.g. \"tcp/cc\"", m.Name)
	}
	rest := *n
	rest.Keys, rest.Values = nil, nil
	for i, k := range n.Keys {
		if k == sub {
			m.Subsystem = n.Values[i]
			continue
		}
		rest.Keys, rest.Values = append(rest.Keys, k), append(rest.Values, n.Values[i])
	}
	if err := d.structure(&rest, path, reflectValue(&m)); err != nil {
		var ce *Error
		direct := asError(err, &ce) && strings.HasPrefix(ce.Path, path+".") && !strings.ContainsAny(ce.Path[len(path)+1:], ".[")
		if direct && strings.HasPrefix(ce.Msg, "unknown field (want ") {
			ce.Msg = strings.TrimSuffix(ce.Msg, ")") + ", " + sub + ")"
		}
		return m, err
	}
	return m, nil
}

func (c *Config) fill() {
	if c.PinRoot == "" {
		c.PinRoot = loader.DefaultPinRoot
	}
	if c.StateDir == "" {
		c.StateDir = DefaultStateDir
	}
	if c.Socket == "" {
		c.Socket = DefaultSocket
	}
	if c.Interval == 0 {
		c.Interval = DefaultInterval
	}
	if c.Log.Format == "" {
		c.Log.Format = "text"
	}
	if c.Log.Level == "" {
		c.Log.Level = "info"
	}
	for i := range c.Models {
		m := &c.Models[i]
		if m.Learner == "" {
			m.Learner = LearnerBuiltin
		}
	}
}

// check reports the first problem the fields have between them.
func (c *Config) check(d *decoder, root *Node) error {
	at := func(path ...string) *Node {
		n := root
		for _, p := range path {
			if next := n.Get(p); next != nil {
				n = next
			}
		}
		return n
	}
	for _, p := range []struct{ key, v string }{{"pin_root", c.PinRoot}, {"state_dir", c.StateDir}, {"socket", c.Socket}} {
		if !filepath.IsAbs(p.v) {
			return d.errorf(at(p.key), p.key, "%q: want an absolute path", p.v)
		}
	}
	if c.Interval < 10*time.Millisecond {
		return d.errorf(at("interval"), "interval", "%v: want at least 10ms", c.Interval)
	}
	switch c.Log.Format {
	case "text", "json":
	default:
		return d.errorf(at("log", "format"), "log.format", "unknown format %q (want text, json)", c.Log.Format)
	}
	switch c.Log.Level {
	case "debug", "info", "warn", "error":
	default:
		return d.errorf(at("log", "level"), "log.level", "unknown level %q (want debug, info, warn, error)", c.Log.Level)
	}
	if c.Metrics.Addr != "" {
		if err := CheckMetricsAddr(c.Metrics.Addr, c.Metrics.AllowRemote); err != nil {
			return d.errorf(at("metrics", "addr"), "metrics.addr", "%v", err)
		}
	}
	seen := map[string]int{}
	models := root.Get("models")
	for i := range c.Models {
		m := &c.Models[i]
		path := fmt.Sprintf("models[%d]", i)
		node := func(key string) *Node {
			if models != nil && i < len(models.Items) {
				if n := models.Items[i].Get(key); n != nil {
					return n
				}
				return models.Items[i]
			}
			return nil
		}
		if j, dup := seen[m.Name]; dup {
			return d.errorf(node("name"), path+".name", "%s is already configured by models[%d]", m.Name, j)
		}
		seen[m.Name] = i
		maxMode := model.Mode(m.MaxMode)
		if maxMode == model.ModeUnknown {
			maxMode = model.ModeLearning
		}
		if m.Mode != 0 && model.Mode(m.Mode) > maxMode {
			return d.errorf(node("mode"), path+".mode", "%s is above max_mode %s: raise max_mode or lower mode",
				strings.ToLower(model.Mode(m.Mode).String()), strings.ToLower(maxMode.String()))
		}
		period := c.Period(m)
		if period < 10*time.Millisecond {
			return d.errorf(node("interval"), path+".interval", "%v: want at least 10ms", period)
		}
		if m.Lease != 0 && m.Lease <= period {
			return d.errorf(node("lease"), path+".lease", "%v is not longer than the interval %v: the kernel would fall back between renewals", m.Lease, period)
		}
		if m.CollabPermille > model.Permille {
			return d.errorf(node("collab_permille"), path+".collab_permille", "%d: want at most %d", m.CollabPermille, model.Permille)
		}
		if m.HoldoutPermille > model.Permille {
			return d.errorf(node("holdout_permille"), path+".holdout_permille", "%d: want at most %d", m.HoldoutPermille, model.Permille)
		}
		ctl := m.Controller
		cn := func(key string) *Node {
			if n := node("controller"); n != nil && n.Get(key) != nil {
				return n.Get(key)
			}
			return node("controller")
		}
		if ctl.MinSamples < 0 || ctl.MinSamples == 1 {
			return d.errorf(cn("min_samples"), path+".controller.min_samples", "%d: want at least 2", ctl.MinSamples)
		}
		if ctl.Confidence != 0 && !(ctl.Confidence >= 0.5 && ctl.Confidence < 1) {
			return d.errorf(cn("confidence"), path+".controller.confidence", "%v: want 0.5 to 1 (exclusive), e.g. 0.99", ctl.Confidence)
		}
		if ctl.MinEffect != nil && *ctl.MinEffect < 0 {
			return d.errorf(cn("min_effect"), path+".controller.min_effect", "%v: want ≥ 0, e.g. 0.02", *ctl.MinEffect)
		}
		switch m.Learner {
		case LearnerBuiltin, LearnerExternal:
		default:
			return d.errorf(node("learner"), path+".learner", "unknown learner %q (want builtin, external)", m.Learner)
		}
		if err := m.Options(c.Interval).Validate(); err != nil {
			return d.errorf(node("name"), path, "%v", err)
		}
	}
	return nil
}

// CheckMetricsAddr checks a metrics listen address: host:port, loopback
// unless allowRemote.
func CheckMetricsAddr(addr string, allowRemote bool) error {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("%q: want host:port, e.g. 127.0.0.1:9464", addr)
	}
	if port == "" {
		return fmt.Errorf("%q: no port", addr)
	}
	if allowRemote {
		return nil
	}
	if host == "localhost" {
		return nil
	}
	ip := net.ParseIP(host)
	if ip == nil || !ip.IsLoopback() {
		return fmt.Errorf("%q is not a loopback address: the metrics are served to anyone who can connect; bind 127.0.0.1 or [::1], or allow it explicitly (--metrics-allow-remote, metrics.allow_remote: true)", addr)
	}
	return nil
}

// Enabled returns the models that are not disabled.
func (c *Config) Enabled() []*Model {
	var out []*Model
	for i := range c.Models {
		if !c.Models[i].Disabled {
			out = append(out, &c.Models[i])
		}
	}
	return out
}

// Find returns the configured model named "subsystem/model", or nil.
func (c *Config) Find(name string) *Model {
	for i := range c.Models {
		if c.Models[i].Name == name {
			return &c.Models[i]
		}
	}
	return nil
}

// DecodeSection decodes a model's subsystem section into v (a pointer to
// a struct with cfg tags); a missing section leaves v as it is.
func (c *Config) DecodeSection(m *Model, v any) error {
	if m.Subsystem == nil {
		return nil
	}
	return Decode(c.File, m.Subsystem, fmt.Sprintf("models[%d].%s", m.index, m.SubsystemName()), v)
}

// FieldError is a problem a subsystem found in one field of its
// section, after decoding it (see Field). CheckSection places it: file,
// line and path.
type FieldError struct {
	// Field is the field's path in the section, "allowed" or
	// "learn.min_gain"; empty for the section as a whole.
	Field string
	Msg   string
}

func (e *FieldError) Error() string {
	if e.Field == "" {
		return e.Msg
	}
	return e.Field + ": " + e.Msg
}

// Field returns a FieldError about field, for a subsystem's Validate.
func Field(field, format string, args ...any) error {
	return &FieldError{Field: field, Msg: fmt.Sprintf(format, args...)}
}

// Section is a subsystem's configuration type, which a model's section
// decodes straight into (a struct with cfg tags).
type Section interface {
	// Validate checks the decoded section. A problem with one field is a
	// FieldError (Field), which CheckSection places at its line.
	Validate() error
}

// CheckSection decodes a model's subsystem section into v, a pointer to
// the subsystem's configuration type, and validates it. Errors name the
// file, the line and the field: "config.yaml:9: models[0].tcp.allowed:
// ...". A missing section leaves v as it is, and validates it.
func (c *Config) CheckSection(m *Model, v Section) error {
	if err := c.DecodeSection(m, v); err != nil {
		return err
	}
	err := v.Validate()
	var fe *FieldError
	switch {
	case err == nil:
		return nil
	case errors.As(err, &fe):
		return c.SectionError(m, fe.Field, "%s", fe.Msg)
	default:
		return c.SectionError(m, "", "%v", err)
	}
}

// SectionError returns an error about a field of a model's subsystem
// section ("learn.min_gain" for a nested one), for checks a subsystem
// makes after decoding: "config.yaml:9: models[0].tcp.allowed: ...".
func (c *Config) SectionError(m *Model, field, format string, args ...any) error {
	path := fmt.Sprintf("models[%d].%s", m.index, m.SubsystemName())
	line := m.Line
	if n := m.Subsystem; n != nil {
		line = n.Line
		for key := range strings.SplitSeq(field, ".") {
			if n = n.Get(key); n == nil {
				break
			}
			line = n.Line
		}
	}
	if field != "" {
		path += "." + field
	}
	return &Error{File: c.File, Line: line, Path: path, Msg: fmt.Sprintf(format, args...)}
}

// ModelError returns an error about a field of a model's entry
// ("name" for the entry as a whole).
func (c *Config) ModelError(m *Model, field, format string, args ...any) error {
	line := m.Line
	if n := m.node.Get(field); n != nil {
		line = n.Line
	}
	return &Error{File: c.File, Line: line, Path: fmt.Sprintf("models[%d].%s", m.index, field), Msg: fmt.Sprintf(format, args...)}
}

func reflectValue(p any) reflect.Value { return reflect.ValueOf(p).Elem() }

func asError(err error, target **Error) bool { return errors.As(err, target) }
