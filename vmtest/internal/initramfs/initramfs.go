package initramfs

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"path"
	"strconv"
	"strings"
)

const (
	magic      = "070701"
	headerSize = 110
	trailer    = "TRAILER!!!"
)

// File type bits of a cpio mode, as in <sys/stat.h>.
const (
	TypeMask    = 0o170000
	TypeDir     = 0o040000
	TypeRegular = 0o100000
	TypeSymlink = 0o120000
	TypeCharDev = 0o020000
)

// Header describes one archive entry.
type Header struct {
	Name      string // path without a leading slash, e.g. "dev/console"
	Mode      uint32 // file type bits and permissions
	Size      int64  // length of the data: file contents or symlink target
	RdevMajor uint32 // for device nodes: the device number
	RdevMinor uint32
	Linkname  string // for symlinks, filled in by Reader
	inode     uint32
	nlink     uint32
}

// Type returns the file type bits of h.Mode.
func (h *Header) Type() uint32 { return h.Mode & TypeMask }

// Writer writes a newc archive. Call Close to write the trailer.
type Writer struct {
	w      *bufio.Writer
	ino    uint32
	dirs   map[string]bool
	names  map[string]bool
	closed bool
}

// NewWriter returns a Writer writing to w.
func NewWriter(w io.Writer) *Writer {
	return &Writer{
		w:     bufio.NewWriterSize(w, 1<<20),
		dirs:  map[string]bool{"": true, ".": true},
		names: map[string]bool{},
	}
}

func clean(name string) (string, error) {
	name = strings.TrimPrefix(path.Clean("/"+name), "/")
	if name == "" {
		return "", errors.New("empty path")
	}
	return name, nil
}

// Dir adds a directory with permissions perm (the sticky bit included),
// and its parents.
func (w *Writer) Dir(name string, perm fs.FileMode) error {
	name, err := clean(name)
	if err != nil {
		return err
	}
	if w.dirs[name] {
		return nil
	}
	if err := w.parents(name); err != nil {
		return err
	}
	w.dirs[name] = true
	return w.entry(&Header{Name: name, Mode: TypeDir | permBits(perm), nlink: 2}, nil)
}

// File adds a regular file holding size bytes read from r.
func (w *Writer) File(name string, perm fs.FileMode, size int64, r io.Reader) error {
	name, err := clean(name)
	if err != nil {
		return err
	}
	if err := w.parents(name); err != nil {
		return err
	}
	return w.entry(&Header{Name: name, Mode: TypeRegular | permBits(perm), Size: size, nlink: 1}, r)
}

// Bytes adds a regular file holding data.
func (w *Writer) Bytes(name string, perm fs.FileMode, data []byte) error {
	return w.File(name, perm, int64(len(data)), bytes.NewReader(data))
}

// Symlink adds a symbolic link name pointing at target.
func (w *Writer) Symlink(name, target string) error {
	name, err := clean(name)
	if err != nil {
		return err
	}
	if err := w.parents(name); err != nil {
		return err
	}
	return w.entry(&Header{Name: name, Mode: TypeSymlink | 0o777, Size: int64(len(target)), nlink: 1}, strings.NewReader(target))
}

// CharDev adds a character device node, such as dev/console (5, 1).
func (w *Writer) CharDev(name string, perm fs.FileMode, major, minor uint32) error {
	name, err := clean(name)
	if err != nil {
		return err
	}
	if err := w.parents(name); err != nil {
		return err
	}
	return w.entry(&Header{Name: name, Mode: TypeCharDev | permBits(perm), nlink: 1, RdevMajor: major, RdevMinor: minor}, nil)
}

// Close writes the trailer and flushes. It does not close the underlying
// writer.
func (w *Writer) Close() error {
	if w.closed {
		return nil
	}
	w.closed = true
	if err := w.header(&Header{Name: trailer, nlink: 1}); err != nil {
		return err
	}
	return w.w.Flush()
}

func (w *Writer) parents(name string) error {
	dir := path.Dir(name)
	if w.dirs[dir] {
		return nil
	}
	return w.Dir(dir, 0o755)
}

func (w *Writer) entry(h *Header, data io.Reader) error {
	if w.closed {
		return errors.New("writing to a closed archive")
	}
	if w.names[h.Name] {
		return fmt.Errorf("adding %s: already in the archive", h.Name)
	}
	w.names[h.Name] = true
	w.ino++
	h.inode = w.ino
	if err := w.header(h); err != nil {
		return err
	}
	if h.Size == 0 {
		return nil
	}
	n, err := io.CopyN(w.w, data, h.Size)
	if err != nil {
		return fmt.Errorf("adding %s: copied %d of %d bytes: %w", h.Name, n, h.Size, err)
	}
	return w.pad(h.Size)
}

