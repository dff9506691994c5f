package agent

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/mlbpf/mlbpf/internal/testutil"
)

// fakeBackend serves one model, "synthetic/demo", whose records are 4-byte
// keys.
type fakeBackend struct {
	mu       sync.Mutex
	sinks    map[uint64]func(Event)
	recs     []Recommendation
	shutdown string
	discards []uint64
}

func (b *fakeBackend) Hello() Hello {
	return Hello{Protocol: ProtocolVersion, Daemon: "mlbpf test", PID: os.Getpid()}
}

func (b *fakeBackend) Models() []ModelInfo {
	return []ModelInfo{{Model: "synthetic/demo", State: "RUNNING", Mode: "LEARNING", Datasets: true, Portions: []uint64{10}}}
}

func (b *fakeBackend) Subscribe(model string, client uint64, sink func(Event)) (func(), error) {
	if model != "synthetic/demo" {
		return nil, fmt.Errorf("model %q is not run by this daemon", model)
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.sinks == nil {
		b.sinks = map[uint64]func(Event){}
	}
	b.sinks[client] = sink
	return func() {
		b.mu.Lock()
		defer b.mu.Unlock()
		delete(b.sinks, client)
	}, nil
}

func (b *fakeBackend) publish(ev Event) int {
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, s := range b.sinks {
		s(ev)
	}
	return len(b.sinks)
}

func (b *fakeBackend) Fetch(model string, offset *uint64, records, raw bool) (*Portion, error) {
	if offset != nil && *offset != 10 {
		return nil, fmt.Errorf("portion %d is OBSOLETE", *offset)
	}
	p := &Portion{Model: model, Offset: 10, Size: 2, RecordSize: 4, State: "EXTRACTED_COMPLETELY"}
	if raw {
		p.Data = []byte{1, 0, 0, 0, 2, 0, 0, 0}
	}
	if records {
		p.Records = []json.RawMessage{json.RawMessage(`{"key":1}`), json.RawMessage(`{"key":2}`)}
	}
	return p, nil
}

func (b *fakeBackend) Discard(model string, offset *uint64, client uint64) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if offset != nil {
		b.discards = append(b.discards, *offset)
	}
	return nil
}

