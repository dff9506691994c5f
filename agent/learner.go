package agent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
)

// Learner is a model's learner, in the daemon or outside it: it is given
// every dataset portion the model publishes and answers with the
// recommendations the data calls for, and it is told what came of the
// model's decisions. The daemon's in-process learners implement it, and
// so does an external agent, which Run connects to the daemon's socket.
type Learner interface {
	// Learn takes one published portion (its records in Data, raw; or
	// in Records, decoded, for an external agent that asked for them)
	// and returns the recommendations to post. The portion is valid
	// only during the call.
	Learn(ctx context.Context, p *Portion) ([]Recommendation, error)
	// Feedback takes the outcomes of the model's decisions over one
	// period and the controller's estimate of its efficiency.
	Feedback(ctx context.Context, f *Feedback)
}

// RunOptions configure Run.
type RunOptions struct {
	// Agent names the agent in the daemon's logs.
	Agent string
	// Raw asks for the raw records as well as the decoded ones.
	Raw bool
	// Log receives what happens (default: discarded).
	Log *slog.Logger
	// OnRecommend, if set, is told every recommendation the daemon
	// applied, or refused with its reason.
	OnRecommend func(rec Recommendation, err error)
}

// Run connects l to the model through c until ctx is done or the
// connection ends: it subscribes, and for every published portion fetches
// it, lets l learn from it, posts l's recommendations (each validated by
// the daemon as 'mlbpf recommend' is; a refused one is logged, not fatal),
// and discards the portion; feedback goes to l.Feedback. It returns nil
// when ctx is done.
func Run(ctx context.Context, c *Client, model string, l Learner, o RunOptions) error {
	log := o.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if o.Agent == "" {
		o.Agent = "agent"
	}
	if _, err := c.Hello(ctx, o.Agent); err != nil {
		return err
	}
	if err := c.Subscribe(ctx, model); err != nil {
		return err
	}
	for {
		var ev Event
		var ok bool
		select {
		case <-ctx.Done():
			return nil
		case ev, ok = <-c.Events():
		}
		if !ok {
			if ctx.Err() != nil {
				return nil
			}
			return c.Err()
		}
		if ev.Model != model {
			continue
		}
		switch ev.Type {
		case EventDataset:
			if ev.Portion == nil {
				continue
			}
			if err := learnPortion(ctx, c, model, ev.Portion.Offset, l, o, log); err != nil {
				if ctx.Err() != nil {
					return nil
				}
				return err
			}
		case EventFeedback:
			if ev.Feedback != nil {
				l.Feedback(ctx, ev.Feedback)
			}
		case EventMode:
			log.Info("mode changed", "model", model, "mode", ev.Mode, "state", ev.State, "reason", ev.Reason)
		}
	}
}

func learnPortion(ctx context.Context, c *Client, model string, offset uint64, l Learner, o RunOptions, log *slog.Logger) error {
	p, err := c.Fetch(ctx, model, FetchOptions{Offset: &offset, Records: true, Raw: o.Raw})
	var re *RemoteError
	if errors.As(err, &re) {
		// Evicted before it could be fetched: the next one will do.
		log.Warn("portion gone", "model", model, "offset", offset, "err", err)
		return nil
	}
	if err != nil {
		return err
	}
	recs, err := l.Learn(ctx, p)
	if err != nil {
		return fmt.Errorf("learning from portion %d of %s: %w", offset, model, err)
	}
	for _, r := range recs {
		r.Model = model
		applied, err := c.Recommend(ctx, r)
		if o.OnRecommend != nil {
			o.OnRecommend(applied, err)
		}
		if errors.As(err, &re) {
			log.Warn("recommendation refused", "model", model, "key", r.Key, "value", r.Value, "err", re.Msg)
			continue
		}
		if err != nil {
			return err
		}
	}
	if err := c.Discard(ctx, model, &offset); err != nil && !errors.As(err, &re) {
		return err
	}
	return nil
}
