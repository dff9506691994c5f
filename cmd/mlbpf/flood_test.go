package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/mlbpf/mlbpf/agent"
	"github.com/mlbpf/mlbpf/synthetic"
)

const floodConfig = `
interval: 200ms
models:
  - name: synthetic/demo
    max_mode: recommendation
    lease: 2s
    synthetic:
      pid: %d
      portion_bytes: %d
`

// procStatus returns fields of /proc/<pid>/status in bytes ("VmRSS",
// "VmHWM").
func procStatus(t *testing.T, pid int, fields ...string) map[string]uint64 {
	t.Helper()
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	out := map[string]uint64{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ":")
		if !ok || !slices.Contains(fields, k) {
			continue
		}
		n, err := strconv.ParseUint(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
		if err != nil {
			t.Fatalf("%s: %q", k, v)
		}
		out[k] = n << 10
	}
	return out
}

// scrape returns the value of a metric without labels from /metrics.
func scrape(t *testing.T, addr, metric string) float64 {
	t.Helper()
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	for l := range strings.SplitSeq(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, metric+" "); ok {
			f, err := strconv.ParseFloat(v, 64)
			if err != nil {
				t.Fatal(err)
			}
			return f
		}
	}
	t.Fatalf("/metrics has no %s", metric)
	return 0
}

