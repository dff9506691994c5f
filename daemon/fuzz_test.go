package daemon

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"net"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/cilium/ebpf"

	"github.com/mlbpf/mlbpf/agent"
	"github.com/mlbpf/mlbpf/internal/testutil"
	"github.com/mlbpf/mlbpf/loader"
	"github.com/mlbpf/mlbpf/model"
	"github.com/mlbpf/mlbpf/synthetic"
)

// FuzzRecordJSON: no bytes panic the record decoder of any subsystem
// (synthetic.DecodeRecord, tcp.DecodeConn), which the daemon runs on every
// record it publishes to agents as JSON; a record one accepts has the
// subsystem's size and marshals to a JSON object.
func FuzzRecordJSON(f *testing.F) {
	for _, s := range Subsystems() {
		rec := make([]byte, s.Records.Size)
		binaryPut16(rec[8:], s.Records.Kind)
		binaryPut16(rec[10:], uint16(s.Records.Size))
		f.Add(rec)
		f.Add(rec[:len(rec)-1])
		rec[12] = 0xff // arm
		f.Add(rec)
	}
	f.Add([]byte{})
	subs := Subsystems()
	f.Fuzz(func(t *testing.T, raw []byte) {
		for _, s := range subs {
			v, err := s.Records.JSON(raw)
			if err != nil {
				continue
			}
			if len(raw) < s.Records.Size {
				t.Fatalf("%s: accepted a record of %d bytes, want %d", s.Name, len(raw), s.Records.Size)
			}
			b, err := json.Marshal(v)
			if err != nil || len(b) == 0 || b[0] != '{' {
				t.Fatalf("%s: accepted record marshals to %q, %v", s.Name, b, err)
			}
		}
	})
}

func binaryPut16(b []byte, v uint16) { b[0], b[1] = byte(v), byte(v>>8) }

// maxProtocolLines bounds the requests of one input (a fetch answers with
// up to a portion's records).
const maxProtocolLines = 32

