//go:build ignore

/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * The storage/readahead collector: how a block device is read, per
 * device, per short window.
 *
 * Tracepoints only (no kprobes, no fentry):
 *   readahead:page_cache_sync_ra, page_cache_async_ra   readahead decisions
 *   readahead:page_cache_ra_order                        the file's limit (mmap read-around)
 *   filemap:mm_filemap_add_to_page_cache                 pages read in
 *   filemap:mm_filemap_delete_from_page_cache            pages evicted
 *   filemap:mm_filemap_get_pages, mm_filemap_fault       what the workload asked for
 *   block:block_rq_issue, block_rq_complete              device requests, latency
 * Every program is attached on its own; user space attaches what the
 * kernel has and says which are missing (the readahead: and the newer
 * filemap: events are absent on older kernels, 6.1 among them).
 *
 * Only devices user space watches (an entry in "devices" and one in
 * "acc") are counted. Each event adds to the device's accumulator; the first event after the window (window_ns)
 * has passed closes it: the CPU that wins the compare-and-swap of the
 * window's start takes every counter (atomic exchange with zero) into one
 * ra_window record. An idle device produces no records.
 *
 * No program here changes anything: no BPF hook can set a device's
 * readahead. The daemon applies it (read_ahead_kb) and writes the arm it
 * took and the setting in force into the device's "devices" entry, which
 * every record of the device then carries.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include "mlbpf.h"

char LICENSE[] SEC("license") = "Dual BSD/GPL";

/*
 * Record kind of struct ra_window. Kept here rather than in
 * enum mlbpf_record_kind while that header changes in another branch;
 * the value is outside the range the header's kinds use.
 */
enum ra_record_kind {
	RA_RECORD_KIND = 16,
};
enum ra_record_kind unused_ra_record_kind __attribute__((unused));

/* The applier's state for one watched device, written by user space. */
struct ra_device {
	__u32 arm;    /* enum mlbpf_arm of the setting in force */
	__u32 ra_kb;  /* read_ahead_kb in force */
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 64);
	__type(key, __u32); /* dev_t as the tracepoints encode it: major << 20 | minor */
	__type(value, struct ra_device);
} devices SEC(".maps");

/*
 * struct ra_window - one device over one window.
 *
 * @dev:            major << 20 | minor
 * @ra_kb, @mode/@arm in the header: the applier's state at window close
 * @window_ns:      the window's length
 * @sync_ra, @async_ra: readahead events
 * @ra_pages:       pages the readahead events asked to read
 * @ra_max_pages:   the largest ra_pages (a file's readahead limit, copied
 *                  from the device's when it was opened) seen
 * @mmap_ra:        readahead events on behalf of a page fault (mmap_miss != 0)
 * @req_pages:      pages the reads that triggered readahead asked for
 * @added_pages:    pages added to the page cache
 * @evicted_pages:  pages deleted from the page cache
 * @rq_issued, @rq_completed: read requests
 * @rq_seq:         read requests starting where the device's last one ended
 * @rq_bytes:       bytes of read requests issued
 * @lat_ns:         summed issue-to-complete time of completed read requests
 * @lat_max_ns:     the longest of them
 * @asked_bytes:    bytes the workload asked for (read calls, page faults)
 * @reads, @faults: read calls (filemap_get_pages) and page faults
 */
struct ra_window {
	struct mlbpf_record_hdr hdr;
	__u32 dev;
	__u32 ra_kb;
	__u64 window_ns;
	__u64 sync_ra;
	__u64 async_ra;
	__u64 ra_pages;
	__u64 ra_max_pages;
	__u64 mmap_ra;
	__u64 req_pages;
	__u64 added_pages;
	__u64 evicted_pages;
	__u64 rq_issued;
	__u64 rq_completed;
	__u64 rq_seq;
	__u64 rq_bytes;
	__u64 lat_ns;
	__u64 lat_max_ns;
	__u64 asked_bytes;
	__u64 reads;
	__u64 faults;
};

MLBPF_MODEL_MAPS(struct ra_window, 1 << 18);

/* Accumulators: the ra_window counters being filled, plus the window's
 * start and the device's last read request end. */
struct ra_acc {
	__u64 start_ns;
	__u64 last_end;
	struct ra_window w;
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 64);
	__type(key, __u32);
	__type(value, struct ra_acc);
} acc SEC(".maps");

