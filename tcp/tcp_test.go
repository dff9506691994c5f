package tcp

import (
	"encoding/binary"
	"errors"
	"math"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mlbpf/mlbpf/loader"
	"github.com/mlbpf/mlbpf/model"
)

func TestParsePrefix(t *testing.T) {
	for _, tc := range []struct {
		in, want string
		ok       bool
	}{
		{"10.0.0.0/8", "10.0.0.0/8", true},
		{" 2001:db8::/32 ", "2001:db8::/32", true},
		{"10.1.2.3", "10.1.2.3/32", true},
		{"::ffff:10.1.2.3", "10.1.2.3/32", true},
		{"2001:db8::1", "2001:db8::1/128", true},
		{"10.0.0.1/8", "", false}, // host bits
		{"10.0.0.0/33", "", false},
		{"bbr", "", false},
		{"", "", false},
		{"fe80::/10%eth0", "", false},
	} {
		p, err := ParsePrefix(tc.in)
		if tc.ok != (err == nil) {
			t.Errorf("ParsePrefix(%q) = %v, %v; want ok %v", tc.in, p, err, tc.ok)
			continue
		}
		if err != nil {
			if !errors.Is(err, model.ErrInvalidRecommendation) {
				t.Errorf("ParsePrefix(%q): %v does not wrap ErrInvalidRecommendation", tc.in, err)
			}
			continue
		}
		if p.String() != tc.want {
			t.Errorf("ParsePrefix(%q) = %v, want %s", tc.in, p, tc.want)
		}
	}
	if _, err := ParsePrefix("10.0.0.1/8"); err == nil || !contains(err.Error(), "did you mean 10.0.0.0/8") {
		t.Errorf("host bits error %v does not name the prefix meant", err)
	}
}

func contains(s, sub string) bool { return strings.Contains(s, sub) }

func TestParseRecommendArgs(t *testing.T) {
	p, cc, err := ParseRecommendArgs([]string{"tcp/cc", "10.0.0.0/8", "bbr"})
	if err != nil || p != netip.MustParsePrefix("10.0.0.0/8") || cc != "bbr" {
		t.Fatalf("got %v %q %v", p, cc, err)
	}
	for _, args := range [][]string{
		{"tcp/cc", "10.0.0.0/8"},
		{"tcp/rto", "10.0.0.0/8", "bbr"},
		{"tcp/cc", "10.0.0.1/8", "bbr"},
		{"tcp/cc", "10.0.0.0/8", "BBR"},
		{"tcp/cc", "10.0.0.0/8", "a-name-far-too-long"},
		{"tcp/cc", "10.0.0.0/8", "bbr;reboot"},
	} {
		if _, _, err := ParseRecommendArgs(args); !errors.Is(err, model.ErrInvalidRecommendation) {
			t.Errorf("ParseRecommendArgs(%q) = %v, want an ErrInvalidRecommendation", args, err)
		}
	}
}

func TestKeyRoundTrip(t *testing.T) {
	for _, s := range []string{"10.0.0.0/8", "0.0.0.0/0", "198.18.0.2/32", "2001:db8::/32", "::/0", "fd00::1/128"} {
		p := netip.MustParsePrefix(s)
		k := keyOf(p)
		if p.Addr().Is4() && k.Prefixlen != uint32(96+p.Bits()) {
			t.Errorf("%s: prefix length %d, want %d (IPv4-mapped)", s, k.Prefixlen, 96+p.Bits())
		}
		got, err := prefixOf(k)
		if err != nil || got != p {
			t.Errorf("%s: round trip gives %v, %v", s, got, err)
		}
	}
}

func TestResolveAllowed(t *testing.T) {
	avail := []string{"reno", "cubic", "bbr"}
	got, err := resolveAllowed(nil, avail, "cubic")
	if err != nil || len(got) != 3 {
		t.Fatalf("empty allow-list: %v %v, want every algorithm", got, err)
	}
	got, err = resolveAllowed([]string{"bbr"}, avail, "cubic")
	if err != nil || len(got) != 2 || got[0] != "bbr" || got[1] != "cubic" {
		t.Fatalf("allow-list bbr with default cubic: %v %v, want [bbr cubic]", got, err)
	}
	if _, err := resolveAllowed([]string{"vegas"}, avail, "cubic"); err == nil || !contains(err.Error(), "modprobe tcp_vegas") {
		t.Fatalf("unavailable algorithm: %v, want an error saying how to load it", err)
	}
}

