package natsbus

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/mlbpf/mlbpf/fleet"
	"github.com/mlbpf/mlbpf/internal/natstest"
	"github.com/mlbpf/mlbpf/learner"
)

// BenchmarkPut publishes tcp/cc messages (three algorithms) to the
// bucket of a real nats-server, one after the other as the bus does,
// over distinct keys: a host's cost per message, and the server's
// storage per key.
func BenchmarkPut(b *testing.B) {
	srv := natstest.Start(b)
	nc, err := nats.Connect(srv.URL)
	if err != nil {
		b.Fatal(err)
	}
	defer nc.Close()
	js, _ := jetstream.New(nc)
	ctx := context.Background()
	kv, err := js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: DefaultBucket, History: 1,
		TTL: 24 * time.Hour, MaxValueSize: fleet.MaxMessageBytes, Storage: jetstream.FileStorage})
	if err != nil {
		b.Fatal(err)
	}
	e := learner.Estimate{W: 42.5, Mean: 0.693147, S: 10.25}
	i := 0
	var size int
	for b.Loop() {
		key := fmt.Sprintf("10.%d.%d.0/24", i>>8&255, i&255)
		data, err := fleet.Encode(&fleet.Message{V: fleet.Version, Host: "web-0017", Model: "tcp/cc", At: time.Now().UnixMilli(),
			Stats: fleet.Stats{Key: key, Arms: []fleet.Arm{{Name: "cubic", Real: e, Predicted: e, Error: e},
				{Name: "bbr", Real: e, Predicted: e, Error: e}, {Name: "reno", Real: e, Predicted: e, Error: e}}}})
		if err != nil {
			b.Fatal(err)
		}
		size = len(data)
		if _, err := kv.Put(ctx, Key("tcp/cc", "web-0017", key), data); err != nil {
			b.Fatal(err)
		}
		i++
	}
	b.ReportMetric(float64(size), "bytes/msg")
	st, err := kv.Status(ctx)
	if err == nil && st.Values() > 0 {
		b.ReportMetric(float64(st.Bytes())/float64(st.Values()), "stored_bytes/key")
	}
}