/* Read requests in flight: issue time by (device, sector). */
struct ra_rq_key {
	__u32 dev;
	__u32 pad;
	__u64 sector;
};

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 4096);
	__type(key, struct ra_rq_key);
	__type(value, __u64);
} inflight SEC(".maps");

/* Window length, set at load. */
const volatile __u64 window_ns = 250000000;

#define TAKE(dst, src) (dst) = __sync_lock_test_and_set(&(src), 0)

static __always_inline void emit(struct ra_acc *a, __u32 dev, __u64 now,
				 __u64 start, const struct ra_device *d)
{
	struct ra_window *r;
	struct mlbpf_snapshot snap;
	__u32 zero = 0;

	/* The record names the mode and generation of one version of the
	 * block (the applier is the daemon; the arm is the device's). */
	mlbpf_snapshot_take(bpf_map_lookup_elem(&control, &zero), &snap);

	r = bpf_ringbuf_reserve(&events, sizeof(*r), 0);
	if (!r) {
		mlbpf_count_lost(&lost);
		return;
	}
	mlbpf_fill_hdr(&r->hdr, RA_RECORD_KIND, sizeof(*r), d->arm, &snap);
	r->hdr.ts_ns = now;
	r->dev = dev;
	r->ra_kb = d->ra_kb;
	r->window_ns = now - start;
	TAKE(r->sync_ra, a->w.sync_ra);
	TAKE(r->async_ra, a->w.async_ra);
	TAKE(r->ra_pages, a->w.ra_pages);
	TAKE(r->ra_max_pages, a->w.ra_max_pages);
	TAKE(r->mmap_ra, a->w.mmap_ra);
	TAKE(r->req_pages, a->w.req_pages);
	TAKE(r->added_pages, a->w.added_pages);
	TAKE(r->evicted_pages, a->w.evicted_pages);
	TAKE(r->rq_issued, a->w.rq_issued);
	TAKE(r->rq_completed, a->w.rq_completed);
	TAKE(r->rq_seq, a->w.rq_seq);
	TAKE(r->rq_bytes, a->w.rq_bytes);
	TAKE(r->lat_ns, a->w.lat_ns);
	TAKE(r->lat_max_ns, a->w.lat_max_ns);
	TAKE(r->asked_bytes, a->w.asked_bytes);
	TAKE(r->reads, a->w.reads);
	TAKE(r->faults, a->w.faults);
	mlbpf_count(&stats, d->arm);
	bpf_ringbuf_submit(r, 0);
}

/*
 * account returns the accumulator of a watched device (user space
 * creates it with the device's "devices" entry), closing its window
 * first if it is over; NULL for a device not watched. One map lookup per
 * event; the "devices" entry is read only when a window closes.
 */
static __always_inline struct ra_acc *account(__u32 dev)
{
	struct ra_acc *a = bpf_map_lookup_elem(&acc, &dev);
	const struct ra_device *d;
	__u64 now, start;

	if (!a)
		return NULL;
	now = bpf_ktime_get_ns();
	start = a->start_ns;
	if (now - start >= window_ns &&
	    __sync_val_compare_and_swap(&a->start_ns, start, now) == start) {
		d = bpf_map_lookup_elem(&devices, &dev);
		if (d)
			emit(a, dev, now, start, d);
	}
	return a;
}

static __always_inline void ra_event(struct trace_event_raw_page_cache_ra_op *ctx, bool async)
{
	struct ra_acc *a = account(ctx->s_dev);
	__u64 ra_pages;

	if (!a)
		return;
	if (async)
		__sync_fetch_and_add(&a->w.async_ra, 1);
	else
		__sync_fetch_and_add(&a->w.sync_ra, 1);
	__sync_fetch_and_add(&a->w.ra_pages, ctx->size);
	__sync_fetch_and_add(&a->w.req_pages, ctx->req_count);
	if (ctx->mmap_miss)
		__sync_fetch_and_add(&a->w.mmap_ra, 1);
	ra_pages = ctx->ra_pages;
	if (ra_pages > a->w.ra_max_pages)
		a->w.ra_max_pages = ra_pages; /* a lost race keeps a close value */
}

SEC("tracepoint/readahead/page_cache_sync_ra")
int ra_sync(struct trace_event_raw_page_cache_ra_op *ctx)
{
	ra_event(ctx, false);
	return 0;
}

