package fleet

import (
	"errors"
	"math"
	"strings"
	"testing"
	"time"

	"github.com/mlbpf/mlbpf/learner"
)

func msg(host string, at time.Time, w, mean float64) *Message {
	return &Message{V: Version, Host: host, Model: "tcp/cc", At: at.UnixMilli(), Stats: Stats{Key: "10.0.0.0/24",
		Arms: []Arm{{Name: "bbr", Real: learner.Estimate{W: w, Mean: mean, S: w}}}}}
}

func TestRoundTrip(t *testing.T) {
	now := time.Now()
	m := msg("a", now, 10, 0.5)
	b, err := Encode(m)
	if err != nil {
		t.Fatal(err)
	}
	got, err := Decode(b, now)
	if err != nil {
		t.Fatal(err)
	}
	if got.Host != "a" || got.Key != m.Key || got.Arms[0].Real != m.Arms[0].Real {
		t.Fatalf("round trip: %+v, want %+v", got, m)
	}
}

func TestDecodeRefuses(t *testing.T) {
	now := time.Now()
	good, _ := Encode(msg("a", now, 10, 0.5))
	s := string(good)
	for name, in := range map[string]string{
		"oversized":     s + strings.Repeat(" ", MaxMessageBytes),
		"trailing":      s + "{}",
		"unknown field": strings.Replace(s, `"v":1`, `"v":1,"x":1`, 1),
		"version":       strings.Replace(s, `"v":1`, `"v":2`, 1),
		"host":          strings.Replace(s, `"host":"a"`, `"host":"a.b"`, 1),
		"model":         strings.Replace(s, `"model":"tcp/cc"`, `"model":"tcp"`, 1),
		"future":        strings.Replace(s, `"at":`, `"at":9`, 1),
		"huge weight":   strings.Replace(s, `"w":10`, `"w":1e9`, 1),
		"negative":      strings.Replace(s, `"w":10`, `"w":-1`, 1),
		"huge mean":     strings.Replace(s, `"mean":0.5`, `"mean":1e9`, 1),
		"no arms":       strings.Replace(s, `"arms":[`, `"arms":[],"x":[`, 1),
		"arm name":      strings.Replace(s, `"name":"bbr"`, `"name":"BBR!"`, 1),
	} {
		if _, err := Decode([]byte(in), now); !errors.Is(err, ErrInvalid) {
			t.Errorf("%s: Decode = %v, want ErrInvalid", name, err)
		}
	}
}

func TestPriorDiscountsByAge(t *testing.T) {
	now := time.Now()
	tab := NewTable("self", 0)
	tab.Put(msg("self", now, 100, 9)) // own: ignored
	tab.Put(msg("a", now, 10, 1))
	tab.Put(msg("b", now.Add(-time.Hour), 10, 0)) // one half-life old
	p := tab.Prior("tcp/cc", "10.0.0.0/24", now, time.Hour)
	if len(p) != 1 {
		t.Fatalf("prior %+v, want one arm", p)
	}
	e := p[0].Real
	if math.Abs(e.W-15) > 1e-3 || math.Abs(e.Mean-10.0/15) > 1e-3 {
		t.Fatalf("prior %+v, want weight 10+5 and mean 10/15", e)
	}
	// An older message from a host does not replace its newer one.
	if tab.Put(msg("a", now.Add(-time.Minute), 1, 5)) {
		t.Error("an older message replaced a newer one")
	}
	if keys := tab.Dirty("tcp/cc", false); len(keys) != 1 {
		t.Errorf("dirty keys %v, want the one key", keys)
	}
	if keys := tab.Dirty("tcp/cc", false); len(keys) != 0 {
		t.Errorf("dirty keys after Dirty %v, want none", keys)
	}
}

func TestTableBounded(t *testing.T) {
	tab := NewTable("self", 2)
	now := time.Now()
	for _, h := range []string{"a", "b", "c"} {
		tab.Put(msg(h, now, 1, 0))
	}
	if tab.Len() != 2 {
		t.Fatalf("table holds %d, want its bound 2", tab.Len())
	}
}

func TestPoolMatchesOneSample(t *testing.T) {
	xs := []float64{1, 2, 3, 4, 10, -3}
	var all, a, b learner.Estimate
	for i, x := range xs {
		all.Add(x, 1)
		if i < 3 {
			a.Add(x, 1)
		} else {
			b.Add(x, 1)
		}
	}
	Pool(&a, b, 1)
	if math.Abs(a.W-all.W) > 1e-9 || math.Abs(a.Mean-all.Mean) > 1e-9 || math.Abs(a.S-all.S) > 1e-9 {
		t.Fatalf("pooled %+v, want %+v", a, all)
	}
}

// Two hosts whose means differ by far more than one observation's spread
// within each host: the prior's spread is the within-host one, weighted by
// each host's degrees of freedom after the age discount.
func TestPriorSpreadIsWithinHosts(t *testing.T) {
	now := time.Now()
	host := func(h string, at time.Time, mean, sd float64) *Message {
		e := learner.Estimate{W: 10, Mean: mean, S: 9 * sd * sd} // Var() = sd²
		return &Message{V: Version, Host: h, Model: "tcp/cc", At: at.UnixMilli(), Stats: Stats{Key: "10.0.0.0/24",
			Arms: []Arm{{Name: "bbr", Real: e, Predicted: e, Error: e}}}}
	}
	for _, c := range []struct {
		name                     string
		ageB                     time.Duration
		sdB                      float64
		wantW, wantMean, wantVar float64
	}{
		{"same age", 0, 0.5, 20, 1.5, 0.25},
		// b one half-life old: weight 5, 4.5 degrees of freedom.
		{"b older", time.Hour, 1, 15, 1, (9*0.25 + 4.5*1) / 13.5},
	} {
		tab := NewTable("self", 0)
		tab.Put(host("a", now, 0, 0.5))
		tab.Put(host("b", now.Add(-c.ageB), 3, c.sdB))
		p := tab.Prior("tcp/cc", "10.0.0.0/24", now, time.Hour)
		if len(p) != 1 {
			t.Fatalf("%s: prior %+v, want one arm", c.name, p)
		}
		for what, e := range map[string]learner.Estimate{"real": p[0].Real, "predicted": p[0].Predicted, "error": p[0].Error} {
			if math.Abs(e.W-c.wantW) > 1e-3 || math.Abs(e.Mean-c.wantMean) > 1e-3 || math.Abs(e.Var()-c.wantVar) > 1e-3 {
				t.Errorf("%s: %s %+v (var %.3f), want weight %v, mean %v, var %.3f", c.name, what, e, e.Var(), c.wantW, c.wantMean, c.wantVar)
			}
		}
	}
}

func TestPoolWithinOneHostUnchanged(t *testing.T) {
	e := learner.Estimate{W: 7, Mean: 0.3, S: 2.1}
	var p PoolWithin
	p.Add(e, 1)
	if got := p.Estimate(); math.Abs(got.W-e.W) > 1e-9 || math.Abs(got.Mean-e.Mean) > 1e-9 || math.Abs(got.S-e.S) > 1e-9 {
		t.Fatalf("one host pooled %+v, want %+v", got, e)
	}
	var q PoolWithin
	q.Add(learner.Estimate{W: 10, Mean: 1, S: 9}, 0.05) // weight 0.5 after the discount
	if got := q.Estimate(); got.S < 0 || got.W != 0.5 {
		t.Fatalf("a heavily discounted host pooled %+v, want weight 0.5 and no negative sum of squares", got)
	}
}
