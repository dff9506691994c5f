package fleet

import (
	"math"
	"sync"
	"time"

	"github.com/mlbpf/mlbpf/learner"
)

// DefaultMaxEntries bounds a Table: one entry is one host's message for
// one key of one model.
const DefaultMaxEntries = 1 << 20

// Table holds the latest message of every other host for every key of
// every model, and combines them into a prior. It is safe for concurrent
// use.
type Table struct {
	mu      sync.Mutex
	self    string
	max     int
	n       int
	entries map[entry]map[string]*Message
	dirty   map[string]map[string]bool // model → keys changed since Dirty
}

type entry struct{ model, key string }

// NewTable returns an empty table that ignores host self's own messages
// and holds at most maxEntries messages (0: DefaultMaxEntries).
func NewTable(self string, maxEntries int) *Table {
	if maxEntries <= 0 {
		maxEntries = DefaultMaxEntries
	}
	return &Table{self: self, max: maxEntries, entries: map[entry]map[string]*Message{}, dirty: map[string]map[string]bool{}}
}

// Put keeps m, a validated message, unless it is the table's own host's,
// older than the one kept from its host for its key, or the table is
// full. It reports whether m was kept.
func (t *Table) Put(m *Message) bool {
	if m.Host == t.self {
		return false
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	e := entry{m.Model, m.Key}
	hosts := t.entries[e]
	if old := hosts[m.Host]; old != nil {
		if old.At > m.At {
			return false
		}
	} else if t.n >= t.max {
		return false
	} else {
		if hosts == nil {
			hosts = map[string]*Message{}
			t.entries[e] = hosts
		}
		t.n++
	}
	hosts[m.Host] = m
	t.markDirty(e)
	return true
}

// Delete forgets host's message for model's key.
func (t *Table) Delete(model, key, host string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	e := entry{model, key}
	if _, ok := t.entries[e][host]; ok {
		delete(t.entries[e], host)
		t.n--
		if len(t.entries[e]) == 0 {
			delete(t.entries, e)
		}
		t.markDirty(e)
	}
}

func (t *Table) markDirty(e entry) {
	d := t.dirty[e.model]
	if d == nil {
		d = map[string]bool{}
		t.dirty[e.model] = d
	}
	d[e.key] = true
}

// Len returns the number of messages kept.
func (t *Table) Len() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.n
}

// Dirty returns model's keys whose messages changed since the last call
// (all of them with all true), and forgets them.
func (t *Table) Dirty(model string, all bool) []string {
	t.mu.Lock()
	defer t.mu.Unlock()
	var keys []string
	if all {
		for e := range t.entries {
			if e.model == model {
				keys = append(keys, e.key)
			}
		}
	} else {
		for k := range t.dirty[model] {
			keys = append(keys, k)
		}
	}
	delete(t.dirty, model)
	return keys
}

// Prior combines the other hosts' statistics for model's key at now:
// every host's weights are discounted by 2^(−age/halfLife), then the
// estimates are pooled arm by arm (PoolWithin: the hosts' weights and
// means as one sample, the spread of one observation within each host, so
// that the differences between the hosts' means do not count as noise).
// It returns nil when no host has anything on key.
func (t *Table) Prior(model, key string, now time.Time, halfLife time.Duration) []Arm {
	t.mu.Lock()
	defer t.mu.Unlock()
	hosts := t.entries[entry{model, key}]
	if len(hosts) == 0 {
		return nil
	}
	var pools [][3]PoolWithin
	var out []Arm
	idx := map[string]int{}
	for _, m := range hosts {
		f := Discount(now.Sub(m.Time()), halfLife)
		if f <= 0 {
			continue
		}
		for _, a := range m.Arms {
			i, ok := idx[a.Name]
			if !ok {
				i = len(out)
				idx[a.Name] = i
				out = append(out, Arm{Name: a.Name})
				pools = append(pools, [3]PoolWithin{})
			}
			pools[i][0].Add(a.Real, f)
			pools[i][1].Add(a.Predicted, f)
			pools[i][2].Add(a.Error, f)
		}
	}
	for i := range out {
		out[i].Real = pools[i][0].Estimate()
		out[i].Predicted = pools[i][1].Estimate()
		out[i].Error = pools[i][2].Estimate()
	}
	return out
}

// PoolWithin pools several hosts' estimates of one statistic: their
// weights and means as one sample (as Pool does), but their spreads
// within each host only, the pooled variance Σ(n_h − 1)·s²_h / Σ(n_h − 1).
// Each host measures on its own paths, so its mean differs from the
// others' by more than one observation's noise: counted as noise, those
// differences would make a claim look noisier than any one host's
// observations are. The zero value is empty.
type PoolWithin struct {
	pooled learner.Estimate // S: within the hosts that have a variance
	df     float64          // Σ f·(W_h − 1) over those hosts
	loose  float64          // Σ f·S_h of hosts of weight ≤ 1
}

// Add adds one host's estimate e, its weight scaled by f.
func (p *PoolWithin) Add(e learner.Estimate, f float64) {
	w := e.W * f
	if w <= 0 {
		return
	}
	p.pooled.W += w
	p.pooled.Mean += (e.Mean - p.pooled.Mean) * w / p.pooled.W
	if e.W > 1 {
		p.pooled.S += e.S * f
		p.df += (e.W - 1) * f
	} else {
		p.loose += e.S * f
	}
}

// Estimate returns the pooled estimate: its weight and mean those of all
// the hosts' observations together, its Var the pooled within-host
// variance (none when the pooled weight is 1 or less, after the discount;
// the hosts' own sums of squares when no host has a variance).
func (p *PoolWithin) Estimate() learner.Estimate {
	e := p.pooled
	if p.df > 0 {
		e.S = e.S / p.df * max(e.W-1, 0)
	} else {
		e.S = p.loose
	}
	return e
}

// Discount is the weight evidence of age keeps: 2^(−age/halfLife), 1 for
// evidence from the future (within MaxSkew), 0 past 20 half-lives.
func Discount(age, halfLife time.Duration) float64 {
	if age <= 0 {
		return 1
	}
	if halfLife <= 0 || age > 20*halfLife {
		return 0
	}
	return math.Exp2(-float64(age) / float64(halfLife))
}

// Pool adds estimate b, its weight scaled by f, into a (Chan's parallel
// formula: the result is the estimate of both samples together).
func Pool(a *learner.Estimate, b learner.Estimate, f float64) {
	w := b.W * f
	if w <= 0 {
		return
	}
	tot := a.W + w
	d := b.Mean - a.Mean
	a.S += b.S*f + d*d*a.W*w/tot
	a.Mean += d * w / tot
	a.W = tot
}
