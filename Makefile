# Two commands do everything on a fresh machine:  make demo  (set up, train, decode, score)  and  make test.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# The CPU build of PyTorch first, so that nothing later pulls a multi-GB CUDA build.
TORCH_SPEC ?= torch==2.13.0

.PHONY: install demo test clean

$(BIN)/transduce: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --disable-pip-version-check -q "$(TORCH_SPEC)"
	$(BIN)/python -m pip install --disable-pip-version-check -q -e ".[test]"
	touch $@

install: $(BIN)/transduce

demo: install
	$(BIN)/transduce demo --out runs/demo

test: install
	$(BIN)/python -m pytest -q

clean:
	rm -rf $(VENV) runs .pytest_cache
