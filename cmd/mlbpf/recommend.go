package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/mlbpf/mlbpf/agent"
	"github.com/mlbpf/mlbpf/daemon"
	"github.com/mlbpf/mlbpf/loader"
	"github.com/mlbpf/mlbpf/model"
)

func cmdRecommend(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	var usages []string
	for _, s := range daemon.Subsystems() {
		usages = append(usages, "  "+s.RecommendUsage)
	}
	fs := newFlags("recommend", "recommend [flags] SUBSYSTEM/MODEL KEY VALUE", `
Write an operator's recommendation for one key: the model's subsystem
validates it first (a congestion control the kernel does not offer or the
allow-list excludes, a malformed prefix, a value out of range are
refused), then it goes into the model's pinned recommendation map, where
the kernel applies it as the model's mode allows. The in-process learner
never overwrites an operator's recommendation.

With a daemon running, the daemon validates and writes it (exactly as for
an agent), once it answers on its socket (a daemon still starting is
waited for, up to --wait); otherwise the subsystem is opened on the pins,
configured by --config (its allow-list, for example).

Keys and values:
`+strings.Join(usages, "\n"), `
  mlbpf recommend tcp/cc 10.0.0.0/8 bbr
  mlbpf recommend tcp/cc 2001:db8::/32 cubic
  mlbpf recommend synthetic/demo 5 42`, stdout, stderr)
	p := addPaths(fs)
	out := addOutput(fs, "text")
	var wait time.Duration
	addWait(fs, &wait)
	if err := fs.parse(args); err != nil {
		return err
	}
	if err := fs.want(3, "a model, a key and a value: mlbpf recommend tcp/cc 10.0.0.0/8 bbr"); err != nil {
		return err
	}
	if err := out.check(); err != nil {
		return err
	}
	name, key, value := fs.Arg(0), fs.Arg(1), fs.Arg(2)
	if _, _, err := daemon.SplitName(name); err != nil {
		return err
	}
	cfg, err := p.load()
	if err != nil {
		return err
	}
	if err := loader.CheckPrivileges(); err != nil {
		return err
	}
	var applied agent.Recommendation
	var via string
	for range 3 {
		if pid := p.daemonPID(); pid != 0 {
			c, h, err := dialDaemon(ctx, p, pid, "mlbpf recommend", wait)
			if errors.Is(err, errDaemonGone) {
				continue // it stopped meanwhile: on the pins
			}
			if err != nil {
				return err
			}
			defer c.Close()
			applied, err = c.Recommend(ctx, agent.Recommendation{Model: name, Key: key, Value: value, Operator: true})
			if err != nil {
				return fmt.Errorf("recommendation refused: %w", unwrapRemote(err))
			}
			via = fmt.Sprintf("the daemon (pid %d)", h.PID)
			break
		}
		rec, err := daemon.RecommendPinned(cfg, p.pinRoot, name, model.Recommendation{Key: key, Value: value})
		if err != nil {
			return fmt.Errorf("recommendation refused: %w", err)
		}
		if p.daemonPID() != 0 {
			// A daemon took its lock meanwhile: it may have opened the
			// model before the write, and would not know the
			// recommendation is an operator's. Give it to the daemon.
			continue
		}
		applied = agent.Recommendation{Model: name, Key: rec.Key, Value: rec.Value, Generation: rec.Generation, Operator: true}
		via = "the pinned maps (no daemon running)"
		break
	}
	if via == "" {
		return fmt.Errorf("%s: a daemon keeps starting and stopping: check its logs, and retry", name)
	}
	if out.json() {
		return writeJSON(stdout, applied)
	}
	fmt.Fprintf(stdout, "%s: %s -> %s written through %s\n", name, applied.Key, applied.Value, via)
	return nil
}

// unwrapRemote returns the daemon's own message for an error it answered.
func unwrapRemote(err error) error {
	if re, ok := err.(*agent.RemoteError); ok {
		return fmt.Errorf("%s", re.Msg)
	}
	return err
}
