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
// then a lone host without one, and prints one line:
//
//	fleet hosts=4 learned_after_alone=… learned_after_joined=… speedup=… msgs_per_s=… bytes_per_host_s=…
//
// learned_after_* are connections until the model is in RECOMMENDATION
// (through COLLABORATION, on the host's own evidence). Run it under the
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
	verbose := fs.Bool("v", false, "log the hosts' progress (and their daemons' logs) to stderr")
	child := fs.String("host", "", "run one host of that name (internal: the hosts are processes of their own)")
	natsURL := fs.String("nats", "", "the host's NATS server (with -host; empty: a lone host)")
	linger := fs.Duration("linger", 2*time.Second, "how long a host keeps sharing after it learned (with -host)")
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
			Max: *maxConns, Linger: *linger, Log: log.With("host", *child)})
		if err != nil {
			return err
		}
		return fleetbench.WriteResult(stdout, r)
	}
	if *hosts < 2 {
		return errors.New("-hosts: want at least 2")
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
	host := func(name, url string) (fleetbench.HostResult, error) {
		a := []string{"-host", name, "-nats", url, "-loss", strconv.FormatFloat(*loss, 'g', -1, 64),
			"-max", strconv.Itoa(*maxConns), "-linger", linger.String()}
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
			r, err := host(fmt.Sprintf("host-%d", i), srv.URL)
			mu.Lock()
			defer mu.Unlock()
			results, errs = append(results, r), append(errs, err)
		})
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return err
	}
	joined, err := host(fmt.Sprintf("host-%d", *hosts), srv.URL)
	if err != nil {
		return err
	}
	results = append(results, joined)
	alone, err := host("alone", "")
	if err != nil {
		return err
	}
	var msgsPerS, bytesPerHostS float64
	for _, r := range results {
		if r.Seconds > 0 {
			msgsPerS += float64(r.Published) / r.Seconds
			bytesPerHostS += float64(r.Bytes) / r.Seconds / float64(len(results))
		}
	}
	speedup := float64(alone.Connections) / float64(max(joined.Connections, 1))
	fmt.Fprintf(stdout, "fleet hosts=%d learned_after_alone=%d learned_after_joined=%d speedup=%.2f msgs_per_s=%.1f bytes_per_host_s=%.0f\n",
		*hosts, alone.Connections, joined.Connections, speedup, msgsPerS, bytesPerHostS)
	if !alone.Learned || !joined.Learned {
		return fmt.Errorf("a host did not reach RECOMMENDATION within %d connections (alone %v, joined %v)", *maxConns, alone.Learned, joined.Learned)
	}
	return nil
}
