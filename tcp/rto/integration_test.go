package rto

import (
	"context"
	"errors"
	"math"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/mlbpf/mlbpf/internal/testutil"
	"github.com/mlbpf/mlbpf/loader"
	"github.com/mlbpf/mlbpf/model"
	"github.com/mlbpf/mlbpf/pipeline"
	"github.com/mlbpf/mlbpf/testbed"
)

// rig is a testbed (one veth pair, the process in its cgroup) with the
// tcp/rto program attached to the cgroup.
type rig struct {
	pinRoot string
	tb      *testbed.Testbed
	o       *Objects
	sink    *testbed.Sink
}

func newRig(t *testing.T) *rig {
	t.Helper()
	testutil.RequireBPF(t)
	tb, err := testbed.New(t.Context(), testbed.Config{Cgroup: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = tb.Close() })
	pinRoot := testutil.PinRoot(t)
	o, err := Open(Config{PinRoot: pinRoot, Cgroup: tb.Cgroup()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = o.Remove() })
	if err := o.Attach(); err != nil {
		t.Fatal(err)
	}
	sink, err := tb.NewSink(false)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sink.Close() })
	return &rig{pinRoot: pinRoot, tb: tb, o: o, sink: sink}
}

// setControl writes the control block: RUNNING in mode, everything
// applied (holdout 0), the lease live or already expired.
func (r *rig) setControl(t *testing.T, mode model.Mode, leaseLive bool) {
	t.Helper()
	c, err := r.o.Control().LoadControl()
	if err != nil {
		t.Fatal(err)
	}
	lease := uint64(math.MaxUint64)
	if !leaseLive {
		lease = loader.MonotonicNs() - 1
	}
	err = r.o.Control().StoreControl(model.Control{
		State: model.StateRunning, Mode: mode, LeaseExpiresNs: lease,
		CollabPermille: 1000, Generation: c.Generation + 1,
	})
	if err != nil {
		t.Fatal(err)
	}
}

// got is what the kernel says a socket runs.
type got struct {
	SynRTO, RTOMin, DelackMax time.Duration
	Cwnd                      uint32
}

func sockInfo(fd int) (got, error) {
	var g got
	info, err := unix.GetsockoptTCPInfo(fd, unix.IPPROTO_TCP, unix.TCP_INFO)
	if err != nil {
		return g, err
	}
	g.SynRTO = time.Duration(info.Rto) * time.Microsecond
	g.Cwnd = info.Snd_cwnd
	// TCP_RTO_MIN_US and TCP_DELACK_MAX_US are readable from Linux 6.15;
	// before, the timers stay unknown (noTimers) and are not compared.
	rtoMin, err := unix.GetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_RTO_MIN_US)
	if errors.Is(err, unix.ENOPROTOOPT) {
		g.RTOMin, g.DelackMax = noTimers, noTimers
		return g, nil
	}
	if err != nil {
		return g, err
	}
	delack, err := unix.GetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_DELACK_MAX_US)
	if err != nil {
		return g, err
	}
	g.RTOMin = time.Duration(rtoMin) * time.Microsecond
	g.DelackMax = time.Duration(delack) * time.Microsecond
	return g, nil
}

// noTimers marks timers the kernel cannot report (before Linux 6.15).
const noTimers = -1

// synSent opens a socket to the server whose SYN is lost (100 % loss
// toward the server), reads its timers while it waits in SYN_SENT, and
// closes it.
func (r *rig) synSent(t *testing.T, ipv6 bool) got {
	t.Helper()
	if err := r.tb.SetLoss(100); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = r.tb.SetLoss(0) }()
	var g got
	err := r.tb.Client.Do(func() error {
		family, sa := unix.AF_INET, unix.Sockaddr(&unix.SockaddrInet4{Port: 9, Addr: testbed.ServerAddr.As4()})
		if ipv6 {
			family, sa = unix.AF_INET6, &unix.SockaddrInet6{Port: 9, Addr: testbed.ServerAddr6.As16()}
		}
		fd, err := unix.Socket(family, unix.SOCK_STREAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			return err
		}
		defer unix.Close(fd)
		if err := unix.Connect(fd, sa); !errors.Is(err, unix.EINPROGRESS) {
			return err
		}
		g, err = sockInfo(fd)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return g
}

// established connects to the sink and reads its timers and window
// before sending anything; the caller closes the connection.
func (r *rig) established(t *testing.T, ipv6 bool) (got, *net.TCPConn) {
	t.Helper()
	_, port, _ := net.SplitHostPort(r.sink.Addr())
	addr := net.JoinHostPort(testbed.ServerAddr.String(), port)
	if ipv6 {
		s6, err := r.tb.NewSink(true)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = s6.Close() })
		addr = s6.Addr()
	}
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	c, err := r.tb.Client.Dial(ctx, "tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	tc := c.(*net.TCPConn)
	g, err := connInfo(tc)
	if err != nil {
		t.Fatal(err)
	}
	return g, tc
}

