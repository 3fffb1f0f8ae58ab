/* test_error.c - the error catalog and the per-thread detail record. */
#include <errno.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "common/catalog.h"
#include "common/err.h"

static void test_lookup_by_number_and_name(void **state)
{
	(void)state;
	assert_int_equal(coffer_code_lookup("20"), COFFER_E_IO);
	assert_int_equal(coffer_code_lookup("COFFER_E_IO"), COFFER_E_IO);
	assert_int_equal(coffer_code_lookup("io"), COFFER_E_IO);
	assert_int_equal(coffer_code_lookup("page_checksum"), COFFER_E_PAGE_CHECKSUM);
	assert_int_equal(coffer_code_lookup("0"), 0);
	assert_int_equal(coffer_code_lookup("999"), 0);
	assert_int_equal(coffer_code_lookup("20x"), 0);
	assert_int_equal(coffer_code_lookup("NO_SUCH_THING"), 0);
	assert_int_equal(coffer_code_lookup(""), 0);
	assert_string_equal(coffer_code_name(COFFER_E_DISK_FULL), "COFFER_E_DISK_FULL");
	assert_null(coffer_code_name(248));
	assert_string_equal(coffer_code_message(248), "unknown error");
}

static void test_catalog_is_well_formed(void **state)
{
	(void)state;
	assert_true(coffer_error_table_len > 40);
	for (unsigned i = 0; i < coffer_error_table_len; i++) {
		const struct coffer_error_info *e = &coffer_error_table[i];
		assert_true(e->code > 0 && e->code <= COFFER_CODE_MAX);
		if (i > 0)
			assert_true(coffer_error_table[i - 1].code < e->code);
		assert_true(strlen(e->message) > 0);
		assert_true(strlen(e->explanation) > 20);
		assert_true(strlen(e->remedy) > 10);
		assert_ptr_equal(coffer_error_info_get(e->code), e);
	}
	for (unsigned i = 0; i < coffer_event_table_len; i++) {
		const struct coffer_event_info *e = &coffer_event_table[i];
		assert_true(e->id >= 1000 && e->id <= 9999);
		assert_int_equal(strlen(e->message_id), 32);
		assert_true(e->severity >= 3 && e->severity <= 6);
	}
}

static void test_errno_mapping(void **state)
{
	(void)state;
	assert_int_equal(coffer_code_from_errno(ENOSPC), COFFER_E_DISK_FULL);
	assert_int_equal(coffer_code_from_errno(EDQUOT), COFFER_E_DISK_FULL);
	assert_int_equal(coffer_code_from_errno(EACCES), COFFER_E_PERMISSION);
	assert_int_equal(coffer_code_from_errno(ENOENT), COFFER_E_FILE_NOT_FOUND);
	assert_int_equal(coffer_code_from_errno(EIO), COFFER_E_IO);
}

static void test_detail_record(void **state)
{
	(void)state;
	coffer_error_clear();
	assert_int_equal(coffer_error_last()->code, COFFER_OK);
	int rc = CF_ERROR(COFFER_E_PAGE_CHECKSUM,
			  CF_OBJ(.file = "/d/coffer.db", CF_PAGE(17)),
			  "page %d of \"%s\" failed its checksum", 17, "/d/coffer.db");
	assert_int_equal(rc, COFFER_E_PAGE_CHECKSUM);
	const coffer_error *e = coffer_error_last();
	assert_int_equal(e->code, COFFER_E_PAGE_CHECKSUM);
	assert_string_equal(e->file, "/d/coffer.db");
	assert_int_equal(e->page, 17);
	assert_int_equal(e->generation, COFFER_NONE);
	assert_int_equal(e->offset, COFFER_NONE);
	char obj[256];
	coffer_error_object(e, obj, sizeof obj);
	assert_string_equal(obj, "file=/d/coffer.db page=17");

	cf_error_prefix("while opening the store");
	assert_string_equal(e->message,
			    "while opening the store: page 17 of \"/d/coffer.db\" failed its checksum");
	/* Page 0 is a real page number and must show. */
	CF_ERROR(COFFER_E_PAGE_CORRUPT, CF_OBJ(CF_PAGE(0)), "x");
	assert_int_equal(coffer_error_last()->page, 0);
}

