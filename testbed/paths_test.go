package testbed

import (
	"context"
	"net/netip"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/mlbpf/mlbpf/internal/testutil"
)

func TestPaths(t *testing.T) {
	testutil.RequireBPF(t)
	p, err := NewPaths(t.Context(), PathsConfig{LossPercent: 5, Cgroup: true, Destinations: 2})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = p.Close() })
	if p.Cgroup() == "" {
		t.Fatal("no cgroup with PathsConfig.Cgroup")
	}
	if v, err := p.Router.ReadSysctl("net.ipv4.ip_forward"); err != nil || v != "1" {
		t.Fatalf("router ip_forward %q, %v", v, err)
	}
	// A benchmark's flows to one destination, hundreds a second, each
	// leave the client a TIME_WAIT for 60 s that it cannot reuse without
	// timestamps: its ephemeral ports must outnumber them.
	if v, err := p.Client.ReadSysctl("net.ipv4.ip_local_port_range"); err != nil {
		t.Fatal(err)
	} else if f := strings.Fields(v); len(f) != 2 || atoi(t, f[1])-atoi(t, f[0])+1 < 60000 {
		t.Fatalf("client ip_local_port_range %q: want at least 60000 ports", v)
	}
	rtt, err := p.WaitBloated(t.Context(), 100*time.Millisecond, 20*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	took := map[Path]time.Duration{}
	for _, path := range []Path{PathLossy, PathBloat} {
		for dest := range 2 {
			for _, v6 := range []bool{false, true} {
				sink, err := p.NewSinkAt(path, dest, v6)
				if err != nil {
					t.Fatal(err)
				}
				ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
				tr, err := p.Send(ctx, sink.Addr(), Load{Bytes: 64 << 10})
				cancel()
				sink.Close()
				if err != nil || tr.Bytes != 64<<10 {
					t.Fatalf("%s destination %d ipv6=%v: %+v %v", path, dest, v6, tr, err)
				}
				took[path] = max(took[path], tr.Duration)
			}
		}
	}
	// A 64 KB transfer is a handful of GSO packets: send more until one
	// is lost (at 5 % each way, 20 packets without a loss have p=0.36).
	dropped := func() uint64 {
		var per []uint64
		if err := p.lossy.Counters.Lookup(uint32(lossyLossyCounterLOSSY_DROPPED), &per); err != nil {
			t.Fatal(err)
		}
		var n uint64
		for _, v := range per {
			n += v
		}
		return n
	}
	sink, err := p.NewSink(PathLossy, false)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; dropped() == 0 && i < 20; i++ {
		ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
		_, err := p.Send(ctx, sink.Addr(), Load{Bytes: 1 << 20})
		cancel()
		if err != nil {
			t.Fatal(err)
		}
	}
	sink.Close()
	if dropped() == 0 {
		t.Fatal("no drops on the lossy path at 5% loss")
	}
	// The background flow keeps the router's queue full: a handshake and
	// 64 KB take several of its round trips of tens of milliseconds.
	if took[PathBloat] < 20*time.Millisecond {
		t.Fatalf("64 KB over the bloat path took %v: its queue is not full", took[PathBloat])
	}
	t.Logf("64 KB: lossy %v, bloat %v; %d drops; background RTT %v", took[PathLossy], took[PathBloat], dropped(), rtt)
}

// TestPathDest: each destination of a path is in its own prefixes, and
// destination 0 is the path's own addresses.
func TestPathDest(t *testing.T) {
	for _, path := range []Path{PathLossy, PathBloat} {
		if path.Dest(0) != path.Addrs() {
			t.Fatalf("%s: Dest(0) %+v, want Addrs %+v", path, path.Dest(0), path.Addrs())
		}
		seen := map[netip.Prefix]bool{LossyAddrs.Prefix: true, BloatAddrs.Prefix: true, bloatClientNet: true,
			LossyAddrs.Prefix6: true, BloatAddrs.Prefix6: true, bloatClientNet6: true}
		for i := 1; i < MaxDestinations; i++ {
			d := path.Dest(i)
			for _, c := range []struct {
				pfx  netip.Prefix
				addr netip.Addr
			}{{d.Prefix, d.Server}, {d.Prefix6, d.Server6}} {
				if seen[c.pfx] || !c.pfx.Contains(c.addr) || c.pfx != c.pfx.Masked() {
					t.Fatalf("%s destination %d: prefix %s (server %s) reused, not holding its server or not masked", path, i, c.pfx, c.addr)
				}
				seen[c.pfx] = true
			}
		}
	}
}

// TestPathsBackgroundWindow: with BackgroundWindowBytes the background
// flow keeps a standing queue of about that much, moving along its
// saw-tooth, and the queue drops nothing (uncapped, the flow would fill
// the 1 MB queue: 400 ms, and drop at its limit).
func TestPathsBackgroundWindow(t *testing.T) {
	testutil.RequireBPF(t)
	const window = 250000 // 100 ms at 20 Mbit/s
	p, err := NewPaths(t.Context(), PathsConfig{LossPercent: 5, BackgroundWindowBytes: window,
		BackgroundWindowPeriod: 2 * time.Second, BloatLimitBytes: 3000000})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = p.Close() })
	if _, err := p.WaitBloated(t.Context(), 20*time.Millisecond, 20*time.Second); err != nil {
		t.Fatal(err)
	}
	lo, hi := time.Hour, time.Duration(0)
	for range 40 { // two periods
		time.Sleep(100 * time.Millisecond)
		rtt, err := p.BackgroundRTT()
		if err != nil {
			t.Fatal(err)
		}
		lo, hi = min(lo, rtt), max(hi, rtt)
	}
	t.Logf("background RTT %v to %v", lo, hi)
	if hi > 200*time.Millisecond {
		t.Errorf("background RTT up to %v with a window of %d bytes (100 ms): not capped", hi, window)
	}
	if lo > hi*4/5 {
		t.Errorf("background RTT %v to %v: the saw-tooth does not move it", lo, hi)
	}
	if n, err := p.BloatDrops(); err != nil || n != 0 {
		t.Errorf("the bloat path's queue dropped %d packets (%v), want none", n, err)
	}
}

func atoi(t *testing.T, s string) int {
	t.Helper()
	n, err := strconv.Atoi(s)
	if err != nil {
		t.Fatal(err)
	}
	return n
}
