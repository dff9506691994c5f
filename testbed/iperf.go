package testbed

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os/exec"
	"strconv"
	"strings"
	"time"
)

// IperfPort is the port StartIperf's server listens on.
const IperfPort = 5201

// StartIperf starts an iperf3 server in the server namespace (killed by
// Close). It needs the iperf3 binary.
func (t *Testbed) StartIperf(ctx context.Context) error {
	return t.StartIperfPort(ctx, IperfPort)
}

// StartIperfPort starts an iperf3 server on port in the server namespace
// (killed by Close): a second server, for example one started in
// Outside, whose connections no program on the testbed's cgroup sees.
func (t *Testbed) StartIperfPort(ctx context.Context, port int) error {
	if _, err := exec.LookPath("iperf3"); err != nil {
		return fmt.Errorf("starting iperf3: %w (install it: apt-get install iperf3)", err)
	}
	if _, err := t.StartServer(ctx, "iperf3", "-s", "-p", strconv.Itoa(port)); err != nil {
		return err
	}
	return nil
}

// IperfOptions configures one iperf3 client run.
type IperfOptions struct {
	Duration time.Duration // rounded up to whole seconds, default 1s
	Parallel int           // streams, default 1
	// CC makes iperf3 set the congestion control of its sockets itself
	// (-C), an application's own choice; empty leaves it to the host.
	CC   string
	IPv6 bool
	// Port is the server's (default IperfPort).
	Port int
}

// IperfResult is what one run measured.
type IperfResult struct {
	// BitsPerSecond is the goodput the receiver saw, all streams.
	BitsPerSecond float64
	Retransmits   int
	// CC is the congestion control iperf3 reports for its streams.
	CC string
}

// Iperf runs the iperf3 client in the client namespace against the
// server started by StartIperf (or StartIperfPort). A server still busy with a previous test
// is retried for up to five seconds.
func (t *Testbed) Iperf(ctx context.Context, o IperfOptions) (IperfResult, error) {
	// iperf3 takes whole seconds (and -t 0 means forever).
	secs := max(int((o.Duration+time.Second-1)/time.Second), 1)
	if o.Parallel <= 0 {
		o.Parallel = 1
	}
	server := ServerAddr.String()
	if o.IPv6 {
		server = ServerAddr6.String()
	}
	if o.Port == 0 {
		o.Port = IperfPort
	}
	args := []string{"-c", server, "-p", strconv.Itoa(o.Port), "-J",
		"-t", strconv.Itoa(secs), "-P", strconv.Itoa(o.Parallel)}
	if o.CC != "" {
		args = append(args, "-C", o.CC)
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		res, busy, err := t.iperfOnce(ctx, args)
		if !busy || time.Now().After(deadline) || ctx.Err() != nil {
			return res, err
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func (t *Testbed) iperfOnce(ctx context.Context, args []string) (res IperfResult, busy bool, err error) {
	cmd := exec.CommandContext(ctx, "iperf3", args...)
	var out, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &stderr
	if err := t.Client.Start(cmd); err != nil {
		return res, false, fmt.Errorf("running iperf3: %w", err)
	}
	werr := cmd.Wait()
	var r struct {
		Error string `json:"error"`
		End   struct {
			SumReceived struct {
				BitsPerSecond float64 `json:"bits_per_second"`
			} `json:"sum_received"`
			SumSent struct {
				Retransmits int `json:"retransmits"`
			} `json:"sum_sent"`
			SenderTCPCongestion string `json:"sender_tcp_congestion"`
		} `json:"end"`
	}
	if err := json.Unmarshal(out.Bytes(), &r); err != nil {
		return res, false, fmt.Errorf("running iperf3 %s: %w (stderr: %s)", strings.Join(args, " "), errors.Join(werr, err), stderr.String())
	}
	if r.Error != "" {
		busy = strings.Contains(r.Error, "busy") || strings.Contains(r.Error, "unable to connect") ||
			strings.Contains(r.Error, "Connection refused")
		return res, busy, fmt.Errorf("running iperf3 %s: %s", strings.Join(args, " "), r.Error)
	}
	res = IperfResult{BitsPerSecond: r.End.SumReceived.BitsPerSecond, Retransmits: r.End.SumSent.Retransmits,
		CC: r.End.SenderTCPCongestion}
	return res, false, nil
}
