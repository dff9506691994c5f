package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"

	"github.com/mlbpf/mlbpf/storage/readahead"
	storagetestbed "github.com/mlbpf/mlbpf/storage/testbed"
	"github.com/mlbpf/mlbpf/tcp"
	"github.com/mlbpf/mlbpf/tcp/rto"
	"github.com/mlbpf/mlbpf/testbed"
)

func cmdDemo(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("demo", "demo tcp|tcp-rto|readahead [flags]", `
Show a model learning, on a testbed of its own. For tcp (tcp/cc): a
client and a server network namespace joined by a lossy veth pair, tcp/cc
attached to a cgroup holding this process, and short connections from
client to server; it prints the model's progress, its mode changes and the
goodput of each arm as they happen, then a summary. For tcp-rto (tcp/rto):
two paths from one client to one server, lossy (random loss both ways, a
round trip of microseconds) and bloat (a router whose deep queue a
background flow keeps full, a round trip of hundreds of milliseconds);
64 KB flows on both at once while one model learns both, printed side by
side: the tail flow completion time (the mean of the worst 10 %) of each
setting of the grid and what the model chose for each path. For readahead
(storage/readahead): a loop device over tmpfs throttled by the io
controller, storage/readahead on it, and a workload reading it; it prints
the throughput of each arm as it happens. Everything it builds is removed
when it ends or is interrupted; the host's own connections, devices and
the daemon's pins are not touched.`, `
  mlbpf demo tcp
  mlbpf demo tcp --loss 5 --connections 300
  mlbpf demo tcp-rto
  mlbpf demo tcp-rto --loss 10
  mlbpf demo readahead
  mlbpf demo readahead --workload mmap --bps 8000000`, stdout, stderr)
	loss := fs.Float64("loss", 10, "loss rate from client to server, in percent (tcp-rto: each way on its lossy path, default 5)")
	conns := fs.Int("connections", 150, "the most connections to make (the demo ends earlier once the model is in RECOMMENDATION)")
	workers := fs.Int("workers", 3, "connections at a time")
	period := fs.Duration("period", 0, "the model's period (default 100ms)")
	workload := fs.String("workload", "seq", "readahead: the workload (seq, random, mmap, phased)")
	iops := fs.Uint64("iops", 0, "readahead: the device's read IOPS cap (default 100 when --bps is not given)")
	bps := fs.Uint64("bps", 0, "readahead: the device's read bytes/s cap")
	duration := fs.Duration("duration", 0, "readahead: the most the demo runs (default 90s)")
	if err := fs.parse(args); err != nil {
		return err
	}
	if err := fs.want(1, "what to demonstrate: tcp, tcp-rto or readahead"); err != nil {
		return err
	}
	switch fs.Arg(0) {
	case "tcp":
	case "readahead":
		w, err := storagetestbed.ParseWorkload(*workload)
		if err != nil {
			return err
		}
		return readahead.Demo(ctx, stdout, readahead.DemoOptions{Workload: w, Throttle: storagetestbed.Throttle{ReadIOPS: *iops, ReadBPS: *bps}, Duration: *duration})
	case "tcp-rto":
		lossSet := false
		fs.Visit(func(f *flag.Flag) { lossSet = lossSet || f.Name == "loss" })
		if !lossSet {
			*loss = 5 // tcp-rto's lossy path: 5 % each way
		}
		if *loss <= 0 || *loss >= 100 {
			return fmt.Errorf("--loss must be above 0 and below 100")
		}
		root, err := testbed.TempPinRoot("mlbpf-demo-rto")
		if err != nil {
			return err
		}
		defer os.RemoveAll(root)
		return rto.Demo(ctx, stdout, root, rto.DemoOptions{LossPercent: *loss})
	default:
		return fmt.Errorf("demo %q: want tcp, tcp-rto or readahead", fs.Arg(0))
	}
	if *loss < 0 || *loss >= 100 || *conns < 1 || *workers < 1 {
		return fmt.Errorf("--loss must be 0 to 100 (exclusive), --connections and --workers at least 1")
	}
	return tcp.Demo(ctx, stdout, tcp.DemoOptions{Loss: *loss, Connections: *conns, Workers: *workers, Period: *period})
}
