/*
 * timefmt.c - parse and format times (see timefmt.h for the accepted forms).
 *
 * Invariants: parsing is strict (the whole text must match one form, every
 * field is range-checked, no silent normalization of "2026-02-30"); UTC
 * conversion uses the proleptic Gregorian calendar computed here (no
 * dependence on TZ); local times go through mktime() with the process's TZ.
 * Fractions of a second beyond microseconds are truncated.
 */
#include <ctype.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "common/err.h"
#include "common/timefmt.h"

#define US_PER_SEC INT64_C(1000000)

int64_t cf_time_now_us(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * US_PER_SEC + ts.tv_nsec / 1000;
}

/* Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's algorithm). */
static int64_t days_from_civil(int64_t y, unsigned m, unsigned d)
{
	y -= m <= 2;
	int64_t era = (y >= 0 ? y : y - 399) / 400;
	unsigned yoe = (unsigned)(y - era * 400);
	unsigned doy = (153 * (m + (m > 2 ? -3u : 9u)) + 2) / 5 + d - 1;
	unsigned doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
	return era * 146097 + (int64_t)doe - 719468;
}

static void civil_from_days(int64_t z, int64_t *y, unsigned *m, unsigned *d)
{
	z += 719468;
	int64_t era = (z >= 0 ? z : z - 146096) / 146097;
	unsigned doe = (unsigned)(z - era * 146097);
	unsigned yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
	unsigned doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
	unsigned mp = (5 * doy + 2) / 153;
	*d = doy - (153 * mp + 2) / 5 + 1;
	*m = mp < 10 ? mp + 3 : mp - 9;
	*y = (int64_t)yoe + era * 400 + (*m <= 2);
}

static unsigned days_in_month(int64_t y, unsigned m)
{
	static const unsigned dm[12] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
	bool leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
	return m == 2 && leap ? 29 : dm[m - 1];
}

char *cf_time_format(int64_t us, char *buf, size_t cap)
{
	int64_t secs = us / US_PER_SEC, frac = us % US_PER_SEC;
	if (frac < 0) {
		frac += US_PER_SEC;
		secs--;
	}
	int64_t days = secs / 86400, rem = secs % 86400;
	if (rem < 0) {
		rem += 86400;
		days--;
	}
	int64_t y;
	unsigned m, d;
	civil_from_days(days, &y, &m, &d);
	snprintf(buf, cap, "%04lld-%02u-%02uT%02d:%02d:%02d.%06dZ", (long long)y, m, d,
		 (int)(rem / 3600), (int)(rem / 60 % 60), (int)(rem % 60), (int)frac);
	return buf;
}

/* Read exactly N digits at *P into *V. */
static bool digits(const char **p, int n, int *v)
{
	int x = 0;
	for (int i = 0; i < n; i++) {
		if (!isdigit((unsigned char)(*p)[i]))
			return false;
		x = x * 10 + ((*p)[i] - '0');
	}
	*p += n;
	*v = x;
	return true;
}

/* ".ffffff" (1..9 digits) into microseconds; absent is 0. */
static bool fraction(const char **p, int64_t *us)
{
	*us = 0;
	if (**p != '.' && **p != ',')
		return true;
	(*p)++;
	int n = 0;
	int64_t scale = 100000;
	while (isdigit((unsigned char)**p)) {
		if (n < 6) {
			*us += (**p - '0') * scale;
			scale /= 10;
		}
		(*p)++;
		if (++n > 9)
			return false;
	}
	return n > 0;
}

static int bad_time(const char *text, const char *why)
{
	return CF_ERROR(COFFER_E_BAD_TIME, NULL,
			"cannot read \"%s\" as a time: %s; give an ISO 8601 date or date and time "
			"(2026-11-25, 2026-11-25T19:00:00Z, '2026-11-25 19:00:00' in local time, "
			"an offset such as +01:00), @EPOCH-SECONDS or an age such as 30s, 10m, 2h or 3d",
			text, why);
}

static int parse_epoch(const char *text, int64_t *out)
{
	const char *p = text + 1;
	bool neg = false;
	if (*p == '-') {
		neg = true;
		p++;
	}
	if (!isdigit((unsigned char)*p))
		return bad_time(text, "'@' must be followed by seconds since the epoch");
	int64_t s = 0;
	for (int n = 0; isdigit((unsigned char)*p); p++, n++) {
		if (n >= 12)
			return bad_time(text, "the number of seconds is too large");
		s = s * 10 + (*p - '0');
	}
	int64_t frac;
	if (!fraction(&p, &frac) || *p != '\0')
		return bad_time(text, "unexpected characters after the seconds");
	int64_t us = s * US_PER_SEC + frac;
	*out = neg ? -us : us;
	return COFFER_OK;
}

