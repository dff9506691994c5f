package headless

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestLoad: a page's console errors, its blocked loads and its DOM come
// back; a clean page has none; a screenshot is not blank.
func TestLoad(t *testing.T) {
	b := ForTest(t)
	dir := t.TempDir()
	bad := filepath.Join(dir, "bad.html")
	os.WriteFile(bad, []byte(`<!DOCTYPE html><html><head>
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; script-src 'unsafe-inline'">
</head><body><p id="x">hello</p><img src="http://example.com/a.png"><script>console.error("boom")</script></body></html>`), 0o644)
	p, err := b.Load(context.Background(), bad, nil)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(p.DOM, `<p id="x">hello</p>`) {
		t.Fatalf("DOM:\n%s", p.DOM)
	}
	con := strings.Join(p.Console, "\n")
	if len(p.Console) != 2 || !strings.Contains(con, "boom") || !strings.Contains(con, "example.com") {
		t.Fatalf("console %q, want the error and the blocked image", p.Console)
	}

	good := filepath.Join(dir, "good.html")
	os.WriteFile(good, []byte(`<!DOCTYPE html><html><body><h1>report</h1><svg width="200" height="100"><rect width="200" height="100" fill="#36c"/></svg></body></html>`), 0o644)
	png := filepath.Join(dir, "good.png")
	p, err = b.Load(context.Background(), good, &Screenshot{Path: png, Width: 400, Height: 300})
	if err != nil || len(p.Console) != 0 || !strings.Contains(p.DOM, "<h1>report</h1>") {
		t.Fatalf("clean page: %v, console %q, DOM:\n%s", err, p.Console, p.DOM)
	}
	if err := Compress(png); err != nil {
		t.Fatal(err)
	}
	ink, err := Ink(png)
	if err != nil {
		t.Fatal(err)
	}
	// The rectangle is 200×100 of 400×300, a sixth; the title adds a
	// little.
	if ink < 0.15 || ink > 0.3 {
		t.Fatalf("ink %.3f, want about 1/6", ink)
	}
}