func connInfo(c syscall.Conn) (got, error) {
	var g got
	rc, err := c.SyscallConn()
	if err != nil {
		return g, err
	}
	var ierr error
	if err := rc.Control(func(fd uintptr) { g, ierr = sockInfo(int(fd)) }); err != nil {
		return g, err
	}
	return g, ierr
}

func (r *rig) arms(t *testing.T) [loader.ArmCount]uint64 {
	t.Helper()
	a, err := r.o.ArmCounts()
	if err != nil {
		t.Fatal(err)
	}
	return a
}

var (
	aggressive = Setting{SynRtoMs: 20, RtoMinMs: 8, DelackMaxMs: 8, Iw: 40}
	defaults   = got{SynRTO: DefaultSynRTO, RTOMin: DefaultRTOMin, DelackMax: DefaultDelackMax, Cwnd: DefaultIW}
)

func checkGot(t *testing.T, what string, g, want got, synOnly bool) {
	t.Helper()
	if synOnly {
		g.Cwnd, want.Cwnd = 0, 0
	} else {
		g.SynRTO, want.SynRTO = 0, 0
	}
	if g.RTOMin == noTimers {
		want.RTOMin, want.DelackMax = noTimers, noTimers
	}
	if g != want {
		t.Errorf("%s: the kernel says %+v, want %+v", what, g, want)
	}
}

// TestApplier checks, for each new socket, what the kernel says it got:
// the recommended setting for a destination in the prefix, the defaults
// elsewhere, on EMERGENCY, on an expired lease and for a setting the
// kernel would refuse; and the arms the program counted.
func TestApplier(t *testing.T) {
	r := newRig(t)
	want := got{SynRTO: 20 * time.Millisecond, RTOMin: 8 * time.Millisecond, DelackMax: 8 * time.Millisecond, Cwnd: 40}
	r.setControl(t, model.ModeRecommendation, true)
	for _, p := range []netip.Prefix{testbed.Prefix, testbed.Prefix6} {
		if err := r.o.Recommend(p, aggressive); err != nil {
			t.Fatal(err)
		}
	}
	recs, err := r.o.Recommendations()
	if err != nil || len(recs) != 2 || recs[0].Settings[0] != aggressive || !recs[0].Operator {
		t.Fatalf("recommendations %+v, %v", recs, err)
	}

	before := r.arms(t)
	for _, v6 := range []bool{false, true} {
		checkGot(t, "SYN_SENT with the recommendation", r.synSent(t, v6), want, true)
		g, c := r.established(t, v6)
		c.Close()
		checkGot(t, "established with the recommendation", g, want, false)
	}
	if after := r.arms(t); after[model.ArmModel]-before[model.ArmModel] != 4 {
		t.Errorf("MODEL arm counted %d times for 4 sockets (arms %v)", after[model.ArmModel]-before[model.ArmModel], after)
	}

	// Another destination: no recommendation, the defaults.
	if err := r.o.Withdraw(testbed.Prefix); err != nil {
		t.Fatal(err)
	}
	before = r.arms(t)
	checkGot(t, "SYN_SENT without a recommendation", r.synSent(t, false), defaults, true)
	if after := r.arms(t); after[model.ArmNoRec]-before[model.ArmNoRec] != 1 {
		t.Errorf("NO_REC arm not counted: %v", after)
	}
	if err := r.o.Recommend(testbed.Prefix, aggressive); err != nil {
		t.Fatal(err)
	}

	for _, c := range []struct {
		name string
		mode model.Mode
		live bool
	}{
		{"EMERGENCY", model.ModeEmergency, true},
		{"lease expired", model.ModeRecommendation, false},
	} {
		r.setControl(t, c.mode, c.live)
		before = r.arms(t)
		checkGot(t, c.name+", SYN_SENT", r.synSent(t, false), defaults, true)
		g, conn := r.established(t, false)
		conn.Close()
		checkGot(t, c.name+", established", g, defaults, false)
		if after := r.arms(t); after[model.ArmFallback]-before[model.ArmFallback] != 2 {
			t.Errorf("%s: FALLBACK arm counted %d times for 2 sockets", c.name, after[model.ArmFallback]-before[model.ArmFallback])
		}
	}

	// A setting the kernel would refuse, written past the validation.
	r.setControl(t, model.ModeRecommendation, true)
	bad := Setting{SynRtoMs: 20, RtoMinMs: 2}
	if err := r.o.Recommend(testbed.Prefix, bad); !errors.Is(err, model.ErrInvalidRecommendation) || !errors.Is(err, ErrRejected) {
		t.Fatalf("Recommend(%s): %v, want a rejection", bad, err)
	}
	if err := r.o.writeRaw(testbed.Prefix, []Setting{bad}); err != nil {
		t.Fatal(err)
	}
	before = r.arms(t)
	checkGot(t, "SYN_SENT with a refused setting", r.synSent(t, false), defaults, true)
	if after := r.arms(t); after[model.ArmRejected]-before[model.ArmRejected] != 1 {
		t.Errorf("REJECTED arm counted %d times for 1 socket", after[model.ArmRejected]-before[model.ArmRejected])
	}
}