/* "30s", "10m", "2h", "3d", "1w": NOW minus the age. Returns 1 if TEXT has
 * this form (and sets *OUT), 0 if not. */
static int parse_age(const char *text, int64_t now_us, int64_t *out, int *rc)
{
	const char *p = text;
	int64_t n = 0;
	int nd = 0;
	while (isdigit((unsigned char)*p)) {
		if (nd++ >= 9) {
			*rc = bad_time(text, "the age is too large");
			return 1;
		}
		n = n * 10 + (*p++ - '0');
	}
	if (nd == 0 || p[0] == '\0' || p[1] != '\0')
		return 0;
	int64_t unit;
	switch (*p) {
	case 's':
		unit = 1;
		break;
	case 'm':
		unit = 60;
		break;
	case 'h':
		unit = 3600;
		break;
	case 'd':
		unit = 86400;
		break;
	case 'w':
		unit = 7 * 86400;
		break;
	default:
		*rc = bad_time(text, "an age ends in s, m, h, d or w");
		return 1;
	}
	*out = now_us - n * unit * US_PER_SEC;
	*rc = COFFER_OK;
	return 1;
}

static int parse_iso(const char *text, int64_t *out)
{
	const char *p = text;
	int y, mo, d, h = 0, mi = 0, s = 0;
	int64_t frac = 0;
	if (!digits(&p, 4, &y) || *p++ != '-' || !digits(&p, 2, &mo) || *p++ != '-' ||
	    !digits(&p, 2, &d))
		return bad_time(text, "not an ISO 8601 date (YYYY-MM-DD), @EPOCH or an age");
	if (mo < 1 || mo > 12)
		return bad_time(text, "the month is out of range");
	if (d < 1 || (unsigned)d > days_in_month(y, (unsigned)mo))
		return bad_time(text, "the day is out of range for the month");
	if (*p == 'T' || *p == 't' || *p == ' ') {
		p++;
		if (!digits(&p, 2, &h) || *p++ != ':' || !digits(&p, 2, &mi))
			return bad_time(text, "the time of day must be HH:MM[:SS[.FRACTION]]");
		if (*p == ':') {
			p++;
			if (!digits(&p, 2, &s) || !fraction(&p, &frac))
				return bad_time(text, "the seconds must be SS[.FRACTION]");
		}
		if (h > 23 || mi > 59 || s > 59)
			return bad_time(text, "the time of day is out of range");
	}
	bool zone = false;
	int64_t offset_s = 0;
	if (*p == 'Z' || *p == 'z') {
		zone = true;
		p++;
	} else if (*p == '+' || *p == '-') {
		int sign = *p++ == '-' ? -1 : 1, oh, om = 0;
		if (!digits(&p, 2, &oh))
			return bad_time(text, "a UTC offset must be +HH:MM, +HHMM or +HH");
		if (*p == ':')
			p++;
		if (isdigit((unsigned char)*p) && !digits(&p, 2, &om))
			return bad_time(text, "a UTC offset must be +HH:MM, +HHMM or +HH");
		if (oh > 23 || om > 59)
			return bad_time(text, "the UTC offset is out of range");
		zone = true;
		offset_s = sign * (oh * 3600 + om * 60);
	}
	if (*p != '\0')
		return bad_time(text, "unexpected characters after the date and time");
	if (zone) {
		int64_t secs = days_from_civil(y, (unsigned)mo, (unsigned)d) * 86400 + h * 3600 +
			       mi * 60 + s - offset_s;
		*out = secs * US_PER_SEC + frac;
		return COFFER_OK;
	}
	struct tm tm = {
		.tm_year = y - 1900, .tm_mon = mo - 1, .tm_mday = d,
		.tm_hour = h, .tm_min = mi, .tm_sec = s, .tm_isdst = -1, .tm_wday = -1,
	};
	time_t t = mktime(&tm);
	if (tm.tm_wday == -1) /* mktime failed (-1 is also a valid result) */
		return bad_time(text, "the local time cannot be represented");
	*out = (int64_t)t * US_PER_SEC + frac;
	return COFFER_OK;
}

int cf_time_parse(const char *text, int64_t now_us, int64_t *out_us)
{
	int64_t v = 0;
	int rc;
	if (text == NULL || *text == '\0')
		return bad_time(text ? text : "", "it is empty");
	if (text[0] == '@')
		rc = parse_epoch(text, &v);
	else if (!parse_age(text, now_us, &v, &rc))
		rc = parse_iso(text, &v);
	if (rc == COFFER_OK)
		*out_us = v;
	return rc;
}
