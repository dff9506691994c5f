package fleetbench

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	"github.com/mlbpf/mlbpf/config"
	"github.com/mlbpf/mlbpf/daemon"
	"github.com/mlbpf/mlbpf/fleet/natsbus"
	"github.com/mlbpf/mlbpf/model"
	"github.com/mlbpf/mlbpf/tcp"
	"github.com/mlbpf/mlbpf/testbed"
)

// HostConfig is one host.
type HostConfig struct {
	// Name is the host's name in the fleet; NATS its server, "" for a
	// lone host.
	Name, NATS string
	// LossPercent of the host's testbed.
	LossPercent float64
	// Max connections before giving up.
	Max int
	// Transfer is how long each connection sends (default 1 s).
	Transfer time.Duration
	// Linger is how long the host keeps sharing after it learned.
	Linger time.Duration
	// Join makes the host wait (up to a minute) for the fleet's
	// statistics before its first connection: it joins a fleet that
	// learned.
	Join bool
	Log  *slog.Logger
}

// HostResult is what one host did.
type HostResult struct {
	Name string `json:"name"`
	// Connections made until the model was in RECOMMENDATION (Max+1 if
	// it never was).
	Connections int    `json:"connections"`
	Learned     bool   `json:"learned"`
	Recommended string `json:"recommended"`
	// Published messages and bytes, over Seconds.
	Published uint64  `json:"published"`
	Bytes     uint64  `json:"bytes"`
	Seconds   float64 `json:"seconds"`
}

// Host runs one host: a testbed, a daemon running tcp/cc on its cgroup
// (sharing with the fleet at NATS, if set), and connections through the
// testbed one after the other until the model reaches RECOMMENDATION.
func Host(ctx context.Context, hc HostConfig) (res HostResult, err error) {
	res.Name = hc.Name
	if hc.Log == nil {
		hc.Log = slog.New(slog.DiscardHandler)
	}
	if hc.Transfer <= 0 {
		hc.Transfer = time.Second
	}
	tb, err := testbed.New(ctx, testbed.Config{LossPercent: hc.LossPercent, Cgroup: true, Name: "mlbpf-fb"})
	if err != nil {
		return res, err
	}
	defer func() { err = errors.Join(err, tb.Close()) }()
	sink, err := tb.NewSink(false)
	if err != nil {
		return res, err
	}
	defer sink.Close()
	pinRoot, err := testbed.TempPinRoot("mlbpf-fleetbench")
	if err != nil {
		return res, err
	}
	defer os.RemoveAll(pinRoot)
	dir, err := os.MkdirTemp("", "mlbpf-fleetbench-")
	if err != nil {
		return res, err
	}
	defer os.RemoveAll(dir)
	y := fmt.Sprintf(`
pin_root: %q
state_dir: %q
socket: %q
interval: %s
models:
  - name: tcp/cc
    mode: learning
    max_mode: recommendation
    lease: 5s
    tcp:
      cgroup: %q
      default: cubic
      allowed: [cubic, bbr, reno]
`, pinRoot, filepath.Join(dir, "state"), filepath.Join(dir, "run", "agent.sock"), period, tb.Cgroup())
	c, err := config.Parse("fleetbench.yaml", []byte(y))
	if err != nil {
		return res, err
	}
	if hc.NATS != "" {
		c.Fleet = config.Fleet{URLs: []string{hc.NATS}, Host: hc.Name, Interval: 200 * time.Millisecond}
	}
	d, err := daemon.New(daemon.Options{Config: c, Log: hc.Log, Version: "fleetbench"})
	if err != nil {
		return res, err
	}
	dctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	done := make(chan error, 1)
	go func() { done <- d.Run(dctx) }()
	defer func() {
		cancel()
		err = errors.Join(err, <-done, daemon.Rollback(pinRoot, "tcp/cc"))
	}()
	select {
	case <-d.Ready():
	case err := <-done:
		return res, fmt.Errorf("starting the daemon: %w", err)
	}
	mode := func() model.Mode {
		for _, mi := range d.Models() {
			if mi.Model == "tcp/cc" {
				m, _ := model.ParseMode(mi.Mode)
				return m
			}
		}
		return model.ModeUnknown
	}
	if bus := d.Fleet(); hc.Join && bus != nil {
		if err := waitMerged(ctx, bus); err != nil {
			return res, err
		}
	}
	start := time.Now()
	for res.Connections = 0; res.Connections <= hc.Max; res.Connections++ {
		if mode() == model.ModeRecommendation {
			res.Learned = true
			break
		}
		tctx, tcancel := context.WithTimeout(ctx, 20*time.Second)
		_, err := tb.Send(tctx, sink.Addr(), testbed.Load{Duration: hc.Transfer}, "")
		tcancel()
		if err != nil {
			return res, err
		}
		// Let the daemon's period learn from the connection and decide
		// before the next one (a period begun before the connection
		// closed, then a whole one): the count is of connections, not
		// of races with the period.
		time.Sleep(2 * period)
		hc.Log.Info("connection made", "connections", res.Connections+1, "mode", mode())
	}
	if res.Learned {
		select {
		case <-time.After(hc.Linger):
		case <-ctx.Done():
		}
	}
	if bus := d.Fleet(); bus != nil {
		ct := bus.Counters()
		res.Published, res.Bytes = ct.Published, ct.PublishedBytes
	}
	res.Seconds = time.Since(start).Seconds()
	res.Recommended = recommended(pinRoot)
	return res, nil
}

// period is the daemon's (interval in the configuration).
const period = 100 * time.Millisecond

// waitMerged waits until the bus merged the fleet's statistics into a
// learner.
func waitMerged(ctx context.Context, bus *natsbus.Bus) error {
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	for bus.Counters().Merged == 0 {
		select {
		case <-ctx.Done():
			return fmt.Errorf("waiting for the fleet's statistics: %w", ctx.Err())
		case <-time.After(50 * time.Millisecond):
		}
	}
	return nil
}

// recommended returns the pinned recommendation for the testbed's
// prefix, "" for none.
func recommended(pinRoot string) string {
	o, err := tcp.OpenPinned(tcp.Config{PinRoot: pinRoot})
	if err != nil {
		return ""
	}
	defer o.Close()
	recs, err := o.Recommendations()
	if err != nil {
		return ""
	}
	for _, r := range recs {
		if r.Prefix == testbed.Prefix {
			return r.CC
		}
	}
	return ""
}

// WriteResult writes r as one JSON line.
func WriteResult(w io.Writer, r HostResult) error { return json.NewEncoder(w).Encode(r) }
