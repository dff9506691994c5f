// Command fleetbench measures what a fleet saves a joining host (make
// bench-fleet):
//
//	sudo go run ./internal/fleetbench/cmd/fleetbench
//	sudo go run ./internal/fleetbench/cmd/fleetbench -hosts 6 -loss 10 -v
//
// It starts a real nats-server with JetStream on a loopback port, runs
// hosts 1…N−1 (each a process of its own: a daemon running tcp/cc with
// its own pin root, state directory, socket, cgroup and lossy testbed)
// until each reaches RECOMMENDATION, then host N, joining their fleet,
// then a lone host without one (-joins and -repeat times, new hosts), and
// prints one line:
//
//	fleet hosts=4 learned_after_alone=… learned_after_joined=… speedup=5.30[4.10,6.80] msgs_per_s=… bytes_per_host_s=… runs=… alone=61,52,… joined=12,10,… goal=met|unclear|missed
//
// learned_after_* are connections until the model is in RECOMMENDATION
// (through COLLABORATION, on the host's own evidence), geometric means
// over the runs (alone= and joined= list them); speedup is their ratio
// with its 95 % confidence interval (Welch's t on the logarithms), and
// goal says whether that interval is above 5 (met), below it (missed) or
// straddles it (unclear). Run it under the
// heavy lock on a shared machine (flock /tmp/mlbpf-heavy.lock …).
package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"os/signal"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/mlbpf/mlbpf/daemon"
	"github.com/mlbpf/mlbpf/internal/fleetbench"
	"github.com/mlbpf/mlbpf/internal/natstest"
	"github.com/mlbpf/mlbpf/loader"
	"github.com/mlbpf/mlbpf/subsystems"
)

