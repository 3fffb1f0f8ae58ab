/*
 * timefmt.h - reading and writing times as people type and read them.
 *
 * Coffer keeps times as int64 microseconds since the Unix epoch (UTC), the
 * wall clock. cf_time_parse() reads what an operator gives to --since or
 * --until; cf_time_format() writes UTC ISO 8601 with microseconds.
 */
#ifndef COFFER_COMMON_TIMEFMT_H
#define COFFER_COMMON_TIMEFMT_H

#include <stddef.h>
#include <stdint.h>

/* Wall clock now, microseconds since the epoch. */
int64_t cf_time_now_us(void);

/*
 * Parse TEXT into *OUT_US (microseconds since the epoch). Accepted:
 *   2026-11-25                      local midnight
 *   2026-11-25T19:00[:00[.frac]]    local time ('T' or one space)
 *   ...Z, ...+01:00, ...-0530, ...+01   UTC or the given offset
 *   @1764097200[.frac]              seconds since the epoch
 *   30s 10m 2h 3d 1w                that long before NOW_US
 * Errors: COFFER_E_BAD_TIME naming TEXT (nothing is written to *OUT_US).
 */
int cf_time_parse(const char *text, int64_t now_us, int64_t *out_us);

/* "2026-11-25T19:30:01.123456Z" into BUF (CF_TIME_BUF bytes are enough).
 * Returns BUF. */
#define CF_TIME_BUF 40
char *cf_time_format(int64_t us, char *buf, size_t cap);

#endif
