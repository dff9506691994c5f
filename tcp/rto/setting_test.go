package rto

import (
	"errors"
	"testing"

	"github.com/mlbpf/mlbpf/model"
)

func TestParseSetting(t *testing.T) {
	for _, c := range []struct {
		in   string
		want Setting
		str  string
	}{
		{"default", Default, "default"},
		{"syn=20ms,rto_min=8ms", Setting{SynRtoMs: 20, RtoMinMs: 8}, "syn=20ms,rto_min=8ms"},
		{" iw=40 , delack_max=0.04s", Setting{DelackMaxMs: 40, Iw: 40}, "delack_max=40ms,iw=40"},
		{"syn=1s", Setting{SynRtoMs: 1000}, "syn=1000ms"},
		{"rto_min=50", Setting{RtoMinMs: 50}, "rto_min=50ms"},
	} {
		got, err := ParseSetting(c.in)
		if err != nil || got != c.want || got.String() != c.str {
			t.Errorf("ParseSetting(%q) = %+v (%s), %v; want %+v (%s)", c.in, got, got, err, c.want, c.str)
		}
		back, err := ParseSetting(got.String())
		if err != nil || back != got {
			t.Errorf("round trip of %s: %+v %v", got, back, err)
		}
	}
	for _, bad := range []string{"syn", "foo=1", "syn=-1ms", "syn=1.5ms", "iw=70000", "syn=20ms,", "rto_min=abc"} {
		if _, err := ParseSetting(bad); !errors.Is(err, model.ErrInvalidRecommendation) {
			t.Errorf("ParseSetting(%q): %v, want ErrInvalidRecommendation", bad, err)
		}
	}
}

func TestValidate(t *testing.T) {
	for _, c := range []struct {
		s  Setting
		hz int
		ok bool
	}{
		{Default, 250, true},
		{Setting{RtoMinMs: 8}, 250, true},
		{Setting{RtoMinMs: 5}, 250, true},  // rounded up to 2 jiffies, as the kernel does
		{Setting{RtoMinMs: 4}, 250, false}, // 1 jiffy
		{Setting{RtoMinMs: 2}, 250, false},
		{Setting{DelackMaxMs: 200}, 250, true},
		{Setting{DelackMaxMs: 201}, 250, false},
		{Setting{RtoMinMs: 2}, 1000, true},
		{Setting{SynRtoMs: 1, Iw: 100}, 250, true},
	} {
		err := c.s.Validate(c.hz)
		if (err == nil) != c.ok || err != nil && !errors.Is(err, ErrRejected) {
			t.Errorf("%s at HZ=%d: %v, want ok=%v", c.s, c.hz, err, c.ok)
		}
	}
	for _, g := range Grid {
		if err := g.Validate(250); err != nil {
			t.Errorf("grid setting %s: %v", g, err)
		}
	}
}

func TestParseRecommendArgs(t *testing.T) {
	p, s, err := ParseRecommendArgs([]string{"tcp/rto", "10.1.0.0/16", "syn=20ms,rto_min=8ms"}, 250)
	if err != nil || p.String() != "10.1.0.0/16" || s != (Setting{SynRtoMs: 20, RtoMinMs: 8}) {
		t.Fatalf("%v %v %v", p, s, err)
	}
	if p, _, err := ParseRecommendArgs([]string{"tcp/rto", "2001:db8::1", "default"}, 250); err != nil || p.Bits() != 128 {
		t.Fatalf("%v %v", p, err)
	}
	for _, bad := range [][]string{
		{"tcp/cc", "10.0.0.0/8", "syn=20ms"},
		{"tcp/rto", "10.0.0.1/8", "syn=20ms"},      // host bits
		{"tcp/rto", "10.0.0.0/8", "rto_min=2ms"},   // the kernel refuses
		{"tcp/rto", "10.0.0.0/8", "syn=20ms;iw=4"}, // one setting only
		{"tcp/rto", "10.0.0.0/8"},
	} {
		if _, _, err := ParseRecommendArgs(bad, 250); !errors.Is(err, model.ErrInvalidRecommendation) {
			t.Errorf("%q: %v, want ErrInvalidRecommendation", bad, err)
		}
	}
	_, ss, err := ParseRecommendation(model.Recommendation{Key: "10.0.0.0/8", Value: FormatSettings(Grid[1:])}, 250)
	if err != nil || len(ss) != len(Grid)-1 || ss[2] != Grid[3] {
		t.Fatalf("exploration value round trip: %v %v", ss, err)
	}
}
