/* test_timefmt.c - parsing --since/--until times and formatting UTC times. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cmocka.h>

#include "common/err.h"
#include "common/timefmt.h"

#define S INT64_C(1000000)
/* 2026-11-25T19:00:00Z */
#define T0 (INT64_C(1795633200) * S)

static int64_t parse_ok(const char *text, int64_t now)
{
	int64_t v = -42;
	int rc = cf_time_parse(text, now, &v);
	if (rc != COFFER_OK)
		fail_msg("\"%s\": %s", text, coffer_error_last()->message);
	return v;
}

static void set_tz(const char *tz)
{
	setenv("TZ", tz, 1);
	tzset();
}

static void test_iso_utc_and_offsets(void **state)
{
	(void)state;
	assert_int_equal(parse_ok("2026-11-25T19:00:00Z", 0), T0);
	assert_int_equal(parse_ok("2026-11-25t19:00:00z", 0), T0);
	assert_int_equal(parse_ok("2026-11-25T19:00Z", 0), T0);
	assert_int_equal(parse_ok("2026-11-25T19:00:00.123456Z", 0), T0 + 123456);
	assert_int_equal(parse_ok("2026-11-25T19:00:00.5Z", 0), T0 + 500000);
	assert_int_equal(parse_ok("2026-11-25T19:00:00.123456789Z", 0), T0 + 123456);
	assert_int_equal(parse_ok("2026-11-25T20:00:00+01:00", 0), T0);
	assert_int_equal(parse_ok("2026-11-25T20:00:00+0100", 0), T0);
	assert_int_equal(parse_ok("2026-11-25T20:00:00+01", 0), T0);
	assert_int_equal(parse_ok("2026-11-25T13:30:00-05:30", 0), T0);
	assert_int_equal(parse_ok("2026-11-25 19:00:00Z", 0), T0);
	assert_int_equal(parse_ok("2024-02-29T12:30:15Z", 0), INT64_C(1709209815) * S);
	assert_int_equal(parse_ok("1970-01-01T00:00:00Z", 0), 0);
}

static void test_local_time(void **state)
{
	(void)state;
	set_tz("UTC0");
	assert_int_equal(parse_ok("2026-11-25", 0), INT64_C(1795564800) * S);
	assert_int_equal(parse_ok("2026-11-25 19:00:00", 0), T0);
	/* A fixed zone one hour east of UTC (POSIX TZ: no tzdata needed). */
	set_tz("CET-1");
	assert_int_equal(parse_ok("2026-11-25 20:00:00", 0), T0);
	assert_int_equal(parse_ok("2026-11-25T20:00", 0), T0);
	assert_int_equal(parse_ok("2026-11-25", 0), INT64_C(1795564800) * S - 3600 * S);
	/* An explicit offset wins over TZ. */
	assert_int_equal(parse_ok("2026-11-25T19:00:00Z", 0), T0);
	set_tz("UTC0");
}

static void test_epoch_and_ages(void **state)
{
	(void)state;
	assert_int_equal(parse_ok("@1795633200", 0), T0);
	assert_int_equal(parse_ok("@1795633200.25", 0), T0 + 250000);
	assert_int_equal(parse_ok("@0", 0), 0);
	assert_int_equal(parse_ok("@-1", 0), -S);
	int64_t now = T0;
	assert_int_equal(parse_ok("30s", now), now - 30 * S);
	assert_int_equal(parse_ok("10m", now), now - 600 * S);
	assert_int_equal(parse_ok("2h", now), now - 7200 * S);
	assert_int_equal(parse_ok("3d", now), now - 3 * 86400 * S);
	assert_int_equal(parse_ok("1w", now), now - 7 * 86400 * S);
	assert_int_equal(parse_ok("0s", now), now);
}

static void test_rejects_with_the_text(void **state)
{
	(void)state;
	static const char *bad[] = {
		"", "yesterday", "2026-13-01", "2026-00-10", "2026-02-30", "2025-02-29",
		"2026-11-25T24:00", "2026-11-25T19:60", "2026-11-25T19:00:61Z", "2026-11-25T19",
		"2026-11-25T19:00:00Zjunk", "2026-11-25T19:00:00+25:00", "2026-11-25T19:00:00+01:99",
		"2026-1-25", "26-11-25", "10x", "10", "s", "@", "@12x", "@1.", "-5m", "10 m",
		"2026-11-25T19:00:00.Z", "99999999999s", "@99999999999999",
	};
	for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
		int64_t v = 77;
		int rc = cf_time_parse(bad[i], T0, &v);
		if (rc != COFFER_E_BAD_TIME)
			fail_msg("\"%s\" was accepted (%lld)", bad[i], (long long)v);
		assert_int_equal(v, 77);
		const coffer_error *e = coffer_error_last();
		assert_int_equal(e->code, COFFER_E_BAD_TIME);
		char quoted[64];
		snprintf(quoted, sizeof quoted, "\"%s\"", bad[i]);
		assert_non_null(strstr(e->message, quoted));
	}
	assert_int_equal(cf_time_parse(NULL, 0, &(int64_t){0}), COFFER_E_BAD_TIME);
}

static void test_format(void **state)
{
	(void)state;
	char buf[CF_TIME_BUF];
	assert_string_equal(cf_time_format(0, buf, sizeof buf), "1970-01-01T00:00:00.000000Z");
	assert_string_equal(cf_time_format(-1, buf, sizeof buf), "1969-12-31T23:59:59.999999Z");
	assert_string_equal(cf_time_format(T0 + 123456, buf, sizeof buf),
			    "2026-11-25T19:00:00.123456Z");
	assert_string_equal(cf_time_format(INT64_C(1709209815) * S, buf, sizeof buf),
			    "2024-02-29T12:30:15.000000Z");
	/* What is printed parses back to the same instant. */
	for (int64_t t = -5 * S; t < 400LL * 86400 * S * 60; t += 86400 * S * 37 + 123457) {
		cf_time_format(t, buf, sizeof buf);
		assert_int_equal(parse_ok(buf, 0), t);
	}
	int64_t now = cf_time_now_us();
	assert_true(now > T0 - 5LL * 365 * 86400 * S); /* the clock is sane */
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_iso_utc_and_offsets),
		cmocka_unit_test(test_local_time),
		cmocka_unit_test(test_epoch_and_ages),
		cmocka_unit_test(test_rejects_with_the_text),
		cmocka_unit_test(test_format),
	};
	return cmocka_run_group_tests_name("timefmt", tests, NULL, NULL);
}