// TestFallbackReachesLiveConnections checks that a connection opened with
// shortened timers gets its own back once the model may no longer act.
func TestFallbackReachesLiveConnections(t *testing.T) {
	r := newRig(t)
	for _, c := range []struct {
		name string
		mode model.Mode
		live bool
	}{
		{"EMERGENCY", model.ModeEmergency, true},
		{"lease expired", model.ModeRecommendation, false},
	} {
		r.setControl(t, model.ModeRecommendation, true)
		if err := r.o.Recommend(testbed.Prefix, aggressive); err != nil {
			t.Fatal(err)
		}
		g, conn := r.established(t, false)
		if g.RTOMin == noTimers {
			conn.Close()
			t.Skip("this kernel cannot report a socket's RTO_MIN (getsockopt TCP_RTO_MIN_US: Linux 6.15)")
		}
		if g.RTOMin != 8*time.Millisecond {
			conn.Close()
			t.Fatalf("%s: a new connection has RTO_MIN %v, want 8ms", c.name, g.RTOMin)
		}
		r.setControl(t, c.mode, c.live)
		sendUntil(t, conn, func() bool {
			var err error
			if g, err = connInfo(conn); err != nil {
				t.Fatal(err)
			}
			return g.RTOMin == DefaultRTOMin && g.DelackMax == DefaultDelackMax
		})
		conn.Close()
		if g.RTOMin != DefaultRTOMin || g.DelackMax != DefaultDelackMax {
			t.Errorf("%s: 2s after the fallback the live connection still has RTO_MIN %v DELACK_MAX %v, want %v and %v",
				c.name, g.RTOMin, g.DelackMax, DefaultRTOMin, DefaultDelackMax)
		}
	}
}

