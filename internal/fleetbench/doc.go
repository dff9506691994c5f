// Package fleetbench measures what a fleet saves a joining host (make
// bench-fleet): hosts 1…N−1 learn tcp/cc on lossy testbeds of their own,
// sharing through a real nats-server; host N then joins and learns with
// their evidence; a lone host learns without any. Each host is a process
// of its own (a daemon with its own pin root, state directory, socket,
// cgroup and testbed), run by Host.
package fleetbench
