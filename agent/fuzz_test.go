package agent

import (
	"bufio"
	"bytes"
	"encoding/json"
	"log/slog"
	"net"
	"os"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// connPair returns the two ends of a connected Unix stream socket pair.
func connPair(tb testing.TB) (server, client *net.UnixConn) {
	tb.Helper()
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		tb.Fatal(err)
	}
	conn := func(fd int) *net.UnixConn {
		f := os.NewFile(uintptr(fd), "socketpair")
		defer f.Close()
		c, err := net.FileConn(f)
		if err != nil {
			tb.Fatal(err)
		}
		return c.(*net.UnixConn)
	}
	return conn(fds[0]), conn(fds[1])
}

// maxFuzzLines bounds the requests of one input: the server disconnects
// a client that lets hundreds of answers pile up, and this one reads them
// as they come but may be descheduled.
const maxFuzzLines = 128

// FuzzServer feeds a server arbitrary request lines, as a client on the
// socket could send them, and checks that it answers every non-empty line
// with exactly one well-formed response, in order, echoing the id of each
// request that decodes, and then lets the connection go: no input panics
// it, hangs it, or leaks a connection.
func FuzzServer(f *testing.F) {
	b := &fakeBackend{}
	s := &Server{backend: b, log: slog.New(slog.DiscardHandler), conns: map[*serverConn]struct{}{}}
	for _, seed := range []string{
		`{"id":1,"op":"hello","agent":"fuzz"}`,
		`{"id":2,"op":"models"}` + "\n" + `{"id":3,"op":"subscribe","model":"synthetic/demo"}` + "\n" + `{"id":4,"op":"unsubscribe","model":"synthetic/demo"}`,
		`{"id":5,"op":"fetch","model":"synthetic/demo","offset":10,"records":true,"raw":true}`,
		`{"id":6,"op":"discard","model":"synthetic/demo","offset":18446744073709551615}`,
		`{"id":7,"op":"recommend","model":"synthetic/demo","key":"5","value":"bad","operator":true}`,
		`{"id":8,"op":"shutdown"}`,
		`{"id":-1,"op":"hello"}`,
		`{"id":1e400,"op":"hello"}`,
		`{"op":"subscribe","model":"tcp/rto"}` + "\r\n\r\n" + `{"op":"fly"}`,
		`null` + "\n" + `[]` + "\n" + `"hello"` + "\n" + `{`,
		`{"id":9,"op":"hello","op":"shutdown"}`,
		"\xff\xfe{\"id\":10}",
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, input []byte) {
		lines := bytes.Split(input, []byte("\n"))
		if len(lines) > maxFuzzLines {
			input = bytes.Join(lines[:maxFuzzLines], []byte("\n"))
			lines = lines[:maxFuzzLines]
		}
		var want []*uint64 // per non-empty line: the id to echo, nil if it does not decode
		for _, l := range lines {
			l = bytes.TrimSuffix(l, []byte("\r"))
			if len(l) == 0 {
				continue
			}
			var req Request
			if json.Unmarshal(l, &req) != nil {
				want = append(want, nil)
				continue
			}
			id := req.ID
			want = append(want, &id)
		}

		srv, cli := connPair(t)
		defer cli.Close()
		s.serve(srv, 0, 1)
		go func() {
			_, _ = cli.Write(input)
			_ = cli.CloseWrite()
		}()
		_ = cli.SetReadDeadline(time.Now().Add(10 * time.Second))
		sc := bufio.NewScanner(cli)
		sc.Buffer(nil, 64<<20)
		var got []Response
		for sc.Scan() {
			var m Message
			if err := json.Unmarshal(sc.Bytes(), &m); err != nil {
				t.Fatalf("the server sent a line that is not a message: %q: %v", sc.Bytes(), err)
			}
			if m.Event != nil {
				continue
			}
			if m.OK == (m.Error != "") {
				t.Fatalf("a response must be ok or an error, not both or neither: %q", sc.Bytes())
			}
			got = append(got, m.Response)
		}
		if err := sc.Err(); err != nil {
			t.Fatalf("reading the answers: %v (did the server hang?)", err)
		}
		if len(got) != len(want) {
			t.Fatalf("%d responses to %d request lines", len(got), len(want))
		}
		for i, r := range got {
			switch {
			case want[i] == nil && (r.ID != 0 || !strings.HasPrefix(r.Error, "malformed request: ")):
				t.Fatalf("response %d to a malformed line: %+v", i, r)
			case want[i] != nil && r.ID != *want[i]:
				t.Fatalf("response %d has id %d, want %d", i, r.ID, *want[i])
			}
		}
		s.wg.Wait()
		if n := s.Connections(); n != 0 {
			t.Fatalf("%d connections left after the client went away", n)
		}
	})
}
