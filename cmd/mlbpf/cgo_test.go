//go:build cgo

package main

// testBinaryHasCgo: this test binary links cgo, so it cannot stand in for
// an mlbpf that drops its capabilities (see mlbpfBinary).
const testBinaryHasCgo = true
