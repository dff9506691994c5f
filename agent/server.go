package agent

import (
	"bufio"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// Backend is what a Server serves: the daemon implements it.
type Backend interface {
	Hello() Hello
	Models() []ModelInfo
	// Subscribe sends the model's events to sink until cancel is called.
	// sink must not block.
	Subscribe(model string, client uint64, sink func(Event)) (cancel func(), err error)
	// Fetch returns a portion of the model's dataset: the one at offset,
	// or the newest.
	Fetch(model string, offset *uint64, records, raw bool) (*Portion, error)
	// Discard tells the daemon client is done with a portion (the
	// portion at offset; every retained portion when offset is nil and
	// the client is not subscribed).
	Discard(model string, offset *uint64, client uint64) error
	// Recommend validates and applies a recommendation.
	Recommend(ctx context.Context, rec Recommendation, agent string) (Recommendation, error)
	// Control carries out an operator's command ('mlbpf mode', 'start',
	// 'stop'): it answers once the kernel holds what was asked, or
	// refuses saying why.
	Control(ctx context.Context, req ControlRequest, agent string) (ControlResult, error)
	// Withdraw removes the recommendation for rec.Key (validated as a
	// recommendation's key is), an operator's or the learner's, and
	// answers once the key is gone from the kernel's map.
	Withdraw(ctx context.Context, rec Recommendation, agent string) (Recommendation, error)
	// Recommendations lists a model's recommendation map.
	Recommendations(model string) ([]Entry, error)
	// Reload has the daemon re-read its configuration and apply it, all
	// of it or, refusing, nothing.
	Reload(ctx context.Context, agent string) (ReloadResult, error)
	// Shutdown asks the daemon to stop its models and exit, as SIGTERM
	// does ('mlbpf rollback').
	Shutdown(reason string)
}

// Limits of a Server.
const (
	MaxLineBytes   = 1 << 20 // a request line
	MaxConnections = 32
	// sendQueue is how many messages may wait for a slow client before
	// it is disconnected.
	sendQueue = 256
)

// Server serves the agent protocol on a Unix socket.
type Server struct {
	backend Backend
	log     *slog.Logger
	ln      *net.UnixListener
	path    string

	mu     sync.Mutex
	conns  map[*serverConn]struct{}
	nextID uint64
	closed bool
	wg     sync.WaitGroup
}

// Listen creates the socket at path, mode 0600, replacing a stale socket
// left there (the caller holds the daemon's lock, so no other daemon
// listens on it). Its directory is created, mode 0700, if missing.
func Listen(path string, backend Backend, log *slog.Logger) (*Server, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("creating the agent socket's directory: %w", err)
	}
	if fi, err := os.Lstat(path); err == nil {
		if fi.Mode().Type() != fs.ModeSocket {
			return nil, fmt.Errorf("creating the agent socket: %s exists and is not a socket: remove it or choose another --socket", path)
		}
		if err := os.Remove(path); err != nil {
			return nil, fmt.Errorf("removing the stale agent socket: %w", err)
		}
	}
	// The socket is created with the umask's permissions: make them
	// 0600 from the start, so there is no window where others may
	// connect (peers are checked anyway).
	old := unix.Umask(0o177)
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	unix.Umask(old)
	if err != nil {
		return nil, fmt.Errorf("creating the agent socket: %w", err)
	}
	ln.SetUnlinkOnClose(true)
	if err := os.Chmod(path, 0o600); err != nil {
		ln.Close()
		return nil, fmt.Errorf("creating the agent socket: %w", err)
	}
	s := &Server{backend: backend, log: log, ln: ln, path: path, conns: map[*serverConn]struct{}{}}
	s.wg.Add(1)
	go s.accept()
	return s, nil
}

// Path returns the socket's path.
func (s *Server) Path() string { return s.path }

// Connections returns the number of connected clients.
func (s *Server) Connections() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.conns)
}

// Close tells every client the daemon is closing, disconnects them,
// removes the socket and waits for the connections to end.
func (s *Server) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	conns := make([]*serverConn, 0, len(s.conns))
	for c := range s.conns {
		conns = append(conns, c)
	}
	s.mu.Unlock()
	err := s.ln.Close()
	for _, c := range conns {
		c.send(Message{Event: &Event{Type: EventClosing}})
		c.close()
	}
	s.wg.Wait()
	return err
}

