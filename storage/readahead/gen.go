package readahead

//go:generate go tool bpf2go -cc clang-19 -cflags "-O2 -g -Wall -Werror" -target bpfel readahead ../../bpf/readahead.bpf.c -- -I../../bpf/include
