// Package console reads a vmtest guest's serial console as it arrives:
// it passes the output through, turns the init's marker lines (package
// plan) into go test style summary lines, remembers the last lines, and
// notices kernel panics, oopses and BUGs. When the machine has stopped,
// Verdict says whether the run passed.
//
// A run passes only when the end marker arrived with status zero and the
// kernel reported no BUG or oops. A panic, a hang (the harness killed the
// machine at its timeout) or a machine that stopped without the end
// marker are failures, reported with the console's last lines.
package console
