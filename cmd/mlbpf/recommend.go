package main

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/mlbpf/mlbpf/agent"
	"github.com/mlbpf/mlbpf/config"
	"github.com/mlbpf/mlbpf/daemon"
	"github.com/mlbpf/mlbpf/loader"
	"github.com/mlbpf/mlbpf/model"
	"github.com/mlbpf/mlbpf/pipeline"
)

func cmdRecommend(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	var usages []string
	for _, s := range daemon.Subsystems() {
		usages = append(usages, "  "+s.RecommendUsage)
	}
	fs := newFlags("recommend", "recommend [flags] SUBSYSTEM/MODEL KEY VALUE | --withdraw SUBSYSTEM/MODEL KEY", `
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

With --withdraw, the recommendation for KEY is taken back, an operator's
or the learner's (KEY validated as for a recommendation): the command
exits 0 only once the key is gone from the kernel's map. 'mlbpf
recommendations' lists the keys.

Keys and values:
`+strings.Join(usages, "\n"), `
  mlbpf recommend tcp/cc 10.0.0.0/8 bbr
  mlbpf recommend tcp/cc 2001:db8::/32 cubic
  mlbpf recommend synthetic/demo 5 42
  mlbpf recommend --withdraw tcp/cc 10.0.0.0/8`, stdout, stderr)
	p := addPaths(fs)
	out := addOutput(fs, "text")
	var wait time.Duration
	addWait(fs, &wait)
	withdraw := fs.Bool("withdraw", false, "take the recommendation for KEY back (an operator's or the learner's): the kernel's default applies to it again, until the learner recommends it anew")
	if err := fs.parse(args); err != nil {
		return err
	}
	n, what := 3, "a model, a key and a value: mlbpf recommend tcp/cc 10.0.0.0/8 bbr"
	if *withdraw {
		n, what = 2, "a model and a key: mlbpf recommend --withdraw tcp/cc 10.0.0.0/8"
	}
	if err := fs.want(n, what); err != nil {
		return err
	}
	if err := out.check(); err != nil {
		return err
	}
	name, key, value := fs.Arg(0), fs.Arg(1), fs.Arg(2)
	cfg, err := p.loadFor(name)
	if err != nil {
		return err
	}
	if *withdraw {
		return withdrawKey(ctx, p, cfg, wait, out, stdout, name, key)
	}
	var applied agent.Recommendation
	via, err := viaDaemonOrPins(ctx, p, wait, "mlbpf recommend", name, func(c *agent.Client) error {
		var err error
		applied, err = c.Recommend(ctx, agent.Recommendation{Model: name, Key: key, Value: value, Operator: true})
		if err != nil {
			return fmt.Errorf("recommendation refused: %w", unwrapRemote(err))
		}
		return nil
	}, func() error {
		rec, err := daemon.RecommendPinned(cfg, p.pinRoot, name, model.Recommendation{Key: key, Value: value})
		if err != nil {
			return fmt.Errorf("recommendation refused: %w", err)
		}
		applied = agent.Recommendation{Model: name, Key: rec.Key, Value: rec.Value, Generation: rec.Generation, Operator: true}
		return nil
	})
	if err != nil {
		return err
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

// viaDaemonOrPins carries an operator's command on a model's keys out:
// through the daemon when one runs (onDaemon), else on the pins (onPins),
// handing it to a daemon that took its lock meanwhile. It returns what it
// went through, for the report.
func viaDaemonOrPins(ctx context.Context, p *paths, wait time.Duration, who, name string, onDaemon func(*agent.Client) error, onPins func() error) (string, error) {
	for range 3 {
		if pid := p.daemonPID(); pid != 0 {
			c, h, err := dialDaemon(ctx, p, pid, who, wait)
			if errors.Is(err, errDaemonGone) {
				continue // it stopped meanwhile: on the pins
			}
			if err != nil {
				return "", err
			}
			defer c.Close()
			if err := onDaemon(c); err != nil {
				return "", err
			}
			return fmt.Sprintf("the daemon (pid %d)", h.PID), nil
		}
		if err := onPins(); err != nil {
			return "", err
		}
		if p.daemonPID() != 0 {
			// A daemon took its lock meanwhile: it may have opened the
			// model before the write, and would not know of it. Give
			// it to the daemon.
			continue
		}
		return "the pinned maps (no daemon running)", nil
	}
	return "", fmt.Errorf("%s: a daemon keeps starting and stopping: check its logs, and retry", name)
}

// withdrawKey is 'mlbpf recommend --withdraw'.
func withdrawKey(ctx context.Context, p *paths, cfg *config.Config, wait time.Duration, out *output, stdout io.Writer, name, key string) error {
	var done agent.Recommendation
	via, err := viaDaemonOrPins(ctx, p, wait, "mlbpf recommend --withdraw", name, func(c *agent.Client) error {
		var err error
		done, err = c.Withdraw(ctx, name, key)
		if err != nil {
			return fmt.Errorf("withdrawal refused: %w", unwrapRemote(err))
		}
		return nil
	}, func() error {
		k, err := daemon.PinnedKeys(cfg, p.pinRoot, name)
		if err != nil {
			return fmt.Errorf("withdrawal refused: %w", err)
		}
		defer k.Close()
		norm, err := k.WithdrawKey(key)
		if err != nil {
			return fmt.Errorf("withdrawal refused: %w", err)
		}
		es, err := k.Entries()
		if err != nil {
			return err
		}
		if pipeline.Has(es, norm) {
			return fmt.Errorf("%s: %s is still in the kernel's map after the withdrawal: retry, and check 'mlbpf recommendations %s'", name, norm, name)
		}
		done = agent.Recommendation{Model: name, Key: norm, Operator: true}
		return nil
	})
	if err != nil {
		return err
	}
	if out.json() {
		return writeJSON(stdout, done)
	}
	fmt.Fprintf(stdout, "%s: %s withdrawn through %s: the kernel's default applies to it\n", name, done.Key, via)
	return nil
}

func cmdRecommendations(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("recommendations", "recommendations [flags] SUBSYSTEM/MODEL", `
List a model's recommendation map: every key, the value the kernel gets
for it, who wrote it (operator or learner), when (by the running daemon),
the generation it was written in, and the evidence behind it: the
outcomes fed back for the key since the daemon started, per arm (shadow:
the default observed while only learning, with the learner's prediction;
model: the recommendation applied; control: the default, as control
group), with their mean reward.

With a daemon running, the daemon answers (waiting up to --wait for one
still starting); otherwise the pinned map is read, and who wrote a key is
said only where the map keeps it.`, `
  mlbpf recommendations tcp/cc
  mlbpf recommendations synthetic/demo -o json`, stdout, stderr)
	p := addPaths(fs)
	out := addOutput(fs, "text")
	var wait time.Duration
	addWait(fs, &wait)
	if err := fs.parseArgs(args, 1, "a model: mlbpf recommendations tcp/cc", out); err != nil {
		return err
	}
	name := fs.Arg(0)
	cfg, err := p.loadFor(name)
	if err != nil {
		return err
	}
	var es []agent.Entry
	via, err := viaDaemonOrPins(ctx, p, wait, "mlbpf recommendations", name, func(c *agent.Client) error {
		var err error
		es, err = c.Recommendations(ctx, name)
		return unwrapRemoteErr(err)
	}, func() error {
		k, err := daemon.PinnedKeys(cfg, p.pinRoot, name)
		if err != nil {
			return err
		}
		defer k.Close()
		pes, err := k.Entries()
		es = daemon.Entries(pes)
		return err
	})
	if err != nil {
		return err
	}
	if out.json() {
		if es == nil {
			es = []agent.Entry{}
		}
		return writeJSON(stdout, es)
	}
	fmt.Fprintf(stdout, "%s: %d keys, from %s\n", name, len(es), via)
	if len(es) == 0 {
		return nil
	}
	tw := tabwriter.NewWriter(stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "KEY\tVALUE\tBY\tWRITTEN\tGEN\tEVIDENCE (arm n mean_reward)")
	for _, e := range es {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d\t%s\n", e.Key, e.Value, cmp.Or(e.By, "-"), cmp.Or(e.Written, "-"), e.Generation, evidence(e.Evidence))
	}
	return tw.Flush()
}

// evidence is an entry's evidence, arm by arm in a fixed order.
func evidence(ev map[string]agent.ArmFeedback) string {
	if len(ev) == 0 {
		return "-"
	}
	arms := slices.Sorted(maps.Keys(ev))
	parts := make([]string, len(arms))
	for i, a := range arms {
		parts[i] = fmt.Sprintf("%s %d %.4g", strings.ToLower(a), ev[a].N, ev[a].MeanReward)
	}
	return strings.Join(parts, ", ")
}

// unwrapRemoteErr is unwrapRemote for a possibly nil error.
func unwrapRemoteErr(err error) error {
	if err == nil {
		return nil
	}
	return unwrapRemote(err)
}

// loadFor checks a model's name and the privileges a command on it needs,
// and loads the configuration.
func (p *paths) loadFor(name string) (*config.Config, error) {
	if _, _, err := daemon.SplitName(name); err != nil {
		return nil, err
	}
	cfg, err := p.load()
	if err != nil {
		return nil, err
	}
	return cfg, loader.CheckPrivileges()
}
