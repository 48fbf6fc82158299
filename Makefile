# pymalloc-rs: build, test, demo and install.
#
#   make                 release library + headers (include/ is regenerated); no CPython needed
#   make runner          target/pymalloc-python: python3 with the allocator (needs python3-config)
#   make check           every test: Rust, C (plain and ASan/UBSan), headers, exports, CPython
#   make demo            a C program doing real work, then the allocator's statistics
#   make install PREFIX=/usr/local
#
# Build-time configuration (the defaults are CPython's):
#   make PYMALLOC_POOL_SIZE=4096 PYMALLOC_ARENA_SIZE=262144 PYMALLOC_ALIGNMENT=16 \
#        PYMALLOC_SMALL_REQUEST_THRESHOLD=512 PYMALLOC_RAW=malloc PYMALLOC_MEM=pymalloc \
#        PYMALLOC_OBJ=pymalloc

CARGO   ?= cargo
CC      ?= gcc
PREFIX  ?= /usr/local
PYTHON  ?= python3

export PYMALLOC_ALIGNMENT PYMALLOC_SMALL_REQUEST_THRESHOLD PYMALLOC_POOL_SIZE \
       PYMALLOC_ARENA_SIZE PYMALLOC_RAW PYMALLOC_MEM PYMALLOC_OBJ

LIBDIR   := target/release
SHARED   := $(LIBDIR)/libpymalloc.so
# The library's version (Cargo.toml) and its SONAME, libpymalloc.so.MAJOR
# (build.rs passes -soname to the linker). A program linked with
# -lpymalloc records the SONAME, so the tree keeps a link of that name
# beside the library for programs linked against it in place.
VERSION  := $(shell sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)
MAJOR    := $(firstword $(subst ., ,$(VERSION)))
SONAME   := libpymalloc.so.$(MAJOR)
SONAME_LINK := $(LIBDIR)/$(SONAME)
STATIC   := $(LIBDIR)/libpymalloc.a
OUT      := target/c
CFLAGS_TEST := -std=c11 -O1 -g -Wall -Wextra -Werror -D_GNU_SOURCE -Iinclude
SANITIZE := -fsanitize=address,undefined -fno-sanitize-recover=all
C_TESTS  := $(basename $(notdir $(wildcard c_tests/test_*.c)))
RUST_SRC := $(shell find src -type f) build.rs cbindgen.toml Cargo.toml

PY_CONFIG := $(PYTHON)-config
PY_EXE   = $(shell $(PYTHON) -c 'import sys; print(sys.executable)')
RUNNER   := target/pymalloc-python

.PHONY: all headers lib check test-rust test-c test-c-asan test-headers test-exports \
        test-install test-cpython test-cpython-suite demo demo-c demo-python install uninstall \
        clean fmt lint test-msrv runner tune bench peers stress test-tune test-valgrind miri fuzz \
        bench-instructions bench-rust bench-python bench-python-instructions bench-page-faults \
        wheel test-python-package bench-burst user-venv

# The library and its headers only: building them needs no CPython (the
# runner, which embeds one, is `make runner`).
all: headers lib

# Building with PYMALLOC_WRITE_HEADERS=1 makes build.rs refresh include/.
headers:
	PYMALLOC_WRITE_HEADERS=1 $(CARGO) build --release

# The library as `make check` builds it: without touching include/, so
# that the freshness test compares the committed headers with a new
# generation.
lib: $(SHARED) $(SONAME_LINK)
$(SHARED) $(STATIC): $(RUST_SRC)
	$(CARGO) build --release
	@touch $(SHARED) $(STATIC)

$(SONAME_LINK): $(SHARED)
	ln -sf libpymalloc.so $@

check: test-rust test-msrv lint test-headers test-exports test-c test-c-asan test-valgrind test-install test-tune test-cpython \
       test-python-package
	@echo "make check: all tests passed"

# The core's tests again with 2 MiB arenas: whole huge pages, so the
# huge-page advice (PYMALLOC_HUGE_PAGES) is taken, not skipped.
test-rust:
	$(CARGO) test --release
	PYMALLOC_ARENA_SIZE=2097152 $(CARGO) test --release --lib --target-dir target/arenas-2m

