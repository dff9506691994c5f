package headless

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"image"
	"image/png"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"time"
)

// ErrNoBrowser is returned by Find when no Chromium is installed.
var ErrNoBrowser = errors.New("no Chromium: install it (Debian: apt-get install chromium) scripts/setup.sh test installs it) or set MLBPF_CHROMIUM to its path")

// Browser is a Chromium executable.
type Browser struct {
	Path string
	// Timeout bounds one run of the browser (default 60 s).
	Timeout time.Duration
}

// Find returns the Chromium to use: $MLBPF_CHROMIUM, else the first of
// chromium, chromium-browser and google-chrome on PATH.
func Find() (*Browser, error) {
	if p := os.Getenv("MLBPF_CHROMIUM"); p != "" {
		return &Browser{Path: p}, nil
	}
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome"} {
		if p, err := exec.LookPath(name); err == nil {
			return &Browser{Path: p}, nil
		}
	}
	return nil, ErrNoBrowser
}

// Page is a page as Chromium loaded it.
type Page struct {
	// DOM is the document after load (--dump-dom).
	DOM string
	// Console are the messages the page logged to the console: its
	// errors, loads refused (by its Content-Security-Policy, say) and
	// uncaught exceptions among them.
	Console []string
}

// consoleLine matches Chromium's log line for a console message:
// [pid:tid:date:INFO:CONSOLE:line] "message", source: url (line).
var consoleLine = regexp.MustCompile(`:CONSOLE(?:\(\d+\)|:\d+)\] (.*)$`)

// Screenshot asks Load for a screenshot of the page in a window of
// Width × Height pixels, written as a PNG to Path.
type Screenshot struct {
	Path          string
	Width, Height int
}

// Load loads the HTML file at path and returns its DOM and console, and
// with shot takes its screenshot, in the same run of the browser.
func (b *Browser) Load(ctx context.Context, path string, shot *Screenshot) (*Page, error) {
	args := []string{"--enable-logging=stderr", "--v=0", "--dump-dom"}
	var png string
	if shot != nil {
		var err error
		if png, err = filepath.Abs(shot.Path); err != nil {
			return nil, err
		}
		_ = os.Remove(png)
		args = append(args, "--hide-scrollbars", fmt.Sprintf("--window-size=%d,%d", shot.Width, shot.Height), "--screenshot="+png)
	}
	stdout, stderr, err := b.run(ctx, path, args...)
	if err != nil {
		return nil, err
	}
	if png != "" {
		if _, err := os.Stat(png); err != nil {
			return nil, fmt.Errorf("taking a screenshot of %s: chromium wrote no %s", path, png)
		}
	}
	p := &Page{DOM: string(stdout)}
	for line := range strings.SplitSeq(string(stderr), "\n") {
		if m := consoleLine.FindStringSubmatch(line); m != nil {
			p.Console = append(p.Console, m[1])
		}
	}
	return p, nil
}

// run runs Chromium headless on the file at path with args, in a
// throw-away profile, with no network.
func (b *Browser) run(ctx context.Context, path string, args ...string) (stdout, stderr []byte, err error) {
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, nil, err
	}
	profile, err := os.MkdirTemp("", "mlbpf-chromium-")
	if err != nil {
		return nil, nil, err
	}
	defer os.RemoveAll(profile)
	timeout := b.Timeout
	if timeout == 0 {
		timeout = time.Minute
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	all := []string{"--headless", "--disable-gpu", "--no-first-run", "--user-data-dir=" + profile,
		"--host-resolver-rules=MAP * ~NOTFOUND", "--disable-extensions", "--mute-audio"}
	if os.Geteuid() == 0 {
		all = append(all, "--no-sandbox")
	}
	all = append(append(all, args...), "file://"+abs)
	cmd := exec.CommandContext(ctx, b.Path, all...)
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	cmd.WaitDelay = 5 * time.Second
	if err := cmd.Run(); err != nil {
		return nil, nil, fmt.Errorf("running %s on %s: %w\n%s", b.Path, path, err, tail(errOut.String(), 2000))
	}
	return out.Bytes(), errOut.Bytes(), nil
}

func tail(s string, n int) string {
	if len(s) > n {
		return "…" + s[len(s)-n:]
	}
	return s
}

// Ink returns the share of the PNG's pixels that are not (nearly)
// white: 0 for a blank page.
func Ink(path string) (float64, error) {
	f, err := os.Open(path)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	img, err := png.Decode(f)
	if err != nil {
		return 0, fmt.Errorf("decoding %s: %w", path, err)
	}
	return ink(img), nil
}

func ink(img image.Image) float64 {
	r := img.Bounds()
	if r.Empty() {
		return 0
	}
	n := 0
	for y := r.Min.Y; y < r.Max.Y; y++ {
		for x := r.Min.X; x < r.Max.X; x++ {
			cr, cg, cb, _ := img.At(x, y).RGBA()
			if cr < 0xf000 || cg < 0xf000 || cb < 0xf000 {
				n++
			}
		}
	}
	return float64(n) / float64(r.Dx()*r.Dy())
}

// Compress re-encodes the PNG at path with the best compression.
func Compress(path string) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	img, err := png.Decode(bytes.NewReader(b))
	if err != nil {
		return fmt.Errorf("decoding %s: %w", path, err)
	}
	var out bytes.Buffer
	enc := png.Encoder{CompressionLevel: png.BestCompression}
	if err := enc.Encode(&out, img); err != nil {
		return err
	}
	if out.Len() >= len(b) {
		return nil
	}
	return os.WriteFile(path, out.Bytes(), 0o644)
}
