package fleet

import (
	"fmt"
	"testing"
	"time"

	"github.com/mlbpf/mlbpf/learner"
)

// benchMessage is a tcp/cc message: three algorithms on one prefix.
func benchMessage(host string, at time.Time) *Message {
	e := learner.Estimate{W: 42.5, Mean: 0.693147, S: 10.25}
	return &Message{V: Version, Host: host, Model: "tcp/cc", At: at.UnixMilli(), Stats: Stats{Key: "203.0.113.0/24", Arms: []Arm{
		{Name: "cubic", Real: e, Predicted: e, Error: e}, {Name: "bbr", Real: e, Predicted: e, Error: e}, {Name: "reno", Real: e, Predicted: e, Error: e}}}}
}

func BenchmarkEncode(b *testing.B) {
	m := benchMessage("web-0017", time.Now())
	var n int
	for b.Loop() {
		data, err := Encode(m)
		if err != nil {
			b.Fatal(err)
		}
		n = len(data)
	}
	b.ReportMetric(float64(n), "bytes/msg")
}

func BenchmarkDecode(b *testing.B) {
	now := time.Now()
	data, _ := Encode(benchMessage("web-0017", now))
	b.SetBytes(int64(len(data)))
	for b.Loop() {
		if _, err := Decode(data, now); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkPrior pools the statistics of hosts hosts for one key: the
// merge's cost per key.
func BenchmarkPrior(b *testing.B) {
	for _, hosts := range []int{1, 10, 100} {
		b.Run(fmt.Sprintf("hosts=%d", hosts), func(b *testing.B) {
			now := time.Now()
			tab := NewTable("self", 0)
			for h := range hosts {
				tab.Put(benchMessage(fmt.Sprintf("h%d", h), now))
			}
			for b.Loop() {
				if p := tab.Prior("tcp/cc", "203.0.113.0/24", now, time.Hour); len(p) != 3 {
					b.Fatal(p)
				}
			}
		})
	}
}