func (s *Server) accept() {
	defer s.wg.Done()
	for {
		nc, err := s.ln.AcceptUnix()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			s.log.Warn("agent socket: accept failed", "err", err)
			time.Sleep(100 * time.Millisecond)
			continue
		}
		uid, pid, err := peerCred(nc)
		if err != nil {
			s.log.Warn("agent socket: refusing a peer whose credentials cannot be read", "err", err)
			nc.Close()
			continue
		}
		if uid != 0 && uid != uint32(os.Getuid()) {
			s.log.Warn("agent socket: refusing a peer of another user", "uid", uid, "pid", pid)
			refuse(nc, fmt.Sprintf("permission denied: uid %d may not use this socket (root or uid %d only)", uid, os.Getuid()))
			continue
		}
		s.serve(nc, uid, pid)
	}
}

// serve serves one connection whose peer was admitted, until it or the
// server closes; it returns at once.
func (s *Server) serve(nc *net.UnixConn, uid uint32, pid int32) {
	s.mu.Lock()
	if s.closed || len(s.conns) >= MaxConnections {
		full := !s.closed
		s.mu.Unlock()
		if full {
			refuse(nc, fmt.Sprintf("too many connections (%d)", MaxConnections))
		} else {
			nc.Close()
		}
		return
	}
	s.nextID++
	c := &serverConn{s: s, nc: nc, id: s.nextID, pid: pid, out: make(chan Message, sendQueue),
		done: make(chan struct{}), subs: map[string]func(){}}
	s.conns[c] = struct{}{}
	s.wg.Add(2)
	s.mu.Unlock()
	s.log.Debug("agent connected", "client", c.id, "pid", pid, "uid", uid)
	go c.writeLoop()
	go c.readLoop()
}

func refuse(nc *net.UnixConn, msg string) {
	_ = nc.SetWriteDeadline(time.Now().Add(time.Second))
	b, _ := json.Marshal(Message{Response: Response{Error: msg}})
	_, _ = nc.Write(append(b, '\n'))
	nc.Close()
}

// peerCred returns the uid and pid of the process on the other end
// (SO_PEERCRED).
func peerCred(nc *net.UnixConn) (uid uint32, pid int32, err error) {
	raw, err := nc.SyscallConn()
	if err != nil {
		return 0, 0, err
	}
	var cred *unix.Ucred
	var serr error
	if err := raw.Control(func(fd uintptr) {
		cred, serr = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED)
	}); err != nil {
		return 0, 0, err
	}
	if serr != nil {
		return 0, 0, serr
	}
	return cred.Uid, cred.Pid, nil
}

type serverConn struct {
	s    *Server
	nc   *net.UnixConn
	id   uint64
	pid  int32
	out  chan Message
	done chan struct{}

	mu     sync.Mutex
	agent  string
	subs   map[string]func() // model → cancel
	closed bool
}

// send queues m; a client that lets sendQueue messages pile up is
// disconnected rather than allowed to hold the daemon back.
func (c *serverConn) send(m Message) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return
	}
	select {
	case c.out <- m:
	default:
		c.s.log.Warn("agent too slow: disconnecting it", "client", c.id, "agent", c.agent, "queued", sendQueue)
		c.closeLocked()
	}
}

func (c *serverConn) close() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.closeLocked()
}

func (c *serverConn) closeLocked() {
	if c.closed {
		return
	}
	c.closed = true
	close(c.done)
	_ = c.nc.CloseRead()
}

func (c *serverConn) writeLoop() {
	defer c.s.wg.Done()
	w := bufio.NewWriter(c.nc)
	enc := json.NewEncoder(w)
	write := func(m Message) bool {
		_ = c.nc.SetWriteDeadline(time.Now().Add(10 * time.Second))
		if err := enc.Encode(m); err != nil {
			return false
		}
		if len(c.out) == 0 {
			return w.Flush() == nil
		}
		return true
	}
	defer c.nc.Close()
	for {
		select {
		case m := <-c.out:
			if !write(m) {
				c.close()
				return
			}
		case <-c.done:
			// Flush what is queued (the closing event, a last answer).
			for {
				select {
				case m := <-c.out:
					if !write(m) {
						return
					}
				default:
					_ = w.Flush()
					return
				}
			}
		}
	}
}

