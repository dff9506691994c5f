package testbed

//go:generate go tool bpf2go -cc clang-19 -cflags "-O2 -g -Wall -Werror" -target bpfel -type lossy_counter lossy ../bpf/lossy.bpf.c -- -I../bpf/include
