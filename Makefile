# kproxyd - GNU Makefile.
#
#   make            build build/kproxyd
#   make run        install missing packages, build, start a mock cluster and
#                   kproxyd against it (conf/kproxyd.dev.json; more kproxyd
#                   arguments in RUN_ARGS="-X log_level=debug")
#   make check      install missing packages, build, run every test: unit
#                   (check), integration (mock cluster), fuzz corpora, then
#                   the same again under ASan+UBSan
#   make deps       install the missing Debian packages (tests/deps.sh runs
#                   apt-get, with sudo when not root); run, check, bench,
#                   fuzz and valgrind call it first. NO_DEPS=1 skips it
#                   (packagers, CI images that install their own packages)
#   make install    PREFIX=/usr/local DESTDIR= (never replaces an existing
#                   /etc/kproxyd/kproxyd.json; the sample goes beside it)
#   make uninstall  the same files again (an edited config stays)
#   make crash      the disk spool's SIGKILL series, 20 runs (CRASH_RUNS=N)
#
# Objects go to $(BUILD) (build/ by default, build/asan for sanitizers).

PREFIX ?= /usr/local
DESTDIR ?=
SYSCONFDIR ?= /etc
MANDIR ?= $(PREFIX)/share/man
DOCDIR ?= $(PREFIX)/share/doc/kproxyd
# Where systemd looks for units (Debian: /lib/systemd/system).
UNITDIR ?= $(or $(shell pkg-config --variable=systemdsystemunitdir systemd \
                 2>/dev/null),/lib/systemd/system)
BUILD ?= build
SANITIZE ?=

CC ?= cc
WARN := -Wall -Wextra -Werror -Wshadow -Wstrict-prototypes \
        -Wmissing-prototypes -Wformat=2 -Wvla -Wimplicit-fallthrough
CFLAGS ?= -O2 -g
CFLAGS += -std=gnu11 $(WARN) -Iinclude -MMD -MP -D_GNU_SOURCE
CARES_LIBS := $(shell pkg-config --libs libcares 2>/dev/null || echo -lcares)
LDLIBS := -lev -lzstd -llz4 -lsnappy -lmicrohttpd -ljansson -lz -lm \
          -lssl -lcrypto -lpthread $(CARES_LIBS)

ifeq ($(SANITIZE),1)
CFLAGS += -O1 -fsanitize=address,undefined -fno-omit-frame-pointer \
          -fno-sanitize-recover=undefined
LDFLAGS += -fsanitize=address,undefined
endif

# The daemon is linked with link-time optimisation: the per-message path
# crosses router -> topic -> partition -> batch -> record, one module each,
# and inlining across them saves 13% of its instructions (callgrind, 100 B
# lines). Fat objects keep plain code too, so tests link without LTO.
ifneq ($(SANITIZE),1)
LTO ?= -flto=auto -ffat-lto-objects
endif

# The SSE4.2 CRC-32C path is compiled for x86-64 with a runtime CPU check.
CHECK_LIBS := $(shell pkg-config --libs check 2>/dev/null || echo -lcheck)
RDKAFKA_LIBS := $(shell pkg-config --libs rdkafka 2>/dev/null || echo -lrdkafka)

SRCS := $(wildcard src/kp_*.c)
OBJS := $(SRCS:src/%.c=$(BUILD)/%.o)
UNIT_SRCS := $(wildcard tests/check_*.c)
UNITS := $(UNIT_SRCS:tests/%.c=$(BUILD)/%)
FUZZ_SRCS := $(wildcard tests/fuzz/fuzz_*.c)
FUZZ_REPLAY := $(FUZZ_SRCS:tests/fuzz/%.c=$(BUILD)/replay_%)
TOOLS := build/tools/kp_mock build/tools/kp_consume
FUZZ_TIME ?= 60

.PHONY: all deps check structure check-build unit it fuzz-replay run install uninstall \
        clean bench fuzz valgrind tools crash

all: $(BUILD)/kproxyd

$(BUILD)/%.o: src/%.c | $(BUILD)
	$(CC) $(CFLAGS) $(LTO) -c -o $@ $<

$(BUILD):
	mkdir -p $@ build/tools

$(BUILD)/libkproxyd.a: $(OBJS)
	$(AR) rcs $@ $^

$(BUILD)/kproxyd: $(BUILD)/main.o $(BUILD)/libkproxyd.a
	$(CC) $(CFLAGS) $(LTO) $(LDFLAGS) -o $@ $^ $(LDLIBS)

$(BUILD)/main.o: src/main.c | $(BUILD)
	$(CC) $(CFLAGS) $(LTO) -c -o $@ $<

