package ringbench

import (
	"math"
	"testing"

	"github.com/mlbpf/mlbpf/internal/testutil"
)

// The interval for the median of 31 samples is the 10th to the 22nd
// (97.1 %), a textbook value; of 5 samples, the range (93.75 %).
func TestMedianInterval(t *testing.T) {
	for _, tc := range []struct {
		n, k int
		conf float64
	}{{31, 9, 0.97061}, {5, 0, 0.9375}, {6, 0, 0.96875}, {11, 1, 0.98828}, {100, 39, 0.9648}} {
		k, conf := medianInterval(tc.n, 0.95)
		if k != tc.k || math.Abs(conf-tc.conf) > 1e-4 {
			t.Errorf("n=%d: k=%d confidence %.5f, want %d and %.5f", tc.n, k, conf, tc.k, tc.conf)
		}
	}
	r := pairedRatio([]float64{2, 4, 6, 8, 10}, []float64{1, 2, 2, 4, 4})
	if r.Median != 2 || r.Lower != 2 || r.Upper != 3 {
		t.Errorf("pairedRatio: %+v, want median 2 in [2, 3]", r)
	}
}

func TestJudge(t *testing.T) {
	at := func(lo, hi float64) Ratio { return Ratio{Median: (lo + hi) / 2, Lower: lo, Upper: hi} }
	for _, tc := range []struct {
		l    Line
		want string
	}{
		{Line{VsLibbpf: at(1.01, 1.1), VsCilium: at(2, 3)}, "met"},
		{Line{VsLibbpf: at(0.97, 1.03), VsCilium: at(2, 3)}, "unclear:ours/libbpf~1.0"},
		{Line{VsLibbpf: at(0.9, 0.95), VsCilium: at(1.4, 1.6), AllocsPerRecord: 1}, "missed:ours/libbpf<1.0,allocs/record>0,ours/cilium~1.5"},
	} {
		if got := tc.l.judge(); got != tc.want {
			t.Errorf("judge(%+v) = %q, want %q", tc.l, got, tc.want)
		}
	}
}

func TestChecksumReadsEveryByte(t *testing.T) {
	for _, n := range []int{8, 19, 31, 77} {
		rec := make([]byte, n)
		base := checksum(rec)
		for i := range rec {
			rec[i]++
			if checksum(rec) == base {
				t.Errorf("byte %d of %d does not change the checksum", i, len(rec))
			}
			if n < 32 && checksumShort(rec) != checksum(rec) {
				t.Errorf("%d bytes: checksumShort %#x, checksum %#x", n, checksumShort(rec), checksum(rec))
			}
			rec[i]--
		}
	}
}

// TestChecksumInlined checks that the Go consumers' short-record checksum
// is inlined, as the C compiler inlines the C consumer's.
func TestChecksumInlined(t *testing.T) {
	testutil.CompilerSays(t, `inlining call to checksumShort`, `bench\.go:\d+:\d+: inlining call to ringbuf\.\(\*Batch\)\.Next`)
}
