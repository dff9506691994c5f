package pipeline

import (
	"time"

	"github.com/mlbpf/mlbpf/agent"
	"github.com/mlbpf/mlbpf/history"
	"github.com/mlbpf/mlbpf/model"
)

// keysEvery is how often, in periods, the loop saves its keys to the
// history (and when its model stops).
const keysEvery = 30

// historian keeps the loop's history (package history) in the model's
// state directory: a line a period, the keys every keysEvery periods.
// Used by Run's goroutine only; a nil historian keeps nothing.
type historian struct {
	w             *history.Writer
	acc           history.Acc
	records, lost uint64 // the loop's counters at the last period
	periods       int
	failing       bool
}

// openHistorian opens the history in env.StateDir; nil when there is
// none or it cannot be opened (the model runs without).
func openHistorian(env Env, name string) *historian {
	if env.StateDir == "" {
		return nil
	}
	w, err := history.Open(history.Dir(env.StateDir), name, history.Limits{}, env.Log)
	if err != nil {
		env.Log.Warn("keeping no history", "model", name, "err", err)
		return nil
	}
	return &historian{w: w}
}

func (h *historian) add(fb model.Feedback) {
	if h != nil {
		h.acc.Add(fb.Arm, fb.Reward)
	}
}

func (h *historian) close() {
	if h != nil {
		h.w.Close()
	}
}

// record appends the period that ends to the history.
func (l *Loop) record(eff *agent.Efficiency, d model.Decision) {
	h := l.hist
	if h == nil {
		return
	}
	l.mu.Lock()
	records, lost := l.records, l.bstats.Lost
	l.mu.Unlock()
	p := history.Period{
		Time: time.Now().UTC(), Mode: l.m.Mode().String(), State: l.m.State().String(),
		Records: records - h.records, Lost: lost - h.lost, Efficiency: eff, Decision: history.DecisionOf(d),
	}
	h.records, h.lost = records, lost
	h.acc.Take(&p)
	err := h.w.Append(&p)
	switch {
	case err != nil && !h.failing:
		l.log.Warn("appending to the history", "model", l.name, "err", err)
	case err == nil && h.failing:
		l.log.Info("appending to the history again", "model", l.name)
	}
	h.failing = err != nil
	if h.periods%keysEvery == 0 {
		l.saveKeys()
	}
	h.periods++
}

// saveKeys saves the model's keys, with their evidence, to the history.
func (l *Loop) saveKeys() {
	if l.hist == nil {
		return
	}
	es, err := l.Recommendations()
	if err != nil {
		return // not Keyed: the report has no key table
	}
	k := &history.Keys{Time: time.Now().UTC(), Keys: make([]history.Key, len(es))}
	for i, e := range es {
		hk := history.Key{Key: e.Key, Value: e.Value, By: e.By}
		for arm, ev := range e.Evidence {
			if hk.Evidence == nil {
				hk.Evidence = map[string]history.Arm{}
			}
			hk.Evidence[arm] = history.Arm{N: ev.N, Mean: ev.MeanReward}
		}
		k.Keys[i] = hk
	}
	if err := l.hist.w.SaveKeys(k); err != nil {
		l.log.Warn("saving the keys to the history", "model", l.name, "err", err)
	}
}