$(BUILD)/check_%: tests/check_%.c $(BUILD)/libkproxyd.a | $(BUILD)
	$(CC) $(CFLAGS) -Itests $(LDFLAGS) -o $@ $< $(BUILD)/libkproxyd.a \
	    $(LDLIBS) $(CHECK_LIBS)

# Fuzz targets replayed over their corpora by a plain main (gcc); `make fuzz`
# builds the same targets with clang's libFuzzer.
$(BUILD)/replay_%: tests/fuzz/%.c tests/fuzz/replay_main.c $(BUILD)/libkproxyd.a
	$(CC) $(CFLAGS) $(LDFLAGS) -o $@ $< tests/fuzz/replay_main.c \
	    $(BUILD)/libkproxyd.a $(LDLIBS)

build/tools/kp_mock: tests/kp_mock.c | $(BUILD)
	mkdir -p build/tools
	$(CC) -O2 -g -std=gnu11 -Wall -Wextra -Werror -o $@ $< $(RDKAFKA_LIBS) -lpthread

build/tools/kp_consume: tests/kp_consume.c | $(BUILD)
	mkdir -p build/tools
	$(CC) -O2 -g -std=gnu11 -Wall -Wextra -Werror -o $@ $< $(RDKAFKA_LIBS)

build/tools/rdk_bench: tests/bench/rdk_bench.c | $(BUILD)
	mkdir -p build/tools
	$(CC) -O2 -g -std=gnu11 -Wall -Wextra -Werror -o $@ $< $(RDKAFKA_LIBS)

build/tools/kp_writers: tests/bench/kp_writers.c | $(BUILD)
	mkdir -p build/tools
	$(CC) -O2 -g -std=gnu11 $(WARN) -D_GNU_SOURCE -o $@ $<

build/tools/kp_relay: tests/bench/kp_relay.c | $(BUILD)
	mkdir -p build/tools
	$(CC) -O2 -g -std=gnu11 $(WARN) -D_GNU_SOURCE -o $@ $<

tools: $(TOOLS)

# Benchmark: kproxyd beside librdkafka on the same mock cluster, one row per
# shape of traffic (tests/bench/README.md); prints ratios and targets.
# BENCH_ARGS="--rows 100B,w100 --messages 200000 --repeat 1" to shorten it;
# PROFILE=1 adds a perf profile of kproxyd per row.
bench: deps
	$(MAKE) all tools build/tools/rdk_bench build/tools/kp_writers \
	    build/tools/kp_relay
	python3 tests/bench/bench.py --kproxyd build/kproxyd --tools build/tools \
	    $(if $(filter 1,$(PROFILE)),--profile) $(BENCH_ARGS)

# libFuzzer runs of every target for FUZZ_TIME seconds each (clang).
fuzz: deps
	@mkdir -p build/fuzz
	@set -e; for f in $(FUZZ_SRCS); do n=$$(basename $$f .c); \
	    echo "== $$n ($(FUZZ_TIME)s)"; \
	    clang -g -O1 -std=gnu11 -D_GNU_SOURCE -Iinclude \
	        -fsanitize=fuzzer,address,undefined $$f $(SRCS) \
	        -o build/fuzz/$$n $(LDLIBS); \
	    mkdir -p build/fuzz/corpus-$$n; \
	    build/fuzz/$$n -max_total_time=$(FUZZ_TIME) -print_final_stats=1 \
	        build/fuzz/corpus-$$n tests/fuzz/corpus/$$n; done

# The disk spool's crash series (tests/it/test_spool.py): kproxyd SIGKILLed
# at CRASH_RUNS random moments while a writer streams, restarted each time
# with the same spool, then every message checked in Kafka; and a torn
# newest segment. `make check` runs a series of 5. The seed is printed;
# CRASH_SEED=N repeats a series.
CRASH_RUNS ?= 20
crash: deps
	$(MAKE) all tools
	KP_CRASH_RUNS=$(CRASH_RUNS) $(if $(CRASH_SEED),KP_CRASH_SEED=$(CRASH_SEED)) \
	    python3 tests/it/run.py --kproxyd $(BUILD)/kproxyd \
	    --tools build/tools -k crash_sigkill -k torn_tail

# The integration tests with kproxyd under valgrind's memcheck.
valgrind: deps
	$(MAKE) all tools
	KPROXYD_WRAPPER="valgrind --error-exitcode=99 --leak-check=full \
	    --errors-for-leak-kinds=definite,indirect --track-fds=yes -q" \
	    python3 tests/it/run.py --kproxyd build/kproxyd --tools build/tools

# NO_DEPS=1 (or yes, true): the packages are the caller's business.
ifeq ($(filter 1 yes true,$(NO_DEPS)),)
deps:
	@echo "deps: checking the Debian packages kproxyd needs" \
	      "(tests/deps.sh; NO_DEPS=1 skips this)"
	@sh tests/deps.sh
