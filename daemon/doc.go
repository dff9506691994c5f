// Package daemon runs mlbpf's models: for every model the configuration
// enables it loads and pins the subsystem (adopting the pins and learned
// state an earlier run left), walks the model through its lifecycle,
// renews the kernel lease every period, reads the outcome records into the
// learner and the mode controller, writes recommendations back, publishes
// dataset portions and feedback to agents on a Unix socket (package
// agent), serves Prometheus metrics, and on shutdown stops every model in
// configuration order so that the kernel is left on its defaults.
//
// # Subsystems
//
// The daemon runs every model on the one period loop of package pipeline
// and knows no subsystem by name: the binary registers them (Register)
// from the list in package subsystems, and Subsystems, Lookup and
// SplitName read that registry. A subsystem (pipeline.Subsystem) says
// what it needs from the kernel, decodes its section of the
// configuration into its own type, opens a model for the loop, and, with
// no daemon, writes an operator's recommendation or rolls a model back;
// its records decode for agents and exports.
//
// # Adding a subsystem
//
// Write its package as pipeline's documentation describes (objects,
// decoder, learner, configuration type, Subsystem()), then add one line
// to subsystems.All. Nothing in this package changes: the daemon loads,
// pins, runs and supervises its models, adopts operators' changes,
// publishes their portions, feedback and evidence, and 'mlbpf status',
// 'mode', 'recommend', 'dataset' and 'rollback' work on them.
//
// # One daemon
//
// The daemon holds an exclusive flock on mlbpf.lock beside its socket
// (/run/mlbpf/mlbpf.lock), with its pid inside; a second daemon refuses
// to start and names the holder. The kernel releases the lock when the
// process dies, however it dies.
//
// # State across restarts
//
// The pins are the source of truth for state, mode and arm counts. A
// restarted daemon adopts the pinned maps (model.Create continues the
// pinned generation) and resumes the mode the control block was left in,
// capped by max_mode; EMERGENCY stays until an operator leaves it. The
// state directory keeps, per model (<state-dir>/<subsystem>/<model>/),
// what the learner learned, whether an operator stopped the model
// (daemon.json, written atomically), and the evidence the daemon
// publishes for 'mlbpf status' (status.json: efficiency, confidence,
// decision, records; see Evidence).
//
// # The operator handshake
//
// An operator changes a model with 'mlbpf mode', 'mlbpf start' and
// 'mlbpf stop', which write the pinned control block directly, whether a
// daemon runs or not: the kernel follows at once. Two writers of one
// block must not undo each other:
//
//  1. Every writer holds an exclusive flock on the model's pin directory
//     while it reads, changes and writes the block (loader.UpdateControl
//     for the CLI; the daemon's guarded ControlMap on every store), so no
//     write lands between another's read and write.
//  2. The daemon remembers the last block it wrote. Before each store, its
//     guard compares the block in the kernel with it: when they differ,
//     someone else wrote, and the daemon's store is held back, not
//     written (a lease renewal does not overwrite an operator's
//     EMERGENCY). The daemon then adopts the operator's change:
//     - state no longer STARTED or RUNNING ('mlbpf stop'): the model is
//     stopped and stays stopped, across restarts, until 'mlbpf start';
//     - STARTED or RUNNING on a model the daemon had stopped ('mlbpf
//     start'): it is started again, and its lease renewed;
//     - another mode ('mlbpf mode'): the model takes it. An operator's
//     EMERGENCY is sticky: the controller never leaves EMERGENCY, only
//     an operator does; a mode above max_mode is capped at max_mode; a
//     mode that is not one is EMERGENCY.
//     While it adopts, only its writes that agree with the adopted state
//     and mode reach the kernel, and never over a block someone else
//     wrote meanwhile; once done, the block in the kernel is its baseline
//     again. A change that comes meanwhile is adopted next. The daemon's
//     next block takes a generation after the operator's
//     (model.Model.AdoptGeneration): the generations the kernel sees
//     never go back, however many operators write at once.
//
// The daemon also reads the block every period, so a change to a model
// it is not writing (a stopped one) is seen within a period.
//
// # Privileges and crashes
//
// Loading, pinning and attaching need root (CAP_BPF, CAP_PERFMON,
// CAP_NET_ADMIN). Once every model has started, a daemon given
// Options.DropCapabilities drops every capability, on every thread,
// bounding set included, and sets no_new_privs (loader.DropCapabilities):
// from then on renewing leases and writing recommendations are updates
// of maps it holds open, reading records is reading a mapped ring, and an
// operator's start re-attaches a program already loaded, none of which
// needs a capability on Linux 5.19 and later (before it, CAP_BPF is
// kept: loader.KeepAfterAttach). The pins, the state directory and the
// socket are root's, in directories of mode 0700, so the daemon still
// reaches them as their owner. The evidence says what became of the
// capabilities (Evidence.Capabilities).
//
// A subsystem pins what it attaches (tcp/cc's sock_ops link, a synthetic
// model's live hook) beside its maps: if the daemon dies, however it
// dies, the program stays attached and the kernel falls back to its
// default when the lease runs out, with nothing to clean up; the next
// daemon adopts the pins, and 'mlbpf rollback' removes them.
package daemon
