# baton — non-recursive build.  Targets: all run test bench fuzz asan tsan fmt deps deps-run interop clean
# Every process folder links common/ (libbt.a); a process folder never includes another's headers.

CC      ?= cc
BUILD   ?= build
SAN     ?=
OPT     ?= -O2
CFLAGS  += -std=gnu11 $(OPT) -g -Wall -Wextra -Werror -Wno-unused-parameter \
           -D_GNU_SOURCE -Icommon -pthread -MMD -MP $(SAN)
LDFLAGS += $(SAN) -pthread
LIBS    := -levent -levent_openssl -levent_pthreads -lzmq -lrocksdb -lssl -lcrypto -lcbor \
           -lsecp256k1 -lwslay -lhttp_parser -lcurl -ljansson -lm

# What building and running need (make run) ...
RUN_PKGS := build-essential pkg-config libevent-dev libzmq3-dev librocksdb-dev libssl-dev libcbor-dev \
            libsecp256k1-dev libwslay-dev libhttp-parser-dev libcurl4-openssl-dev libjansson-dev
# ... and what the tests add (make test): clang for the fuzzers, the tools the scripts call,
# python3 for better-sqlite3's build (tests/interop), node and npm; podman, runc, docker-compose
# and debootstrap run the image and the compose stack (tests/proc/podman.sh); chromium the dashboard test (tests/proc/dash.sh).
TEST_PKGS := clang libclang-rt-14-dev procps curl jq python3 python3-yaml podman runc docker-compose debootstrap chromium
DEB_PKGS := $(RUN_PKGS) $(TEST_PKGS)

