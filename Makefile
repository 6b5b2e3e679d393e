# Two commands do everything on a fresh machine:  make demo  (set up, train, decode, score)  and  make test.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# The CPU build of PyTorch first, so that nothing later pulls a multi-GB CUDA build.
TORCH_SPEC ?= torch==2.13.0

# The web page's browser test drives Debian's chromium (with a font for Chinese text).
BROWSER_PACKAGES ?= chromium fonts-wqy-zenhei

.PHONY: install browser demo test clean

$(BIN)/transduce: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --disable-pip-version-check -q "$(TORCH_SPEC)"
	$(BIN)/python -m pip install --disable-pip-version-check -q -e ".[test]"
	touch $@

install: $(BIN)/transduce

browser:
	@if command -v chromium >/dev/null 2>&1 && fc-list :lang=zh 2>/dev/null | grep -q .; then :; \
	elif command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -q $(BROWSER_PACKAGES) >/dev/null 2>&1 || \
		{ apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q $(BROWSER_PACKAGES) >/dev/null; }; \
	else echo "note: the browser test needs chromium: sudo apt-get install $(BROWSER_PACKAGES)"; fi

demo: install
	$(BIN)/transduce demo --out runs/demo

test: install browser
	$(BIN)/python -m pytest -q

clean:
	rm -rf $(VENV) runs .pytest_cache
