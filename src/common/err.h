/*
 * err.h - raising and propagating errors inside Coffer.
 *
 * Raise:      return CF_ERROR(COFFER_E_IO, CF_OBJ(.file = path, CF_OFF(off)),
 *                             "could not read %zu bytes", n);
 * From errno: return cf_error_sys("read", path, off);   (uses errno)
 * Propagate:  CF_RET(call());            return on failure
 *             CF_GO(rc, call());         set rc and goto err on failure
 *
 * Each function that acquires resources has one 'err:' label that releases
 * them (WiredTiger's WT_ERR pattern).
 */
#ifndef COFFER_COMMON_ERR_H
#define COFFER_COMMON_ERR_H

#include <stdarg.h>
#include <stdint.h>

#include <coffer/error.h>

/* The object an error concerns; zero-initialized fields mean "none"
 * (use has_page etc. because 0 is a valid page number). */
typedef struct cf_obj {
	const char *file;
	const char *peer;
	int64_t page;
	int64_t generation;
	int64_t offset;
	int sys_errno;
	unsigned has_page : 1, has_generation : 1, has_offset : 1;
} cf_obj;

#define CF_PAGE(p) .page = (int64_t)(p), .has_page = 1
#define CF_GEN(g) .generation = (int64_t)(g), .has_generation = 1
#define CF_OFF(o) .offset = (int64_t)(o), .has_offset = 1
/* The object as a macro argument: parentheses keep its commas together. */
#define CF_OBJ(...) (&(cf_obj){__VA_ARGS__})

int cf_error_set(const char *func, int line, int code, const cf_obj *obj,
		 const char *fmt, ...) __attribute__((format(printf, 5, 6)));
int cf_error_vset(const char *func, int line, int code, const cf_obj *obj,
		  const char *fmt, va_list ap) __attribute__((format(printf, 5, 0)));

#define CF_ERROR(code, obj, ...) cf_error_set(__func__, __LINE__, (code), (obj), __VA_ARGS__)

/* Raise from errno after a failed system call OP on PATH (offset < 0: none).
 * The code follows errno (ENOSPC -> COFFER_E_DISK_FULL, ...). */
int cf_error_sys_at(const char *func, int line, const char *op, const char *path, int64_t offset);
#define cf_error_sys(op, path, offset) cf_error_sys_at(__func__, __LINE__, (op), (path), (offset))

/* Replace control characters (C0, DEL, C1 in UTF-8) in S with '?', in
 * place: for text another party chose, before it reaches a terminal. Every
 * error record gets it when filled. */
void cf_defang(char *s);

/* Add context in front of the current message: "while X: <old message>". */
void cf_error_prefix(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

#define CF_RET(x)                      \
	do {                           \
		int cf_rc_ = (x);      \
		if (cf_rc_ != 0)       \
			return cf_rc_; \
	} while (0)

#define CF_GO(rc, x)              \
	do {                      \
		(rc) = (x);       \
		if ((rc) != 0)    \
			goto err; \
	} while (0)

#endif
