package history

import (
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/mlbpf/mlbpf/model"
)

func period(t time.Time, mode string) *Period {
	var a Acc
	for i := range 100 {
		a.Add(model.ArmShadow, float64(i))
	}
	a.Add(model.ArmControl, -1)
	p := &Period{Time: t, Mode: mode, State: "RUNNING", Decision: Decision{From: mode, To: mode, Reason: "waiting"}}
	a.Take(p)
	return p
}

// TestAppendRead appends periods over several segments and reads them
// back in order, with the arms' summaries and samples.
func TestAppendRead(t *testing.T) {
	dir := t.TempDir()
	w, err := Open(dir, "synthetic/demo", Limits{SegmentPeriods: 3}, nil)
	if err != nil {
		t.Fatal(err)
	}
	t0 := time.Unix(1_700_000_000, 0)
	for i := range 7 {
		if err := w.Append(period(t0.Add(time.Duration(i)*time.Second), "LEARNING")); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.SaveKeys(&Keys{Time: t0, Keys: []Key{{Key: "5", Value: "42", Evidence: map[string]Arm{"shadow": {N: 3, Mean: 1}}}}}); err != nil {
		t.Fatal(err)
	}
	w.Close()
	if n := len(segments(dir)); n != 3 {
		t.Fatalf("%d segments for 7 periods of 3, want 3", n)
	}
	h, err := Read(dir, "")
	if err != nil {
		t.Fatal(err)
	}
	if h.Model != "synthetic/demo" || len(h.Periods) != 7 || len(h.Damaged) != 0 || h.Keys == nil || h.Keys.Keys[0].Value != "42" {
		t.Fatalf("read %q, %d periods, damaged %v, keys %+v", h.Model, len(h.Periods), h.Damaged, h.Keys)
	}
	for i, p := range h.Periods {
		if !p.Time.Equal(t0.Add(time.Duration(i) * time.Second)) {
			t.Fatalf("period %d at %v: out of order", i, p.Time)
		}
	}
	a := h.Periods[0].Arms
	if len(a) != 2 || a[0].Arm != "shadow" || a[0].N != 100 || a[0].Mean != 49.5 || a[0].Min != 0 || a[0].Max != 99 || len(a[0].Sample) != SampleSize {
		t.Fatalf("arms %+v", a)
	}
	if _, err := Read(dir, "tcp/cc"); !errors.Is(err, ErrNoHistory) {
		t.Fatalf("another model's history: %v, want ErrNoHistory", err)
	}
	if _, err := Read(filepath.Join(dir, "none"), ""); !errors.Is(err, ErrNoHistory) {
		t.Fatalf("no directory: %v, want ErrNoHistory", err)
	}
}

// TestDamage: a torn last line is ignored, a damaged line ends the
// segment's reading and is reported, a damaged header is set aside by
// the next writer, never fatal.
func TestDamage(t *testing.T) {
	dir := t.TempDir()
	w, err := Open(dir, "m", Limits{SegmentPeriods: 2}, nil)
	if err != nil {
		t.Fatal(err)
	}
	t0 := time.Unix(1_700_000_000, 0)
	for i := range 4 {
		if err := w.Append(period(t0.Add(time.Duration(i)*time.Second), "LEARNING")); err != nil {
			t.Fatal(err)
		}
	}
	w.Close()
	segs := segments(dir)
	// A crash mid-append tears the last line of the second segment.
	f, err := os.OpenFile(segs[1].path, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	f.WriteString(`{"t":"2023-`)
	f.Close()
	h, err := Read(dir, "m")
	if err != nil || len(h.Periods) != 4 || len(h.Damaged) != 0 {
		t.Fatalf("torn last line: %v, %d periods, damaged %v", err, len(h.Periods), h.Damaged)
	}
	// A damaged line in the middle of the first: the period before it
	// is kept, the segment reported.
	b, _ := os.ReadFile(segs[0].path)
	b = append(b[:len(b)-10], "garbage}\n"...)
	os.WriteFile(segs[0].path, b, 0o644)
	h, err = Read(dir, "m")
	if err != nil || len(h.Periods) != 3 || len(h.Damaged) != 1 {
		t.Fatalf("damaged line: %v, %d periods, damaged %v", err, len(h.Periods), h.Damaged)
	}
	// A segment that is not one is set aside by the next writer.
	os.WriteFile(segs[1].path, []byte("not json\n"), 0o644)
	w, err = Open(dir, "m", Limits{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	w.Close()
	if _, err := os.Stat(segs[1].path + ".bad"); err != nil {
		t.Fatalf("damaged segment not set aside: %v", err)
	}
}

// TestPrune: the oldest segments go when the total passes MaxBytes or
// they pass MaxAge.
func TestPrune(t *testing.T) {
	dir := t.TempDir()
	w, err := Open(dir, "m", Limits{SegmentPeriods: 1, MaxBytes: 1}, nil)
	if err != nil {
		t.Fatal(err)
	}
	t0 := time.Unix(1_700_000_000, 0)
	for i := range 5 {
		if err := w.Append(period(t0.Add(time.Duration(i)*time.Second), "LEARNING")); err != nil {
			t.Fatal(err)
		}
	}
	w.Close()
	h, err := Read(dir, "m")
	if err != nil || len(h.Periods) != 1 || !h.Periods[0].Time.Equal(t0.Add(4*time.Second)) {
		t.Fatalf("after pruning to 1 byte: %v, %+v; want the newest period only", err, h)
	}

	old := time.Now().Add(-8 * 24 * time.Hour)
	os.Chtimes(segments(dir)[0].path, old, old)
	w, _ = Open(dir, "m", Limits{}, nil)
	w.Close()
	if n := len(segments(dir)); n != 0 {
		t.Fatalf("%d segments older than MaxAge kept", n)
	}
}

// BenchmarkPeriod is what a period costs the loop: the outcomes added
// (1000 a period here, over three arms), the period taken and appended.
func BenchmarkPeriod(b *testing.B) {
	w, err := Open(b.TempDir(), "m", Limits{}, nil)
	if err != nil {
		b.Fatal(err)
	}
	defer w.Close()
	var a Acc
	p := &Period{Time: time.Now(), Mode: "COLLABORATION", State: "RUNNING",
		Decision: Decision{From: "COLLABORATION", To: "COLLABORATION", Reason: "model 0.91±0.02 vs control 0.77±0.03 over 480/470 samples, p=0.02 ≥ α=0.001: no significant improvement; next test at 960 per arm"}}
	b.ReportAllocs()
	for b.Loop() {
		for i := range 1000 {
			a.Add(model.Arm(3+i%3), float64(i%17)/17)
		}
		p.Arms = p.Arms[:0]
		a.Take(p)
		if err := w.Append(p); err != nil {
			b.Fatal(err)
		}
	}
}
