package loader

//go:generate go tool bpf2go -cc clang-19 -cflags "-O2 -g -Wall -Werror" -target bpfel -type mlbpf_control -type mlbpf_snapshot -type mlbpf_record_hdr abi ../bpf/abi.bpf.c -- -I../bpf/include