# The library builds with the oldest Rust that Cargo.toml's rust-version
# names (.ci/run installs that toolchain; skipped, with a message, where
# rustup does not have it).
MSRV := $(shell sed -n 's/^rust-version = "\(.*\)"/\1/p' Cargo.toml)
test-msrv:
	@if rustup run $(MSRV) rustc --version > /dev/null 2>&1; then \
	    echo "building with Rust $(MSRV) (Cargo.toml's rust-version)"; \
	    $(CARGO) +$(MSRV) build --release --lib --target-dir target/msrv; \
	else \
	    echo "test-msrv: skipped: no Rust $(MSRV) toolchain (rustup toolchain install $(MSRV) --profile minimal)"; \
	fi

lint:
	$(CARGO) fmt --check
	$(CARGO) clippy --release --all-targets -- -D warnings

# --- C tests ---------------------------------------------------------------

$(OUT)/%: c_tests/%.c $(wildcard c_tests/*.h) $(SHARED) $(SONAME_LINK) include/pymalloc.h
	@mkdir -p $(OUT)
	$(CC) $(CFLAGS_TEST) -o $@ $< -L$(LIBDIR) -lpymalloc -lpthread -Wl,-rpath,$(CURDIR)/$(LIBDIR)

$(OUT)/asan/%: c_tests/%.c $(wildcard c_tests/*.h) $(STATIC) include/pymalloc.h
	@mkdir -p $(OUT)/asan
	$(CC) $(CFLAGS_TEST) $(SANITIZE) -o $@ $< $(STATIC) -lpthread -ldl -lm

test-c: $(addprefix $(OUT)/,$(C_TESTS))
	@for t in $(C_TESTS); do echo "== $$t"; $(OUT)/$$t || exit 1; done
	@echo "== test_stats_profile, block caches off"; PYMALLOC_BLOCK_CACHE_BYTES=0 $(OUT)/test_stats_profile
	@echo "== test_random_blocks, no arena space (every arena mapped on its own)"; PYMALLOC_ARENA_SPACE=0 $(OUT)/test_random_blocks
	@echo "== test_random_blocks, a 4 MiB arena space (full early: arenas in and outside it)"; PYMALLOC_ARENA_SPACE=4M $(OUT)/test_random_blocks
	@echo "== test_thread_handoff, a 4 MiB arena space"; PYMALLOC_ARENA_SPACE=4M $(OUT)/test_thread_handoff

test-c-asan: $(addprefix $(OUT)/asan/,$(C_TESTS))
	@for t in $(C_TESTS); do echo "== $$t (ASan+UBSan, static library)"; \
	  ASAN_OPTIONS=detect_leaks=0 $(OUT)/asan/$$t || exit 1; done

# The committed headers equal a fresh generation (Rust test), compile alone
# under -std=c99 -pedantic and as C++, and after CPython's Python.h.
test-headers: $(SHARED) $(SONAME_LINK)
	@mkdir -p $(OUT)
	$(CARGO) test --release --test headers
	$(CC) -std=c99 -Wall -Wextra -Werror -pedantic -Iinclude -o $(OUT)/header_alone c_tests/header_alone.c \
	    -L$(LIBDIR) -lpymalloc -Wl,-rpath,$(CURDIR)/$(LIBDIR) && $(OUT)/header_alone
	g++ -std=c++11 -Wall -Wextra -Werror -Iinclude -x c++ -fsyntax-only c_tests/header_alone.c
	@if $(PYTHON)-config --includes >/dev/null 2>&1; then \
	  set -x; $(CC) -std=c11 -Wall -Wextra -Werror $$($(PYTHON)-config --includes) -Iinclude \
	    -o $(OUT)/header_after_python c_tests/header_after_python.c \
	    -L$(LIBDIR) -lpymalloc -Wl,-rpath,$(CURDIR)/$(LIBDIR) && $(OUT)/header_after_python; \
	else echo "test-headers: $(PYTHON)-config not found: cannot test inclusion after Python.h" >&2; exit 1; fi

# Exactly the functions the headers declare are exported.
test-exports: $(SHARED)
	sh c_tests/check_exports.sh $(SHARED) include

# Install into a scratch prefix: the library under its full version with
# the SONAME and development links, its SONAME recorded in it; build a
# program through pkg-config, which must need the SONAME, and run it.
INSTALL_TEST := $(CURDIR)/target/install-test
test-install: $(SHARED)
	@mkdir -p $(OUT)
	rm -rf $(INSTALL_TEST)
	$(MAKE) --no-print-directory install PREFIX=$(INSTALL_TEST)
	test "$$(readlink $(INSTALL_TEST)/lib/libpymalloc.so)" = $(SONAME)
	test "$$(readlink $(INSTALL_TEST)/lib/$(SONAME))" = libpymalloc.so.$(VERSION)
	test -f $(INSTALL_TEST)/lib/libpymalloc.so.$(VERSION) -a ! -L $(INSTALL_TEST)/lib/libpymalloc.so.$(VERSION)
	readelf -d $(INSTALL_TEST)/lib/libpymalloc.so.$(VERSION) | grep -F '(SONAME)' | grep -qF '[$(SONAME)]'
	PKG_CONFIG_PATH=$(INSTALL_TEST)/lib/pkgconfig \
	  sh -c '$(CC) -std=c11 -Wall -Werror -o $(OUT)/pkgconfig_user c_tests/pkgconfig_user.c $$(pkg-config --cflags --libs pymalloc)'
	readelf -d $(OUT)/pkgconfig_user | grep -F '(NEEDED)' | grep -qF '[$(SONAME)]'
	LD_LIBRARY_PATH=$(INSTALL_TEST)/lib $(OUT)/pkgconfig_user

# --- CPython ---------------------------------------------------------------

# python3 with the allocator installed before start-up (embedding).
# libpymalloc comes first in the link: CPython's calls to its own
# PyObject_Malloc & co. (through libpython's PLT) then reach the
# same-named exports of libpymalloc, which serve the pools directly while
# CPython's table is ours: libpython's wrapper is skipped (docs/cpython.md).
runner: $(RUNNER)
$(RUNNER): embed/pymalloc_python.c $(SHARED) $(SONAME_LINK)
	$(CC) -O2 -g -Wall -Wextra -Werror $$($(PY_CONFIG) --includes) -Iinclude -o $@ $< \
	    -L$(LIBDIR) -lpymalloc $$($(PY_CONFIG) --embed --ldflags) -Wl,-rpath,$(CURDIR)/$(LIBDIR)

$(OUT)/cpython_%: c_tests/cpython_%.c $(SHARED) $(SONAME_LINK) include/pymalloc.h
	@mkdir -p $(OUT)
	$(CC) $(CFLAGS_TEST) $$($(PY_CONFIG) --includes) -o $@ $< -L$(LIBDIR) -lpymalloc \
	    $$($(PY_CONFIG) --embed --ldflags) -Wl,-rpath,$(CURDIR)/$(LIBDIR)

CPYTHON_C_TESTS := $(basename $(notdir $(wildcard c_tests/cpython_*.c)))

test-cpython: $(RUNNER) $(addprefix $(OUT)/,$(CPYTHON_C_TESTS))
	@for t in $(CPYTHON_C_TESTS); do echo "== $$t"; $(OUT)/$$t || exit 1; done
	@echo "== LD_PRELOAD into programs that are not Python"
	LD_PRELOAD=$(CURDIR)/$(SHARED) timeout 10 sh -c 'echo shell ok' | grep -q 'shell ok'
	@echo "== tracemalloc traces allocations with the library preloaded"
	LD_PRELOAD=$(CURDIR)/$(SHARED) $(PY_EXE) -X tracemalloc c_tests/cpython_tracemalloc.py $(CURDIR)/$(SHARED)
	@echo "== preloaded, the exports lead to libpython's functions and CPython's dispatch is followed"
	$(PY_EXE) c_tests/cpython_dispatch.py $(PY_EXE) $(CURDIR)/$(SHARED)
	@echo "== requests above 512 bytes: straight to the raw domain when installed before start-up, through pymalloc at run time"
	$(PY_EXE) c_tests/cpython_large_requests.py $(PY_EXE) $(CURDIR)/$(SHARED) $(RUNNER)
	@echo "== the allocation profiler through CPython's hooks (runner and preload)"
	$(PY_EXE) c_tests/cpython_profile.py $(PY_EXE) $(CURDIR)/$(SHARED) $(RUNNER)
	@echo "== embedding and preload smoke test on every CPython 3.8+ under pyenv"
	sh scripts/cpython_versions.sh $(SHARED) target/versions $(PY_EXE)
	$(MAKE) --no-print-directory test-cpython-suite

# CPython's own regression tests: stock vs LD_PRELOAD vs the runner vs
# `python -m pymalloc` from the pip-installed wheel.
test-cpython-suite: $(RUNNER) user-venv
	$(PYTHON) scripts/cpython_tests.py --python $(PY_EXE) --library $(SHARED) --runner $(RUNNER) \
	    --venv-python $(CURDIR)/$(USER_VENV)/bin/python --jobs 2

# --- Python package --------------------------------------------------------

# The wheel of the Python package pymalloc-rs (pyproject.toml, docs/python.md),
# exactly one, in target/wheels. The build backend comes from PyPI into a
# virtual environment of its own: scripts/python_tools.sh.
WHEEL_TOOLS := target/wheel-tools
WHEEL_DIR   := target/wheels
wheel:
	@$(WHEEL_TOOLS)/bin/python -c 'import hatchling' 2>/dev/null || { echo \
	    "make wheel: the build backend (hatchling, PyPI) goes into $(WHEEL_TOOLS): scripts/python_tools.sh"; \
	    sh scripts/python_tools.sh $(PYTHON); }
	rm -rf $(WHEEL_DIR)
	CARGO=$(CARGO) $(WHEEL_TOOLS)/bin/python -m pip wheel --quiet --disable-pip-version-check \
	    --no-deps --no-build-isolation --wheel-dir $(WHEEL_DIR) .
	@ls $(WHEEL_DIR)/*.whl

# The wheel installed into fresh virtual environments of python3 and the
# pyenv CPythons 3.8 and 3.12+: python -m pymalloc against plain python,
# the module's answers, the runner (c_tests/python_package.py).
# A fresh virtual environment of python3 with the wheel pip-installed, as a
# user has it after `pip install pymalloc-rs` (the demo and CPython's test
# suite run `python -m pymalloc` from it).
USER_VENV := target/user-venv
user-venv: wheel
	rm -rf $(USER_VENV)
	$(PY_EXE) -m venv $(USER_VENV)
	$(USER_VENV)/bin/python -m pip install --quiet --no-index --disable-pip-version-check $(WHEEL_DIR)/*.whl

test-python-package: wheel $(RUNNER)
	$(PYTHON) c_tests/python_package.py --wheel-dir $(WHEEL_DIR) --runner $(RUNNER) \
	    --python $(PY_EXE) --work target/python-package

# --- reliability -----------------------------------------------------------

# Memcheck over the C tests that finish quickly under it (the fork and
# million-block tests take minutes there; the address-space limit of the
# out-of-memory test starves valgrind itself). The pools are mmap'ed memory to
# valgrind: it checks the tests' and libc's heaps, not pool contents.
VALGRIND_TESTS := test_api test_typed_objects test_thread_handoff test_stats_profile test_backends
test-valgrind: $(addprefix $(OUT)/,$(VALGRIND_TESTS))
	@for t in $(VALGRIND_TESTS); do echo "== $$t (valgrind memcheck)"; \
	  valgrind --error-exitcode=99 --leak-check=no -q $(OUT)/$$t > /dev/null || exit 1; done

# The pure core modules (no mmap, no inline assembly) under Miri (nightly).
MIRI_TESTS := size_class:: block_cache:: ffi::routes:: options:: profile:: object::tests::var_size object::tests::layout \
              stats::tests::values_are_grouped sync::
miri:
	$(CARGO) +nightly miri test --lib -- $(MIRI_TESTS)

# Coverage-guided fuzzing of the API (nightly, cargo install cargo-fuzz).
FUZZ_SECONDS ?= 60
fuzz:
	cd fuzz && $(CARGO) +nightly fuzz run operations -- -max_total_time=$(FUZZ_SECONDS) -rss_limit_mb=4096

# The long variant of the randomised differential test (10^8 operations;
# PYMALLOC_SEED=n to choose the seed).
STRESS_OPS ?= 100000000
stress:
	PYMALLOC_STRESS_OPS=$(STRESS_OPS) $(CARGO) test --release --test differential -- --nocapture

# --- benchmarks ------------------------------------------------------------

# The peer allocators' libraries (Debian packages libmimalloc2.0,
# libjemalloc2, libtcmalloc-minimal4: scripts/install_deps.sh bench).
PEER_LIBS := libmimalloc.so.2 libjemalloc.so.2 libtcmalloc_minimal.so.4
LIBPYTHON = $(shell $(PYTHON) -c 'import sysconfig, os; print(os.path.join(sysconfig.get_config_var("LIBDIR"), sysconfig.get_config_var("LDLIBRARY")))')
BENCH_RUNS ?= 5

# The benchmarks compare against the peers: check that they are installed
# (nothing is installed from here).
peers:
	@missing=""; for l in $(PEER_LIBS); do \
	  /sbin/ldconfig -p | grep -q "^[[:space:]]*$$l " || missing="$$missing $$l"; done; \
	if [ -n "$$missing" ]; then \
	  echo "make: the benchmarks' peer allocators are missing:$$missing" >&2; \
	  echo "make: install them with: sh scripts/install_deps.sh bench" >&2; exit 1; fi

$(OUT)/bench: benches/c/bench.c
	@mkdir -p $(OUT)
	$(CC) -O2 -g -Wall -Wextra -Werror -o $@ $< -ldl -lpthread -lm

# The C benchmark: every allocator side by side in one run (see BENCHMARKS.md).
bench: peers $(SHARED) $(OUT)/bench
	$(OUT)/bench $(CURDIR)/$(SHARED) $(LIBPYTHON) --runs $(BENCH_RUNS) | tee target/bench.md
	$(PYTHON) benches/py/plot.py --c-table target/bench.md --c-out target/bench-c.svg

# Repeated build-and-teardown (1M blocks, ten rounds, with no gap and with
# 50 ms of work between rounds), each allocator in a fresh process so that
# all start cold (bench.c --burst; BENCHMARKS.md, "Burst reuse").
bench-burst: peers $(SHARED) $(OUT)/bench
	$(OUT)/bench $(CURDIR)/$(SHARED) $(LIBPYTHON) --burst --runs $(BENCH_RUNS) | tee target/bench-burst.md

# The Python workloads (benches/py) under stock CPython, pymalloc-rs (preload
# and runner) and PYTHONMALLOC=malloc with glibc, mimalloc, jemalloc and
# tcmalloc; tables in target/bench-python/results.md, charts beside them.
# benches/py/bench.py --setups preload,runner --runs 30 runs fewer setups
# for longer (BENCHMARKS.md).
bench-python: peers $(RUNNER)
	$(PYTHON) benches/py/bench.py --python $(PY_EXE) --library $(CURDIR)/$(SHARED) --runner $(RUNNER) \
	    --runs $(BENCH_RUNS) --out target/bench-python --plot

# Instructions (callgrind) of each Python workload: stock, the runner with
# and without block caches, and LD_PRELOAD; whole process, and the
# allocator alone (stock, runner, LD_PRELOAD; the definition is in the
# script). Fails if the setups print different results (the recipe does
# not pipe into tee, which would hide a failure). Repeatable where
# timings on a shared machine are not; about 20 minutes on 2 cores.
bench-python-instructions: $(RUNNER)
	sh scripts/python_instructions.sh $(PY_EXE) $(RUNNER) $(SHARED) > target/python-instructions.md
	cat target/python-instructions.md
	$(PYTHON) benches/py/plot.py --python-instructions target/python-instructions.md --out target/python-instructions.svg

# The Rust-level fast paths (criterion): PyMalloc and PyCore_* against the
# mimalloc crate and the system allocator; HTML report in target/criterion.
bench-rust:
	$(CARGO) bench --bench fast_paths

$(OUT)/pairs: benches/c/pairs.c
	@mkdir -p $(OUT)
	$(CC) -O2 -Wall -Wextra -Werror -o $@ $< -ldl

# Instructions per malloc+free pair on the hot path (valgrind callgrind).
bench-instructions: peers $(SHARED) $(OUT)/pairs
	sh scripts/instructions.sh $(OUT)/pairs $(CURDIR)/$(SHARED) $(LIBPYTHON) | tee target/instructions.md
	$(PYTHON) benches/py/plot.py --instructions target/instructions.md --out target/instructions.svg

$(OUT)/page_faults: benches/c/page_faults.c
	@mkdir -p $(OUT)
	$(CC) -O2 -Wall -Wextra -Werror -o $@ $<

# What a first touch of fresh memory costs here (touch, MADV_POPULATE_WRITE,
# huge pages): the floor under a cold teardown (BENCHMARKS.md).
bench-page-faults: $(OUT)/page_faults
	$(OUT)/page_faults 128 5 | tee target/page-faults.md

# --- tuning ----------------------------------------------------------------

# Memory figures and replay timings of the candidate configurations for an
# allocation profile (PYMALLOC_PROFILE output); see docs/tuning.md.
PROFILE ?= docs/profiles/*.csv
tune:
	$(PYTHON) scripts/tune.py $(PROFILE)

# The tuner's memory figures on a committed profile (no builds: quick).
test-tune:
	$(PYTHON) scripts/tune.py --no-time docs/profiles/demo-workload.csv > target/tune-check.md
	grep -E '^\| 16 \| 512 \| 16 KiB \| [0-9.]+% \| [0-9.]+ \|' target/tune-check.md

# --- demo ------------------------------------------------------------------

demo: demo-c demo-python

demo-c: $(SHARED) $(SONAME_LINK)
	@mkdir -p $(OUT)
	$(CC) -std=c11 -O2 -g -Wall -Wextra -D_GNU_SOURCE -Iinclude -o $(OUT)/demo demo/objects_demo.c \
	    -L$(LIBDIR) -lpymalloc -lpthread -Wl,-rpath,$(CURDIR)/$(LIBDIR)
	$(OUT)/demo

# The same Python workload on the stock interpreter and on pymalloc-rs:
# instructions (callgrind, when valgrind is there) and paired timings.
# The Python side as a Python user meets it: the wheel (make wheel) in a
# fresh virtual environment, `python -m pymalloc`, beside LD_PRELOAD and
# the runner.
demo-python: user-venv $(RUNNER)
	$(PYTHON) demo/compare.py --python $(PY_EXE) --library $(SHARED) --runner $(RUNNER) \
	    --venv-python $(CURDIR)/$(USER_VENV)/bin/python

# --- install ---------------------------------------------------------------

# The shared library as C libraries are installed: the file under its full
# version, the SONAME link the loader looks for, and the development link
# the linker finds with -lpymalloc.
install: $(SHARED)
	install -d $(DESTDIR)$(PREFIX)/lib/pkgconfig $(DESTDIR)$(PREFIX)/include/pymalloc
	install -m 755 $(SHARED) $(DESTDIR)$(PREFIX)/lib/libpymalloc.so.$(VERSION)
	ln -sf libpymalloc.so.$(VERSION) $(DESTDIR)$(PREFIX)/lib/$(SONAME)
	ln -sf $(SONAME) $(DESTDIR)$(PREFIX)/lib/libpymalloc.so
	install -m 644 $(STATIC) $(DESTDIR)$(PREFIX)/lib/libpymalloc.a
	install -m 644 include/pymalloc.h $(DESTDIR)$(PREFIX)/include/pymalloc.h
	install -m 644 include/pymalloc/pymem.h include/pymalloc/objimpl.h $(DESTDIR)$(PREFIX)/include/pymalloc/
	sed -e 's|@PREFIX@|$(PREFIX)|' -e 's|@VERSION@|$(VERSION)|' \
	    pymalloc.pc.in > $(DESTDIR)$(PREFIX)/lib/pkgconfig/pymalloc.pc

uninstall:
	rm -f $(DESTDIR)$(PREFIX)/lib/libpymalloc.so $(DESTDIR)$(PREFIX)/lib/$(SONAME) \
	      $(DESTDIR)$(PREFIX)/lib/libpymalloc.so.$(VERSION) $(DESTDIR)$(PREFIX)/lib/libpymalloc.a \
	      $(DESTDIR)$(PREFIX)/lib/pkgconfig/pymalloc.pc $(DESTDIR)$(PREFIX)/include/pymalloc.h
	rm -rf $(DESTDIR)$(PREFIX)/include/pymalloc

fmt:
	$(CARGO) fmt

clean:
	$(CARGO) clean
