//go:build !cgo

package main

// testBinaryHasCgo: this test binary is built without cgo, so it can stand
// in for mlbpf (see mlbpfBinary).
const testBinaryHasCgo = false