static void test_sys_error(void **state)
{
	(void)state;
	errno = ENOSPC;
	int rc = cf_error_sys("write", "/d/log/00000001.log", 4096);
	assert_int_equal(rc, COFFER_E_DISK_FULL);
	const coffer_error *e = coffer_error_last();
	assert_int_equal(e->sys_errno, ENOSPC);
	assert_int_equal(e->offset, 4096);
	assert_non_null(strstr(e->message, "could not write \"/d/log/00000001.log\" at offset 4096"));
	assert_int_equal(errno, ENOSPC);
}

static void test_print_format(void **state)
{
	(void)state;
	CF_ERROR(COFFER_E_DISK_FULL, CF_OBJ(.file = "/x", .sys_errno = ENOSPC),
		 "could not extend \"/x\"");
	char *buf = NULL;
	size_t len = 0;
	FILE *f = open_memstream(&buf, &len);
	coffer_error_print(f, "coffer", coffer_error_last());
	fclose(f);
	assert_non_null(strstr(buf, "coffer: error: could not extend \"/x\" (COFFER_E_DISK_FULL)\n"));
	assert_non_null(strstr(buf, "coffer: detail: file=/x errno=28"));
	assert_non_null(strstr(buf, "coffer: hint: Free space"));
	free(buf);
}

static void test_control_characters_are_defanged(void **state)
{
	(void)state;
	/* As a hostile peer's ERROR frame or a planted file name would bring
	 * them: an OSC retitle, a screen clear, a forged line, a C1 CSI (UTF-8). */
	CF_ERROR(COFFER_E_PROTOCOL, CF_OBJ(.file = "/d/\x1b[2Jx", .peer = "p\x07q"),
		 "bad \x1b]0;owned\x07 thing\ncoffer: error: forged \xc2\x9b" "2J caf\xc3\xa9 \x7f");
	const coffer_error *e = coffer_error_last();
	assert_string_equal(e->message, "bad ?]0;owned? thing?coffer: error: forged ??2J caf\xc3\xa9 ?");
	assert_string_equal(e->file, "/d/?[2Jx");
	assert_string_equal(e->peer, "p?q");
	cf_error_prefix("while reading \"%s\"", "a\tb");
	assert_string_equal(e->message,
			    "while reading \"a?b\": bad ?]0;owned? thing?coffer: error: forged ??2J caf\xc3\xa9 ?");
}

static void *thread_body(void *arg)
{
	(void)arg;
	/* A fresh thread starts with no error, and its errors stay its own. */
	if (coffer_error_last()->code != COFFER_OK)
		return (void *)1;
	CF_ERROR(COFFER_E_TIMEOUT, NULL, "in thread");
	return NULL;
}

static void test_per_thread(void **state)
{
	(void)state;
	CF_ERROR(COFFER_E_IO, NULL, "main thread");
	pthread_t t;
	void *res = (void *)2;
	assert_int_equal(pthread_create(&t, NULL, thread_body, NULL), 0);
	assert_int_equal(pthread_join(t, &res), 0);
	assert_null(res);
	assert_int_equal(coffer_error_last()->code, COFFER_E_IO);
	assert_string_equal(coffer_error_last()->message, "main thread");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_lookup_by_number_and_name),
		cmocka_unit_test(test_catalog_is_well_formed),
		cmocka_unit_test(test_errno_mapping),
		cmocka_unit_test(test_detail_record),
		cmocka_unit_test(test_sys_error),
		cmocka_unit_test(test_print_format),
		cmocka_unit_test(test_control_characters_are_defanged),
		cmocka_unit_test(test_per_thread),
	};
	return cmocka_run_group_tests_name("error", tests, NULL, NULL);
}
