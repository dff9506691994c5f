package ringbench

import (
	"os"
	"strconv"
	"testing"
	"time"

	"github.com/mlbpf/mlbpf/internal/testutil"
	"github.com/mlbpf/mlbpf/loader"
	"github.com/mlbpf/mlbpf/ringbuf"
	"github.com/mlbpf/mlbpf/tcp"
)

// BenchmarkPipeline runs the period loop (pipeline.Loop.Period) over full
// 4 MiB rings of tcp/cc-sized records, as RunPipeline does: ns/op is per
// record. For profiles: go test -bench Pipeline -cpuprofile.
func BenchmarkPipeline(b *testing.B) {
	testutil.RequireBPF(b)
	const ringBytes = 4 << 20
	size := tcp.RecordSize
	p, err := NewProducer(Config{RingBytes: ringBytes})
	if err != nil {
		b.Fatal(err)
	}
	defer p.Close()
	l, learner, closeLoop, err := newBenchLoop(p)
	if err != nil {
		b.Fatal(err)
	}
	defer closeLoop()
	n := ringRecords(ringBytes, size)
	benchRings(b, n, func() error {
		_, err := p.Emit(EmitArgs{Count: n, Size: uint64(size), Kind: uint64(loader.RecordTCPConn)})
		return err
	}, func() error {
		first := learner.records
		for learner.records-first < n {
			if err := l.Period(); err != nil {
				return err
			}
		}
		return nil
	})
}

// BenchmarkDrain is the raw drains of RunPipeline and Run, by record size
// and way of reading: ns/op is per record.
func BenchmarkDrain(b *testing.B) {
	testutil.RequireBPF(b)
	const ringBytes = 4 << 20
	for _, size := range []int{8, 64, 128} {
		for _, api := range []string{Ours, OursChecksum} {
			b.Run(strconv.Itoa(size)+"/"+api, func(b *testing.B) {
				p, err := NewProducer(Config{RingBytes: ringBytes, SampleSize: uint32(size)})
				if err != nil {
					b.Fatal(err)
				}
				defer p.Close()
				if err := p.Attach(); err != nil {
					b.Fatal(err)
				}
				rd, err := ringbuf.NewReader(p.Events())
				if err != nil {
					b.Fatal(err)
				}
				defer rd.Close()
				n := ringRecords(ringBytes, size)
				benchRings(b, n, func() error {
					return p.Produce(int(n))
				}, func() error {
					_, err := drainOurs(rd, n, api)
					return err
				})
			})
		}
	}
}

// benchRings runs drain on rings filled by fill until b.N records are
// read, timing only drain: drain-ns/rec is per record (best-ns/rec in the
// fastest ring), ns/op also counts the benchmark's own switches between
// the two.
// The producer and the consumer run on CPUs 1 and 0, as in Run.
func benchRings(b *testing.B, n uint64, fill, drain func() error) {
	prod, err := newWorker(prodCPU)
	if err != nil {
		b.Fatal(err)
	}
	defer prod.stop()
	cons, err := newWorker(0)
	if err != nil {
		b.Fatal(err)
	}
	defer cons.stop()
	b.ReportAllocs()
	b.ResetTimer()
	var inner, best time.Duration
	defer func() {
		b.ReportMetric(float64(inner.Nanoseconds())/float64(b.N), "drain-ns/rec")
		b.ReportMetric(float64(best.Nanoseconds())/float64(n), "best-ns/rec")
	}()
	for done := 0; done < b.N; done += int(n) {
		b.StopTimer()
		prod.do(func() { err = fill() })
		if err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
		cons.do(func() {
			start := time.Now()
			err = drain()
			d := time.Since(start)
			inner += d
			if best == 0 || d < best {
				best = d
			}
		})
		if err != nil {
			b.Fatal(err)
		}
	}
}

var prodCPU = func() int { n, _ := strconv.Atoi(os.Getenv("PRODCPU")); return n }()

// BenchmarkEmptyPeriod is a period of the loop with nothing in the ring:
// its fixed cost, shared by a period's records.
func BenchmarkEmptyPeriod(b *testing.B) {
	testutil.RequireBPF(b)
	p, err := NewProducer(Config{RingBytes: 4 << 20})
	if err != nil {
		b.Fatal(err)
	}
	defer p.Close()
	l, _, closeLoop, err := newBenchLoop(p)
	if err != nil {
		b.Fatal(err)
	}
	defer closeLoop()
	b.ReportAllocs()
	for b.Loop() {
		if err := l.Period(); err != nil {
			b.Fatal(err)
		}
	}
}
