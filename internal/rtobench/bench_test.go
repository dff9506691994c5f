package rtobench

import (
	"bytes"
	"fmt"
	"strings"
	"testing"

	"github.com/mlbpf/mlbpf/internal/testutil"
	"github.com/mlbpf/mlbpf/tcp/rto"
)

// TestSurveySmoke runs a tiny survey on the two-path testbed: each fixed
// arm runs on the model's period loop and gets the records the loop
// decoded, and a setting recommended there is applied (a 20 ms SYN
// timeout on the bloat path, whose round trip is hundreds of ms, retries
// every SYN).
func TestSurveySmoke(t *testing.T) {
	testutil.RequireBPF(t)
	aggressive, err := rto.ParseSetting("syn=20ms,rto_min=8ms")
	if err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	cfg := Config{Flows: 2, Settings: []rto.Setting{rto.Default, aggressive}}
	if err := Survey(t.Context(), &out, cfg); err != nil {
		t.Fatal(err)
	}
	t.Log(out.String())
	for _, p := range paths {
		for _, s := range cfg.Settings {
			prefix := fmt.Sprintf("tcprto survey path=%s setting=%s flows=", p, s)
			var line string
			for l := range strings.Lines(out.String()) {
				if strings.HasPrefix(l, prefix) {
					line = l
				}
			}
			if line == "" || strings.HasPrefix(line, prefix+"0 ") {
				t.Errorf("no records for %s %s: %q", p, s, line)
			}
			if p == "bloat" && s == aggressive && strings.Contains(line, " syn_retrans=0.00 ") {
				t.Errorf("bloat path, %s: no SYN retransmitted, the setting was not applied: %q", s, line)
			}
		}
	}
}