// FuzzAgentProtocol sends arbitrary request lines to a real daemon on its
// socket, as any local client could, except the shutdown request and an
// operator's stop (which it obeys). The daemon answers each line with one well-formed response,
// never panics or hangs, keeps running its model, answers the next
// client, lets go of the connection and its subscriptions, and never
// writes a recommendation its subsystem refuses: every value in the
// recommendation map stays within max_value.
func FuzzAgentProtocol(f *testing.F) {
	testutil.RequireBPF(f)
	const maxValue = 1000
	c := testConfig(f, syscallLoad(f), fmt.Sprintf("      max_value: %d\n", maxValue))
	td := start(f, c)
	s, err := td.d.find("synthetic/demo")
	if err != nil {
		f.Fatal(err)
	}
	recs, err := ebpf.LoadPinnedMap(filepath.Join(loader.PinDir(c.PinRoot, synthetic.Name, "demo"), "recommend"), nil)
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { recs.Close() })
	waitFor(f, "a published portion", func() bool { return len(s.hub.offsets()) > 0 })

	for _, seed := range []string{
		`{"id":1,"op":"hello","agent":"fuzz"}` + "\n" + `{"id":2,"op":"models"}`,
		`{"id":3,"op":"subscribe","model":"synthetic/demo"}` + "\n" + `{"id":4,"op":"fetch","model":"synthetic/demo","records":true,"raw":true}`,
		`{"id":5,"op":"fetch","model":"synthetic/demo","offset":0}` + "\n" + `{"id":6,"op":"discard","model":"synthetic/demo"}`,
		`{"id":7,"op":"recommend","model":"synthetic/demo","key":"5","value":"42","operator":true}`,
		`{"id":8,"op":"recommend","model":"synthetic/demo","key":"5","value":"1001"}`,
		`{"id":9,"op":"recommend","model":"synthetic/demo","key":" 4294967295 ","value":" 1000"}`,
		`{"id":10,"op":"recommend","model":"tcp/cc","key":"10.0.0.0/8","value":"bbr"}`,
		`{"id":11,"op":"unsubscribe","model":"synthetic/demo"}` + "\n" + `{"op":"subscribe","model":"../../etc"}`,
		`{"id":12,"op":"shutdown"}` + "\n" + `{"id":13,"op":"hello"}`,
		`{"id":14,"op":"control","model":"synthetic/demo","action":"mode","mode":"emergency"}` + "\n" +
			`{"id":15,"op":"control","model":"synthetic/demo","action":"mode","mode":"recommendation"}` + "\n" +
			`{"id":16,"op":"control","model":"synthetic/demo","action":"start"}` + "\n" +
			`{"id":17,"op":"control","model":"synthetic/demo","action":"mode","mode":"learning"}`,
		`{"id":18,"op":"control","model":"synthetic/demo","action":"stop"}` + "\n" + `{"id":19,"op":"control","action":"fly","mode":"turbo"}`,
		"{\n\x00\xff\n[1,2]\n" + `{"id":"x"}`,
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, input []byte) {
		var lines [][]byte
		for _, l := range bytes.Split(input, []byte("\n")) {
			l = bytes.TrimSuffix(l, []byte("\r"))
			var req agent.Request
			if json.Unmarshal(l, &req) == nil && (req.Op == agent.OpShutdown || req.Op == agent.OpControl && req.Action == agent.ActionStop) {
				continue
			}
			if len(lines) < maxProtocolLines {
				lines = append(lines, l)
			}
		}
		want := 0
		for _, l := range lines {
			if len(l) > 0 {
				want++
			}
		}
		nc, err := net.Dial("unix", c.Socket)
		if err != nil {
			t.Fatalf("dialing the daemon: %v", err)
		}
		defer nc.Close()
		go func() {
			_, _ = nc.Write(append(bytes.Join(lines, []byte("\n")), '\n'))
			_ = nc.(*net.UnixConn).CloseWrite()
		}()
		_ = nc.SetReadDeadline(time.Now().Add(10 * time.Second))
		sc := bufio.NewScanner(nc)
		sc.Buffer(nil, 64<<20)
		got := 0
		for sc.Scan() {
			var m agent.Message
			if err := json.Unmarshal(sc.Bytes(), &m); err != nil {
				t.Fatalf("the daemon sent a line that is not a message: %.200q: %v", sc.Bytes(), err)
			}
			if m.Event != nil {
				continue
			}
			got++
			if r := m.Recommendation; r != nil {
				if v, err := strconv.ParseUint(r.Value, 10, 32); err != nil || v > maxValue || r.Model != "synthetic/demo" {
					t.Fatalf("the daemon accepted recommendation %+v", r)
				}
			}
		}
		if err := sc.Err(); err != nil {
			t.Fatalf("reading the answers: %v (did the daemon hang?)", err)
		}
		if got != want {
			t.Fatalf("%d responses to %d request lines", got, want)
		}

		// The daemon is unharmed: it runs its model, answers the next
		// client, and held on to nothing of this one.
		select {
		case err := <-td.done:
			td.done <- err
			t.Fatalf("the daemon stopped: %v", err)
		default:
		}
		if st := s.m.State(); st != model.StateRunning {
			t.Fatalf("model %v after the input", st)
		}
		cl, err := agent.Dial(t.Context(), c.Socket)
		if err != nil {
			t.Fatal(err)
		}
		defer cl.Close()
		if _, err := cl.Hello(t.Context(), "fuzz check"); err != nil {
			t.Fatalf("hello after the input: %v", err)
		}
		var k uint32
		var v struct{ Value, Generation uint32 }
		it := recs.Iterate()
		for it.Next(&k, &v) {
			if v.Value > maxValue {
				t.Fatalf("the recommendation map holds %d for key %d, above max_value %d", v.Value, k, maxValue)
			}
		}
		for deadline := time.Now().Add(2 * time.Second); ; time.Sleep(time.Millisecond) {
			if n, _ := s.hub.agents(); n == 0 {
				break
			}
			if time.Now().After(deadline) {
				t.Fatal("a subscription outlived its connection")
			}
		}
	})
}
