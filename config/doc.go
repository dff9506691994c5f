// Package config reads mlbpf's daemon configuration, YAML or TOML: which
// models run, their modes and caps, leases and shares, and each
// subsystem's own section (the cgroup and allow-list of tcp/cc, for
// example). Every error names the file, the line and the field:
//
//	config.yaml:7: models[0].max_mode: unknown mode "turbo" (want emergency, learning, collaboration, recommendation)
//
// The embedded default (default.yaml, printed by 'mlbpf config default')
// runs tcp/cc in LEARNING, capped there by max_mode: safe on any host.
package config
