package daemon

import (
	"context"
	"fmt"
	"log/slog"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/mlbpf/mlbpf/config"
	"github.com/mlbpf/mlbpf/fleet"
	"github.com/mlbpf/mlbpf/fleet/natsbus"
	"github.com/mlbpf/mlbpf/internal/natstest"
	"github.com/mlbpf/mlbpf/internal/testutil"
	"github.com/mlbpf/mlbpf/learner"
	"github.com/mlbpf/mlbpf/model"
	"github.com/mlbpf/mlbpf/testbed"
)

// TestFleet runs tcp/cc through the daemon with a fleet on a real
// nats-server: the host's transfers are published, another host's
// statistics are merged, and with the server stopped the daemon keeps
// working alone, logs it once, and publishes what it learned meanwhile
// once the server is back (logged once).
func TestFleet(t *testing.T) {
	srv := natstest.Start(t)
	tb, sink := tcpTestbed(t)
	c := daemonConfig(t, fmt.Sprintf(`
  - name: tcp/cc
    lease: 5s
    tcp:
      cgroup: %s
      default: cubic
`, tb.Cgroup()))
	c.Fleet = config.Fleet{URLs: []string{srv.URL}, Host: "host-a", Interval: 200 * time.Millisecond}
	var logs testutil.SyncBuffer
	d, err := New(Options{Config: c, Log: slog.New(slog.NewTextHandler(&logs, nil))})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- d.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	})
	select {
	case <-d.Ready():
	case err := <-done:
		t.Fatalf("daemon: %v", err)
	}
	s, _ := d.find("tcp/cc")
	waitFor(t, "RUNNING", func() bool { return s.m.State() == model.StateRunning })
	bus := d.Fleet()
	if bus == nil {
		t.Fatal("no fleet bus with fleet.urls set")
	}
	waitFor(t, "the fleet's bucket", func() bool { return bus.Counters().Up })

	nc, err := nats.Connect(srv.URL, nats.MaxReconnects(-1))
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, _ := jetstream.New(nc)
	kv, err := js.KeyValue(ctx, natsbus.DefaultBucket)
	if err != nil {
		t.Fatal(err)
	}
	prefix := netip.PrefixFrom(testbed.ServerAddr, 24).Masked().String()

	// Another host's statistics reach the learner.
	other, err := fleet.Encode(&fleet.Message{V: fleet.Version, Host: "host-x", Model: "tcp/cc", At: time.Now().UnixMilli(),
		Stats: fleet.Stats{Key: prefix, Arms: []fleet.Arm{{Name: "bbr", Real: learner.Estimate{W: 20, Mean: 1, S: 5}}}}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := kv.Put(ctx, natsbus.Key("tcp/cc", "host-x", prefix), other); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "host-x's statistics merged", func() bool { c := bus.Counters(); return c.Received > 0 && c.Merged > 0 })

	send := func(n int) {
		for range n {
			sctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
			_, err := tb.Send(sctx, sink.Addr(), testbed.Load{Bytes: 256 << 10}, "")
			cancel()
			if err != nil {
				t.Fatal(err)
			}
		}
	}
	// published returns the cubic weight host-a published for prefix.
	published := func() float64 {
		e, err := kv.Get(ctx, natsbus.Key("tcp/cc", "host-a", prefix))
		if err != nil {
			return 0
		}
		m, err := fleet.Decode(e.Value(), time.Now())
		if err != nil {
			t.Fatalf("host-a published a message it would refuse: %v", err)
		}
		for _, a := range m.Arms {
			if a.Name == "cubic" {
				return a.Real.W
			}
		}
		return 0
	}
	send(2)
	waitFor(t, "host-a's transfers published", func() bool { return published() >= 1.9 })

	srv.Stop()
	send(3) // learned alone
	waitFor(t, "the bus to notice NATS is down", func() bool { return !bus.Counters().Up })
	waitFor(t, "the transfers kept for the fleet", func() bool { return bus.Counters().Pending > 0 })
	if st := s.m.State(); st != model.StateRunning {
		t.Fatalf("with NATS down the model is %v, want RUNNING", st)
	}
	if err := srv.Restart(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "NATS back", func() bool { c := bus.Counters(); return c.Up && c.Pending == 0 })
	waitFor(t, "the transfers learned alone published", func() bool { return published() >= 4.8 })

	out := logs.String()
	if n := strings.Count(out, "NATS unreachable"); n != 1 {
		t.Errorf("logged the failure %d times, want once:\n%s", n, out)
	}
	if n := strings.Count(out, "NATS reachable again"); n != 1 {
		t.Errorf("logged the recovery %d times, want once:\n%s", n, out)
	}
}
