package loader

import (
	"os"
	"testing"
)

func TestParseCapabilities(t *testing.T) {
	c, err := parseCapabilities("Name:\tmlbpf\nCapInh:\t0000000000000000\nCapPrm:\t000001ffffffffff\nCapEff:\t000001ffffffffff\nCapBnd:\t000001ffffffffff\nCapAmb:\t0000000000000000\nNoNewPrivs:\t0\n")
	if err != nil {
		t.Fatal(err)
	}
	want := Capabilities{Effective: 0x1ffffffffff, Permitted: 0x1ffffffffff, Bounding: 0x1ffffffffff}
	if c != want || c.Empty() {
		t.Fatalf("parsed %v, want %v", c, want)
	}
	if _, err := parseCapabilities("Name:\tx\n"); err == nil {
		t.Fatal("a status without capability sets parsed")
	}
	if _, err := parseCapabilities("CapEff:\tzz\nCapPrm:\t0\nCapInh:\t0\nCapBnd:\t0\n"); err == nil {
		t.Fatal("a malformed set parsed")
	}
}

// ThreadCapabilities reads every thread of this process, and agrees with
// what the process may do.
func TestThreadCapabilities(t *testing.T) {
	caps, err := ThreadCapabilities(0)
	if err != nil {
		t.Fatal(err)
	}
	if len(caps) == 0 {
		t.Fatal("no threads")
	}
	if c, ok := caps[os.Getpid()]; !ok || (os.Geteuid() == 0) == (c.Effective == 0) {
		t.Fatalf("main thread: %v (present %v) as uid %d", c, ok, os.Geteuid())
	}
}
