package plan

import (
	"encoding/json"
	"fmt"
	"os"
	"strconv"
	"strings"
)

// Path is where the init finds the plan when it runs as PID 1 from an
// initramfs.
const Path = "/vmtest/plan.json"

// Plan says what the init does in the guest.
type Plan struct {
	// Token makes the marker lines of this run unique.
	Token string `json:"token"`
	// Modules are kernel module files, in load order (dependencies
	// first).
	Modules []string `json:"modules,omitempty"`
	// Tests run one after the other.
	Tests []Test `json:"tests"`
	// Env is the environment of every test, as in os/exec.Cmd.Env.
	Env []string `json:"env,omitempty"`
	// Deadline, in seconds of guest uptime (/proc/uptime), by which the
	// tests must be done; the init gives each test binary the time left
	// as -test.timeout so that a hung test prints its goroutines before
	// the harness kills the machine. Zero means no deadline.
	Deadline float64 `json:"deadline,omitempty"`
}

// Test is one test binary.
type Test struct {
	// Package is the import path, for the summary line.
	Package string `json:"package"`
	// Dir is the working directory: the guest's copy of the package
	// directory, holding its testdata.
	Dir string `json:"dir"`
	// Binary is the test binary (go test -c).
	Binary string `json:"binary"`
	// Args are passed to the binary, e.g. -test.v -test.run X.
	Args []string `json:"args,omitempty"`
}

// Read reads a plan written by Write.
func Read(path string) (*Plan, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("reading plan: %w", err)
	}
	var p Plan
	if err := json.Unmarshal(data, &p); err != nil {
		return nil, fmt.Errorf("decoding plan %s: %w", path, err)
	}
	if p.Token == "" {
		return nil, fmt.Errorf("decoding plan %s: no token", path)
	}
	return &p, nil
}

// Marshal encodes p for the guest.
func (p *Plan) Marshal() ([]byte, error) {
	return json.MarshalIndent(p, "", "\t")
}

// Kind is the kind of a marker line.
type Kind int

// Marker kinds.
const (
	Start  Kind = iota + 1 // the init is running
	Result                 // one test binary has exited
	End                    // all done; the machine powers off next
)

func (k Kind) String() string {
	switch k {
	case Start:
		return "start"
	case Result:
		return "result"
	case End:
		return "end"
	}
	return "Kind(" + strconv.Itoa(int(k)) + ")"
}

// Marker is a parsed marker line.
type Marker struct {
	Kind    Kind
	Status  int     // Result, End: exit status
	Seconds float64 // Start: guest uptime; Result: run time of the binary
	Package string  // Result
}

func prefix(token string) string { return "vmtest:" + token + ":" }

// StartLine is printed by the init when it starts.
func StartLine(token string, uptime float64) string {
	return fmt.Sprintf("%sstart %.2f", prefix(token), uptime)
}

// ResultLine is printed by the init after each test binary.
func ResultLine(token, pkg string, status int, seconds float64) string {
	return fmt.Sprintf("%sresult %d %.3f %s", prefix(token), status, seconds, pkg)
}

// EndLine is printed by the init when every test has run.
func EndLine(token string, status int) string {
	return fmt.Sprintf("%send %d", prefix(token), status)
}

// ParseMarker finds a marker of token in line. The marker may follow
// other text on the line, such as a kernel message printed in between.
func ParseMarker(line, token string) (Marker, bool) {
	i := strings.Index(line, prefix(token))
	if i < 0 || token == "" {
		return Marker{}, false
	}
	fields := strings.Fields(line[i+len(prefix(token)):])
	if len(fields) == 0 {
		return Marker{}, false
	}
	var m Marker
	var err error
	switch {
	case fields[0] == "start" && len(fields) == 2:
		m.Kind = Start
		m.Seconds, err = strconv.ParseFloat(fields[1], 64)
	case fields[0] == "result" && len(fields) == 4:
		m.Kind, m.Package = Result, fields[3]
		if m.Status, err = strconv.Atoi(fields[1]); err == nil {
			m.Seconds, err = strconv.ParseFloat(fields[2], 64)
		}
	case fields[0] == "end" && len(fields) == 2:
		m.Kind = End
		m.Status, err = strconv.Atoi(fields[1])
	default:
		return Marker{}, false
	}
	if err != nil {
		return Marker{}, false
	}
	return m, true
}
