//go:build ignore

/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * No program: this object exists so that bpf2go generates, once, the Go
 * types of the shared header (package loader). Every model object uses the
 * same layouts.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include "mlbpf.h"

char LICENSE[] SEC("license") = "Dual BSD/GPL";

struct mlbpf_control *unused_control __attribute__((unused));
struct mlbpf_snapshot *unused_snapshot __attribute__((unused));
struct mlbpf_record_hdr *unused_record_hdr __attribute__((unused));
enum mlbpf_mode unused_mode __attribute__((unused));
enum mlbpf_model_state unused_model_state __attribute__((unused));
enum mlbpf_arm unused_arm __attribute__((unused));
enum mlbpf_record_kind unused_record_kind __attribute__((unused));
