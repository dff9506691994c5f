package natsbus

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/mlbpf/mlbpf/fleet"
	"github.com/mlbpf/mlbpf/internal/natstest"
	"github.com/mlbpf/mlbpf/internal/testutil"
	"github.com/mlbpf/mlbpf/learner"
)

// fakeLearner exports what a test gives it and records the priors.
type fakeLearner struct {
	mu     sync.Mutex
	export []fleet.Stats
	priors map[string][]fleet.Arm
}

func (f *fakeLearner) FleetExport(out []fleet.Stats) []fleet.Stats {
	f.mu.Lock()
	defer f.mu.Unlock()
	out = append(out, f.export...)
	f.export = nil
	return out
}

func (f *fakeLearner) FleetMerge(key string, prior []fleet.Arm) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.priors == nil {
		f.priors = map[string][]fleet.Arm{}
	}
	f.priors[key] = prior
}

func (f *fakeLearner) learn(key string, arms ...fleet.Arm) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.export = append(f.export, fleet.Stats{Key: key, Arms: arms})
}

func (f *fakeLearner) prior(key string) []fleet.Arm {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.priors[key]
}

func arm(name string, w, mean float64) fleet.Arm {
	return fleet.Arm{Name: name, Real: learner.Estimate{W: w, Mean: mean, S: w * 0.1}}
}

func startBus(t *testing.T, url, host string, log *slog.Logger) (*Bus, *fakeLearner) {
	t.Helper()
	b, err := New(Config{URLs: []string{url}, Host: host, Interval: 100 * time.Millisecond, Timeout: time.Second, Log: log})
	if err != nil {
		t.Fatal(err)
	}
	l := &fakeLearner{}
	b.Add("tcp/cc", l)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- b.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	return b, l
}