SEC("tracepoint/readahead/page_cache_async_ra")
int ra_async(struct trace_event_raw_page_cache_ra_op *ctx)
{
	ra_event(ctx, true);
	return 0;
}

/* Readahead by order (mmap read-around among others): only the file's
 * readahead limit, which says which setting the reader runs under. */
SEC("tracepoint/readahead/page_cache_ra_order")
int ra_order(struct trace_event_raw_page_cache_ra_order *ctx)
{
	struct ra_acc *a = account(ctx->s_dev);
	__u64 ra_pages;

	if (!a)
		return 0;
	ra_pages = ctx->ra_pages;
	if (ra_pages > a->w.ra_max_pages)
		a->w.ra_max_pages = ra_pages;
	return 0;
}

SEC("tracepoint/filemap/mm_filemap_add_to_page_cache")
int ra_add(struct trace_event_raw_mm_filemap_op_page_cache *ctx)
{
	struct ra_acc *a = account(ctx->s_dev);

	if (a)
		__sync_fetch_and_add(&a->w.added_pages, 1ULL << (ctx->order & 15));
	return 0;
}

SEC("tracepoint/filemap/mm_filemap_delete_from_page_cache")
int ra_delete(struct trace_event_raw_mm_filemap_op_page_cache *ctx)
{
	struct ra_acc *a = account(ctx->s_dev);

	if (a)
		__sync_fetch_and_add(&a->w.evicted_pages, 1ULL << (ctx->order & 15));
	return 0;
}

SEC("tracepoint/filemap/mm_filemap_get_pages")
int ra_get_pages(struct trace_event_raw_mm_filemap_op_page_cache_range *ctx)
{
	struct ra_acc *a = account(ctx->s_dev);
	__u64 first = ctx->index, last = ctx->last_index;

	if (!a)
		return 0;
	__sync_fetch_and_add(&a->w.reads, 1);
	if (last >= first)
		__sync_fetch_and_add(&a->w.asked_bytes, (last - first + 1) * 4096);
	return 0;
}

SEC("tracepoint/filemap/mm_filemap_fault")
int ra_fault(struct trace_event_raw_mm_filemap_fault *ctx)
{
	struct ra_acc *a = account(ctx->s_dev);

	if (!a)
		return 0;
	__sync_fetch_and_add(&a->w.faults, 1);
	__sync_fetch_and_add(&a->w.asked_bytes, 4096);
	return 0;
}

static __always_inline bool is_read(const char *rwbs)
{
	return rwbs[0] == 'R';
}

SEC("tracepoint/block/block_rq_issue")
int ra_rq_issue(struct trace_event_raw_block_rq *ctx)
{
	struct ra_rq_key k = {};
	struct ra_acc *a;
	__u64 sector, now, end;

	if (!is_read(ctx->rwbs))
		return 0;
	k.dev = ctx->dev;
	a = account(k.dev);
	if (!a)
		return 0;
	sector = ctx->sector;
	end = sector + ctx->nr_sector;
	__sync_fetch_and_add(&a->w.rq_issued, 1);
	__sync_fetch_and_add(&a->w.rq_bytes, ctx->bytes);
	if (sector == a->last_end)
		__sync_fetch_and_add(&a->w.rq_seq, 1);
	a->last_end = end;
	k.sector = sector;
	now = bpf_ktime_get_ns();
	bpf_map_update_elem(&inflight, &k, &now, BPF_ANY);
	return 0;
}

SEC("tracepoint/block/block_rq_complete")
int ra_rq_complete(struct trace_event_raw_block_rq_completion *ctx)
{
	struct ra_rq_key k = {};
	struct ra_acc *a;
	__u64 *issued, lat;

	k.dev = ctx->dev;
	k.sector = ctx->sector;
	issued = bpf_map_lookup_elem(&inflight, &k);
	if (!issued)
		return 0; /* not a read we saw issued */
	lat = bpf_ktime_get_ns() - *issued;
	bpf_map_delete_elem(&inflight, &k);
	a = account(k.dev);
	if (!a)
		return 0;
	__sync_fetch_and_add(&a->w.rq_completed, 1);
	__sync_fetch_and_add(&a->w.lat_ns, lat);
	if (lat > a->w.lat_max_ns)
		a->w.lat_max_ns = lat;
	return 0;
}
