// Package daemon runs mlbpf's models: it loads and pins a subsystem, walks
// its model through the lifecycle, renews the kernel lease every
// SleepTimeout, reads the outcome records into the learner and the mode
// controller, writes recommendations back, and on shutdown stops the model
// so that the kernel is left on its default behaviour.
package daemon
