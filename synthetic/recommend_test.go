package synthetic

import (
	"errors"
	"testing"

	"github.com/mlbpf/mlbpf/loader"
	"github.com/mlbpf/mlbpf/model"
)

// TestModelRecommendation applies recommendations through the model, as
// the daemon and its agents do: validated, normalized, then applied by
// the kernel in RECOMMENDATION.
func TestModelRecommendation(t *testing.T) {
	r := newRig(t, model.Options{InitialMode: model.ModeRecommendation, HoldoutPermille: 1})
	if err := r.m.Start(model.RunConfig{}); err != nil {
		t.Fatal(err)
	}
	rec, err := r.m.PreprocessRecommendation(model.Recommendation{Key: " 007 ", Value: "42"})
	if err != nil || rec.Key != "7" || rec.Value != "42" {
		t.Fatalf("preprocessed: %+v %v", rec, err)
	}
	for _, bad := range []model.Recommendation{
		{Key: "x", Value: "1"}, {Key: "1", Value: "-1"}, {Key: "4294967296", Value: "1"}, {Key: "1", Value: "2000000"},
	} {
		if _, err := r.m.PreprocessRecommendation(bad); !errors.Is(err, model.ErrInvalidRecommendation) {
			t.Errorf("%+v: %v, want ErrInvalidRecommendation", bad, err)
		}
	}
	if err := r.m.ApplyRecommendation(model.Recommendation{Key: "1", Value: "2000000"}); !errors.Is(err, ErrOutOfRange) {
		t.Fatalf("out of range: %v", err)
	}
	if err := r.m.ApplyRecommendation(model.Recommendation{Key: "7", Value: "42"}); err != nil {
		t.Fatal(err)
	}
	if err := r.m.RenewLease(loader.MonotonicNs()); err != nil {
		t.Fatal(err)
	}
	_, values := r.run(7, 50)
	if values[42] < 40 {
		t.Fatalf("values %v: the recommendation was not applied", values)
	}
}