COMMON_OBJ := $(patsubst %.c,$(BUILD)/%.o,$(wildcard common/*.c))
ROLES      := supervisor ingest verify store fanout
bin_supervisor := baton
bin_ingest     := baton-ingest
bin_verify     := baton-verify
bin_store      := baton-store
bin_fanout     := baton-fanout
BINS := $(foreach r,$(ROLES),$(BUILD)/$(bin_$(r))) $(BUILD)/batonctl
UNIT_BINS := $(patsubst tests/unit/%.c,$(BUILD)/tests/%,$(wildcard tests/unit/test_*.c))
TOOL_BINS := $(patsubst tools/%.c,$(BUILD)/tools/%,$(filter-out tools/batonctl.c,$(wildcard tools/*.c)))

SHELL := /bin/bash
# Keep intermediate objects (tests, tools) so a second make rebuilds nothing.
.SECONDARY:
.PHONY: deps-run all run test test-only bench fuzz asan tsan fmt deps clean interop
all: $(BINS) $(UNIT_BINS) $(TOOL_BINS)

$(BUILD)/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -c $< -o $@

# --version of every binary; bt_params.o is rebuilt when the version changes.
BT_VERSION := $(shell git describe --always --dirty 2>/dev/null || echo unknown)
$(BUILD)/version.stamp: FORCE
	@mkdir -p $(dir $@); echo '$(BT_VERSION)' | cmp -s - $@ || echo '$(BT_VERSION)' >$@
$(BUILD)/common/bt_params.o: $(BUILD)/version.stamp
$(BUILD)/common/bt_params.o: CFLAGS += -DBT_VERSION='"$(BT_VERSION)"'
.PHONY: FORCE
FORCE:

$(BUILD)/libbt.a: $(COMMON_OBJ)
	@rm -f $@
	ar rcs $@ $^

define role_rule
$(BUILD)/$(bin_$(1)): $(patsubst %.c,$(BUILD)/%.o,$(wildcard $(1)/*.c)) $(BUILD)/libbt.a
	$$(CC) $$(LDFLAGS) -o $$@ $$^ $$(LIBS)
endef
$(foreach r,$(ROLES),$(eval $(call role_rule,$(r))))

$(BUILD)/batonctl: $(BUILD)/tools/batonctl.o $(BUILD)/libbt.a
	$(CC) $(LDFLAGS) -o $@ $^ $(LIBS)

$(BUILD)/tools/%: $(BUILD)/tools/%.o $(BUILD)/libbt.a
	$(CC) $(LDFLAGS) -o $@ $^ $(LIBS)

$(BUILD)/tests/%: $(BUILD)/tests/unit/%.o $(BUILD)/libbt.a
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) -o $@ $^ $(LIBS)

# Install what is missing (Debian 12, as root); skip what is present.  deps-run: what make run
# needs; deps: everything the tests use.
deps-run:
	@missing=""; for p in $(RUN_PKGS); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then echo "installing:$$missing"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; fi

deps:
	@missing=""; for p in $(DEB_PKGS); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	command -v node >/dev/null || missing="$$missing nodejs"; \
	command -v npm >/dev/null || missing="$$missing npm"; \
	if [ -n "$$missing" ]; then echo "installing:$$missing"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; fi
	@if [ -f tests/e2e/package.json ] && { [ ! -d tests/e2e/node_modules ] || \
	    [ tests/e2e/package-lock.json -nt tests/e2e/node_modules/.package-lock.json ]; }; then \
	  (cd tests/e2e && npm ci --no-audit --no-fund --loglevel=error); fi
	@# tests/interop: the official PDS; better-sqlite3 builds from source (build-essential, python3)
	@if [ -f tests/interop/package.json ] && { [ ! -d tests/interop/node_modules ] || \
	    [ tests/interop/package-lock.json -nt tests/interop/node_modules/.package-lock.json ]; }; then \
	  (cd tests/interop && npm ci --no-audit --no-fund --loglevel=error); fi

run: deps-run all
	exec $(BUILD)/baton

# Normal build, then the ASan+UBSan build; one run of every test on each, then the TSan build's
# threaded unit tests and two scenarios (tests/run.sh).
test: deps
	$(MAKE) all
	$(MAKE) asan
	$(MAKE) tsan
	ASAN_BUILD=build-asan TSAN_BUILD=build-tsan ./tests/run.sh $(BUILD)

test-only: all
	./tests/run.sh $(BUILD)

# baton against Bluesky's official PDS and @atproto/sync's Firehose (tests/interop/README.md).
interop: deps all
	node tests/interop/run.mjs $(BUILD)

asan:
	$(MAKE) BUILD=build-asan OPT=-O1 SAN="-fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined" all

# ThreadSanitizer build of every stage (build-tsan); tests/tsan.supp lists third-party code only.
tsan:
	$(MAKE) BUILD=build-tsan OPT=-O1 SAN="-fsanitize=thread -fno-omit-frame-pointer -Wno-tsan" all

FUZZ_SRC := $(wildcard tests/fuzz/fuzz_*.c)
# libFuzzer targets (clang, ASan+UBSan) in $(BUILD)/fuzz: common/ is compiled once into an archive
# (libbt.a) and the fanout's files, without its main(), with tests/fuzz/fanout_stub.c into libfan.a.
FUZZ_DIR    := $(BUILD)/fuzz
FUZZ_SAN    := -fsanitize=address,undefined -fno-sanitize-recover=undefined
FUZZ_CFLAGS := -std=gnu11 -g -O1 -D_GNU_SOURCE -Icommon -Ifanout -pthread -MMD -MP $(FUZZ_SAN) \
               -fsanitize=fuzzer-no-link
FUZZ_BINS   := $(patsubst tests/fuzz/%.c,$(FUZZ_DIR)/%,$(FUZZ_SRC))
FUZZ_FANOUT := $(patsubst %.c,$(FUZZ_DIR)/obj/%.o,$(filter-out fanout/fanout_main.c,$(wildcard fanout/*.c)) \
               tests/fuzz/fanout_stub.c)
.PHONY: fuzz-bins
$(FUZZ_DIR)/obj/%.o: %.c
	@mkdir -p $(dir $@)
	clang $(FUZZ_CFLAGS) -c $< -o $@
$(FUZZ_DIR)/libbt.a: $(patsubst %.c,$(FUZZ_DIR)/obj/%.o,$(wildcard common/*.c))
	@rm -f $@
	ar rcs $@ $^
$(FUZZ_DIR)/libfan.a: $(FUZZ_FANOUT)
	@rm -f $@
	ar rcs $@ $^
$(FUZZ_DIR)/fuzz_%: $(FUZZ_DIR)/obj/tests/fuzz/fuzz_%.o $(FUZZ_DIR)/libfan.a $(FUZZ_DIR)/libbt.a
	clang $(FUZZ_SAN) -fsanitize=fuzzer -pthread -o $@ $^ $(LIBS)
fuzz-bins: $(FUZZ_BINS)
# Each target runs FUZZ_SECONDS (default 20) on a copy of its seed corpus (new inputs stay in
# $(BUILD)/fuzz), then replays tests/fuzz/regress/<target>/ (tests/fuzz/run.sh; make test: 3 s each).
fuzz: deps
	FUZZ_SECONDS=$${FUZZ_SECONDS:-20} bash tests/fuzz/run.sh $(BUILD)

bench: deps all
	./tests/bench.sh $(BUILD)

fmt:
	clang-format -i common/*.[ch] */*_main.c

clean:
	rm -rf build build-asan build-tsan

-include $(shell find $(BUILD) -name '*.d' 2>/dev/null)
