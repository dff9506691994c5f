// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * consumer.c - libbpf's ring buffer consumer, for the ring buffer benchmark.
 *
 * cmd/ringbench compiles this program at run time (cc -O2 ... -lbpf) and
 * starts it with the ring buffer map's fd as fd 3. It reads commands on
 * stdin and answers each on stdout with one line:
 *
 *   drain N    ring_buffer__consume until N records are read
 *              -> "ok <records> <ns> <sum of the first u64 of each record> 0"
 *   check N    the same, and the callback also sums every record whole
 *              (checksum(), the same as the Go consumers')
 *              -> "ok <records> <ns> <sum> <checksum>"
 *   live MS    print "ready", then ring_buffer__poll until MS milliseconds
 *              have passed and the ring is empty
 *              -> "ok <records> <ns> <sum> 0"
 *
 * Usage: consumer CPU   (the CPU to run on, -1: any)
 */
#define _GNU_SOURCE
#include <errno.h>
#include <sched.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <bpf/libbpf.h>

struct tally {
	uint64_t records;
	uint64_t sum;
	uint64_t check;
	int whole; /* read every byte of each record into check */
};

/* checksum sums a record as native-endian u64 words, four at a time into
 * four sums, then its last bytes one by one: every byte is read. The Go
 * consumers (bench.go) have the same. */
static uint64_t checksum(const unsigned char *p, size_t len)
{
	uint64_t s[4] = {}, w[4];

	for (; len >= sizeof(w); p += sizeof(w), len -= sizeof(w)) {
		memcpy(w, p, sizeof(w));
		s[0] += w[0];
		s[1] += w[1];
		s[2] += w[2];
		s[3] += w[3];
	}
	for (; len >= sizeof(w[0]); p += sizeof(w[0]), len -= sizeof(w[0])) {
		memcpy(w, p, sizeof(w[0]));
		s[0] += w[0];
	}
	for (; len > 0; p++, len--)
		s[0] += *p;
	return s[0] + s[1] + s[2] + s[3];
}

static int on_sample(void *ctx, void *data, size_t len)
{
	struct tally *t = ctx;
	uint64_t seq;

	if (len < sizeof(seq))
		return -EINVAL;
	memcpy(&seq, data, sizeof(seq));
	t->records++;
	t->sum += seq;
	if (t->whole)
		t->check += checksum(data, len);
	return 0;
}

static uint64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + ts.tv_nsec;
}

int main(int argc, char **argv)
{
	struct tally t = {};
	struct ring_buffer *rb;
	char line[128];
	int cpu = argc > 1 ? atoi(argv[1]) : -1;

	if (cpu >= 0) {
		cpu_set_t set;

		CPU_ZERO(&set);
		CPU_SET(cpu, &set);
		if (sched_setaffinity(0, sizeof(set), &set)) {
			fprintf(stderr, "consumer: pinning to CPU %d: %s\n", cpu, strerror(errno));
			return 1;
		}
	}
	rb = ring_buffer__new(3, on_sample, &t, NULL);
	if (!rb) {
		fprintf(stderr, "consumer: ring_buffer__new on fd 3: %s\n", strerror(errno));
		return 1;
	}
	setvbuf(stdout, NULL, _IOLBF, 0);

	while (fgets(line, sizeof(line), stdin)) {
		unsigned long long arg;
		uint64_t start, end;
		int err = 0;

		memset(&t, 0, sizeof(t));
		if (sscanf(line, "drain %llu", &arg) == 1 || sscanf(line, "check %llu", &arg) == 1) {
			t.whole = line[0] == 'c';
			start = now_ns();
			while (t.records < arg) {
				err = ring_buffer__consume(rb);
				if (err < 0)
					break;
			}
			end = now_ns();
		} else if (sscanf(line, "live %llu", &arg) == 1) {
			uint64_t until;

			printf("ready\n");
			start = now_ns();
			until = start + arg * 1000000ull;
			for (;;) {
				err = ring_buffer__poll(rb, 10);
				if (err < 0 && err != -EINTR)
					break;
				if (err == 0 && now_ns() >= until)
					break;
			}
			end = now_ns();
			if (err > 0 || err == -EINTR)
				err = 0;
		} else {
			fprintf(stderr, "consumer: unknown command: %s", line);
			return 1;
		}
		if (err < 0) {
			printf("error %s\n", strerror(-err));
			continue;
		}
		printf("ok %llu %llu %llu %llu\n", (unsigned long long)t.records,
		       (unsigned long long)(end - start), (unsigned long long)t.sum,
		       (unsigned long long)t.check);
	}
	ring_buffer__free(rb);
	return 0;
}
