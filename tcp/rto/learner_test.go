package rto

import (
	"math/rand/v2"
	"net/netip"
	"testing"
	"time"

	"github.com/mlbpf/mlbpf/model"
)

// feed gives the learner flows to one peer, drawn as the kernel would
// draw them in COLLABORATION: a quarter on the default (CONTROL), the rest
// spread over the recommendation's candidates, each flow's time from fct.
func feed(l *Learner, rng *rand.Rand, peer netip.Addr, n int, fct func(Setting) time.Duration) {
	for range n {
		f := Flow{Peer: peer, Arm: model.ArmControl}
		if cands := l.Recommendations()[l.PrefixOf(peer)]; len(cands) > 0 && rng.IntN(4) > 0 {
			f.Arm, f.Setting = model.ArmModel, cands[rng.IntN(len(cands))]
		} else if len(cands) == 0 {
			f.Arm = model.ArmNoRec
		}
		f.FCT = fct(f.Setting)
		l.Observe(&f)
	}
}

func TestLearnerChoosesPerPrefix(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	l := NewLearner(LearnConfig{})
	lossy, bloat := netip.MustParseAddr("198.18.1.2"), netip.MustParseAddr("198.18.3.2")
	aggressive := Grid[len(Grid)-1]
	// lossy: the shorter the timers, the shorter the tail.
	lossyFCT := func(s Setting) time.Duration {
		base := 5 * time.Millisecond
		if rng.IntN(5) == 0 { // a timeout
			if s.RtoMinMs == 0 {
				return base + time.Second
			}
			return base + time.Duration(s.SynRtoMs)*time.Millisecond*5
		}
		return base
	}
	// bloat: any SYN timeout below the RTT of 250 ms costs seconds.
	bloatFCT := func(s Setting) time.Duration {
		d := time.Duration(900+rng.IntN(200)) * time.Millisecond
		if s.SynRtoMs != 0 && s.SynRtoMs < 250 {
			d += 2 * time.Second
		}
		return d
	}
	for range 300 {
		feed(l, rng, lossy, 1, lossyFCT)
		feed(l, rng, bloat, 1, bloatFCT)
	}
	if l.Exploring() {
		t.Fatalf("still exploring after 300 flows per prefix: %+v", l.Destinations())
	}
	recs := l.Recommendations()
	if got := recs[netip.MustParsePrefix("198.18.1.0/24")]; len(got) != 1 || got[0] == Default {
		t.Errorf("lossy: %v, want one aggressive setting", got)
	} else if got[0] != aggressive {
		t.Logf("lossy chose %s (not the most aggressive, %s)", got[0], aggressive)
	}
	if got, ok := recs[netip.MustParsePrefix("198.18.3.0/24")]; ok {
		t.Errorf("bloat: %v, want the default (no recommendation)", got)
	}
	for _, d := range l.Destinations() {
		if d.LearnedAfter == 0 || d.LearnedAfter > 300 {
			t.Errorf("%s learned after %d flows", d.Prefix, d.LearnedAfter)
		}
	}
}

func TestLearnerIgnoresRejectedAndUnknown(t *testing.T) {
	l := NewLearner(LearnConfig{})
	peer := netip.MustParseAddr("2001:db8::1")
	l.Observe(&Flow{Peer: peer, Arm: model.ArmRejected, FCT: time.Second})
	l.Observe(&Flow{Peer: peer, Arm: model.ArmModel, Setting: Setting{SynRtoMs: 333}, FCT: time.Second})
	if len(l.Destinations()) != 0 {
		t.Fatalf("learned from a rejected flow or a setting outside the grid: %+v", l.Destinations())
	}
	l.Observe(&Flow{Peer: peer, Arm: model.ArmFallback, FCT: time.Second})
	d := l.Destinations()
	if len(d) != 1 || d[0].Prefix != netip.MustParsePrefix("2001:db8::/64") || d[0].Arms[0].Flows != 1 {
		t.Fatalf("%+v", d)
	}
}

func TestTailBounds(t *testing.T) {
	xs := make([]float64, 100)
	for i := range xs {
		xs[i] = float64(i + 1)
	}
	m, lo, hi := tail(xs, 0.9, 1.645)
	if m != 95.5 || lo >= m || hi <= m || lo < 90 || hi > 100 {
		t.Fatalf("tail of 1..100: %g [%g, %g]", m, lo, hi)
	}
	// Bimodal, 12 % stalled: the 0.9-quantile's bounds would span both
	// modes; the tail mean's do not.
	for i := range xs {
		xs[i] = 1
		if i%8 == 0 {
			xs[i] = 1000
		}
	}
	if m, lo, _ := tail(xs, 0.9, 1.645); m != 1000 || lo < 900 {
		t.Fatalf("bimodal tail: %g, lower bound %g", m, lo)
	}
}

func TestLearnerSaveLoad(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	l := NewLearner(LearnConfig{MinSamples: 5})
	peer := netip.MustParseAddr("198.18.1.2")
	feed(l, rng, peer, 60, func(s Setting) time.Duration {
		if s == Default {
			return time.Second
		}
		return time.Duration(s.SynRtoMs) * time.Millisecond
	})
	path := t.TempDir() + "/" + StateFile
	if err := l.Save(path); err != nil {
		t.Fatal(err)
	}
	l2 := NewLearner(LearnConfig{MinSamples: 5})
	if ok, err := l2.Load(path); !ok || err != nil {
		t.Fatalf("Load: %v %v", ok, err)
	}
	a, b := l.Destinations(), l2.Destinations()
	if len(a) != 1 || len(b) != 1 || a[0].Chosen != b[0].Chosen || a[0].Flows != b[0].Flows || a[0].Arms[1] != b[0].Arms[1] {
		t.Fatalf("saved %+v, loaded %+v", a, b)
	}
	other := NewLearner(LearnConfig{Grid: Grid[:2]})
	if ok, err := other.Load(path); ok || err != nil {
		t.Fatalf("a state over another grid was loaded: %v %v", ok, err)
	}
}
