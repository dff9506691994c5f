package synthetic

import (
	"errors"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/cilium/ebpf"

	"github.com/mlbpf/mlbpf/internal/testutil"
	"github.com/mlbpf/mlbpf/loader"
	"github.com/mlbpf/mlbpf/model"
)

// FuzzParseRecommendation: no key or value panics the validation, a
// refusal wraps model.ErrInvalidRecommendation, and what it accepts is in
// range and normalizes to itself.
func FuzzParseRecommendation(f *testing.F) {
	f.Add("5", "42", uint32(0))
	f.Add(" 007 ", "42", uint32(1000))
	f.Add("4294967295", "1001", uint32(1000))
	f.Add("4294967296", "1", uint32(0))
	f.Add("-1", "+1", uint32(0))
	f.Add("0x10", "1e3", uint32(0))
	f.Add("5\x00", "٣", uint32(7))
	f.Fuzz(func(t *testing.T, key, value string, maxValue uint32) {
		k, v, err := ParseRecommendation(key, value, maxValue)
		if err != nil {
			if !errors.Is(err, model.ErrInvalidRecommendation) {
				t.Fatalf("refusal does not wrap ErrInvalidRecommendation: %v", err)
			}
			return
		}
		limit := maxValue
		if limit == 0 {
			limit = 1 << 20
		}
		if v > limit {
			t.Fatalf("accepted %d above the maximum %d", v, limit)
		}
		if k64, err := strconv.ParseUint(strings.TrimSpace(key), 10, 32); err != nil || uint32(k64) != k {
			t.Fatalf("key %q accepted as %d", key, k)
		}
		k2, v2, err := ParseRecommendation(strconv.FormatUint(uint64(k), 10), strconv.FormatUint(uint64(v), 10), maxValue)
		if err != nil || k2 != k || v2 != v {
			t.Fatalf("normalized %d %d parses as %d %d, %v", k, v, k2, v2, err)
		}
	})
}

// fuzzModel opens a model RUNNING in RECOMMENDATION for an hour, its
// holdout set to 0 in the kernel, so that every decision on a key with a
// valid recommendation applies it.
func fuzzModel(f *testing.F, maxValue uint32) (*Objects, *model.Model) {
	testutil.RequireBPF(f)
	s, err := Open(Config{PinRoot: testutil.PinRoot(f), Model: "fuzz", MaxValue: maxValue})
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { s.Close() })
	m, err := model.Create(Name, "fuzz", s, s.Control())
	if err != nil {
		f.Fatal(err)
	}
	if err := m.Init(model.Options{Lease: time.Hour, InitialMode: model.ModeRecommendation, MaxMode: model.ModeRecommendation}); err != nil {
		f.Fatal(err)
	}
	if err := m.Start(model.RunConfig{}); err != nil {
		f.Fatal(err)
	}
	if err := m.RenewLease(loader.MonotonicNs()); err != nil {
		f.Fatal(err)
	}
	raw, err := s.Control().Raw()
	if err != nil {
		f.Fatal(err)
	}
	raw.HoldoutPermille = 0 // below what Options allow: by hand
	if err := s.objs.Control.Update(uint32(0), &raw, ebpf.UpdateAny); err != nil {
		f.Fatal(err)
	}
	return s, m
}

// FuzzPreprocessRecommendation runs arbitrary recommendations through a
// real model in RECOMMENDATION (no holdout) as the daemon and its agents
// do: preprocess (validate, normalize), apply, then let the kernel's
// applier decide. A refused recommendation writes nothing; an accepted
// one is exactly what the kernel applies, and within the applier's
// limit.
func FuzzPreprocessRecommendation(f *testing.F) {
	const maxValue = 1000
	s, m := fuzzModel(f, maxValue)
	entries := func(t *testing.T) int {
		var k uint32
		var v synthSynthRecommendation
		n := 0
		it := s.RecommendationMap().Iterate()
		for it.Next(&k, &v) {
			n++
		}
		if err := it.Err(); err != nil {
			t.Fatal(err)
		}
		return n
	}

	f.Add("5", "42")
	f.Add(" 9 ", "1000")
	f.Add("9", "1001")
	f.Add("", "")
	f.Add("1", "-0")
	f.Add("18446744073709551615", "1")
	f.Fuzz(func(t *testing.T, key, value string) {
		rec, err := m.PreprocessRecommendation(model.Recommendation{Key: key, Value: value})
		if err != nil {
			if !errors.Is(err, model.ErrInvalidRecommendation) {
				t.Fatalf("refusal does not wrap ErrInvalidRecommendation: %v", err)
			}
			if n := entries(t); n != 0 {
				t.Fatalf("a refused recommendation left %d entries in the map", n)
			}
			return
		}
		k, v, err := ParseRecommendation(rec.Key, rec.Value, maxValue)
		if err != nil || rec.Key != strconv.FormatUint(uint64(k), 10) || rec.Value != strconv.FormatUint(uint64(v), 10) {
			t.Fatalf("preprocessed %+v does not parse back normalized: %v", rec, err)
		}
		if err := m.ApplyRecommendation(rec); err != nil {
			t.Fatalf("applying the preprocessed %+v: %v", rec, err)
		}
		defer func() {
			if err := s.Forget(k); err != nil {
				t.Fatal(err)
			}
		}()
		var stored synthSynthRecommendation
		if err := s.RecommendationMap().Lookup(k, &stored); err != nil || stored.Value != v {
			t.Fatalf("map holds %+v for key %d (%v), want %d", stored, k, err, v)
		}
		before, err := s.ArmCounts()
		if err != nil {
			t.Fatal(err)
		}
		got, err := s.Apply(k)
		if err != nil {
			t.Fatal(err)
		}
		after, err := s.ArmCounts()
		if err != nil {
			t.Fatal(err)
		}
		if got != v || after[model.ArmModel] != before[model.ArmModel]+1 {
			t.Fatalf("the kernel answered key %d with %d (arms %v -> %v), want the recommendation %d applied", k, got, before, after, v)
		}
	})
}

// The applier's own limit stands even when the map is written by hand,
// bypassing the validation: covered by TestTamperedStateFallsBack. This
// checks it over arbitrary values.
func FuzzApplierRejectsOutOfRange(f *testing.F) {
	const maxValue = 1000
	s, _ := fuzzModel(f, maxValue)
	f.Add(uint32(3), uint32(1000), uint32(0))
	f.Add(uint32(3), uint32(1001), uint32(7))
	f.Add(uint32(0), uint32(0xffffffff), uint32(0xffffffff))
	f.Fuzz(func(t *testing.T, key, value, generation uint32) {
		raw := synthSynthRecommendation{Value: value, Generation: generation}
		if err := s.RecommendationMap().Update(key, &raw, ebpf.UpdateAny); err != nil {
			t.Fatal(err)
		}
		defer s.Forget(key)
		got, err := s.Apply(key)
		if err != nil {
			t.Fatal(err)
		}
		switch {
		case value <= maxValue && got != value:
			t.Fatalf("key %d: in-range %d written by hand answered %d", key, value, got)
		case value > maxValue && got != key%DefaultModulus:
			t.Fatalf("key %d: out-of-range %d written by hand answered %d, want the default %d", key, value, got, key%DefaultModulus)
		}
	})
}