func init() { daemon.Register(subsystems.All()...) }

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stdout, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "fleetbench:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("fleetbench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	hosts := fs.Int("hosts", 4, "hosts in the fleet, the joining one included (at least 2)")
	loss := fs.Float64("loss", 10, "loss rate of every host's testbed, in percent")
	maxConns := fs.Int("max", 400, "connections a host makes at most")
	transfer := fs.Duration("transfer", time.Second, "how long each connection sends")
	verbose := fs.Bool("v", false, "log the hosts' progress (and their daemons' logs) to stderr")
	child := fs.String("host", "", "run one host of that name (internal: the hosts are processes of their own)")
	natsURL := fs.String("nats", "", "the host's NATS server (with -host; empty: a lone host)")
	linger := fs.Duration("linger", 2*time.Second, "how long a host keeps sharing after it learned (with -host)")
	join := fs.Bool("join", false, "wait for the fleet's statistics before the first connection (with -host: the joining host)")
	repeat := fs.Int("repeat", 3, "runs of a lone host (each a new host); the line reports their geometric mean and the speedup's confidence interval")
	joins := fs.Int("joins", 7, "runs of a joining host (each a new host, joining the fleet as it grew; one before each lone host's, the rest after)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if err := loader.CheckPrivileges(); err != nil {
		return err
	}
	log := slog.New(slog.DiscardHandler)
	if *verbose {
		log = slog.New(slog.NewTextHandler(stderr, nil))
	}
	if *child != "" {
		r, err := fleetbench.Host(ctx, fleetbench.HostConfig{Name: *child, NATS: *natsURL, LossPercent: *loss,
			Max: *maxConns, Linger: *linger, Join: *join, Transfer: *transfer, Log: log.With("host", *child)})
		if err != nil {
			return err
		}
		return fleetbench.WriteResult(stdout, r)
	}
	if *hosts < 2 {
		return errors.New("-hosts: want at least 2")
	}
	if *repeat < 1 || *joins < 1 {
		return errors.New("-repeat and -joins: want at least 1")
	}
	dir, err := os.MkdirTemp("", "mlbpf-fleetbench-nats-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	srv, err := natstest.New(dir)
	if err != nil {
		return err
	}
	defer srv.Stop()
	self, err := os.Executable()
	if err != nil {
		return err
	}
	host := func(name, url string, join bool) (fleetbench.HostResult, error) {
		a := []string{"-host", name, "-nats", url, "-loss", strconv.FormatFloat(*loss, 'g', -1, 64),
			"-max", strconv.Itoa(*maxConns), "-linger", linger.String(), "-join=" + strconv.FormatBool(join), "-transfer", transfer.String()}
		if *verbose {
			a = append(a, "-v")
		}
		cmd := exec.CommandContext(ctx, self, a...)
		var out bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, stderr
		var r fleetbench.HostResult
		if err := cmd.Run(); err != nil {
			return r, fmt.Errorf("host %s: %w", name, err)
		}
		if err := json.Unmarshal(out.Bytes(), &r); err != nil {
			return r, fmt.Errorf("host %s: reading its result %q: %w", name, out.String(), err)
		}
		fmt.Fprintf(stderr, "fleetbench: host %s: %d connections, learned %v, recommended %q, %d messages (%d bytes) in %.0fs\n",
			name, r.Connections, r.Learned, r.Recommended, r.Published, r.Bytes, r.Seconds)
		return r, nil
	}
	// Hosts 1…N−1 learn together.
	var (
		wg      sync.WaitGroup
		mu      sync.Mutex
		results []fleetbench.HostResult
		errs    []error
	)
	for i := 1; i < *hosts; i++ {
		wg.Go(func() {
			r, err := host(fmt.Sprintf("host-%d", i), srv.URL, false)
			mu.Lock()
			defer mu.Unlock()
			results, errs = append(results, r), append(errs, err)
		})
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return err
	}
	// Host N joins (and, repeated, another new host each time), then a
	// lone host learns; joins are cheap, so there may be more of them
	// than lone hosts (-joins).
	var joinedN, aloneN []int
	learned := true
	for i := range max(*repeat, *joins) {
		if i < *joins {
			joined, err := host(fmt.Sprintf("host-%d", *hosts+i), srv.URL, true)
			if err != nil {
				return err
			}
			if i == 0 {
				results = append(results, joined)
			}
			joinedN, learned = append(joinedN, joined.Connections), learned && joined.Learned
		}
		if i < *repeat {
			alone, err := host(fmt.Sprintf("alone-%d", i+1), "", false)
			if err != nil {
				return err
			}
			aloneN, learned = append(aloneN, alone.Connections), learned && alone.Learned
		}
	}
	sp := fleetbench.NewSpeedup(aloneN, joinedN)
	fmt.Fprintf(stderr, "fleetbench: alone %v, joined %v; medians %s and %s\n",
		aloneN, joinedN, fmtCount(median(aloneN)), fmtCount(median(joinedN)))
	var msgsPerS, bytesPerHostS float64
	for _, r := range results {
		if r.Seconds > 0 {
			msgsPerS += float64(r.Published) / r.Seconds
			bytesPerHostS += float64(r.Bytes) / r.Seconds / float64(len(results))
		}
	}
	fmt.Fprintf(stdout, "fleet hosts=%d learned_after_alone=%.1f learned_after_joined=%.1f speedup=%s msgs_per_s=%.1f bytes_per_host_s=%.0f runs=%d/%d alone=%s joined=%s goal=%s\n",
		*hosts, sp.AloneMean, sp.JoinedMean, sp, msgsPerS, bytesPerHostS, *repeat, *joins, fleetbench.Counts(aloneN), fleetbench.Counts(joinedN), sp.Goal(goal))
	if !learned {
		return fmt.Errorf("a host did not reach RECOMMENDATION within %d connections", *maxConns)
	}
	return nil
}

// goal is the speedup the issue asks for: a joining host needs at most a
// fifth of the connections a lone host needs.
const goal = 5

// median of counts.
func median(xs []int) float64 {
	s := slices.Clone(xs)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return float64(s[len(s)/2])
	}
	return float64(s[len(s)/2-1]+s[len(s)/2]) / 2
}

// fmtCount formats a median count: "57", or "57.5" between two.
func fmtCount(x float64) string { return strconv.FormatFloat(x, 'f', -1, 64) }
