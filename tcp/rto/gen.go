package rto

//go:generate go tool bpf2go -cc clang-19 -cflags "-O2 -g -Wall -Werror" -target bpfel -type tcp_rto_value_flags -type tcp_rto_flags -type tcp_rto_record_kind -type tcp_rto_setting -type mlbpf_peer_key tcprto ../../bpf/tcp_rto.bpf.c -- -I../../bpf/include
