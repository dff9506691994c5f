package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"text/tabwriter"
	"time"

	"github.com/mlbpf/mlbpf/loader"
	"github.com/mlbpf/mlbpf/model"
)

type modelStatus struct {
	Model      string            `json:"model"`
	State      string            `json:"state"`
	Mode       string            `json:"mode"`
	LeaseLeft  *float64          `json:"lease_left_seconds"`
	Generation uint32            `json:"generation"`
	Collab     uint32            `json:"collab_permille"`
	Holdout    uint32            `json:"holdout_permille"`
	Arms       map[string]uint64 `json:"arms"`
	Lost       uint64            `json:"lost"`
	Pins       string            `json:"pins"`
}

func cmdStatus(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("status", "status [flags]", stderr)
	pinRoot := fs.String("pin-root", loader.DefaultPinRoot, "root of the pinned maps")
	output := fs.String("o", "text", "output: text or json")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if *output != "text" && *output != "json" {
		return fmt.Errorf("-o %q: want text or json", *output)
	}
	if err := loader.CheckPrivileges(); err != nil {
		return err
	}
	pinned, listErr := loader.ListPinned(*pinRoot)
	now := loader.MonotonicNs()
	out := make([]modelStatus, 0, len(pinned))
	for _, p := range pinned {
		s := modelStatus{
			Model:      p.Subsystem + "/" + p.Model,
			State:      model.State(p.Control.State).String(),
			Mode:       model.Mode(p.Control.Mode).String(),
			Generation: p.Control.Generation,
			Collab:     p.Control.CollabPermille,
			Holdout:    p.Control.HoldoutPermille,
			Arms:       make(map[string]uint64),
			Lost:       p.Lost,
			Pins:       p.Dir,
		}
		if p.Control.LeaseExpiresNs != 0 {
			left := (float64(p.Control.LeaseExpiresNs) - float64(now)) / float64(time.Second)
			s.LeaseLeft = &left
		}
		for i, n := range p.Arms {
			s.Arms[model.Arm(i).String()] = n
		}
		out = append(out, s)
	}
	if *output == "json" {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(out); err != nil {
			return err
		}
		return listErr
	}
	if len(out) == 0 {
		fmt.Fprintf(stdout, "no models pinned under %s (start one with 'mlbpf run')\n", *pinRoot)
		return listErr
	}
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "MODEL\tSTATE\tMODE\tLEASE\tGEN\tFALLBACK\tNO_REC\tSHADOW\tCONTROL\tMODEL\tREJECTED\tSKIPPED\tLOST")
	for _, s := range out {
		lease := "none"
		if s.LeaseLeft != nil {
			if *s.LeaseLeft < 0 {
				lease = fmt.Sprintf("expired %.1fs ago", -*s.LeaseLeft)
			} else {
				lease = fmt.Sprintf("%.1fs left", *s.LeaseLeft)
			}
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d", s.Model, s.State, s.Mode, lease, s.Generation)
		for i := range loader.ArmCount {
			fmt.Fprintf(tw, "\t%d", s.Arms[model.Arm(i).String()])
		}
		fmt.Fprintf(tw, "\t%d\n", s.Lost)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	return listErr
}
