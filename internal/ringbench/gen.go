package ringbench

//go:generate go tool bpf2go -cc clang-19 -cflags "-O2 -g -Wall -Werror" -target bpfel -type ringbench_emit_args -type ringbench_test_record ringbench ../../bpf/ringbuf_bench.bpf.c -- -I../../bpf/include
