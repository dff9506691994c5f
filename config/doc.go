// Package config reads mlbpf's daemon configuration, YAML or TOML: which
// models run, their modes and caps, leases and shares, and each
// subsystem's own section (the cgroup and allow-list of tcp/cc, for
// example). Every error names the file, the line and the field:
//
//	config.yaml:7: models[0].max_mode: unknown mode "turbo" (want emergency, learning, collaboration, recommendation)
//
// The embedded default (default.yaml, printed by 'mlbpf config default')
// runs tcp/cc in LEARNING, capped there by max_mode: safe on any host.
//
// # Subsystem sections
//
// A model's section named after its subsystem ("tcp:", "synthetic:")
// belongs to the subsystem: CheckSection decodes it straight into the
// subsystem's own configuration type (a struct with cfg tags) and calls
// its Validate, which names the field it rejects (Field); the error then
// names the file, the line and the field like any other.
//
// Both formats are parsed into one tree of nodes with their lines
// (node.go), which one strict decoder turns into the structs. It stays
// because neither library gives both strictness and positions for a
// part of a file: yaml.v3's Node.Decode, which a section needs, has no
// KnownFields, and BurntSushi/toml's MetaData.Undecoded names unknown
// keys without their lines.
package config
