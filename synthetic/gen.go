package synthetic

//go:generate go tool bpf2go -cc clang-19 -cflags "-O2 -g -Wall -Werror" -target bpfel synth ../bpf/synthetic.bpf.c -- -I../bpf/include
