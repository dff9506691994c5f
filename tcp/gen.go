package tcp

//go:generate go tool bpf2go -cc clang-19 -cflags "-O2 -g -Wall -Werror" -target bpfel -type tcp_cc_value_flags -type tcp_conn_flags tcpcc ../bpf/tcp_cc.bpf.c -- -I../bpf/include
