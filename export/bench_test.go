package export

import (
	"io"
	"reflect"
	"testing"

	"github.com/mlbpf/mlbpf/model"
)

// BenchmarkWrite measures rows/s per format, writing 16 Ki-record
// datasets to io.Discard through one Writer.
func BenchmarkWrite(b *testing.B) {
	const n = 16 << 10
	conns := make([]connRecord, n)
	for i := range conns {
		conns[i] = connRecords()[i%4]
	}
	for _, tc := range []struct {
		name string
		typ  reflect.Type
		d    *model.Dataset
	}{
		{"synthetic", syntheticType, datasetOf(b, 0, syntheticRecords(n))},
		{"conn", connType, datasetOf(b, 0, conns)},
	} {
		for _, f := range formats {
			b.Run(tc.name+"/"+f.String(), func(b *testing.B) {
				w, err := NewWriter(io.Discard, f, tc.typ)
				if err != nil {
					b.Fatal(err)
				}
				b.SetBytes(int64(len(tc.d.Data)))
				b.ReportAllocs()
				loops := 0
				for b.Loop() {
					if err := w.WriteDataset(tc.d); err != nil {
						b.Fatal(err)
					}
					loops++
				}
				b.ReportMetric(float64(loops*n)/b.Elapsed().Seconds(), "rows/s")
				if err := w.Close(); err != nil {
					b.Fatal(err)
				}
			})
		}
	}
}
