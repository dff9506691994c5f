package fleet

import (
	"math"
	"testing"
	"time"
)

// FuzzDecode: whatever a publisher sends, Decode either refuses it or
// returns a message whose every number is finite and within bounds, and
// which encodes again.
func FuzzDecode(f *testing.F) {
	now := time.UnixMilli(1_800_000_000_000)
	good, _ := Encode(msg("a", now, 10, 0.5))
	f.Add(good)
	f.Add([]byte(`{"v":1}`))
	f.Add([]byte(`{"v":1,"host":"a","model":"tcp/cc","at":1,"key":"k","arms":[{"name":"x","real":{"w":1e6,"mean":-1e3,"s":1e12}}]}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := Decode(b, now)
		if err != nil {
			return
		}
		for _, a := range m.Arms {
			for _, x := range []float64{a.Real.W, a.Real.Mean, a.Real.S, a.Predicted.W, a.Error.S} {
				if math.IsNaN(x) || math.IsInf(x, 0) {
					t.Fatalf("decoded a non-finite number: %+v", m)
				}
			}
			if a.Real.W > MaxWeight || a.Real.W < 0 {
				t.Fatalf("decoded a weight out of bounds: %+v", m)
			}
		}
		if _, err := Encode(m); err != nil {
			t.Fatalf("a decoded message does not encode: %v", err)
		}
		tab := NewTable("self", 4)
		tab.Put(m)
		for _, a := range tab.Prior(m.Model, m.Key, now, time.Hour) {
			if math.IsNaN(a.Real.Mean) || math.IsInf(a.Real.Mean, 0) || a.Real.S < 0 {
				t.Fatalf("prior not finite: %+v", a)
			}
		}
	})
}