else
deps:
	@echo "deps: skipped (NO_DEPS=$(NO_DEPS))"
endif

check-build: $(BUILD)/kproxyd $(UNITS) $(FUZZ_REPLAY) $(TOOLS)

unit: check-build
	@set -e; for t in $(UNITS); do echo "== $$t"; $$t; done

fuzz-replay: check-build
	@set -e; for t in $(FUZZ_REPLAY); do \
	    n=$${t##*/replay_}; echo "== $$t tests/fuzz/corpus/$$n"; \
	    $$t tests/fuzz/corpus/$$n; done

it: check-build
	python3 tests/it/run.py --kproxyd $(BUILD)/kproxyd --tools build/tools

# The layering and size rules of the README's design section.
structure:
	@python3 tests/check_structure.py

check: deps
	$(MAKE) structure unit fuzz-replay it
	$(MAKE) BUILD=build/asan SANITIZE=1 unit fuzz-replay it
	@echo "make check: all suites passed (plain and ASan+UBSan)"

run: deps all tools
	@sh tests/run_dev.sh $(BUILD)/kproxyd $(RUN_ARGS)

# The configuration: the sample is always (re)installed as
# kproxyd.json.sample; kproxyd.json is created from it only when absent, so
# an edited configuration survives every install. Units get @BINDIR@
# replaced by $(PREFIX)/bin.
CONFDIR = $(DESTDIR)$(SYSCONFDIR)/kproxyd
SYSTEMD_UNITS := kproxyd.service kproxyd@.service kproxyd.socket

install: $(BUILD)/kproxyd
	install -D -m 0755 $(BUILD)/kproxyd $(DESTDIR)$(PREFIX)/bin/kproxyd
	install -d -m 0755 $(CONFDIR)
	install -m 0644 conf/kproxyd.json $(CONFDIR)/kproxyd.json.sample
	@if [ -e $(CONFDIR)/kproxyd.json ]; then \
	    echo "install: kept $(CONFDIR)/kproxyd.json;" \
	         "the new sample is kproxyd.json.sample beside it"; \
	else \
	    echo "install -m 0644 conf/kproxyd.json $(CONFDIR)/kproxyd.json"; \
	    install -m 0644 conf/kproxyd.json $(CONFDIR)/kproxyd.json; \
	fi
	install -d -m 0755 $(DESTDIR)$(UNITDIR)
	@set -e; for u in $(SYSTEMD_UNITS); do \
	    echo "install $$u $(DESTDIR)$(UNITDIR)/$$u"; \
	    sed 's|@BINDIR@|$(PREFIX)/bin|g' $$u > $(DESTDIR)$(UNITDIR)/$$u.tmp; \
	    chmod 0644 $(DESTDIR)$(UNITDIR)/$$u.tmp; \
	    mv -f $(DESTDIR)$(UNITDIR)/$$u.tmp $(DESTDIR)$(UNITDIR)/$$u; \
	done
	install -D -m 0644 doc/kproxyd.8 $(DESTDIR)$(MANDIR)/man8/kproxyd.8
	install -D -m 0644 doc/kproxyd.json.5 \
	    $(DESTDIR)$(MANDIR)/man5/kproxyd.json.5
	install -D -m 0644 README.md $(DESTDIR)$(DOCDIR)/README.md
	install -D -m 0644 conf/grafana-dashboard.json \
	    $(DESTDIR)$(DOCDIR)/grafana-dashboard.json

# Removes what install added. kproxyd.json goes only while it is still
# the sample, unedited; the directories only when empty.
uninstall:
	rm -f $(DESTDIR)$(PREFIX)/bin/kproxyd \
	      $(addprefix $(DESTDIR)$(UNITDIR)/,$(SYSTEMD_UNITS)) \
	      $(DESTDIR)$(MANDIR)/man8/kproxyd.8 \
	      $(DESTDIR)$(MANDIR)/man5/kproxyd.json.5 \
	      $(DESTDIR)$(DOCDIR)/README.md \
	      $(DESTDIR)$(DOCDIR)/grafana-dashboard.json
	@if [ -e $(CONFDIR)/kproxyd.json ]; then \
	    if cmp -s $(CONFDIR)/kproxyd.json $(CONFDIR)/kproxyd.json.sample; \
	    then rm -f $(CONFDIR)/kproxyd.json; \
	    else echo "uninstall: kept $(CONFDIR)/kproxyd.json (edited)"; fi; \
	fi
	rm -f $(CONFDIR)/kproxyd.json.sample
	-rmdir $(CONFDIR) $(DESTDIR)$(DOCDIR) 2>/dev/null || true

clean:
	rm -rf build

-include $(wildcard $(BUILD)/*.d)