func waitFor(t *testing.T, what string, d time.Duration, ok func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !ok() {
		if time.Now().After(deadline) {
			t.Fatalf("waiting for %s: not within %v", what, d)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func TestShare(t *testing.T) {
	srv := natstest.Start(t)
	_, a := startBus(t, srv.URL, "host-a", nil)
	bb, b := startBus(t, srv.URL, "host-b", nil)
	a.learn("10.0.0.0/24", arm("cubic", 10, 0), arm("bbr", 10, 0.7))
	waitFor(t, "host-b's prior", 10*time.Second, func() bool { return b.prior("10.0.0.0/24") != nil })
	p := b.prior("10.0.0.0/24")
	var got *fleet.Arm
	for i := range p {
		if p[i].Name == "bbr" {
			got = &p[i]
		}
	}
	if got == nil || got.Real.W <= 9 || got.Real.W > 10 || got.Real.Mean != 0.7 {
		t.Fatalf("host-b's prior for bbr = %+v, want host-a's 10 transfers at 0.7, barely discounted", p)
	}
	if a.prior("10.0.0.0/24") != nil {
		t.Error("host-a took its own statistics as a prior")
	}
	if c := bb.Counters(); c.Received == 0 || c.Rejected != 0 {
		t.Errorf("host-b counters %+v, want received > 0, rejected 0", c)
	}
}

// TestHostilePublisher writes to the bucket what a hostile or broken
// publisher could: nothing of it reaches a learner.
func TestHostilePublisher(t *testing.T) {
	srv := natstest.Start(t)
	bb, b := startBus(t, srv.URL, "victim", nil)
	waitFor(t, "the bucket", 10*time.Second, func() bool { return bb.Counters().Up })
	nc, err := nats.Connect(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, _ := jetstream.New(nc)
	ctx := context.Background()
	kv, err := js.KeyValue(ctx, DefaultBucket)
	if err != nil {
		t.Fatal(err)
	}
	key := "10.0.0.0/24"
	k := bucketKey("tcp/cc", "evil", key)
	good := fmt.Sprintf(`{"v":1,"host":"evil","model":"tcp/cc","at":%d,"key":"%s","arms":[{"name":"reno","real":{"w":5,"mean":1,"s":1},"predicted":{"w":0,"mean":0,"s":0},"error":{"w":0,"mean":0,"s":0}}]}`, time.Now().UnixMilli(), key)
	bad := map[string]string{
		k:                                 `not json`,
		k + "x":                           good,                                                    // not a fleet key
		bucketKey("tcp/cc", "evil2", key): good,                                                    // host does not match the key
		bucketKey("tcp/cc", "evil", "x"):  strings.Replace(good, `"mean":1`, `"mean":1e300`, 1),    // out of bounds
		bucketKey("tcp/cc", "evil", "y"):  strings.Replace(good, `"v":1`, `"v":1,"extra":true`, 1), // unknown field
		bucketKey("tcp/cc", "evil", "z"):  strings.Replace(good, `"at":`, `"at":9`, 1),             // far future
	}
	for bk, v := range bad {
		if _, err := kv.PutString(ctx, bk, v); err != nil {
			t.Fatalf("putting %s: %v", bk, err)
		}
	}
	// Too large: the bucket itself refuses it.
	if _, err := kv.PutString(ctx, k, strings.Repeat("x", fleet.MaxMessageBytes+1)); err == nil {
		t.Error("the bucket took a value larger than fleet.MaxMessageBytes")
	}
	waitFor(t, "every hostile value refused", 10*time.Second, func() bool { return bb.Counters().Rejected >= uint64(len(bad)) })
	time.Sleep(300 * time.Millisecond)
	b.mu.Lock()
	n := len(b.priors)
	b.mu.Unlock()
	if n != 0 || bb.Table().Len() != 0 {
		t.Fatalf("hostile values reached the learner: %d priors, %d in the table", n, bb.Table().Len())
	}
	// The same message, valid, is taken: the refusals were for cause.
	if _, err := kv.PutString(ctx, k, good); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the valid message", 10*time.Second, func() bool { return b.prior(key) != nil })
}

// TestNATSDown stops and restarts a real nats-server under a running bus:
// the bus logs the failure once and the recovery once, and publishes what
// was learned meanwhile once the server is back.
func TestNATSDown(t *testing.T) {
	srv := natstest.Start(t)
	var logs testutil.SyncBuffer
	log := slog.New(slog.NewTextHandler(&logs, nil))
	ba, a := startBus(t, srv.URL, "host-a", log)
	_, b := startBus(t, srv.URL, "host-b", nil)
	a.learn("10.0.1.0/24", arm("bbr", 3, 0.5))
	waitFor(t, "the first exchange", 10*time.Second, func() bool { return b.prior("10.0.1.0/24") != nil })

	srv.Stop()
	for i := range 5 {
		a.learn(fmt.Sprintf("10.0.%d.0/24", 10+i), arm("bbr", 3, 0.5))
		time.Sleep(100 * time.Millisecond)
	}
	waitFor(t, "the bus to notice", 10*time.Second, func() bool { return !ba.Counters().Up })
	time.Sleep(time.Second) // several failed exchanges
	if c := ba.Counters(); c.Pending != 5 {
		t.Errorf("pending while NATS is down = %d, want the 5 keys learned meanwhile", c.Pending)
	}
	if err := srv.Restart(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "recovery", 20*time.Second, func() bool { c := ba.Counters(); return c.Up && c.Pending == 0 })
	for i := range 5 {
		key := fmt.Sprintf("10.0.%d.0/24", 10+i)
		waitFor(t, "host-b to get "+key, 20*time.Second, func() bool { return b.prior(key) != nil })
	}
	out := logs.String()
	if n := strings.Count(out, "NATS unreachable"); n != 1 {
		t.Errorf("logged the failure %d times, want once:\n%s", n, out)
	}
	if n := strings.Count(out, "NATS reachable again"); n != 1 {
		t.Errorf("logged the recovery %d times, want once:\n%s", n, out)
	}
}

// TestNATSNeverUp: a bus whose server never answers keeps its learner's
// statistics and logs once.
func TestNATSNeverUp(t *testing.T) {
	var logs testutil.SyncBuffer
	log := slog.New(slog.NewTextHandler(&logs, nil))
	b, l := startBus(t, "nats://127.0.0.1:1", "alone", log)
	l.learn("10.0.0.0/24", arm("bbr", 3, 0.5))
	waitFor(t, "the statistics kept", 5*time.Second, func() bool { return b.Counters().Pending == 1 })
	time.Sleep(500 * time.Millisecond)
	if n := strings.Count(logs.String(), "NATS unreachable"); n != 1 {
		t.Errorf("logged the failure %d times, want once:\n%s", n, logs.String())
	}
}
