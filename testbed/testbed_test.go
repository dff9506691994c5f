package testbed

import (
	"context"
	"io"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/mlbpf/mlbpf/internal/testutil"
)

// transfer sends n bytes from the client to a sink in the server
// namespace and returns what the client saw.
func transfer(t *testing.T, tb *Testbed, ipv6 bool, n int64) Transfer {
	t.Helper()
	sink, err := tb.NewSink(ipv6)
	if err != nil {
		t.Fatal(err)
	}
	defer sink.Close()
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	tr, err := tb.Send(ctx, sink.Addr(), Load{Bytes: n}, "")
	if err != nil {
		t.Fatal(err)
	}
	return tr
}

func TestTestbed(t *testing.T) {
	testutil.RequireBPF(t)
	ctx := t.Context()
	tb, err := New(ctx, Config{LossPercent: 5, Cgroup: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = tb.Close() })

	for _, ns := range []*Namespace{tb.Client, tb.Server} {
		if v, err := ns.ReadSysctl("net.ipv4.tcp_congestion_control"); err != nil || v != "cubic" {
			t.Fatalf("%s: tcp_congestion_control %q, %v; want cubic", ns.Name(), v, err)
		}
	}
	for _, v6 := range []bool{false, true} {
		if tr := transfer(t, tb, v6, 1<<20); tr.Bytes != 1<<20 || tr.CC != "cubic" || tr.Goodput() <= 0 {
			t.Fatalf("ipv6=%v: transfer %+v, want 1 MiB on cubic", v6, tr)
		}
	}
	// The loss program sees GSO super-packets, about 32 for a MiB, so
	// two transfers give ~63 packets and no drop at 5% with
	// probability 0.95^63 ≈ 4%. Send until 600 packets have passed
	// (no drop with probability 0.95^600 ≈ 4e-14).
	const enough = 600
	passed, dropped, err := tb.LossCounters()
	for i := 0; err == nil && passed < enough && i < 64; i++ {
		transfer(t, tb, i%2 == 1, 1<<20)
		passed, dropped, err = tb.LossCounters()
	}
	if err != nil {
		t.Fatal(err)
	}
	if dropped == 0 || passed < enough {
		t.Fatalf("loss counters passed %d dropped %d: want ≥ %d passed and some dropped at 5%% loss", passed, dropped, enough)
	}
	if r := float64(dropped) / float64(passed+dropped); r < 0.01 || r > 0.15 {
		t.Fatalf("loss counters passed %d dropped %d: drop rate %.3f, want about 0.05", passed, dropped, r)
	}
	if err := tb.SetLoss(0); err != nil {
		t.Fatal(err)
	}
	_, before, _ := tb.LossCounters()
	transfer(t, tb, false, 1<<20)
	if _, after, _ := tb.LossCounters(); after != before {
		t.Fatalf("%d drops at 0%% loss", after-before)
	}

	cg := tb.Cgroup()
	if cg == "" {
		t.Fatal("no cgroup with Config.Cgroup")
	}
	names := []string{tb.Client.Path(), tb.Server.Path(), cg}
	// An application's own choice.
	sink, err := tb.NewSink(false)
	if err != nil {
		t.Fatal(err)
	}
	tr, err := tb.Send(ctx, sink.Addr(), Load{Duration: 50 * time.Millisecond}, "reno")
	sink.Close()
	if err != nil || tr.CC != "reno" || tr.Bytes == 0 {
		t.Fatalf("Send with reno: %+v %v", tr, err)
	}

	// Outside: the process is in the sibling cgroup during fn only.
	var during string
	if err := tb.Outside(func() error {
		var err error
		during, err = ownCgroup(filepath.Dir(cg))
		return err
	}); err != nil {
		t.Fatal(err)
	}
	if during != cg+"-outside" {
		t.Fatalf("in Outside the process is in %s, want %s-outside", during, cg)
	}
	if now, err := ownCgroup(filepath.Dir(cg)); err != nil || now != cg {
		t.Fatalf("after Outside the process is in %s (%v), want %s", now, err, cg)
	}
	names = append(names, during)

	if err := tb.Close(); err != nil {
		t.Fatal(err)
	}
	for _, p := range names {
		if _, err := os.Stat(p); !os.IsNotExist(err) {
			t.Errorf("%s left behind after Close (stat: %v)", p, err)
		}
	}
	if err := tb.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
}

func TestTestbedClosedByContext(t *testing.T) {
	testutil.RequireBPF(t)
	ctx, cancel := context.WithCancel(t.Context())
	tb, err := New(ctx, Config{RateMbit: 100})
	if err != nil {
		t.Fatal(err)
	}
	path := tb.Client.Path()
	cancel()
	deadline := time.Now().Add(5 * time.Second)
	for {
		if _, err := os.Stat(path); os.IsNotExist(err) {
			break
		}
		if time.Now().After(deadline) {
			_ = tb.Close()
			t.Fatalf("%s still there 5s after the context was cancelled", path)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestSendLoadLateStart: a duration load whose window has passed before
// the first write (the sender was descheduled, as on a slow VM) still
// sends one chunk, and a byte load sends exactly its bytes.
func TestSendLoadLateStart(t *testing.T) {
	for _, tc := range []struct {
		load Load
		want int64
	}{
		{Load{Duration: time.Nanosecond}, int64(len(chunk))},
		{Load{Bytes: 1000}, 1000},
		{Load{Bytes: 300 << 10, Duration: time.Nanosecond}, int64(len(chunk))},
	} {
		a, b := net.Pipe()
		got := make(chan int64, 1)
		go func() {
			n, _ := io.Copy(io.Discard, b)
			got <- n
		}()
		sent, err := sendLoad(a, tc.load)
		a.Close()
		if err != nil {
			t.Fatal(err)
		}
		if n := <-got; sent != tc.want || n != tc.want {
			t.Errorf("%+v: sent %d, received %d, want %d", tc.load, sent, n, tc.want)
		}
	}
}