func (c *serverConn) readLoop() {
	defer c.s.wg.Done()
	defer func() {
		c.mu.Lock()
		subs := c.subs
		c.subs = nil
		c.mu.Unlock()
		for _, cancel := range subs {
			cancel()
		}
		c.close()
		c.s.mu.Lock()
		delete(c.s.conns, c)
		c.s.mu.Unlock()
		c.s.log.Debug("agent disconnected", "client", c.id, "agent", c.agent)
	}()
	sc := bufio.NewScanner(c.nc)
	sc.Buffer(make([]byte, 0, 4096), MaxLineBytes)
	for sc.Scan() {
		line := sc.Bytes()
		if len(line) == 0 {
			continue
		}
		var req Request
		if err := json.Unmarshal(line, &req); err != nil {
			c.send(Message{Response: Response{Error: "malformed request: " + err.Error()}})
			continue
		}
		c.send(Message{Response: c.handle(&req)})
	}
	if err := sc.Err(); errors.Is(err, bufio.ErrTooLong) {
		c.send(Message{Response: Response{Error: fmt.Sprintf("request longer than %d bytes", MaxLineBytes)}})
	}
}

// name names the client for the daemon's logs: the agent it said it is,
// or its connection and pid.
func (c *serverConn) name() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.agent == "" {
		return fmt.Sprintf("client %d (pid %d)", c.id, c.pid)
	}
	return c.agent
}

func (c *serverConn) handle(req *Request) Response {
	resp := Response{ID: req.ID}
	fail := func(err error) Response {
		resp.Error = err.Error()
		return resp
	}
	b := c.s.backend
	switch req.Op {
	case OpHello:
		c.mu.Lock()
		c.agent = req.Agent
		c.mu.Unlock()
		h := b.Hello()
		resp.Hello = &h
		c.s.log.Debug("agent said hello", "client", c.id, "agent", req.Agent, "pid", c.pid)
	case OpModels:
		resp.Models = b.Models()
	case OpSubscribe:
		c.mu.Lock()
		_, dup := c.subs[req.Model]
		c.mu.Unlock()
		if dup {
			break
		}
		cancel, err := b.Subscribe(req.Model, c.id, func(ev Event) { c.send(Message{Event: &ev}) })
		if err != nil {
			return fail(err)
		}
		c.mu.Lock()
		if c.subs == nil { // disconnected meanwhile
			c.mu.Unlock()
			cancel()
			return fail(ErrClosed)
		}
		c.subs[req.Model] = cancel
		c.mu.Unlock()
	case OpUnsubscribe:
		c.mu.Lock()
		cancel := c.subs[req.Model]
		delete(c.subs, req.Model)
		c.mu.Unlock()
		if cancel != nil {
			cancel()
		}
	case OpFetch:
		p, err := b.Fetch(req.Model, req.Offset, req.Records, req.Raw)
		if err != nil {
			return fail(err)
		}
		resp.Portion = p
	case OpDiscard:
		if err := b.Discard(req.Model, req.Offset, c.id); err != nil {
			return fail(err)
		}
	case OpRecommend:
		rec, err := b.Recommend(context.Background(), Recommendation{Model: req.Model, Key: req.Key, Value: req.Value, Operator: req.Operator}, c.name())
		if err != nil {
			return fail(err)
		}
		resp.Recommendation = &rec
	case OpControl:
		res, err := b.Control(context.Background(), ControlRequest{Model: req.Model, Action: req.Action, Mode: req.Mode}, c.name())
		if err != nil {
			return fail(err)
		}
		resp.Control = &res
	case OpWithdraw:
		rec, err := b.Withdraw(context.Background(), Recommendation{Model: req.Model, Key: req.Key, Operator: true}, c.name())
		if err != nil {
			return fail(err)
		}
		resp.Recommendation = &rec
	case OpRecommendations:
		es, err := b.Recommendations(req.Model)
		if err != nil {
			return fail(err)
		}
		if es == nil {
			es = []Entry{}
		}
		resp.Entries = &es
	case OpReload:
		res, err := b.Reload(context.Background(), c.name())
		if err != nil {
			return fail(err)
		}
		resp.Reload = &res
	case OpShutdown:
		c.mu.Lock()
		name := c.agent
		c.mu.Unlock()
		b.Shutdown(fmt.Sprintf("shutdown requested on the socket by %s (pid %d)", cmp.Or(name, "a client"), c.pid))
	default:
		return fail(fmt.Errorf("unknown op %q (want hello, models, subscribe, unsubscribe, fetch, discard, recommend, control, withdraw, recommendations, reload, shutdown)", req.Op))
	}
	resp.OK = true
	return resp
}
