package tcp_test

import (
	"context"
	"errors"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mlbpf/mlbpf/internal/testutil"
	"github.com/mlbpf/mlbpf/loader"
	"github.com/mlbpf/mlbpf/model"
	"github.com/mlbpf/mlbpf/tcp"
	"github.com/mlbpf/mlbpf/testbed"
)

// harness is a testbed with tcp/cc attached to its cgroup and running.
type harness struct {
	t    *testing.T
	tb   *testbed.Testbed
	sub  *tcp.Objects
	sink *testbed.Sink
	stop context.CancelFunc
	done chan error
}

func requireTestbed(t *testing.T) {
	t.Helper()
	testutil.RequireBPF(t)
	testutil.RequireCongestionControl(t, "cubic", "bbr")
}

func newHarness(t *testing.T, loss float64, stateDir string) *harness {
	t.Helper()
	requireTestbed(t)
	tb, err := testbed.New(t.Context(), testbed.Config{LossPercent: loss, Cgroup: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := tb.Close(); err != nil {
			t.Error(err)
		}
	})
	h := &harness{t: t, tb: tb}
	h.sub = h.open(testutil.PinRoot(t), stateDir)
	h.sink, err = tb.NewSink(false)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = h.sink.Close() })
	h.start()
	return h
}

func (h *harness) open(pinRoot, stateDir string) *tcp.Objects {
	h.t.Helper()
	opts := tcp.DefaultOptions()
	// A short period for quick learning; a lease that a loaded machine
	// delaying the runner cannot outlast.
	opts.SleepTimeout = 100 * time.Millisecond
	opts.Lease = 5 * time.Second
	sub, err := tcp.Open(tcp.Config{
		PinRoot:  pinRoot,
		Cgroup:   h.tb.Cgroup(),
		StateDir: stateDir,
		Default:  "cubic", // the testbed namespaces' default
		Allowed:  []string{"cubic", "bbr", "reno"},
		Options:  opts,
		Logger:   testLogger(h.t),
		Seed:     1,
	})
	if err != nil {
		h.t.Fatal(err)
	}
	return sub
}

func (h *harness) start() {
	ctx, cancel := context.WithCancel(context.Background())
	h.stop, h.done = cancel, make(chan error, 1)
	go func() { h.done <- h.sub.Run(ctx, nil) }()
	h.t.Cleanup(h.shutdown)
	// Connections made before the first lease renewal run the kernel's
	// default, as they must: wait for it, so that tests measure the mode.
	for deadline := time.Now().Add(10 * time.Second); h.sub.Model().State() != model.StateRunning; time.Sleep(5 * time.Millisecond) {
		select {
		case err := <-h.done:
			h.stop = nil
			h.t.Fatalf("Run ended before the model ran: %v", err)
		default:
		}
		if time.Now().After(deadline) {
			h.t.Fatalf("the model is %v 10s after Run started, want RUNNING", h.sub.Model().State())
		}
	}
}

// shutdown stops Run and closes the subsystem, leaving the pins.
func (h *harness) shutdown() {
	if h.stop == nil {
		return
	}
	h.stop()
	h.stop = nil
	if err := <-h.done; err != nil {
		h.t.Errorf("Run: %v", err)
	}
	if err := h.sub.Close(); err != nil {
		h.t.Errorf("Close: %v", err)
	}
}

