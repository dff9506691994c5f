package console

import (
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/mlbpf/mlbpf/vmtest/internal/plan"
)

const token = "0123456789abcdef"

// feed writes the canned console in chunks of n bytes, as a pipe might
// deliver it, with the CRLF line ends of a serial console.
func feed(t *testing.T, c *Console, console string, n int) {
	t.Helper()
	data := strings.ReplaceAll(console, "\n", "\r\n")
	for len(data) > 0 {
		k := min(n, len(data))
		if _, err := c.Write([]byte(data[:k])); err != nil {
			t.Fatal(err)
		}
		data = data[k:]
	}
}

func lines(s ...string) string { return strings.Join(s, "\n") + "\n" }

var (
	start   = plan.StartLine(token, 2.5)
	resultA = plan.ResultLine(token, "example.com/a", 0, 0.25)
	resultB = plan.ResultLine(token, "example.com/b", 1, 1.5)
)

func TestVerdicts(t *testing.T) {
	for _, tc := range []struct {
		name       string
		console    string
		stop       Stop
		wantStatus int
		wantReason string // substring; empty: no reason
		wantOut    []string
		wantNotOut []string
	}{{
		name: "pass",
		console: lines("[    0.000000] Linux version 6.1.0", "", start,
			"=== RUN   TestX", "--- PASS: TestX (0.00s)", "PASS", "", resultA, "", plan.EndLine(token, 0),
			"[    2.900000] reboot: Power down"),
		wantStatus: 0,
		wantOut:    []string{"=== RUN   TestX", "ok  \texample.com/a\t0.250s", "reboot: Power down"},
		wantNotOut: []string{"vmtest:" + token, "\n\n"},
	}, {
		name:       "failing test",
		console:    lines(start, "--- FAIL: TestY (0.01s)", "FAIL", resultA, resultB, plan.EndLine(token, 1)),
		wantStatus: 1,
		wantOut:    []string{"FAIL\texample.com/b\t1.500s (exit status 1)"},
	}, {
		name:       "exit status propagates",
		console:    lines(start, plan.ResultLine(token, "example.com/c", 3, 0.1), plan.EndLine(token, 3)),
		wantStatus: 3,
	}, {
		name: "panic",
		console: lines(start, "=== RUN   TestZ",
			"[    3.100000] BUG: kernel NULL pointer dereference, address: 0000000000000000",
			"[    3.100100] Oops: 0000 [#1] PREEMPT SMP NOPTI",
			"[    3.200000] Kernel panic - not syncing: Fatal exception",
			"[    3.200001] Kernel Offset: disabled",
			"[    3.200002] Rebooting in 1 seconds.."),
		stop:       Stop{Err: nil},
		wantStatus: 1,
		wantReason: "kernel panic: Fatal exception (0 test binaries finished)",
	}, {
		name:       "init exited",
		console:    lines("[    2.0] Kernel panic - not syncing: Attempted to kill init! exitcode=0x00000300"),
		wantStatus: 1,
		wantReason: "kernel panic: Attempted to kill init! exitcode=0x00000300",
	}, {
		name:       "hang",
		console:    lines(start, resultA, "=== RUN   TestSlow"),
		stop:       Stop{TimedOut: true, Timeout: 90 * time.Second},
		wantStatus: 1,
		wantReason: "timed out after 1m30s without the end marker",
	}, {
		name:       "stopped without marker",
		console:    lines(start, "=== RUN   TestGone"),
		stop:       Stop{Err: errors.New("signal: killed")},
		wantStatus: 1,
		wantReason: "stopped without the end marker: signal: killed (0 test binaries finished)",
	}, {
		name:       "silent machine",
		console:    "",
		wantStatus: 1,
		wantReason: "stopped without the end marker",
	}, {
		name: "BUG during a passing run",
		console: lines(start, "[    4.0] BUG: sleeping function called from invalid context at mm/slab.h:1",
			resultA, plan.EndLine(token, 0)),
		wantStatus: 1,
		wantReason: "kernel reported 1 BUG/oops during the run, first: [    4.0] BUG: sleeping function",
	}, {
		name: "another run's markers are output",
		console: lines(start, plan.ResultLine("ffffffffffffffff", "example.com/x", 0, 1),
			plan.EndLine("ffffffffffffffff", 0)),
		wantStatus: 1,
		wantReason: "without the end marker",
		wantOut:    []string{"vmtest:ffffffffffffffff:end 0"},
	}, {
		name:       "marker after a kernel message on the same line",
		console:    lines(start, "[    5.0] random: crng init done"+plan.EndLine(token, 0)),
		wantStatus: 0,
	}, {
		name:       "terminal control sequences dropped",
		console:    lines("\x1bc\x1b[?7l\x1b[2JSeaBIOS", start, plan.EndLine(token, 0)),
		wantStatus: 0,
		wantOut:    []string{"SeaBIOS\n"},
		wantNotOut: []string{"\x1b"},
	}, {
		name:       "end marker without a newline",
		console:    start + "\n" + plan.EndLine(token, 0),
		wantStatus: 0,
	}} {
		for _, chunk := range []int{1, 7, 4096} {
			t.Run(fmt.Sprintf("%s/chunk%d", tc.name, chunk), func(t *testing.T) {
				var out strings.Builder
				c := New(token, &out)
				feed(t, c, tc.console, chunk)
				v := c.Verdict(tc.stop)
				if v.Status != tc.wantStatus {
					t.Errorf("status %d, want %d", v.Status, tc.wantStatus)
				}
				if tc.wantReason == "" && v.Reason != "" {
					t.Errorf("reason %q, want none", v.Reason)
				}
				if !strings.Contains(v.Reason, tc.wantReason) {
					t.Errorf("reason %q, want it to contain %q", v.Reason, tc.wantReason)
				}
				if v.Passed() != (tc.wantStatus == 0 && tc.wantReason == "") {
					t.Errorf("Passed() = %v", v.Passed())
				}
				if v.Reason != "" && tc.console != "" && len(v.Tail) == 0 {
					t.Error("a failure without the console's last lines")
				}
				for _, s := range tc.wantOut {
					if !strings.Contains(out.String(), s) {
						t.Errorf("output lacks %q:\n%s", s, out.String())
					}
				}
				for _, s := range tc.wantNotOut {
					if strings.Contains(out.String(), s) {
						t.Errorf("output has %q:\n%s", s, out.String())
					}
				}
			})
		}
	}
}

