# kproxyd - GNU Makefile.
#
#   make            build build/kproxyd
#   make run        install missing packages, build, start a mock cluster and
#                   kproxyd against it (conf/kproxyd.dev.json)
#   make check      install missing packages, build, run every test: unit
#                   (check), integration (mock cluster), fuzz corpora, then
#                   the same again under ASan+UBSan
#   make install    PREFIX=/usr/local DESTDIR=
#
# Objects go to $(BUILD) (build/ by default, build/asan for sanitizers).

PREFIX ?= /usr/local
DESTDIR ?=
BUILD ?= build
SANITIZE ?=

CC ?= cc
WARN := -Wall -Wextra -Werror -Wshadow -Wstrict-prototypes \
        -Wmissing-prototypes -Wformat=2 -Wvla -Wimplicit-fallthrough
CFLAGS ?= -O2 -g
CFLAGS += -std=gnu11 $(WARN) -Iinclude -MMD -MP -D_GNU_SOURCE
LDLIBS := -lev -lzstd -llz4 -ljansson -lz -lm -lpthread

ifeq ($(SANITIZE),1)
CFLAGS += -O1 -fsanitize=address,undefined -fno-omit-frame-pointer \
          -fno-sanitize-recover=undefined
LDFLAGS += -fsanitize=address,undefined
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

.PHONY: all deps check check-build unit it fuzz-replay run install uninstall \
        clean bench fuzz valgrind tools

all: $(BUILD)/kproxyd

$(BUILD)/%.o: src/%.c | $(BUILD)
	$(CC) $(CFLAGS) -c -o $@ $<

$(BUILD):
	mkdir -p $@ build/tools

$(BUILD)/libkproxyd.a: $(OBJS)
	$(AR) rcs $@ $^

$(BUILD)/kproxyd: $(BUILD)/main.o $(BUILD)/libkproxyd.a
	$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS)

$(BUILD)/main.o: src/main.c | $(BUILD)
	$(CC) $(CFLAGS) -c -o $@ $<

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

tools: $(TOOLS)

# Benchmark: kproxyd beside librdkafka on the same mock cluster; prints
# ratios. BENCH_ARGS="--messages 200000 --size 100 ..." to change it.
bench: deps
	$(MAKE) all tools build/tools/rdk_bench
	python3 tests/bench/bench.py --kproxyd build/kproxyd --tools build/tools $(BENCH_ARGS)

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

# The integration tests with kproxyd under valgrind's memcheck.
valgrind: deps
	$(MAKE) all tools
	KPROXYD_WRAPPER="valgrind --error-exitcode=99 --leak-check=full \
	    --errors-for-leak-kinds=definite,indirect --track-fds=yes -q" \
	    python3 tests/it/run.py --kproxyd build/kproxyd --tools build/tools

deps:
	@sh tests/deps.sh

check-build: $(BUILD)/kproxyd $(UNITS) $(FUZZ_REPLAY) $(TOOLS)

unit: check-build
	@set -e; for t in $(UNITS); do echo "== $$t"; $$t; done

fuzz-replay: check-build
	@set -e; for t in $(FUZZ_REPLAY); do \
	    n=$${t##*/replay_}; echo "== $$t tests/fuzz/corpus/$$n"; \
	    $$t tests/fuzz/corpus/$$n; done

it: check-build
	python3 tests/it/run.py --kproxyd $(BUILD)/kproxyd --tools build/tools

check: deps
	$(MAKE) unit fuzz-replay it
	$(MAKE) BUILD=build/asan SANITIZE=1 unit fuzz-replay it
	@echo "make check: all suites passed (plain and ASan+UBSan)"

run: deps all tools
	@sh tests/run_dev.sh $(BUILD)/kproxyd

install: $(BUILD)/kproxyd
	install -D -m 0755 $(BUILD)/kproxyd $(DESTDIR)$(PREFIX)/bin/kproxyd
	install -D -m 0644 conf/kproxyd.json $(DESTDIR)/etc/kproxyd/kproxyd.json
	install -d $(DESTDIR)/lib/systemd/system
	sed 's|@BINDIR@|$(PREFIX)/bin|g' kproxyd.service \
	    > $(DESTDIR)/lib/systemd/system/kproxyd.service
	install -m 0644 kproxyd.socket $(DESTDIR)/lib/systemd/system/kproxyd.socket
	install -D -m 0644 README.md $(DESTDIR)$(PREFIX)/share/doc/kproxyd/README.md

uninstall:
	rm -f $(DESTDIR)$(PREFIX)/bin/kproxyd \
	      $(DESTDIR)/lib/systemd/system/kproxyd.service \
	      $(DESTDIR)/lib/systemd/system/kproxyd.socket \
	      $(DESTDIR)$(PREFIX)/share/doc/kproxyd/README.md

clean:
	rm -rf build

-include $(wildcard $(BUILD)/*.d)
