package main

import (
	"context"
	"fmt"
	"io"
	"net"
	"path/filepath"
	"slices"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"golang.org/x/sys/unix"

	"github.com/mlbpf/mlbpf/internal/testutil"
	"github.com/mlbpf/mlbpf/loader"
	"github.com/mlbpf/mlbpf/model"
	"github.com/mlbpf/mlbpf/tcp"
	"github.com/mlbpf/mlbpf/testbed"
)

const fallbackConfig = `
interval: 250ms
models:
  - name: tcp/cc
    mode: recommendation
    max_mode: recommendation
    holdout_permille: 1   # 0 would be the default, 50
    lease: 2s
    tcp:
      cgroup: %s
      default: cubic
`

// liveConns are long-lived connections across a testbed, both ends in
// tcp/cc's cgroup, each end echoing what it gets: every socket, active and
// passive, sends data and so takes RTT samples.
type liveConns struct {
	t       *testing.T
	socks   []net.Conn // client and server ends
	stop    chan struct{}
	wg      sync.WaitGroup
	l       net.Listener
	every   time.Duration
	sendErr chan error
}

func openLiveConns(t *testing.T, tb *testbed.Testbed, n int, every time.Duration) *liveConns {
	t.Helper()
	l, err := tb.Server.Listen("tcp4", net.JoinHostPort(testbed.ServerAddr.String(), "0"))
	if err != nil {
		t.Fatal(err)
	}
	lc := &liveConns{t: t, stop: make(chan struct{}), l: l, every: every, sendErr: make(chan error, 2*n)}
	t.Cleanup(lc.close)
	for range n {
		ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
		c, err := tb.Client.Dial(ctx, "tcp4", l.Addr().String())
		cancel()
		if err != nil {
			t.Fatal(err)
		}
		s, err := l.Accept()
		if err != nil {
			t.Fatal(err)
		}
		lc.socks = append(lc.socks, c, s)
		lc.wg.Go(func() { echo(s) })
		lc.wg.Go(func() { lc.send(c) })
	}
	return lc
}

// echo writes back what it reads. (Not io.Copy: between two TCP sockets
// it splices through pipes Go keeps pooled, which the leak check counts.)
func echo(c net.Conn) {
	buf := make([]byte, 4096)
	for {
		n, err := c.Read(buf)
		if err != nil {
			return
		}
		if _, err := c.Write(buf[:n]); err != nil {
			return
		}
	}
}

// send writes a KiB every lc.every and reads the echo back.
func (lc *liveConns) send(c net.Conn) {
	buf := make([]byte, 1024)
	tick := time.NewTicker(lc.every)
	defer tick.Stop()
	for {
		select {
		case <-lc.stop:
			return
		case <-tick.C:
		}
		if _, err := c.Write(buf); err != nil {
			lc.sendErr <- err
			return
		}
		if _, err := io.ReadFull(c, buf); err != nil {
			lc.sendErr <- err
			return
		}
	}
}

func (lc *liveConns) close() {
	select {
	case <-lc.stop:
		return
	default:
	}
	close(lc.stop)
	for _, c := range lc.socks {
		_ = c.Close()
	}
	_ = lc.l.Close()
	lc.wg.Wait()
}

// algorithms reads every socket's TCP_CONGESTION.
func (lc *liveConns) algorithms() []string {
	lc.t.Helper()
	out := make([]string, len(lc.socks))
	for i, c := range lc.socks {
		cc, err := testbed.SocketCC(c.(syscall.Conn))
		if err != nil {
			lc.t.Fatal(err)
		}
		out[i] = cc
	}
	return out
}