// TestFlood points the synthetic hook at a process making system calls as
// fast as it can (a million or more a second), far beyond what the daemon
// reads with a small portion cap: the kernel loses records in a full ring
// and counts them, the daemon counts what it missed and marks the portions
// partial, 'mlbpf status' says so, the daemon's memory stays bounded, and
// it answers status and the agent socket promptly throughout.
func TestFlood(t *testing.T) {
	const portionBytes = 64 << 10
	// The flooder waits, stopped, while the daemon starts and the test
	// measures how fast it answers without a flood: the baseline the
	// answers under the flood are held to (a slow machine, a VM under
	// TCG, is slow with or without a flood).
	flooder := flood(t)
	if err := syscall.Kill(flooder, syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	s := newSession(t, fmt.Sprintf(floodConfig, flooder, portionBytes))
	metrics := freePort(t)
	p := s.spawn("--metrics-addr", metrics)

	ctx := context.Background()
	// latency measures a status command, and an agent's hello and models
	// on a connection of its own.
	latency := func() (status, agentOps time.Duration) {
		start := time.Now()
		if _, err := s.status(); err != nil {
			t.Fatal(err)
		}
		status = time.Since(start)

		start = time.Now()
		c, err := agent.Dial(ctx, s.socket)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := c.Hello(ctx, "flood test"); err != nil {
			t.Fatal(err)
		}
		if _, err := c.Models(ctx); err != nil {
			t.Fatal(err)
		}
		c.Close()
		return status, time.Since(start)
	}
	// The baseline: the median of a few measurements, so that one pause
	// of the machine does not inflate it.
	var baseStatuses, baseAgents []time.Duration
	for range 5 {
		time.Sleep(50 * time.Millisecond)
		st, ag := latency()
		baseStatuses, baseAgents = append(baseStatuses, st), append(baseAgents, ag)
	}
	slices.Sort(baseStatuses)
	slices.Sort(baseAgents)
	baseStatus, baseAgent := baseStatuses[len(baseStatuses)/2], baseAgents[len(baseAgents)/2]

	// The flood: measured from the moment it fills the ring (on a slow
	// machine the flooder is slow too, and takes longer to).
	if err := syscall.Kill(flooder, syscall.SIGCONT); err != nil {
		t.Fatal(err)
	}
	s.waitFor("the flood to fill the ring (records lost in the kernel)", func() bool { return s.pinned().Lost > 0 })
	var statuses, agents []time.Duration
	var peakHeap float64
	var rss0 uint64
	for i := range 30 {
		time.Sleep(100 * time.Millisecond)
		st, ag := latency()
		statuses, agents = append(statuses, st), append(agents, ag)
		peakHeap = max(peakHeap, scrape(t, metrics, "go_memstats_heap_inuse_bytes"))
		if i == 0 {
			rss0 = procStatus(t, p.pid(), "VmRSS")["VmRSS"]
		}
	}
	mem := procStatus(t, p.pid(), "VmRSS", "VmHWM")
	pm := s.pinned()
	st, err := s.status()
	if err != nil {
		t.Fatal(err)
	}
	ev := st[0].Daemon
	t.Logf("flood for 3s: %d records read, %d lost in the kernel (%d by the daemon's count), %d dropped at the cap, %d partial portions",
		ev.Records, pm.Lost, ev.Lost, ev.Dropped, ev.PartialPortions)
	t.Logf("memory: RSS %.1f MiB after 0.1s, %.1f MiB at the end, peak %.1f MiB; Go heap in use at most %.1f MiB (portion cap %d KiB)",
		float64(rss0)/(1<<20), float64(mem["VmRSS"])/(1<<20), float64(mem["VmHWM"])/(1<<20), peakHeap/(1<<20), portionBytes>>10)
	// Promptly, held to the answers without the flood (a slow machine, a
	// VM under TCG, is slow with or without it): the typical answer under
	// the flood (the median of 30) within 5 times the unflooded one plus
	// 20 ms, and no answer stalled, the worst within 10 times plus 500 ms.
	// Here the unflooded answers take a few ms, so both bounds are in
	// milliseconds, as the README says. (The worst of 30 in a 6.1 VM
	// under TCG was once 367 ms against 11.6 ms unflooded: the emulator's
	// own pauses, which a bound of 250 ms took for a stall.)
	slices.Sort(statuses)
	slices.Sort(agents)
	typical := func(base time.Duration) time.Duration { return 5*base + 20*time.Millisecond }
	worst := func(base time.Duration) time.Duration { return 10*base + 500*time.Millisecond }
	medianStatus, worstStatus := statuses[len(statuses)/2], statuses[len(statuses)-1]
	medianAgent, worstAgent := agents[len(agents)/2], agents[len(agents)-1]
	ms := func(d time.Duration) time.Duration { return d.Round(100 * time.Microsecond) }
	t.Logf("responsiveness without the flood: status %v, agent hello+models %v (medians of 5)", ms(baseStatus), ms(baseAgent))
	t.Logf("under the flood: status median %v (bound %v), worst %v (bound %v); agent median %v (bound %v), worst %v (bound %v)",
		ms(medianStatus), ms(typical(baseStatus)), ms(worstStatus), ms(worst(baseStatus)),
		ms(medianAgent), ms(typical(baseAgent)), ms(worstAgent), ms(worst(baseAgent)))

	if pm.Lost == 0 || ev.Lost == 0 || ev.PartialPortions == 0 {
		t.Fatalf("no losses counted under a flood: pins %d, daemon %+v", pm.Lost, ev)
	}
	if ev.Records == 0 {
		t.Fatal("the daemon read nothing")
	}
	out := s.must("status")
	if !strings.Contains(out, "lost in the kernel (ring full)") || !strings.Contains(out, "partial (EXTRACTED_PARTIALLY)") {
		t.Fatalf("status does not report the losses:\n%s", out)
	}
	// The newest portion while the flood goes on: partial, with its
	// losses, and within the cap. A portion covers one period, and on a
	// loaded machine the flooder can be off the CPU for a whole period
	// (CI saw a complete one once), so a few are looked at; each must
	// keep the cap.
	var portion agent.Portion
	for i := 0; ; i++ {
		if err := json.Unmarshal([]byte(s.must("dataset", "get", "synthetic/demo", "--max-records", "1")), &portion); err != nil {
			t.Fatal(err)
		}
		if int(portion.Size) > portionBytes/synthetic.RecordSize {
			t.Fatalf("portion under a flood: %d records, want at most %d", portion.Size, portionBytes/synthetic.RecordSize)
		}
		if portion.State == "EXTRACTED_PARTIALLY" && portion.Lost > 0 {
			break
		}
		if i == 20 {
			t.Fatalf("portion under a flood: %d portions in 2s, the last %s, %d records, %d lost; want one EXTRACTED_PARTIALLY with losses",
				i+1, portion.State, portion.Size, portion.Lost)
		}
		time.Sleep(100 * time.Millisecond)
	}
	// The bounds: a few portions of 64 KiB in the heap, whatever the
	// rate, and the whole process far below what unbounded buffering of a
	// million records a second would take.
	if peakHeap > 24<<20 {
		t.Errorf("Go heap in use reached %.1f MiB under the flood", peakHeap/(1<<20))
	}
	if mem["VmHWM"] > 64<<20 {
		t.Errorf("peak RSS %.1f MiB under the flood", float64(mem["VmHWM"])/(1<<20))
	}
	for _, c := range []struct {
		what       string
		base, m, w time.Duration
	}{{"status", baseStatus, medianStatus, worstStatus}, {"agent hello+models", baseAgent, medianAgent, worstAgent}} {
		if c.m > typical(c.base) || c.w > worst(c.base) {
			t.Errorf("%s answered slowly under the flood: median %v (bound %v), worst %v (bound %v); %v without the flood",
				c.what, c.m, typical(c.base), c.w, worst(c.base), c.base)
		}
	}

	p.signal(syscall.SIGTERM)
	if code, sig := p.wait(10 * time.Second); code != 0 {
		t.Fatalf("exit status %d (%v) after SIGTERM under the flood\n%s", code, sig, p.logs)
	}
}