// drive makes connections from workers goroutines until until returns
// true, n connections were made or the time runs out, and returns the
// transfers made.
func (h *harness) drive(load testbed.Load, workers, n int, timeout time.Duration, until func() bool) []testbed.Transfer {
	h.t.Helper()
	ctx, cancel := context.WithTimeout(h.t.Context(), timeout)
	defer cancel()
	var (
		mu    sync.Mutex
		out   []testbed.Transfer
		count atomic.Int64
		wg    sync.WaitGroup
		errs  = make(chan error, workers)
	)
	for range workers {
		wg.Go(func() {
			for ctx.Err() == nil && count.Add(1) <= int64(n) {
				if until != nil && until() {
					return
				}
				tctx, tcancel := context.WithTimeout(ctx, 20*time.Second)
				tr, err := h.tb.Send(tctx, h.sink.Addr(), load, "")
				tcancel()
				if err != nil {
					if ctx.Err() == nil {
						errs <- err
					}
					return
				}
				mu.Lock()
				out = append(out, tr)
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	close(errs)
	if err := <-errs; err != nil {
		h.t.Fatal(err)
	}
	return out
}

// waitRecords waits until the runner has read at least n records.
func (h *harness) waitRecords(n uint64) {
	h.t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for h.sub.Status().Records < n {
		if time.Now().After(deadline) {
			h.t.Fatalf("%d records read 30s after the connections closed, want %d", h.sub.Status().Records, n)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func testLogger(t *testing.T) *slog.Logger {
	if testing.Verbose() {
		level := slog.LevelInfo
		if os.Getenv("MLBPF_DEBUG") != "" {
			level = slog.LevelDebug
		}
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
	}
	return slog.New(slog.DiscardHandler)
}

// load is one learning transfer: 100 ms of sending, a short connection.
var load = testbed.Load{Duration: 100 * time.Millisecond}

func TestLearnsBBRUnderLoss(t *testing.T) {
	h := newHarness(t, 10, "")
	mode := func() model.Mode { return h.sub.Model().Mode() }

	// The controller spends one α budget over the model's life: the
	// promotion out of LEARNING takes part of it, so COLLABORATION's first
	// looks run at a smaller α with Student t quantiles and need about 30
	// connections per arm (measured 103–150 in all; 61–83 before the
	// budget was per model).
	made := h.drive(load, 3, 300, 200*time.Second, func() bool { return mode() == model.ModeRecommendation })
	st := h.sub.Status()
	t.Logf("after %d connections: mode %v, arms %v; %s", len(made), st.Mode, st.Arms, st.Decision)
	for _, d := range st.Destinations {
		t.Logf("destination %+v", d)
	}
	for _, c := range st.Changes {
		t.Logf("mode change %v → %v: %s", c.From, c.To, c.Reason)
	}
	if st.Mode != model.ModeRecommendation {
		t.Fatalf("mode %v after %d connections at 10%% loss, want RECOMMENDATION", st.Mode, len(made))
	}
	if len(made) > 250 {
		t.Errorf("learned after %d connections, want at most 250", len(made))
	}
	recs, err := h.sub.Recommendations()
	if err != nil {
		t.Fatal(err)
	}
	if len(recs) != 1 || recs[0].Prefix != testbed.Prefix || recs[0].CC != "bbr" || recs[0].Operator {
		t.Fatalf("recommendations %+v, want the learner's bbr for %v", recs, testbed.Prefix)
	}

	// New connections run bbr, as their own sockets say; the holdout
	// (5 %) keeps a few on cubic.
	armsBefore, err := h.sub.ArmCounts()
	if err != nil {
		t.Fatal(err)
	}
	after := h.drive(testbed.Load{Bytes: 256 << 10}, 1, 20, 60*time.Second, nil)
	armsAfter, err := h.sub.ArmCounts()
	if err != nil {
		t.Fatal(err)
	}
	bbr, cubic := 0, 0
	for _, tr := range after {
		switch tr.CC {
		case "bbr":
			bbr++
		case "cubic":
			cubic++
		default:
			t.Errorf("a connection ran %q", tr.CC)
		}
	}
	// Connections on cubic must be ones the kernel held out (control).
	if held := armsAfter[model.ArmControl] - armsBefore[model.ArmControl]; uint64(cubic) > held || bbr < len(after)/2 {
		t.Fatalf("%d of %d new connections ran bbr, %d cubic with %d held out (arms %v → %v)",
			bbr, len(after), cubic, held, armsBefore, armsAfter)
	}

	// An application's own choice is left alone.
	tr, err := h.tb.Send(t.Context(), h.sink.Addr(), testbed.Load{Bytes: 64 << 10}, "reno")
	if err != nil {
		t.Fatal(err)
	}
	if tr.CC != "reno" {
		t.Fatalf("a socket set to reno by its application runs %q", tr.CC)
	}
	h.waitRecords(st.Records + uint64(len(after)) + 1)
	if arms, _ := h.sub.ArmCounts(); arms[model.ArmSkipped] == 0 {
		t.Fatalf("arm counts %v: the application's choice was not counted as skipped", arms)
	}
}

func TestNeverPromotedWithoutLoss(t *testing.T) {
	h := newHarness(t, 0, "")
	made := h.drive(load, 2, 60, 60*time.Second, nil)
	h.waitRecords(uint64(len(made)))
	time.Sleep(300 * time.Millisecond) // a few controller periods
	st := h.sub.Status()
	t.Logf("after %d connections: mode %v, arms %v; %s", len(made), st.Mode, st.Arms, st.Decision)
	if st.Mode != model.ModeLearning {
		t.Fatalf("mode %v without loss, want LEARNING", st.Mode)
	}
	if recs, err := h.sub.Recommendations(); err != nil || len(recs) != 0 {
		t.Fatalf("recommendations %+v (%v), want none without loss", recs, err)
	}
	for _, tr := range made {
		if tr.CC != "cubic" {
			t.Fatalf("a connection ran %q without loss, want the default cubic", tr.CC)
		}
	}
	if st.Transfers < uint64(len(made))*9/10 {
		t.Fatalf("learned from %d transfers of %d made", st.Transfers, len(made))
	}
}

func TestRecommendValidation(t *testing.T) {
	requireTestbed(t)
	tb, err := testbed.New(t.Context(), testbed.Config{Cgroup: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = tb.Close() })
	root := testutil.PinRoot(t)
	sub, err := tcp.Open(tcp.Config{PinRoot: root, Cgroup: tb.Cgroup(), Default: "cubic", Allowed: []string{"cubic", "bbr"}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sub.Close() })

	pfx := netip.MustParsePrefix("10.0.0.0/8")
	for _, tc := range []struct {
		p   netip.Prefix
		cc  string
		not bool // ErrNotAllowed
	}{
		{pfx, "nosuchcc", true},
		{pfx, "reno", true}, // available, not allowed
		{netip.MustParsePrefix("10.0.0.1/8"), "bbr", false},
		{pfx, "", false},
		{netip.Prefix{}, "bbr", false},
	} {
		err := sub.Recommend(tc.p, tc.cc)
		if !errors.Is(err, model.ErrInvalidRecommendation) || tc.not != errors.Is(err, tcp.ErrNotAllowed) {
			t.Errorf("Recommend(%v, %q) = %v", tc.p, tc.cc, err)
		}
	}
	if recs, _ := sub.Recommendations(); len(recs) != 0 {
		t.Fatalf("refused recommendations reached the map: %+v", recs)
	}

	// The CLI's path: parse, open the pins, recommend.
	p, cc, err := tcp.ParseRecommendArgs([]string{"tcp/cc", "10.0.0.0/8", "bbr"})
	if err != nil {
		t.Fatal(err)
	}
	cli, err := tcp.OpenPinned(tcp.Config{PinRoot: root, Allowed: []string{"cubic", "bbr"}})
	if err != nil {
		t.Fatal(err)
	}
	if err := cli.Recommend(p, cc); err != nil {
		t.Fatal(err)
	}
	if err := cli.Close(); err != nil {
		t.Fatal(err)
	}
	recs, err := sub.Recommendations()
	if err != nil || len(recs) != 1 || recs[0].Prefix != pfx || recs[0].CC != "bbr" || !recs[0].Operator {
		t.Fatalf("recommendations %+v (%v), want the operator's bbr for %v", recs, err, pfx)
	}
	// The learner's own path refuses to replace an operator's entry.
	if err := sub.Model().Start(model.RunConfig{}); err != nil {
		t.Fatal(err)
	}
	err = sub.Model().ApplyRecommendation(model.Recommendation{Key: "10.0.0.0/8", Value: "cubic"})
	if err == nil {
		t.Fatal("the learner replaced an operator's recommendation")
	}
	if err := sub.Withdraw(pfx); err != nil {
		t.Fatal(err)
	}
	if recs, _ := sub.Recommendations(); len(recs) != 0 {
		t.Fatalf("after Withdraw: %+v", recs)
	}
	if _, err := tcp.OpenPinned(tcp.Config{PinRoot: t.TempDir()}); err == nil {
		t.Fatal("OpenPinned without pins succeeded")
	}
}

// TestOperatorIPv6AndFallback: an operator's IPv6 recommendation is
// applied in RECOMMENDATION, not to IPv4 peers, and not once the model is
// stopped.
func TestOperatorIPv6AndFallback(t *testing.T) {
	h := newHarness(t, 0, "")
	m := h.sub.Model()
	if err := h.sub.Recommend(testbed.Prefix6, "bbr"); err != nil {
		t.Fatal(err)
	}
	if err := m.SetMode(model.ModeRecommendation, "test: operator"); err != nil {
		t.Fatal(err)
	}
	sink6, err := h.tb.NewSink(true)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sink6.Close() })
	send := func(addr string) string {
		tr, err := h.tb.Send(t.Context(), addr, testbed.Load{Bytes: 128 << 10}, "")
		if err != nil {
			t.Fatal(err)
		}
		return tr.CC
	}
	armsBefore, err := h.sub.ArmCounts()
	if err != nil {
		t.Fatal(err)
	}
	bbr, cubic := 0, 0
	for range 8 {
		switch cc := send(sink6.Addr()); cc {
		case "bbr":
			bbr++
		case "cubic":
			cubic++
		default:
			t.Fatalf("an IPv6 connection ran %q", cc)
		}
	}
	armsAfter, err := h.sub.ArmCounts()
	if err != nil {
		t.Fatal(err)
	}
	// Every connection left on cubic must be one the kernel held out (the
	// 5 % holdout, counted as control); half or more held out of 8 has a
	// chance below 1e-4.
	if held := armsAfter[model.ArmControl] - armsBefore[model.ArmControl]; uint64(cubic) > held || bbr < 4 {
		t.Fatalf("%d of 8 IPv6 connections ran bbr in RECOMMENDATION, %d cubic with %d held out (arms %v → %v)",
			bbr, cubic, held, armsBefore, armsAfter)
	}
	if cc := send(h.sink.Addr()); cc != "cubic" {
		t.Fatalf("an IPv4 connection, with no recommendation for it, ran %q", cc)
	}
	// The daemon stops: the kernel is back on its default at once.
	h.shutdown()
	if cc := send(sink6.Addr()); cc != "cubic" {
		t.Fatalf("after the model stopped an IPv6 connection ran %q, want the default", cc)
	}
}

// TestCollaborationBalanced: COLLABORATION's split is drawn in permuted
// blocks (mlbpf_decide_blocked), so that after every connection the
// MODEL and CONTROL arms differ by at most one, and each arm's outcomes
// arrive after twice as many connections. Coin flips stay that balanced
// over 20 connections with a chance of 1/1024.
func TestCollaborationBalanced(t *testing.T) {
	h := newHarness(t, 0, "")
	m := h.sub.Model()
	if err := h.sub.Recommend(testbed.Prefix, "bbr"); err != nil {
		t.Fatal(err)
	}
	if err := m.SetMode(model.ModeCollaboration, "test: operator"); err != nil {
		t.Fatal(err)
	}
	before, err := h.sub.ArmCounts()
	if err != nil {
		t.Fatal(err)
	}
	var seq []string
	for i := range 20 {
		tr, err := h.tb.Send(t.Context(), h.sink.Addr(), testbed.Load{Bytes: 64 << 10}, "")
		if err != nil {
			t.Fatal(err)
		}
		seq = append(seq, tr.CC)
		if mode := m.Mode(); mode != model.ModeCollaboration {
			t.Fatalf("the mode controller left COLLABORATION (%v) after %d connections: the test needs it to stay", mode, i+1)
		}
		// The client's side: bbr is MODEL, cubic CONTROL.
		bbr := uint64(strings.Count(strings.Join(seq, " "), "bbr"))
		if cubic := uint64(len(seq)) - bbr; max(bbr, cubic)-min(bbr, cubic) > 1 {
			t.Fatalf("after %d connections the clients ran bbr %d times, cubic %d, want within one of each other (algorithms %v)",
				i+1, bbr, cubic, seq)
		}
		// Both sides (the sink's accepted sockets are the cgroup's
		// too, balanced on their own).
		after, err := h.sub.ArmCounts()
		if err != nil {
			t.Fatal(err)
		}
		mod, ctl := after[model.ArmModel]-before[model.ArmModel], after[model.ArmControl]-before[model.ArmControl]
		if max(mod, ctl)-min(mod, ctl) > 2 {
			t.Fatalf("after %d connections: %d MODEL, %d CONTROL decisions, want within two of each other", i+1, mod, ctl)
		}
	}
	t.Logf("algorithms in order: %v", seq)
}

// TestRestartAdoptsPinsAndState: a second run adopts the pinned program,
// maps and the learner's state.
func TestRestartAdoptsPinsAndState(t *testing.T) {
	state := t.TempDir()
	h := newHarness(t, 10, state)
	root := filepath.Dir(filepath.Dir(h.sub.Dir()))
	made := h.drive(load, 3, 12, 60*time.Second, nil)
	h.waitRecords(uint64(len(made)))
	before := h.sub.Learner().Destinations()
	if len(before) != 1 || before[0].Transfers == 0 {
		t.Fatalf("destinations before restart: %+v", before)
	}
	armsBefore, _ := h.sub.ArmCounts()
	h.shutdown()
	if _, err := os.Stat(filepath.Join(h.sub.Dir(), "link")); err != nil {
		t.Fatalf("the sock_ops link is not pinned after a shutdown: %v", err)
	}
	if _, err := os.Stat(filepath.Join(state, tcp.StateFile)); err != nil {
		t.Fatalf("no state file after a shutdown: %v", err)
	}

	h.sub = h.open(root, state)
	after := h.sub.Learner().Destinations()
	if len(after) != 1 || after[0].Transfers != before[0].Transfers || after[0].Recommended != before[0].Recommended {
		t.Fatalf("destinations after restart %+v, want %+v", after, before)
	}
	if armsAfter, _ := h.sub.ArmCounts(); armsAfter[model.ArmNoRec]+armsAfter[model.ArmShadow] < armsBefore[model.ArmNoRec]+armsBefore[model.ArmShadow] {
		t.Fatalf("arm counts after restart %v, before %v: the maps were not adopted", armsAfter, armsBefore)
	}
	h.start()
	h.drive(load, 1, 2, 30*time.Second, nil)
	h.waitRecords(1)
	if st := h.sub.Status(); st.Records == 0 {
		t.Fatal("no records after the restart: the program was not adopted")
	}
	recs, _ := h.sub.Recommendations()
	if before[0].Recommended != "" && (len(recs) != 1 || recs[0].CC != before[0].Recommended) {
		t.Fatalf("recommendations after restart %+v, want the learner's %s", recs, before[0].Recommended)
	}
}

func TestDemoCleansUpOnCancel(t *testing.T) {
	requireTestbed(t)
	// Ctrl-C once the demo has built everything and is learning; the
	// backstop only ends a demo that never gets there.
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()
	before := leftovers(t)
	out := &cancelOn{what: "tcp/cc attached", cancel: cancel}
	if err := tcp.Demo(ctx, out, tcp.DemoOptions{}); err != nil {
		t.Fatal(err)
	}
	if s := out.String(); !strings.Contains(s, "tcp/cc attached") || !strings.Contains(s, "interrupted: cleaning up") {
		t.Fatalf("demo output, want it interrupted after attaching:\n%s", s)
	}
	if after := leftovers(t); !slices.Equal(before, after) {
		t.Fatalf("left behind: %v (before: %v)", after, before)
	}
}

// cancelOn is a writer that calls cancel once what it was written contains
// what.
type cancelOn struct {
	testutil.SyncBuffer
	what   string
	cancel context.CancelFunc
}

func (c *cancelOn) Write(p []byte) (int, error) {
	n, err := c.SyncBuffer.Write(p)
	if strings.Contains(c.String(), c.what) {
		c.cancel()
	}
	return n, err
}

// leftovers lists what a testbed or the demo of this process could leave
// behind (other processes' testbeds come and go meanwhile).
func leftovers(t *testing.T) []string {
	var out []string
	pid := strconv.Itoa(os.Getpid())
	for _, dir := range []string{"/run/netns", "/sys/fs/bpf"} {
		entries, _ := os.ReadDir(dir)
		for _, e := range entries {
			for _, prefix := range []string{"mlbpf-tb-", "mlbpf-demo-"} {
				if strings.HasPrefix(e.Name(), prefix+pid+"-") {
					out = append(out, filepath.Join(dir, e.Name()))
				}
			}
		}
	}
	if root, err := loader.Cgroup2Root(); err == nil {
		if entries, err := os.ReadDir(root); err == nil {
			for _, e := range entries {
				if strings.HasPrefix(e.Name(), "mlbpf-tb-"+pid+"-") {
					out = append(out, filepath.Join(root, e.Name()))
				}
			}
		}
	}
	return out
}
