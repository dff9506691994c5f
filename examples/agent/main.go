// Command agent is an example of an external mlbpf agent: a learner that
// runs outside the daemon and talks to it over its Unix socket, with the
// line-delimited JSON protocol of package agent.
//
// It subscribes to a synthetic model's datasets, fetches every portion the
// daemon publishes, and for each key it has not seen yet recommends the
// value the synthetic device rewards best; it prints the feedback the
// daemon sends back (the model's mode and efficiency). The same learner
// could run in the daemon: it implements agent.Learner, as the daemon's
// in-process learners do.
//
// Run the daemon with a synthetic model whose learner is external:
//
//	models:
//	  - name: synthetic/demo
//	    max_mode: recommendation
//	    learner: external
//
// then, as root (or the daemon's user):
//
//	go run ./examples/agent --socket /run/mlbpf/agent.sock --model synthetic/demo
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"strconv"
	"sync"
	"syscall"

	"github.com/mlbpf/mlbpf/agent"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stdout, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "agent:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("agent", flag.ContinueOnError)
	fs.SetOutput(stderr)
	socket := fs.String("socket", "/run/mlbpf/agent.sock", "the daemon's agent socket")
	name := fs.String("model", "synthetic/demo", "the synthetic model to learn for")
	if err := fs.Parse(args); err != nil {
		return err
	}
	c, err := agent.Dial(ctx, *socket)
	if err != nil {
		return err
	}
	defer c.Close()
	l := &Learner{out: stdout}
	log := slog.New(slog.NewTextHandler(stderr, nil))
	return agent.Run(ctx, c, *name, l, agent.RunOptions{
		Agent: "example-agent",
		Log:   log,
		OnRecommend: func(rec agent.Recommendation, err error) {
			if err != nil {
				fmt.Fprintf(stdout, "refused: %v\n", err)
				return
			}
			l.applied(rec)
		},
	})
}

// Learner recommends, for every key of the synthetic device, the value
// it rewards best. A real agent would put its model here: it sees every
// record of the portion (decoded), and the daemon's feedback.
type Learner struct {
	out io.Writer

	mu      sync.Mutex
	seen    map[uint32]bool
	written int
}

// record is the part of a synthetic record this learner reads (the
// daemon sends each record as a JSON object).
type record struct {
	Key uint32 `json:"key"`
	Arm string `json:"arm"`
}

// best is the synthetic device's objective, which it documents: the value
// rewarded best for a key.
func best(key uint32) uint32 { return (key*37 + 11) % 64 }

// Learn implements agent.Learner.
func (l *Learner) Learn(_ context.Context, p *agent.Portion) ([]agent.Recommendation, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.seen == nil {
		l.seen = map[uint32]bool{}
	}
	var out []agent.Recommendation
	for _, raw := range p.Records {
		var r record
		if err := json.Unmarshal(raw, &r); err != nil {
			return nil, fmt.Errorf("decoding a record: %w", err)
		}
		if l.seen[r.Key] {
			continue
		}
		l.seen[r.Key] = true
		out = append(out, agent.Recommendation{
			Key:   strconv.FormatUint(uint64(r.Key), 10),
			Value: strconv.FormatUint(uint64(best(r.Key)), 10),
		})
	}
	fmt.Fprintf(l.out, "portion %d: %d records (%s, %d lost), %d new keys\n", p.Offset, p.Size, p.State, p.Lost, len(out))
	return out, nil
}

// Feedback implements agent.Learner.
func (l *Learner) Feedback(_ context.Context, f *agent.Feedback) {
	line := fmt.Sprintf("feedback: mode %s, %d outcomes", f.Mode, f.Outcomes)
	if e := f.Efficiency; e != nil && e.N > 1 && e.BaselineN > 1 {
		line += fmt.Sprintf(", gain %+.3f [%+.3f, %+.3f] at %g%%", e.Effect, e.Lower, e.Upper, 100*e.Confidence)
	}
	if f.Decision != "" {
		line += ", " + f.Decision
	}
	fmt.Fprintln(l.out, line)
}

func (l *Learner) applied(rec agent.Recommendation) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.written++
}

// Written returns how many recommendations the daemon applied.
func (l *Learner) Written() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.written
}