func (b *fakeBackend) Recommend(_ context.Context, rec Recommendation, who string) (Recommendation, error) {
	if rec.Value == "bad" {
		return rec, errors.New("invalid recommendation: value \"bad\"")
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	b.recs = append(b.recs, rec)
	rec.Generation = 7
	return rec, nil
}

func (b *fakeBackend) Control(_ context.Context, req ControlRequest, who string) (ControlResult, error) {
	if req.Action != ActionMode {
		return ControlResult{}, fmt.Errorf("%s is stopped: 'mlbpf start' first", req.Model)
	}
	return ControlResult{Model: req.Model, Changed: true, Kernel: ControlBlock{State: "RUNNING", Mode: strings.ToUpper(req.Mode), Generation: 8}}, nil
}

func (b *fakeBackend) Withdraw(_ context.Context, rec Recommendation, who string) (Recommendation, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.recs = slices.DeleteFunc(b.recs, func(r Recommendation) bool { return r.Key == rec.Key })
	return rec, nil
}

func (b *fakeBackend) Recommendations(model string) ([]Entry, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	var es []Entry
	for _, r := range b.recs {
		es = append(es, Entry{Key: r.Key, Value: r.Value, By: "operator"})
	}
	return es, nil
}

func (b *fakeBackend) Reload(context.Context, string) (ReloadResult, error) {
	return ReloadResult{Changes: []string{}}, nil
}

func (b *fakeBackend) Shutdown(reason string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.shutdown = reason
}

func listen(t *testing.T) (*Server, *fakeBackend, string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "run", "agent.sock")
	b := &fakeBackend{}
	s, err := Listen(path, b, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s, b, path
}

func TestSocketMode(t *testing.T) {
	_, _, path := listen(t)
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 || fi.Mode().Type() != os.ModeSocket {
		t.Fatalf("socket mode %v, want a socket with 0600", fi.Mode())
	}
}

func TestListenReplacesStaleSocketOnly(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "agent.sock")
	if err := os.WriteFile(path, []byte("not a socket"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := Listen(path, &fakeBackend{}, nil); err == nil || !strings.Contains(err.Error(), "is not a socket") {
		t.Fatalf("Listen over a regular file: %v", err)
	}
	os.Remove(path)
	// A socket left by a dead daemon is replaced.
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	ln.SetUnlinkOnClose(false)
	ln.Close()
	s, err := Listen(path, &fakeBackend{}, nil)
	if err != nil {
		t.Fatalf("Listen over a stale socket: %v", err)
	}
	s.Close()
	if _, err := os.Stat(path); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("socket left after Close: %v", err)
	}
}

func TestProtocol(t *testing.T) {
	s, b, path := listen(t)
	ctx := context.Background()
	c, err := Dial(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	h, err := c.Hello(ctx, "test")
	if err != nil || h.Protocol != ProtocolVersion || h.PID != os.Getpid() {
		t.Fatalf("hello: %+v %v", h, err)
	}
	models, err := c.Models(ctx)
	if err != nil || len(models) != 1 || models[0].Model != "synthetic/demo" {
		t.Fatalf("models: %+v %v", models, err)
	}
	if err := c.Subscribe(ctx, "tcp/none"); err == nil {
		t.Fatal("subscribed to a model the daemon does not run")
	}
	if err := c.Subscribe(ctx, "synthetic/demo"); err != nil {
		t.Fatal(err)
	}
	if n := b.publish(Event{Type: EventDataset, Model: "synthetic/demo", Portion: &Portion{Offset: 10}}); n != 1 {
		t.Fatalf("%d subscribers", n)
	}
	select {
	case ev := <-c.Events():
		if ev.Type != EventDataset || ev.Portion.Offset != 10 {
			t.Fatalf("event %+v", ev)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no event")
	}
	off := uint64(10)
	p, err := c.Fetch(ctx, "synthetic/demo", FetchOptions{Offset: &off, Records: true, Raw: true})
	if err != nil {
		t.Fatal(err)
	}
	if p.Size != 2 || len(p.Records) != 2 || string(p.Record(1)) != "\x02\x00\x00\x00" {
		t.Fatalf("portion %+v", p)
	}
	stale := uint64(3)
	_, err = c.Fetch(ctx, "synthetic/demo", FetchOptions{Offset: &stale})
	var re *RemoteError
	if !errors.As(err, &re) || !strings.Contains(re.Msg, "OBSOLETE") {
		t.Fatalf("fetching an evicted portion: %v", err)
	}
	rec, err := c.Recommend(ctx, Recommendation{Model: "synthetic/demo", Key: "5", Value: "42"})
	if err != nil || rec.Generation != 7 {
		t.Fatalf("recommend: %+v %v", rec, err)
	}
	if _, err := c.Recommend(ctx, Recommendation{Model: "synthetic/demo", Key: "5", Value: "bad"}); !errors.As(err, &re) {
		t.Fatalf("a refused recommendation: %v", err)
	}
	if res, err := c.Control(ctx, ControlRequest{Model: "synthetic/demo", Action: ActionMode, Mode: "emergency"}); err != nil ||
		res.Kernel.Mode != "EMERGENCY" || res.Kernel.Generation != 8 {
		t.Fatalf("control: %+v %v", res, err)
	}
	if _, err := c.Control(ctx, ControlRequest{Model: "synthetic/demo", Action: ActionStart}); !errors.As(err, &re) || !strings.Contains(re.Msg, "'mlbpf start' first") {
		t.Fatalf("a refused control: %v", err)
	}
	if err := c.Discard(ctx, "synthetic/demo", &off); err != nil {
		t.Fatal(err)
	}
	if err := c.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	b.mu.Lock()
	if len(b.recs) != 1 || len(b.discards) != 1 || !strings.Contains(b.shutdown, "test") {
		t.Errorf("backend saw recs %v discards %v shutdown %q", b.recs, b.discards, b.shutdown)
	}
	b.mu.Unlock()

	// A malformed line and an unknown op are answered, not fatal.
	raw, err := net.Dial("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	fmt.Fprintf(raw, "{nope\n{\"id\":3,\"op\":\"fly\"}\n")
	sc := bufio.NewScanner(raw)
	for i, want := range []string{"malformed request", `unknown op`} {
		if !sc.Scan() {
			t.Fatalf("line %d: %v", i, sc.Err())
		}
		if !strings.Contains(sc.Text(), want) {
			t.Fatalf("line %d: %s, want %q", i, sc.Text(), want)
		}
	}

	// Closing the server tells the clients.
	s.Close()
	for ev := range c.Events() {
		if ev.Type == EventClosing {
			return
		}
	}
	t.Fatal("no closing event")
}

// learnerFunc is a Learner recommending key+1 for every key it sees.
type testLearner struct {
	mu       sync.Mutex
	seen     int
	feedback int
}

func (l *testLearner) Learn(_ context.Context, p *Portion) ([]Recommendation, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []Recommendation
	for _, r := range p.Records {
		var v struct{ Key int }
		if err := json.Unmarshal(r, &v); err != nil {
			return nil, err
		}
		l.seen++
		out = append(out, Recommendation{Key: fmt.Sprint(v.Key), Value: fmt.Sprint(v.Key + 1)})
	}
	return out, nil
}

func (l *testLearner) Feedback(context.Context, *Feedback) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.feedback++
}

func TestRun(t *testing.T) {
	_, b, path := listen(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	c, err := Dial(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	l := &testLearner{}
	done := make(chan error, 1)
	go func() { done <- Run(ctx, c, "synthetic/demo", l, RunOptions{Agent: "test"}) }()
	for b.publish(Event{}) == 0 {
		time.Sleep(10 * time.Millisecond)
	}
	b.publish(Event{Type: EventDataset, Model: "synthetic/demo", Portion: &Portion{Offset: 10}})
	b.publish(Event{Type: EventFeedback, Model: "synthetic/demo", Feedback: &Feedback{Outcomes: 3}})
	deadline := time.Now().Add(5 * time.Second)
	for {
		b.mu.Lock()
		n, d := len(b.recs), len(b.discards)
		b.mu.Unlock()
		l.mu.Lock()
		fb := l.feedback
		l.mu.Unlock()
		if n == 2 && d == 1 && fb == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after a portion: %d recommendations, %d discards, %d feedback", n, d, fb)
		}
		time.Sleep(10 * time.Millisecond)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

// asUser runs fn on a thread whose effective uid is uid (the rest of the
// process stays root): SO_PEERCRED and the socket's permissions see uid.
func asUser(t *testing.T, uid int, fn func()) {
	t.Helper()
	done := make(chan struct{})
	go func() {
		defer close(done)
		runtime.LockOSThread()
		if _, _, e := syscall.RawSyscall(syscall.SYS_SETRESUID, ^uintptr(0), uintptr(uid), ^uintptr(0)); e != 0 {
			runtime.UnlockOSThread()
			t.Errorf("setresuid: %v", e)
			return
		}
		fn()
		if _, _, e := syscall.RawSyscall(syscall.SYS_SETRESUID, ^uintptr(0), 0, ^uintptr(0)); e != 0 {
			return // the thread dies with the goroutine, still locked
		}
		runtime.UnlockOSThread()
	}()
	<-done
}

// TestPeerCredentials connects as another user: the socket's mode keeps it
// out, and with the mode opened up, SO_PEERCRED does.
func TestPeerCredentials(t *testing.T) {
	if os.Getuid() != 0 {
		testutil.Missing(t, "needs root to connect as another user: run the tests with sudo")
	}
	_, _, path := listen(t)
	for d := filepath.Dir(path); d != "/"; d = filepath.Dir(d) {
		if strings.HasPrefix(d, os.TempDir()+"/") {
			_ = os.Chmod(d, 0o755)
		}
	}
	connect := func() string {
		var out string
		asUser(t, 65534, func() {
			nc, err := net.Dial("unix", path)
			if err != nil {
				out = err.Error()
				return
			}
			defer nc.Close()
			fmt.Fprintf(nc, "{\"id\":1,\"op\":\"hello\"}\n")
			line, _ := bufio.NewReader(nc).ReadString('\n')
			out = line
		})
		return out
	}
	if out := connect(); !strings.Contains(out, "permission denied") {
		t.Fatalf("another user connected through a 0600 socket: %s", out)
	}
	if err := os.Chmod(path, 0o666); err != nil {
		t.Fatal(err)
	}
	if out := connect(); !strings.Contains(out, "uid 65534 may not use this socket") {
		t.Fatalf("another user was not refused by SO_PEERCRED: %s", out)
	}
}
