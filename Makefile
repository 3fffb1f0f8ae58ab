# Coffer - thin wrapper around Meson + Ninja.
#
#   make          build build/coffer, build/cofferd and libcoffer
#   make deps     install the Debian packages the build needs (as root)
#   make demo     install, build, and run the main job end to end
#   make check    install, build three times (normal; ASan+UBSan; clang
#                 libFuzzer) and run every test, the fuzz targets included
#   make fuzz     install, build the libFuzzer targets (build-fuzz) and run
#                 only them (COFFER_FUZZ_TIME=SECONDS per target, default 60)
#   make fuzz-seeds  rewrite tests/fuzz/corpus with the real writers
#   make bench    install, build, and run the benchmarks against peers
#   make docs     regenerate docs/errors.md and contrib/coffer.catalog

BUILD      ?= build
BUILD_ASAN ?= build-asan
BUILD_FUZZ ?= build-fuzz
MESON_OPTS ?=

.PHONY: all deps deps-check deps-bench build build-asan build-fuzz demo check fuzz fuzz-seeds \
	bench docs clean

all: build

deps:
	@sh tools/deps.sh build
deps-check:
	@sh tools/deps.sh check
deps-bench:
	@sh tools/deps.sh bench

$(BUILD)/build.ninja:
	meson setup $(BUILD) $(MESON_OPTS)

$(BUILD_ASAN)/build.ninja:
	meson setup $(BUILD_ASAN) -Db_sanitize=address,undefined -Db_lundef=false \
		-Dbuildtype=debug $(MESON_OPTS)

# The fuzz build: clang, ASan+UBSan, everything instrumented for libFuzzer
# (tests/fuzz/meson.build); warnings are errors there too, with clang's
# own set of them.
$(BUILD_FUZZ)/build.ninja:
	CC=clang meson setup $(BUILD_FUZZ) -Dfuzz=true -Db_sanitize=address,undefined \
		-Db_lundef=false -Dc_args=-fsanitize=fuzzer-no-link $(MESON_OPTS)

build: deps $(BUILD)/build.ninja
	ninja -C $(BUILD)

build-asan: deps-check $(BUILD_ASAN)/build.ninja
	ninja -C $(BUILD_ASAN)

demo: deps-check build
	@/usr/bin/python3 tools/demo.py $(BUILD)

build-fuzz: deps-check $(BUILD_FUZZ)/build.ninja
	ninja -C $(BUILD_FUZZ) fuzz

check: deps-check build build-asan build-fuzz
	@/usr/bin/python3 tests/run_all.py --build $(BUILD) --build $(BUILD_ASAN) --build $(BUILD_FUZZ)

fuzz: build-fuzz
	@/usr/bin/python3 tests/run_all.py --build $(BUILD_FUZZ) --suite fuzz

fuzz-seeds: build-fuzz
	rm -rf tests/fuzz/corpus
	$(BUILD_FUZZ)/tests/fuzz/fuzz_make_seeds tests/fuzz/corpus

bench: deps-bench build
	@sh bench/run.sh $(BUILD)

docs:
	/usr/bin/python3 tools/gencatalog.py --catalog catalog --docs docs/errors.md \
		--journal contrib/coffer.catalog

clean:
	rm -rf $(BUILD) $(BUILD_ASAN) $(BUILD_FUZZ)