// sendUntil writes to conn, so that ACKs come back with RTT samples (the
// callbacks that re-check the control blocks), until done says so, for at
// most 2 s: a write returns once the data is queued, before its ACKs.
func sendUntil(t *testing.T, conn *net.TCPConn, done func() bool) {
	t.Helper()
	buf := make([]byte, 64<<10)
	for deadline := time.Now().Add(2 * time.Second); time.Now().Before(deadline); {
		if _, err := conn.Write(buf); err != nil {
			t.Fatal(err)
		}
		if done() {
			return
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestLoop runs the model through its lifecycle on the period loop
// (Subsystem's Open, the daemon's path) on real connections: it learns,
// from the records, a prefix per destination; on EMERGENCY and when its
// lease lapses the kernel is on its defaults.
func TestLoop(t *testing.T) {
	r := newRig(t)
	loop, err := Subsystem().Open(pipeline.Env{Model: ModelName, PinRoot: r.pinRoot, Options: model.Options{
		SleepTimeout: 50 * time.Millisecond, Lease: 200 * time.Millisecond,
	}}, &SectionConfig{Cgroup: r.tb.Cgroup(), MinSamples: 5, MaxFlows: 40})
	if err != nil {
		t.Fatal(err)
	}
	defer loop.Close()
	o := loop.Objects().(*Objects)
	var flows int
	o.Learner().OnFlow(func(f *Flow) {
		if f.Peer == testbed.ServerAddr {
			flows++
		}
	})
	m := loop.Model()
	if err := m.Start(model.RunConfig{}); err != nil {
		t.Fatal(err)
	}
	if m := m.Mode(); m != model.ModeCollaboration {
		t.Fatalf("mode %v after Start, want COLLABORATION", m)
	}
	// Run's first period, at once: the lease granted.
	if err := loop.Period(); err != nil {
		t.Fatal(err)
	}
	for range 50 {
		ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
		_, err := r.tb.Send(ctx, r.sink.Addr(), testbed.Load{Bytes: 16 << 10}, "")
		cancel()
		if err != nil {
			t.Fatal(err)
		}
		if err := loop.Period(); err != nil {
			t.Fatal(err)
		}
	}
	if flows != 50 {
		t.Errorf("%d records of 50 flows", flows)
	}
	ds := o.Learner().Destinations()
	if len(ds) != 1 || ds[0].Prefix != netip.MustParsePrefix("198.18.0.0/24") || ds[0].Chosen < 0 {
		t.Fatalf("destinations %+v: want 198.18.0.0/24 decided within 40 flows", ds)
	}
	if m := m.Mode(); m != model.ModeRecommendation {
		t.Errorf("mode %v once every prefix chose, want RECOMMENDATION", m)
	}
	// Whatever was chosen, make sure a setting is in force, then trip.
	if err := r.o.Recommend(testbed.Prefix, aggressive); err != nil {
		t.Fatal(err)
	}
	if err := m.SetMode(model.ModeEmergency, "test"); err != nil {
		t.Fatal(err)
	}
	checkGot(t, "EMERGENCY through the model", r.synSent(t, false), defaults, true)
	if err := m.SetMode(model.ModeRecommendation, "test"); err != nil {
		t.Fatal(err)
	}
	if err := loop.Period(); err != nil {
		t.Fatal(err)
	}
	time.Sleep(300 * time.Millisecond) // no renewal: the lease lapses
	before := r.arms(t)
	checkGot(t, "lease lapsed", r.synSent(t, false), defaults, true)
	if after := r.arms(t); after[model.ArmFallback] == before[model.ArmFallback] {
		t.Error("lease lapsed: FALLBACK not counted")
	}
}

func TestMain(m *testing.M) { os.Exit(testutil.RunCheckingFDs(m)) }

// TestHoldoutNarrowedInKernel: on the period loop (the daemon's path,
// restarted on a learner's state file), once a prefix has chosen a
// setting whose p99 a twentieth of the default's flows outlast, the
// control block the kernel reads holds a 4 ‰ holdout, not the configured
// 10 ‰;
// an external learner's model keeps the configured share.
func TestHoldoutNarrowedInKernel(t *testing.T) {
	r := newRig(t)
	grid := []Setting{Default, aggressive}
	stateDir := t.TempDir()
	l := chosen(t, aggressive, []netip.Addr{testbed.ServerAddr},
		[]func(int) time.Duration{func(i int) time.Duration {
			if i%20 == 0 {
				return time.Second
			}
			return 5 * time.Millisecond
		}},
		[]func(int) time.Duration{func(int) time.Duration { return 5 * time.Millisecond }})
	if err := l.Save(filepath.Join(stateDir, StateFile)); err != nil {
		t.Fatal(err)
	}
	for _, external := range []bool{false, true} {
		loop, err := Subsystem().Open(pipeline.Env{Model: ModelName, PinRoot: r.pinRoot, StateDir: stateDir, External: external,
			Options: model.Options{SleepTimeout: 50 * time.Millisecond, InitialMode: model.ModeRecommendation, HoldoutPermille: 10}},
			&SectionConfig{Cgroup: r.tb.Cgroup(), Grid: grid})
		if err != nil {
			t.Fatal(err)
		}
		m := loop.Model()
		if err := m.Start(model.RunConfig{}); err != nil {
			t.Fatal(err)
		}
		if err := loop.Period(); err != nil {
			t.Fatal(err)
		}
		ctl, err := loop.Objects().(*Objects).Control().Raw()
		if err != nil {
			t.Fatal(err)
		}
		want := uint32(4)
		if external {
			want = 10
		}
		if m.Mode() != model.ModeRecommendation || ctl.HoldoutPermille != want {
			t.Errorf("external %v: mode %v, the kernel's holdout %d‰, want RECOMMENDATION and %d‰", external, m.Mode(), ctl.HoldoutPermille, want)
		}
		if err := m.Stop(); err != nil {
			t.Fatal(err)
		}
		loop.Close()
	}
}