func TestTail(t *testing.T) {
	c := New(token, &strings.Builder{})
	var con []string
	for i := range 100 {
		con = append(con, fmt.Sprintf("line %d", i))
	}
	feed(t, c, lines(con...), 64)
	v := c.Verdict(Stop{TimedOut: true, Timeout: time.Minute})
	if len(v.Tail) != TailLines {
		t.Fatalf("tail has %d lines, want %d", len(v.Tail), TailLines)
	}
	if first, last := v.Tail[0], v.Tail[len(v.Tail)-1]; first != "line 60" || last != "line 99" {
		t.Errorf("tail from %q to %q, want line 60 to line 99", first, last)
	}
}

func TestPanicAfterInitOutput(t *testing.T) {
	c := New(token, &strings.Builder{})
	con := []string{"fixture: exiting with status 3", "[    2.0] Kernel panic - not syncing: Attempted to kill init! exitcode=0x00000300"}
	for i := range 80 {
		con = append(con, fmt.Sprintf("[    2.0]  trace line %d", i))
	}
	feed(t, c, lines(con...), 64)
	v := c.Verdict(Stop{})
	if len(v.Tail) < 2 || v.Tail[0] != con[0] || v.Tail[1] != con[1] {
		t.Errorf("failure lines start %q, want the init's output and the panic", v.Tail[:min(2, len(v.Tail))])
	}
}

func TestIncident(t *testing.T) {
	c := New(token, &strings.Builder{})
	con := []string{start}
	for i := range 30 {
		con = append(con, fmt.Sprintf("test output %d", i))
	}
	con = append(con, "=== RUN   TestCrash",
		"[    5.0] BUG: unable to handle page fault for address: ffffffffc0000000",
		"[    5.0] Oops: 0000 [#1] PREEMPT SMP NOPTI")
	for i := range 100 {
		con = append(con, fmt.Sprintf("[    5.0]  trace line %d", i))
	}
	con = append(con, "[    5.1] Kernel panic - not syncing: Fatal exception")
	feed(t, c, lines(con...), 100)
	v := c.Verdict(Stop{})
	if !strings.Contains(v.Reason, "kernel panic: Fatal exception") {
		t.Errorf("reason %q", v.Reason)
	}
	tail := strings.Join(v.Tail, "\n")
	for _, want := range []string{"test output 29", "=== RUN   TestCrash", "BUG: unable to handle page fault", "trace line 0"} {
		if !strings.Contains(tail, want) {
			t.Errorf("failure lines lack %q:\n%s", want, tail)
		}
	}
	if len(v.Tail) > incidentLines || strings.Contains(tail, "trace line 99") {
		t.Errorf("failure shows %d lines, up to the end of the trace", len(v.Tail))
	}
}

func TestEndedAndStarted(t *testing.T) {
	c := New(token, &strings.Builder{})
	if _, _, ok := c.Started(); ok {
		t.Error("started before the start marker")
	}
	feed(t, c, lines(start, resultA, resultB), 5)
	if _, up, ok := c.Started(); !ok || up != 2.5 {
		t.Errorf("Started() = %v, %v; want uptime 2.5", up, ok)
	}
	select {
	case <-c.Ended():
		t.Fatal("ended before the end marker")
	default:
	}
	feed(t, c, lines(plan.EndLine(token, 1)), 5)
	select {
	case <-c.Ended():
	default:
		t.Fatal("not ended after the end marker")
	}
	if r := c.Results(); len(r) != 2 || r[1].Package != "example.com/b" || r[1].Status != 1 {
		t.Errorf("results %+v", r)
	}
}