func encodeRecord(t *testing.T, r *Record) []byte {
	t.Helper()
	b := make([]byte, RecordSize)
	if _, err := binary.Encode(b, binary.LittleEndian, r); err != nil {
		t.Fatal(err)
	}
	return b
}

func TestDecodeConn(t *testing.T) {
	if RecordSize != 128 {
		t.Fatalf("RecordSize %d, want 128 (struct tcp_conn_record)", RecordSize)
	}
	r := Record{DurationNs: uint64(2 * time.Second), BytesAcked: 4 << 20, MaxRateBps: 1e9,
		SrttUs: 1500, RttMinUs: 1000, TotalRetrans: 10, DataSegsOut: 100, Mss: 1448, Dport: 5201,
		Family: 4, Flags: uint8(tcpccTcpConnFlagsTCP_CONN_RATE), Cc: cName("cubic"), Recommended: cName("bbr")}
	r.Hdr.Kind, r.Hdr.Size = loader.RecordTCPConn, uint16(RecordSize)
	r.Hdr.Arm, r.Hdr.Mode, r.Hdr.Generation = uint8(model.ArmShadow), uint8(model.ModeLearning), 7
	r.Daddr = netip.MustParseAddr("::ffff:198.18.0.2").As16()
	var c Conn
	if err := DecodeConn(encodeRecord(t, &r), &c); err != nil {
		t.Fatal(err)
	}
	if c.Peer != netip.MustParseAddr("198.18.0.2") || c.CC != "cubic" || c.Recommended != "bbr" ||
		c.Arm != model.ArmShadow || c.Mode != model.ModeLearning || c.Generation != 7 || !c.RateSampled ||
		c.SRTT != 1500*time.Microsecond || c.Port != 5201 {
		t.Fatalf("decoded %+v", c)
	}
	if g := c.Goodput(); g != 2<<20 {
		t.Fatalf("goodput %v, want %d", g, 2<<20)
	}
	if l := c.Loss(); l != 0.1 {
		t.Fatalf("loss %v, want 0.1", l)
	}

	bad := r
	bad.Hdr.Kind = loader.RecordSynthetic
	if err := DecodeConn(encodeRecord(t, &bad), &c); !errors.Is(err, ErrBadRecord) {
		t.Fatalf("synthetic record decoded: %v", err)
	}
	bad = r
	bad.Hdr.Arm = 99
	if err := DecodeConn(encodeRecord(t, &bad), &c); !errors.Is(err, ErrBadRecord) {
		t.Fatalf("arm 99 decoded: %v", err)
	}
	if err := DecodeConn(make([]byte, 10), &c); !errors.Is(err, ErrBadRecord) {
		t.Fatalf("short record decoded: %v", err)
	}
}

// conn makes a synthetic connection record.
func conn(arm model.Arm, cc, rec string, goodput, loss, maxRate float64) *Conn {
	segs := uint32(10000)
	return &Conn{
		Arm: arm, Mode: model.ModeLearning, CC: cc, Recommended: rec,
		Peer: netip.MustParseAddr("192.0.2.10"), Duration: time.Second,
		BytesAcked: uint64(goodput), SegsOut: segs, Retrans: uint32(loss * float64(segs)),
		MaxRate: maxRate, RateSampled: maxRate > 0, SRTT: 20 * time.Millisecond, MinRTT: 10 * time.Millisecond, MSS: 1448,
	}
}

func TestPredictGoodput(t *testing.T) {
	// No loss: the default is not loss-limited, a rate-based algorithm is
	// predicted no better, whatever the peak rate.
	if g, _ := predictGoodput(conn(model.ArmNoRec, "cubic", "", 1e8, 0, 1e9), "bbr"); g != 1e8 {
		t.Fatalf("no loss: bbr predicted %v, want the observed 1e8", g)
	}
	// Same class: nothing tells them apart.
	if g, _ := predictGoodput(conn(model.ArmNoRec, "cubic", "", 1e8, 0.1, 1e9), "reno"); g != 1e8 {
		t.Fatalf("reno from cubic: %v, want the observed 1e8", g)
	}
	// 10 % loss: up to the peak rate, less the loss and the efficiency.
	g, _ := predictGoodput(conn(model.ArmNoRec, "cubic", "", 1e7, 0.1, 1e9), "bbr")
	if want := rateEfficiency * 0.9 * 1e9; math.Abs(g-want) > 1 {
		t.Fatalf("10%% loss: bbr predicted %v, want %v", g, want)
	}
	// Never below what the default did.
	if g, _ := predictGoodput(conn(model.ArmNoRec, "cubic", "", 1e9, 0.1, 1e8), "bbr"); g != 1e9 {
		t.Fatalf("peak below goodput: %v, want the observed 1e9", g)
	}
	// A loss-based algorithm where bbr ran is held to the Mathis bound.
	c := conn(model.ArmModel, "bbr", "bbr", 1e9, 0.1, 0)
	g, _ = predictGoodput(c, "cubic")
	if want := mathis(1448, 0.010, c.Loss()); math.Abs(g-want) > 1 || g >= 1e9 {
		t.Fatalf("cubic from bbr at 10%%: %v, want the Mathis bound %v", g, want)
	}
	if _, ok := predictGoodput(conn(model.ArmNoRec, "cubic", "", 0, 0, 0), "bbr"); ok {
		t.Fatal("a prediction from a connection that sent nothing")
	}
}