// waitAll polls until every socket runs what want says and returns when
// that was first seen, or the zero time after limit.
func (lc *liveConns) waitAll(want []string, limit time.Duration) (time.Time, []string) {
	lc.t.Helper()
	deadline := time.Now().Add(limit)
	for {
		select {
		case err := <-lc.sendErr:
			lc.t.Fatalf("traffic stopped: %v", err)
		default:
		}
		now := time.Now()
		got := lc.algorithms()
		if slices.Equal(got, want) {
			return now, got
		}
		if now.After(deadline) {
			return time.Time{}, got
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// setCC sets a socket's algorithm as an application would.
func setCC(t *testing.T, c net.Conn, cc string) {
	t.Helper()
	rc, err := c.(syscall.Conn).SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var serr error
	if err := rc.Control(func(fd uintptr) {
		serr = unix.SetsockoptString(int(fd), unix.IPPROTO_TCP, unix.TCP_CONGESTION, cc)
	}); err != nil || serr != nil {
		t.Fatalf("setting %s: %v %v", cc, err, serr)
	}
}

// sockopsStats reads the run time and count of tcp/cc's sock_ops program
// through its pinned link.
func sockopsStats(t *testing.T, root string) (time.Duration, uint64) {
	t.Helper()
	l, err := link.LoadPinnedLink(filepath.Join(loader.PinDir(root, "tcp", "cc"), "link"), nil)
	if err != nil {
		t.Fatalf("opening tcp/cc's link: %v", err)
	}
	defer l.Close()
	info, err := l.Info()
	if err != nil {
		t.Fatal(err)
	}
	p, err := ebpf.NewProgramFromID(info.Program)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	st, err := p.Stats()
	if err != nil {
		t.Fatal(err)
	}
	return st.Runtime, st.RunCount
}

// callbackCost measures tcp/cc's sock_ops program for a second of lc's
// traffic: run time per call (BPF_ENABLE_STATS) and calls per second per
// socket.
func callbackCost(t *testing.T, root string, lc *liveConns) (nsPerCall, perSocket float64) {
	t.Helper()
	stats, err := ebpf.EnableStats(uint32(unix.BPF_STATS_RUN_TIME))
	if err != nil {
		t.Fatalf("enabling BPF run-time stats: %v", err)
	}
	defer stats.Close()
	ns0, n0 := sockopsStats(t, root)
	start := time.Now()
	time.Sleep(time.Second)
	ns1, n1 := sockopsStats(t, root)
	if n1 == n0 {
		t.Fatalf("no sock_ops callback in %v of traffic", time.Since(start))
	}
	return float64(ns1-ns0) / float64(n1-n0), float64(n1-n0) / float64(len(lc.socks)) / time.Since(start).Seconds()
}

// fallbackRig is a daemon running tcp/cc in RECOMMENDATION, reno
// recommended for both ends of a testbed whose default is cubic, and
// long-lived connections the model changed to reno.
type fallbackRig struct {
	s       *session
	p       *proc
	conns   *liveConns
	changed []string // each socket's algorithm before the fallback
	after   []string // and after it
}

const (
	liveConnCount = 4
	// trafficEvery is how often each connection sends: with an RTT far
	// below it on the testbed, the period of its RTT callbacks.
	trafficEvery = 10 * time.Millisecond
	// pollSlack covers what is not the kernel's: this test's polling and
	// its senders' scheduling on a shared machine.
	pollSlack = 250 * time.Millisecond
)

func newFallbackRig(t *testing.T) *fallbackRig {
	t.Helper()
	testutil.RequireBPF(t)
	testutil.RequireCongestionControl(t, "cubic", "reno")
	tb, err := testbed.New(t.Context(), testbed.Config{Cgroup: true, CongestionControl: "cubic"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = tb.Close() })
	s := newSession(t, fmt.Sprintf(fallbackConfig, tb.Cgroup()))
	p := s.spawn()
	// The baseline of what a callback costs: connections without a
	// recommendation (on the default, in LEARNING) sample their delivery
	// rate at every RTT sample, as before.
	base := openLiveConns(t, tb, liveConnCount, trafficEvery)
	baseNs, baseRate := callbackCost(t, s.root, base)
	base.close()

	for _, peer := range []string{testbed.ServerAddr.String() + "/32", testbed.ClientAddr.String() + "/32"} {
		s.must("recommend", "tcp/cc", peer, "reno")
	}
	// The operator promotes it (the daemon may still be settling: the
	// command is repeated until the kernel sees RECOMMENDATION).
	s.waitFor("tcp/cc in RECOMMENDATION", func() bool {
		_, _ = s.cmd("mode", "tcp/cc", "recommendation")
		pm, err := loader.ReadPinned(s.root, "tcp", "cc")
		return err == nil && model.Mode(pm.Control.Mode) == model.ModeRecommendation &&
			model.State(pm.Control.State) == model.StateRunning
	})

	conns := openLiveConns(t, tb, liveConnCount, trafficEvery)
	// A socket drawn into the holdout (1 in 1000) keeps cubic: the model
	// did not change it.
	got := conns.algorithms()
	reno := 0
	for _, cc := range got {
		if cc == "reno" {
			reno++
		}
	}
	if reno < len(got)/2 {
		t.Fatalf("connections opened in RECOMMENDATION run %v, want reno almost everywhere (holdout 1/1000)\n%s", got, s.logs)
	}
	// What re-checking costs: every RTT sample of a connection on the
	// model's algorithm now runs the program (before: none did).
	ns, rate := callbackCost(t, s.root, conns)
	t.Logf("RTT callbacks, %d sockets sending every %v: re-check (model) %.0f ns each, %.0f/s per socket; rate sample (default, same run) %.0f ns each, %.0f/s per socket; ratio %.2f",
		len(conns.socks), trafficEvery, ns, rate, baseNs, baseRate, ns/baseNs)
	// The application of the first connection then chooses its own
	// algorithm: the fallback must leave it alone.
	after := slices.Repeat([]string{"cubic"}, len(got))
	avail, err := tcp.Available()
	if err != nil {
		t.Fatal(err)
	}
	if slices.Contains(avail, "bbr") {
		setCC(t, conns.socks[0], "bbr")
		got[0], after[0] = "bbr", "bbr"
	}
	return &fallbackRig{s: s, p: p, conns: conns, changed: got, after: after}
}

// TestFallbackReachesLiveConnections: connections the model changed go
// back to the kernel's default when the model falls back, without being
// reopened: within the lease plus one callback period after the daemon is
// SIGKILLed, within one callback period after an operator's EMERGENCY.
// Before sock_ops re-checked the block at RTT samples, they kept reno for
// their whole life.
func TestFallbackReachesLiveConnections(t *testing.T) {
	t.Run("daemon killed", func(t *testing.T) {
		r := newFallbackRig(t)
		r.p.signal(syscall.SIGKILL)
		if _, sig := r.p.wait(5 * time.Second); sig != syscall.SIGKILL {
			t.Fatalf("the daemon ended by %v, want SIGKILL", sig)
		}
		killed := loader.MonotonicNs()
		if got := r.conns.algorithms(); !slices.Equal(got, r.changed) {
			t.Fatalf("right after the kill, within the lease, the connections run %v: want %v still", got, r.changed)
		}
		pm, err := loader.ReadPinned(r.s.root, "tcp", "cc")
		if err != nil {
			t.Fatal(err)
		}
		expires := pm.Control.LeaseExpiresNs
		lease := time.Duration(int64(expires) - int64(killed))
		seen, got := r.conns.waitAll(r.after, lease+trafficEvery+pollSlack)
		if seen.IsZero() {
			t.Fatalf("%v after the kill (lease ends %v after it) the connections run %v, want %v", lease+trafficEvery+pollSlack, lease, got, r.after)
		}
		after := time.Duration(int64(loader.MonotonicNs()) - int64(expires) - int64(time.Since(seen)))
		t.Logf("SIGKILL: lease ended %v after the kill; every connection on cubic %v after the lease ended (callback period %v)",
			lease.Round(time.Millisecond), after.Round(time.Millisecond), trafficEvery)
	})
	t.Run("emergency", func(t *testing.T) {
		r := newFallbackRig(t)
		r.s.must("mode", "tcp/cc", "emergency")
		set := time.Now()
		seen, got := r.conns.waitAll(r.after, trafficEvery+pollSlack)
		if seen.IsZero() {
			t.Fatalf("%v after EMERGENCY the connections run %v, want %v", trafficEvery+pollSlack, got, r.after)
		}
		t.Logf("EMERGENCY: every connection on cubic %v after the command returned (callback period %v)",
			seen.Sub(set).Round(time.Millisecond), trafficEvery)
	})
}
