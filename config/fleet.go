package config

import (
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/mlbpf/mlbpf/fleet"
)

// Fleet is the "fleet:" section: sharing what the learners learn with
// other hosts through NATS JetStream (docs/fleet.md). Off while URLs is
// empty.
type Fleet struct {
	// URLs are the NATS servers, e.g. nats://nats.example:4222.
	URLs []string `cfg:"urls"`
	// Host is this host's name in the fleet (A-Z a-z 0-9 _ -); empty:
	// $MLBPF_FLEET_HOST (a DaemonSet sets it to the node's name: a pod's
	// host name changes with every pod), else the host name; other
	// characters are replaced by '-'.
	Host string `cfg:"host"`
	// At most one way to authenticate: user and password, an nkey seed
	// file, or a credentials file (JWT and seed).
	User     string `cfg:"user"`
	Password string `cfg:"password"`
	NKeySeed string `cfg:"nkey_seed"`
	Creds    string `cfg:"creds"`
	TLS      TLS    `cfg:"tls"`
	// Bucket is the JetStream key-value bucket (default mlbpf_fleet),
	// Replicas its replicas in a JetStream cluster (default 1).
	Bucket   string `cfg:"bucket"`
	Replicas int    `cfg:"replicas"`
	// Interval between two exchanges with the fleet (default 5s).
	Interval time.Duration `cfg:"interval"`
	// HalfLife of the fleet's evidence (default 1h); MaxAge after which
	// a host's statistics leave the bucket (default 24h).
	HalfLife time.Duration `cfg:"half_life"`
	MaxAge   time.Duration `cfg:"max_age"`
}

// TLS are the files for TLS to NATS.
type TLS struct {
	// CA verifies the servers; Cert and Key are the client's certificate
	// for mutual TLS.
	CA   string `cfg:"ca"`
	Cert string `cfg:"cert"`
	Key  string `cfg:"key"`
}

// Enabled reports whether the fleet is configured.
func (f *Fleet) Enabled() bool { return len(f.URLs) > 0 }

// HostEnv names the environment variable that gives the fleet host name
// when the configuration does not.
const HostEnv = "MLBPF_FLEET_HOST"

// HostName returns Host, or $MLBPF_FLEET_HOST, or the host's name, made
// fit for the fleet.
func (f *Fleet) HostName() string {
	if f.Host != "" {
		return f.Host
	}
	h := os.Getenv(HostEnv)
	if h == "" {
		h, _ = os.Hostname()
	}
	h = strings.Map(func(r rune) rune {
		if r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '_' || r == '-' {
			return r
		}
		return '-'
	}, h)
	if len(h) > 64 {
		h = h[:64]
	}
	if h == "" {
		h = "host"
	}
	return h
}

// problem returns the path and the problem of the first field that is
// wrong, if any.
func (f *Fleet) problem() (path, msg string) {
	if !f.Enabled() {
		return "", ""
	}
	for i, u := range f.URLs {
		p, err := url.Parse(u)
		if err != nil || p.Host == "" || !strings.Contains("nats tls ws wss", p.Scheme) || p.Scheme == "" {
			return fmt.Sprintf("fleet.urls[%d]", i), fmt.Sprintf("%q: want nats://host:port (or tls://, ws://, wss://)", u)
		}
	}
	if f.Host != "" {
		if err := fleet.ValidHost(f.Host); err != nil {
			return "fleet.host", err.Error()
		}
	}
	n := 0
	for _, set := range []bool{f.User != "", f.NKeySeed != "", f.Creds != ""} {
		if set {
			n++
		}
	}
	if n > 1 {
		return "fleet", "set one of user (and password), nkey_seed and creds"
	}
	if f.Password != "" && f.User == "" {
		return "fleet.password", "a password without a user"
	}
	if (f.TLS.Cert == "") != (f.TLS.Key == "") {
		return "fleet.tls", "set both cert and key, or neither"
	}
	for _, p := range []struct{ path, v string }{{"fleet.nkey_seed", f.NKeySeed}, {"fleet.creds", f.Creds},
		{"fleet.tls.ca", f.TLS.CA}, {"fleet.tls.cert", f.TLS.Cert}, {"fleet.tls.key", f.TLS.Key}} {
		if p.v != "" && !filepath.IsAbs(p.v) {
			return p.path, fmt.Sprintf("%q: want an absolute path", p.v)
		}
	}
	if f.Replicas < 0 || f.Replicas > 5 {
		return "fleet.replicas", fmt.Sprintf("%d: want 1 to 5", f.Replicas)
	}
	for _, d := range []struct {
		path string
		v    time.Duration
	}{{"fleet.interval", f.Interval}, {"fleet.half_life", f.HalfLife}, {"fleet.max_age", f.MaxAge}} {
		if d.v < 0 || d.v > 0 && d.v < 10*time.Millisecond {
			return d.path, fmt.Sprintf("%v: want at least 10ms (or nothing for the default)", d.v)
		}
	}
	return "", ""
}
