# Coffer - thin wrapper around Meson + Ninja.
#
#   make          build build/coffer, build/cofferd and libcoffer
#   make deps     install the Debian packages the build needs (as root)
#   make demo     install, build, and run the main job end to end
#   make check    install, build twice (normal; ASan+UBSan) and run every test
#   make bench    install, build, and run the benchmarks against peers
#   make docs     regenerate docs/errors.md and contrib/coffer.catalog

BUILD      ?= build
BUILD_ASAN ?= build-asan
MESON_OPTS ?=

.PHONY: all deps deps-check deps-bench build build-asan demo check bench docs clean

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

build: deps $(BUILD)/build.ninja
	ninja -C $(BUILD)

build-asan: deps-check $(BUILD_ASAN)/build.ninja
	ninja -C $(BUILD_ASAN)

demo: deps-check build
	@/usr/bin/python3 tools/demo.py $(BUILD)

check: deps-check build build-asan
	@/usr/bin/python3 tests/run_all.py --build $(BUILD) --build $(BUILD_ASAN)

bench: deps-bench build
	@sh bench/run.sh $(BUILD)

docs:
	/usr/bin/python3 tools/gencatalog.py --catalog catalog --docs docs/errors.md \
		--journal contrib/coffer.catalog

clean:
	rm -rf $(BUILD) $(BUILD_ASAN)