func newTestLearner() *Learner {
	return NewLearner(LearnConfig{}, "cubic", []string{"bbr", "cubic", "reno"}, 1)
}

func TestLearnerNeverRecommendsWithoutLoss(t *testing.T) {
	l := newTestLearner()
	for i := range 300 {
		g := 1e9 * (1 + 0.3*math.Sin(float64(i)))
		fb, ok, ch := l.Observe(conn(model.ArmNoRec, "cubic", "", g, 0, 3*g))
		if ch != nil {
			t.Fatalf("transfer %d without loss: change %+v", i, ch)
		}
		if !ok || fb.HasPrediction {
			t.Fatalf("transfer %d: feedback %+v ok %v", i, fb, ok)
		}
	}
	if recs := l.Recommendations(); len(recs) != 0 {
		t.Fatalf("recommendations without loss: %v", recs)
	}
}

func TestLearnerUnderLoss(t *testing.T) {
	l := newTestLearner()
	minDefault := LearnConfig{}.withDefaults().MinDefault
	var rec *Change
	for i := range 20 {
		_, _, ch := l.Observe(conn(model.ArmNoRec, "cubic", "", 3e6, 0.1, 1e9))
		if ch != nil {
			rec = ch
			if i+1 < minDefault {
				t.Fatalf("recommended after %d transfers", i+1)
			}
			break
		}
	}
	if rec == nil || rec.CC != "bbr" || rec.Prefix != netip.MustParsePrefix("192.0.2.0/24") {
		t.Fatalf("change %+v, want bbr for 192.0.2.0/24", rec)
	}
	// LEARNING: shadow outcomes carry the counterfactual prediction.
	fb, ok, _ := l.Observe(conn(model.ArmShadow, "cubic", "bbr", 3e6, 0.1, 1e9))
	if !ok || !fb.HasPrediction || fb.Predicted <= fb.Reward+1 || fb.Key != "192.0.2.0/24" {
		t.Fatalf("shadow feedback %+v", fb)
	}
	// COLLABORATION shows bbr doing worse than predicted and worse than
	// cubic: the calibration learns it, and the recommendation goes.
	var withdrawn *Change
	for i := range 40 {
		c := conn(model.ArmModel, "bbr", "bbr", 1e6, 0.1, 0)
		c.Mode = model.ModeCollaboration
		fb, ok, ch := l.Observe(c)
		if ok {
			l.Backpropagate(fb)
		}
		if ch != nil {
			withdrawn = ch
			if i+1 < minDefault {
				t.Fatalf("withdrawn after %d trials, before a fair trial", i+1)
			}
			break
		}
		l.Observe(conn(model.ArmControl, "cubic", "bbr", 3e6, 0.1, 1e9))
	}
	if withdrawn == nil || withdrawn.CC != "" {
		t.Fatalf("change %+v, want the recommendation withdrawn", withdrawn)
	}
	if b := l.bias("bbr", 0.1); b > -1 {
		t.Fatalf("calibration bias %v after predictions 300x too high, want strongly negative", b)
	}
}

func TestLearnerIgnores(t *testing.T) {
	l := newTestLearner()
	for _, c := range []*Conn{
		conn(model.ArmSkipped, "reno", "", 1e9, 0, 0),                                                   // the application's choice
		conn(model.ArmModel, "cubic", "bbr", 1e9, 0, 0),                                                 // the application overrode the model after connect
		conn(model.ArmNoRec, "cubic", "", 1000, 0, 0),                                                   // not a transfer
		{Arm: model.ArmNoRec, CC: "cubic", BytesAcked: 1 << 30, Peer: netip.MustParseAddr("192.0.2.1")}, // no duration
	} {
		if _, ok, ch := l.Observe(c); ok || ch != nil {
			t.Errorf("learned from %+v", c)
		}
	}
	if d := l.Destinations(); len(d) != 0 {
		t.Fatalf("destinations %+v", d)
	}
}

