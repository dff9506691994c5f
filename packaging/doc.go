// Package packaging holds what installs mlbpf on a host: the Debian
// package's systemd unit and maintainer scripts (deb/), built by 'make
// deb' (scripts/deb.sh). Its test builds the package, installs it, runs
// the unit's ExecStart under the unit's capability bounding set and sees
// tcp/cc attach and the daemon signal readiness, and removes it.
package packaging