func (w *Writer) header(h *Header) error {
	if h.Size > 0xffffffff {
		return fmt.Errorf("adding %s: %d bytes is more than newc can hold", h.Name, h.Size)
	}
	fields := [...]uint32{
		h.inode, h.Mode, 0, 0, h.nlink, 0, uint32(h.Size),
		0, 0, h.RdevMajor, h.RdevMinor,
		uint32(len(h.Name) + 1), 0,
	}
	var b strings.Builder
	b.WriteString(magic)
	for _, f := range fields {
		fmt.Fprintf(&b, "%08x", f)
	}
	b.WriteString(h.Name)
	b.WriteByte(0)
	if _, err := w.w.WriteString(b.String()); err != nil {
		return err
	}
	return w.pad(int64(headerSize + len(h.Name) + 1))
}

func (w *Writer) pad(n int64) error {
	if r := n % 4; r != 0 {
		_, err := w.w.Write(make([]byte, 4-r))
		return err
	}
	return nil
}

// Reader reads a newc archive written by Writer or by cpio -H newc.
type Reader struct {
	r      *bufio.Reader
	remain int64 // unread data bytes of the current entry
	pad    int64 // padding after them
}

// NewReader returns a Reader reading from r.
func NewReader(r io.Reader) *Reader {
	return &Reader{r: bufio.NewReader(r)}
}

// Next advances to the next entry and returns its header. It returns
// io.EOF at the trailer.
func (r *Reader) Next() (*Header, error) {
	if _, err := io.CopyN(io.Discard, r.r, r.remain+r.pad); err != nil {
		return nil, fmt.Errorf("skipping entry data: %w", err)
	}
	r.remain, r.pad = 0, 0
	var raw [headerSize]byte
	if _, err := io.ReadFull(r.r, raw[:]); err != nil {
		return nil, fmt.Errorf("reading cpio header: %w", err)
	}
	if string(raw[:6]) != magic {
		return nil, fmt.Errorf("reading cpio header: bad magic %q", raw[:6])
	}
	var f [13]uint32
	for i := range f {
		v, err := strconv.ParseUint(string(raw[6+8*i:14+8*i]), 16, 32)
		if err != nil {
			return nil, fmt.Errorf("reading cpio header field %d: %w", i, err)
		}
		f[i] = uint32(v)
	}
	namesize := int64(f[11])
	name := make([]byte, namesize)
	if _, err := io.ReadFull(r.r, name); err != nil {
		return nil, fmt.Errorf("reading cpio name: %w", err)
	}
	if _, err := io.CopyN(io.Discard, r.r, padding(headerSize+namesize)); err != nil {
		return nil, fmt.Errorf("reading cpio name padding: %w", err)
	}
	h := &Header{
		Name: strings.TrimRight(string(name), "\x00"),
		Mode: f[1], Size: int64(f[6]),
		RdevMajor: f[9], RdevMinor: f[10],
		inode: f[0], nlink: f[4],
	}
	if h.Name == trailer {
		return nil, io.EOF
	}
	r.remain, r.pad = h.Size, padding(h.Size)
	if h.Type() == TypeSymlink {
		target := make([]byte, h.Size)
		if _, err := io.ReadFull(r, target); err != nil {
			return nil, fmt.Errorf("reading symlink %s: %w", h.Name, err)
		}
		h.Linkname = string(target)
	}
	return h, nil
}

// Read reads the data of the current entry.
func (r *Reader) Read(p []byte) (int, error) {
	if r.remain == 0 {
		return 0, io.EOF
	}
	if int64(len(p)) > r.remain {
		p = p[:r.remain]
	}
	n, err := r.r.Read(p)
	r.remain -= int64(n)
	if err == io.EOF && r.remain > 0 {
		err = io.ErrUnexpectedEOF
	}
	return n, err
}

// permBits returns the permission bits of m as cpio stores them,
// including the set-user-ID, set-group-ID and sticky bits.
func permBits(m fs.FileMode) uint32 {
	bits := uint32(m.Perm())
	if m&fs.ModeSetuid != 0 {
		bits |= 0o4000
	}
	if m&fs.ModeSetgid != 0 {
		bits |= 0o2000
	}
	if m&fs.ModeSticky != 0 {
		bits |= 0o1000
	}
	return bits
}

func padding(n int64) int64 { return (4 - n%4) % 4 }
