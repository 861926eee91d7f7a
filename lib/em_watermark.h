/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The contiguous watermark of one partition. Offsets are tracked in the
 * order they were consumed and finish in any order; the committable offset
 * is one past the last offset of the longest prefix of finished ones. Only
 * that offset may be committed: everything below it has a durable result.
 * Offsets need not be contiguous (compaction and transaction markers leave
 * gaps). Not thread-safe: the owner serialises access.
 */
#ifndef EM_WATERMARK_H
#define EM_WATERMARK_H

#include <stddef.h>
#include <stdint.h>

#include "em_error.h"

typedef struct em_watermark em_watermark_t;

em_watermark_t *em_watermark_new(void);
void em_watermark_destroy(em_watermark_t *wm);

/* Tracks offset (larger than every offset tracked before) and stores in
 * *seq the handle to pass to em_watermark_done. EM_EINVAL when offset does
 * not increase, EM_ENOMEM when the ring cannot grow. */
em_err_t em_watermark_track(em_watermark_t *wm, int64_t offset, uint64_t *seq);

/* The same, remembering stamp (e.g. the record's timestamp) with it, for
 * em_watermark_oldest_stamp. */
em_err_t em_watermark_track_stamped(em_watermark_t *wm, int64_t offset, int64_t stamp, uint64_t *seq);

/* Forgets the offset tracked last (seq, not finished), as if it had never
 * been tracked: the owner gave the record back to Kafka (it will be read
 * again). EM_EINVAL when seq is not the last tracked or is finished. */
em_err_t em_watermark_untrack_last(em_watermark_t *wm, uint64_t seq);

/* Marks the tracked offset behind seq finished. EM_EINVAL for a seq that
 * is unknown or already finished. */
em_err_t em_watermark_done(em_watermark_t *wm, uint64_t seq);

/* The offset to commit (one past the finished prefix), or -1 when no
 * offset has finished yet. */
int64_t em_watermark_committable(const em_watermark_t *wm);

/* Offsets tracked and not yet below the watermark. */
size_t em_watermark_pending(const em_watermark_t *wm);

/* The stamp of the oldest offset not yet below the watermark (the first
 * unfinished one), or -1 when every tracked offset is finished. */
int64_t em_watermark_oldest_stamp(const em_watermark_t *wm);

#endif
