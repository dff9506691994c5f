// Package plan is the contract between the vmtest harness on the host and
// the init it boots in the guest: the plan the harness writes into the
// guest's root filesystem, and the marker lines the init prints on the
// serial console for the harness to parse.
//
// Marker lines carry a token drawn at random for every run, so nothing a
// test prints can be taken for one by accident:
//
//	vmtest:<token>:start <guest uptime in seconds>
//	vmtest:<token>:result <exit status> <seconds> <package>
//	vmtest:<token>:end <exit status>
package plan