func TestLearnerStateRoundTrip(t *testing.T) {
	l := newTestLearner()
	for range 10 {
		l.Observe(conn(model.ArmNoRec, "cubic", "", 3e6, 0.1, 1e9))
	}
	path := filepath.Join(t.TempDir(), "state", StateFile)
	if err := l.Save(path); err != nil {
		t.Fatal(err)
	}
	if err := l.Save(path); err != nil { // over an existing file
		t.Fatal(err)
	}
	entries, _ := os.ReadDir(filepath.Dir(path))
	if len(entries) != 1 {
		t.Fatalf("state directory holds %d files, want only %s", len(entries), StateFile)
	}
	m := newTestLearner()
	if ok, err := m.Load(path); !ok || err != nil {
		t.Fatalf("Load: %v %v", ok, err)
	}
	if got, want := m.Recommendations(), l.Recommendations(); len(got) != 1 || got[netip.MustParsePrefix("192.0.2.0/24")] != "bbr" || len(want) != 1 {
		t.Fatalf("recommendations after reload %v, want %v", got, want)
	}
	if a, b := m.Destinations()[0].Transfers, l.Destinations()[0].Transfers; a != b {
		t.Fatalf("transfers after reload %d, want %d", a, b)
	}
	if ok, err := newTestLearner().Load(filepath.Join(t.TempDir(), "none.json")); ok || err != nil {
		t.Fatalf("missing state: %v %v, want nothing loaded and no error", ok, err)
	}
	if err := os.WriteFile(path, []byte("{"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := newTestLearner().Load(path); err == nil || !contains(err.Error(), "remove the file") {
		t.Fatalf("corrupt state: %v, want an error saying what to do", err)
	}
}

// TestRewardBaseFixedWithinMode: the mode controller compares the
// rewards of one mode's outcomes (MODEL against CONTROL), so within a
// mode every reward is relative to the same baseline. A baseline that
// moved with each CONTROL outcome put its own estimation noise into the
// rewards (a first COLLABORATION on a baseline of one or two default
// transfers doubled the CONTROL arm's spread) and the split's test lost
// power. A new mode takes the baseline as it then is.
func TestRewardBaseFixedWithinMode(t *testing.T) {
	l := newTestLearner()
	l.Observe(conn(model.ArmNoRec, "cubic", "", 3e6, 0.1, 1e9))
	l.Observe(conn(model.ArmShadow, "cubic", "bbr", 3e6, 0.1, 1e9))
	var model1 []float64
	for i, g := range []float64{1e6, 9e6, 2e6, 6e6} {
		m := conn(model.ArmModel, "bbr", "bbr", 20e6, 0.1, 0)
		m.Mode = model.ModeCollaboration
		fb, ok, _ := l.Observe(m)
		if !ok {
			t.Fatalf("MODEL outcome %d not fed back", i)
		}
		model1 = append(model1, fb.Reward)
		c := conn(model.ArmControl, "cubic", "bbr", g, 0.1, 1e9)
		c.Mode = model.ModeCollaboration
		fb, _, _ = l.Observe(c)
		if want := 1 + math.Log(g/3e6); math.Abs(fb.Reward-want) > 1e-9 {
			t.Errorf("CONTROL outcome %d (goodput %g): reward %v, want %v (relative to the baseline on entering the mode, 3e6)", i, g, fb.Reward, want)
		}
	}
	for i, r := range model1 {
		if r != model1[0] {
			t.Errorf("MODEL outcome %d: reward %v, want %v as the first: the same goodput in the same mode", i, r, model1[0])
		}
	}
	// RECOMMENDATION: the baseline moved on with the CONTROL outcomes.
	m := conn(model.ArmModel, "bbr", "bbr", 20e6, 0.1, 0)
	m.Mode = model.ModeRecommendation
	fb, _, _ := l.Observe(m)
	if fb.Reward == model1[0] {
		t.Errorf("RECOMMENDATION: reward %v, the same as COLLABORATION's on its baseline: want the baseline taken afresh", fb.Reward)
	}
}
