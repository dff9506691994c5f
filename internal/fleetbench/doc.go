// Package fleetbench measures what a fleet saves a joining host (make
// bench-fleet): hosts 1…N−1 learn tcp/cc on lossy testbeds of their own,
// sharing through a real nats-server; host N then joins and learns with
// their evidence (and more new hosts after it); lone hosts learn without
// any. Speedup estimates the ratio with its confidence interval over
// the runs. Each host is a process
// of its own (a daemon with its own pin root, state directory, socket,
// cgroup and testbed), run by Host.
package fleetbench
