package console

import (
	"bytes"
	"fmt"
	"io"
	"regexp"
	"strings"
	"sync"
	"time"

	"github.com/mlbpf/mlbpf/vmtest/internal/plan"
)

// TailLines is how many of the last console lines a failure shows.
const TailLines = 40

// A kernel panic, BUG or oops is shown from incidentBefore lines before
// its first line, for at most incidentLines lines: what ran, the report
// and the top of the trace, rather than the end of a long trace.
const (
	incidentBefore = 15
	incidentLines  = 60
)

// Console is an io.Writer for the guest's console output.
type Console struct {
	token string
	out   io.Writer

	mu       sync.Mutex
	partial  []byte
	blank    bool // an empty line is held back: the init prints one before each marker
	tail     []string
	incident []string // the console around the first panic, BUG or oops
	start    *plan.Marker
	startAt  time.Time
	results  []plan.Marker
	end      *plan.Marker
	panic    string
	bugs     []string
	ended    chan struct{}
}

// New returns a Console that parses the markers of token and writes what
// the guest prints to out.
func New(token string, out io.Writer) *Console {
	return &Console{token: token, out: out, ended: make(chan struct{})}
}

var (
	// A kernel message may start with a timestamp, and a line may
	// begin with something another writer left without a newline.
	bugRE   = regexp.MustCompile(`(^|\] )(BUG: |Oops: |general protection fault|kernel BUG at )`)
	panicRE = regexp.MustCompile(`Kernel panic - not syncing: ?(.*)`)
	// Terminal control sequences (firmware clearing the screen) are
	// dropped so that they do not reset the terminal of whoever
	// watches.
	escapeRE = regexp.MustCompile(`\x1b(\[[0-9;?]*[ -/]*[@-~]|[@-_a-z])`)
)

// Write parses complete lines and passes them on; it keeps a partial
// line until its end arrives or Flush is called.
func (c *Console) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.partial = append(c.partial, p...)
	for {
		i := bytes.IndexByte(c.partial, '\n')
		if i < 0 {
			break
		}
		c.line(string(c.partial[:i]))
		c.partial = c.partial[i+1:]
	}
	return len(p), nil
}

// Flush handles a last line without a newline.
func (c *Console) Flush() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.partial) > 0 {
		c.line(string(c.partial))
		c.partial = nil
	}
}

func (c *Console) line(s string) {
	s = escapeRE.ReplaceAllString(strings.TrimRight(s, "\r"), "")
	c.tail = append(c.tail, s)
	if len(c.tail) > TailLines {
		c.tail = c.tail[len(c.tail)-TailLines:]
	}
	if m, ok := plan.ParseMarker(s, c.token); ok {
		c.blank = false
		c.marker(m)
		return
	}
	if c.blank {
		fmt.Fprintln(c.out)
		c.blank = false
	}
	if s == "" {
		c.blank = true
		return
	}
	m := panicRE.FindStringSubmatch(s)
	if m != nil && c.panic == "" {
		c.panic = strings.TrimSpace(m[1])
		if c.panic == "" {
			c.panic = "(no message)"
		}
	}
	bug := bugRE.MatchString(s)
	if bug {
		c.bugs = append(c.bugs, strings.TrimSpace(s))
	}
	switch {
	case c.incident == nil && (m != nil || bug):
		c.incident = append([]string(nil), c.tail[max(0, len(c.tail)-1-incidentBefore):]...)
	case c.incident != nil && len(c.incident) < incidentLines:
		c.incident = append(c.incident, s)
	}
	fmt.Fprintln(c.out, s)
}

func (c *Console) marker(m plan.Marker) {
	switch m.Kind {
	case plan.Start:
		if c.start == nil {
			c.start = &m
			c.startAt = time.Now()
		}
	case plan.Result:
		c.results = append(c.results, m)
		if m.Status == 0 {
			fmt.Fprintf(c.out, "ok  \t%s\t%.3fs\n", m.Package, m.Seconds)
		} else {
			fmt.Fprintf(c.out, "FAIL\t%s\t%.3fs (exit status %d)\n", m.Package, m.Seconds, m.Status)
		}
	case plan.End:
		if c.end == nil {
			c.end = &m
			close(c.ended)
		}
	}
}

// Ended is closed when the end marker arrives.
func (c *Console) Ended() <-chan struct{} { return c.ended }

// Started returns when the start marker arrived and the guest's uptime
// it reported; ok is false if it has not arrived.
func (c *Console) Started() (at time.Time, uptime float64, ok bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.start == nil {
		return time.Time{}, 0, false
	}
	return c.startAt, c.start.Seconds, true
}

// Results returns the result markers seen so far.
func (c *Console) Results() []plan.Marker {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]plan.Marker(nil), c.results...)
}

// Tail returns the last lines of the console.
func (c *Console) Tail() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]string(nil), c.tail...)
}

// Stop says how the machine stopped.
type Stop struct {
	// TimedOut is set when the harness killed the machine at Timeout.
	TimedOut bool
	Timeout  time.Duration
	// Err is the error of the virtual machine's process, if any.
	Err error
}

// Verdict is the outcome of a run.
type Verdict struct {
	// Status is the exit status to report: the guest's when the end
	// marker arrived, else 1.
	Status int
	// Reason says why the run failed when the cause is not simply a
	// failing test: a panic, a hang, a BUG, a missing end marker.
	Reason string
	// Tail holds console lines when Reason is set: those around the
	// first kernel panic, BUG or oops if there was one, else the last
	// ones.
	Tail []string
}

// Passed reports whether the run passed.
func (v Verdict) Passed() bool { return v.Status == 0 && v.Reason == "" }

// Verdict judges the run once the machine has stopped.
func (c *Console) Verdict(stop Stop) Verdict {
	c.Flush()
	c.mu.Lock()
	defer c.mu.Unlock()
	fail := func(format string, args ...any) Verdict {
		lines := c.tail
		if c.incident != nil && !stop.TimedOut {
			lines = c.incident
		}
		return Verdict{Status: 1, Reason: fmt.Sprintf(format, args...), Tail: append([]string(nil), lines...)}
	}
	if c.end != nil {
		if len(c.bugs) > 0 {
			v := fail("the kernel reported %d BUG/oops during the run, first: %s", len(c.bugs), c.bugs[0])
			if c.end.Status != 0 {
				v.Status = c.end.Status
			}
			return v
		}
		return Verdict{Status: c.end.Status}
	}
	done := fmt.Sprintf("%d test binaries finished", len(c.results))
	switch {
	case c.panic != "":
		return fail("kernel panic: %s (%s)", c.panic, done)
	case stop.TimedOut:
		return fail("timed out after %v without the end marker: the guest hung or the tests are too slow for the timeout (%s)", stop.Timeout, done)
	case len(c.bugs) > 0:
		return fail("the machine stopped without the end marker after the kernel reported: %s (%s)", c.bugs[0], done)
	case stop.Err != nil:
		return fail("the machine stopped without the end marker: %v (%s)", stop.Err, done)
	}
	return fail("the machine stopped without the end marker (%s)", done)
}
