package plan

import (
	"os"
	"path/filepath"
	"reflect"
	"testing"
)

func TestMarkerRoundTrip(t *testing.T) {
	const tok = "00ff00ff00ff00ff"
	for _, tc := range []struct {
		line string
		want Marker
	}{
		{StartLine(tok, 2.345), Marker{Kind: Start, Seconds: 2.35}},
		{ResultLine(tok, "github.com/mlbpf/mlbpf/loader", 0, 1.5), Marker{Kind: Result, Package: "github.com/mlbpf/mlbpf/loader", Seconds: 1.5}},
		{ResultLine(tok, "example.com/x", 137, 0.001), Marker{Kind: Result, Status: 137, Package: "example.com/x", Seconds: 0.001}},
		{EndLine(tok, 0), Marker{Kind: End}},
		{EndLine(tok, 3), Marker{Kind: End, Status: 3}},
		{"[    1.234] audit: something" + EndLine(tok, 2), Marker{Kind: End, Status: 2}},
	} {
		got, ok := ParseMarker(tc.line, tok)
		if !ok || got != tc.want {
			t.Errorf("ParseMarker(%q) = %+v, %v; want %+v", tc.line, got, ok, tc.want)
		}
	}
}

func TestParseMarkerRejects(t *testing.T) {
	const tok = "00ff00ff00ff00ff"
	for _, line := range []string{
		"",
		"PASS",
		EndLine("another", 0),
		"vmtest:" + tok + ":end",
		"vmtest:" + tok + ":end x",
		"vmtest:" + tok + ":result 0 1.0",
		"vmtest:" + tok + ":result x 1.0 pkg",
		"vmtest:" + tok + ":start",
		"vmtest:" + tok + ":finish 0",
	} {
		if m, ok := ParseMarker(line, tok); ok {
			t.Errorf("ParseMarker(%q) = %+v, want no marker", line, m)
		}
	}
	if _, ok := ParseMarker(EndLine("", 0), ""); ok {
		t.Error("an empty token matched")
	}
}

func TestReadWrite(t *testing.T) {
	p := &Plan{
		Token:    "abc",
		Modules:  []string{"/vmtest/modules/veth.ko"},
		Tests:    []Test{{Package: "example.com/a", Dir: "/src/a", Binary: "/src/a/a.test", Args: []string{"-test.v"}}},
		Env:      []string{"HOME=/root"},
		Deadline: 570,
	}
	data, err := p.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "plan.json")
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
	}
	got, err := Read(path)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, p) {
		t.Errorf("read back %+v, want %+v", got, p)
	}

	if err := os.WriteFile(path, []byte(`{"tests":[]}`), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := Read(path); err == nil {
		t.Error("a plan without a token: no error")
	}
}
