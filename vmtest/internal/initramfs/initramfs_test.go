package initramfs

import (
	"bytes"
	"io"
	"io/fs"
	"strings"
	"testing"
)

type entry struct {
	name     string
	mode     uint32
	data     string
	link     string
	rdev     [2]uint32
	dataSize int64
}

func readAll(t *testing.T, r io.Reader) []entry {
	t.Helper()
	cr := NewReader(r)
	var got []entry
	for {
		h, err := cr.Next()
		if err == io.EOF {
			return got
		}
		if err != nil {
			t.Fatal(err)
		}
		e := entry{name: h.Name, mode: h.Mode, link: h.Linkname, rdev: [2]uint32{h.RdevMajor, h.RdevMinor}, dataSize: h.Size}
		if h.Type() == TypeRegular {
			data, err := io.ReadAll(cr)
			if err != nil {
				t.Fatal(err)
			}
			e.data = string(data)
		}
		got = append(got, e)
	}
}

func TestRoundTrip(t *testing.T) {
	var buf bytes.Buffer
	w := NewWriter(&buf)
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(w.CharDev("/dev/console", 0o600, 5, 1))
	must(w.Bytes("/init", 0o755, []byte("#!init")))
	must(w.Dir("/tmp", fs.ModeSticky|0o777))
	must(w.Bytes("src/pkg/testdata/a.txt", 0o644, []byte("abc"))) // odd size: padding
	must(w.Bytes("src/pkg/testdata/empty", 0o644, nil))
	must(w.Symlink("bin/sh", "/init"))
	must(w.Close())

	if buf.Len()%4 != 0 {
		t.Errorf("archive is %d bytes, want a multiple of 4", buf.Len())
	}
	if !strings.HasSuffix(strings.TrimRight(buf.String(), "\x00"), "TRAILER!!!") {
		t.Error("archive does not end with the trailer")
	}

	want := []entry{
		{name: "dev", mode: TypeDir | 0o755},
		{name: "dev/console", mode: TypeCharDev | 0o600, rdev: [2]uint32{5, 1}},
		{name: "init", mode: TypeRegular | 0o755, data: "#!init", dataSize: 6},
		{name: "tmp", mode: TypeDir | 0o1777},
		{name: "src", mode: TypeDir | 0o755},
		{name: "src/pkg", mode: TypeDir | 0o755},
		{name: "src/pkg/testdata", mode: TypeDir | 0o755},
		{name: "src/pkg/testdata/a.txt", mode: TypeRegular | 0o644, data: "abc", dataSize: 3},
		{name: "src/pkg/testdata/empty", mode: TypeRegular | 0o644},
		{name: "bin", mode: TypeDir | 0o755},
		{name: "bin/sh", mode: TypeSymlink | 0o777, link: "/init", dataSize: 5},
	}
	got := readAll(t, &buf)
	if len(got) != len(want) {
		t.Fatalf("got %d entries, want %d:\n%+v", len(got), len(want), got)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("entry %d:\n got %+v\nwant %+v", i, got[i], want[i])
		}
	}
}

func TestDeterministic(t *testing.T) {
	build := func() []byte {
		var buf bytes.Buffer
		w := NewWriter(&buf)
		if err := w.Bytes("a/b", 0o644, []byte("x")); err != nil {
			t.Fatal(err)
		}
		if err := w.Close(); err != nil {
			t.Fatal(err)
		}
		return buf.Bytes()
	}
	if !bytes.Equal(build(), build()) {
		t.Error("the same input gave different archives")
	}
}

func TestHeaderFormat(t *testing.T) {
	var buf bytes.Buffer
	w := NewWriter(&buf)
	if err := w.Bytes("init", 0o755, []byte("12345")); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	// magic, ino 1, mode 0100755, uid, gid, nlink 1, mtime, size 5,
	// devmajor, devminor, rdevmajor, rdevminor, namesize 5, check.
	want := "070701" + "00000001" + "000081ed" + "00000000" + "00000000" + "00000001" +
		"00000000" + "00000005" + "00000000" + "00000000" + "00000000" + "00000000" +
		"00000005" + "00000000" + "init\x00"
	if got := buf.String()[:len(want)]; got != want {
		t.Errorf("header:\n got %q\nwant %q", got, want)
	}
	// 110 + 5 name bytes padded to 116, then 5 data bytes padded to 8.
	if data := buf.String()[116:124]; data != "12345\x00\x00\x00" {
		t.Errorf("data and padding: %q", data)
	}
}

func TestDuplicate(t *testing.T) {
	w := NewWriter(io.Discard)
	if err := w.Bytes("a", 0o644, nil); err != nil {
		t.Fatal(err)
	}
	if err := w.Bytes("/a", 0o644, nil); err == nil {
		t.Error("adding a path twice: no error")
	}
}

func TestShortReader(t *testing.T) {
	w := NewWriter(io.Discard)
	if err := w.File("a", 0o644, 10, strings.NewReader("short")); err == nil {
		t.Error("a reader shorter than the size: no error")
	}
}
