/*
 * fuzz_config.c - libFuzzer target: cofferd's configuration file.
 *
 * The parser is static inside src/server/cofferd.c (load_config, the inih
 * handler cfg_handler, apply_key, parse_size, ...), so this file includes
 * cofferd.c itself, with its main() renamed, and links the other server
 * files. The input is written as the configuration file and read the way
 * cofferd reads it: parse_args(cofferd --config FILE --data DIR), which
 * loads the file (inih's ini_parse_file calling cofferd's handler for every
 * key), then applies the flags and the cross-checks (TLS pair, output
 * buffer larger than the largest bulk, default listener). The inih library
 * itself is the system's and not instrumented: coverage comes from
 * cofferd's side of the parsing.
 */
#include <limits.h>
#include <stdint.h>

#include "fuzz_util.h"

int cofferd_main(int argc, char **argv);
#define main cofferd_main
#include "server/cofferd.c"
#undef main

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static char path[PATH_MAX];
	if (path[0] == '\0')
		fz_path(path, fz_tmpdir(), "cofferd.conf");
	fz_write_file(path, data, size);

	struct config cfg = {0};
	cfg.lim = (struct srv_limits){SRV_DEFAULT_MAX_CLIENTS,       SRV_DEFAULT_MAX_BULK,
				      SRV_DEFAULT_MAX_ARGS,          SRV_DEFAULT_MAX_INLINE,
				      SRV_DEFAULT_MAX_QUERY,         SRV_DEFAULT_MAX_OUTPUT,
				      SRV_DEFAULT_WORKERS,           SRV_DEFAULT_HANDSHAKE_TIMEOUT,
				      SRV_DEFAULT_REQUEST_TIMEOUT,   SRV_DEFAULT_IDLE_TIMEOUT};
	static char a0[] = "cofferd", a1[] = "--config", a3[] = "--data", a4[] = "/nonexistent/fuzz";
	char *argv[] = {a0, a1, path, a3, a4, NULL};
	optind = 0; /* restart getopt_long */
	(void)parse_args(&cfg, 5, argv);
	config_free(&cfg);

	/* load_config alone, on a fresh configuration. */
	struct config c2 = {0};
	(void)load_config(&c2, path);
	config_free(&c2);
	coffer_error_clear();
	return 0;
}
