package testutil

import (
	"fmt"
	"runtime"
	"testing"

	"github.com/cilium/ebpf"
)

// recorder is a testing.TB that records a Fatal or a Skip and ends the
// goroutine there, as testing does.
type recorder struct {
	testing.TB
	fatal, skip string
}

func (r *recorder) Helper() {}
func (r *recorder) Fatal(args ...any) {
	r.fatal = fmt.Sprint(args...)
	runtime.Goexit()
}
func (r *recorder) Fatalf(format string, args ...any) { r.Fatal(fmt.Sprintf(format, args...)) }
func (r *recorder) Skip(args ...any) {
	r.skip = fmt.Sprint(args...)
	runtime.Goexit()
}
func (r *recorder) Skipf(format string, args ...any) { r.Skip(fmt.Sprintf(format, args...)) }

func record(fn func(tb testing.TB)) *recorder {
	r := new(recorder)
	done := make(chan struct{})
	go func() {
		defer close(done)
		fn(r)
	}()
	<-done
	return r
}

// A kernel without a feature skips a test, naming the feature, except on
// CI (MLBPF_CI=1), where it fails it.
func TestSkipIfNotSupported(t *testing.T) {
	notSupported := fmt.Errorf("creating a map: %w", ebpf.ErrNotSupported)
	for _, ci := range []string{"", "1"} {
		t.Setenv("MLBPF_CI", ci)
		r := record(func(tb testing.TB) { SkipIfNotSupported(tb, "ring buffers", notSupported) })
		got, other := r.skip, r.fatal
		if ci != "" {
			got, other = r.fatal, r.skip
		}
		if got != "kernel lacks ring buffers: creating a map: not supported" || other != "" {
			t.Errorf("MLBPF_CI=%q: skipped %q, failed %q", ci, r.skip, r.fatal)
		}
	}
	t.Setenv("MLBPF_CI", "")
	if r := record(func(tb testing.TB) { SkipIfNotSupported(tb, "x", fmt.Errorf("boom")) }); r.fatal != "x: boom" {
		t.Errorf("another error: skipped %q, failed %q", r.skip, r.fatal)
	}
	if r := record(func(tb testing.TB) { SkipIfNotSupported(tb, "x", nil) }); r.fatal != "" || r.skip != "" {
		t.Errorf("no error: skipped %q, failed %q", r.skip, r.fatal)
	}
}
