package rto

import (
	"context"
	"math"
	"net"
	"testing"
	"time"

	"github.com/mlbpf/mlbpf/internal/testutil"
	"github.com/mlbpf/mlbpf/model"
	"github.com/mlbpf/mlbpf/tcp"
	"github.com/mlbpf/mlbpf/testbed"
)

// The sock_ops callback flags of a socket are one word shared by every
// sock_ops program that runs on it: the programs of its cgroup and of
// every cgroup above it. tcp/cc and tcp/rto may run on the same cgroup
// (and a stopped tcp/cc, its pins kept for the next daemon, stays attached
// to the root of a host where 'mlbpf run' ran once). These tests hold each
// to what is its own: neither may act on a socket because of a flag the
// other set, nor silence the other by clearing one.

// coexist is the tcp/rto rig with tcp/cc attached to the same cgroup.
type coexist struct {
	*rig
	cc *tcp.Objects
}

func newCoexist(t *testing.T) *coexist {
	t.Helper()
	r := newRig(t)
	testutil.RequireCongestionControl(t, "cubic", "reno")
	cc, err := tcp.Open(tcp.Config{
		PinRoot: testutil.PinRoot(t),
		Cgroup:  r.tb.Cgroup(),
		Default: "cubic", // the testbed namespaces' default
		Allowed: []string{"cubic", "reno"},
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cc.Detach()
		_ = cc.Close()
	})
	if err := cc.Attach(); err != nil {
		t.Fatal(err)
	}
	return &coexist{rig: r, cc: cc}
}

// setCC writes tcp/cc's control block: RUNNING in mode with a live lease
// and no holdout, or STOPPED with none (what a daemon leaves behind).
func (c *coexist) setCC(t *testing.T, mode model.Mode, running bool) {
	t.Helper()
	old, err := c.cc.Control().LoadControl()
	if err != nil {
		t.Fatal(err)
	}
	ctl := model.Control{State: model.StateStopped, Mode: mode, Generation: old.Generation + 1}
	if running {
		ctl.State, ctl.LeaseExpiresNs = model.StateRunning, math.MaxUint64
	}
	if err := c.cc.Control().StoreControl(ctl); err != nil {
		t.Fatal(err)
	}
}

// dial connects to the sink; cc, if not empty, is the application's own
// choice of congestion control, set before connect().
func (c *coexist) dial(t *testing.T, cc string) *net.TCPConn {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	conn, err := c.tb.Client.DialWith(ctx, testbed.CCDialer(cc), "tcp4", c.sink.Addr())
	if err != nil {
		t.Fatal(err)
	}
	return conn.(*net.TCPConn)
}

// state is what the kernel says a socket runs: its algorithm and timers.
type state struct {
	CC     string
	RTOMin time.Duration
}

func connState(t *testing.T, conn *net.TCPConn) state {
	t.Helper()
	g, err := connInfo(conn)
	if err != nil {
		t.Fatal(err)
	}
	cc, err := testbed.SocketCC(conn)
	if err != nil {
		t.Fatal(err)
	}
	return state{CC: cc, RTOMin: g.RTOMin}
}

// sendUntilState sends on conn until the socket is in want, for at most
// 2 s (sendUntil), and returns what it was last.
func sendUntilState(t *testing.T, conn *net.TCPConn, want state) state {
	t.Helper()
	var s state
	sendUntil(t, conn, func() bool {
		s = connState(t, conn)
		return s == want
	})
	return s
}

// TestCoexistWithStoppedTCPCC: a stopped tcp/cc on the same cgroup leaves
// alone the connections it did not decide: the application's own
// algorithm, and tcp/rto's live fallback.
func TestCoexistWithStoppedTCPCC(t *testing.T) {
	c := newCoexist(t)
	c.setCC(t, model.ModeLearning, false)
	c.setControl(t, model.ModeRecommendation, true)
	if err := c.o.Recommend(testbed.Prefix, aggressive); err != nil {
		t.Fatal(err)
	}
	conn := c.dial(t, "reno")
	defer conn.Close()
	if s := connState(t, conn); s.RTOMin == noTimers {
		t.Skip("this kernel cannot report a socket's RTO_MIN (getsockopt TCP_RTO_MIN_US: Linux 6.15)")
	}
	want := state{CC: "reno", RTOMin: 8 * time.Millisecond}
	if s := sendUntilState(t, conn, want); s != want {
		t.Fatalf("in tcp/rto's RECOMMENDATION, tcp/cc stopped: the connection runs %+v, want %+v", s, want)
	}
	// More data: a stopped tcp/cc has nothing to revert.
	if s := sendUntilState(t, conn, state{}); s != want {
		t.Fatalf("after more data, tcp/cc stopped: the connection runs %+v, want %+v (the application's reno)", s, want)
	}
	c.setControl(t, model.ModeEmergency, true)
	want.RTOMin = DefaultRTOMin
	if s := sendUntilState(t, conn, want); s != want {
		t.Fatalf("tcp/rto in EMERGENCY, tcp/cc stopped: the live connection runs %+v, want %+v", s, want)
	}
}

// TestCoexistBothFallBack: a connection both models changed goes back to
// each one's default when that model falls back, in either order.
func TestCoexistBothFallBack(t *testing.T) {
	c := newCoexist(t)
	if err := c.cc.Recommend(testbed.Prefix, "reno"); err != nil {
		t.Fatal(err)
	}
	if err := c.o.Recommend(testbed.Prefix, aggressive); err != nil {
		t.Fatal(err)
	}
	for _, rtoFirst := range []bool{true, false} {
		c.setCC(t, model.ModeRecommendation, true)
		c.setControl(t, model.ModeRecommendation, true)
		conn := c.dial(t, "")
		s := connState(t, conn)
		if s.RTOMin == noTimers {
			conn.Close()
			t.Skip("this kernel cannot report a socket's RTO_MIN (getsockopt TCP_RTO_MIN_US: Linux 6.15)")
		}
		want := state{CC: "reno", RTOMin: 8 * time.Millisecond}
		if s != want {
			conn.Close()
			t.Fatalf("both models in RECOMMENDATION: a new connection runs %+v, want %+v", s, want)
		}
		steps := []func(){
			func() { c.setControl(t, model.ModeEmergency, true); want.RTOMin = DefaultRTOMin },
			func() { c.setCC(t, model.ModeEmergency, true); want.CC = "cubic" },
		}
		if !rtoFirst {
			steps[0], steps[1] = steps[1], steps[0]
		}
		for i, step := range steps {
			step()
			if s := sendUntilState(t, conn, want); s != want {
				conn.Close()
				t.Fatalf("tcp/rto first %v, fallback %d of 2: the live connection runs %+v, want %+v", rtoFirst, i+1, s, want)
			}
		}
		conn.Close()
	}
}
