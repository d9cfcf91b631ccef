# `make demo` and `make test` create/refresh the project-local .venv from the pinned requirements.
PY ?= python3
VENV := .venv
VPY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: venv venv-unsloth demo test clean

venv: $(STAMP)

$(STAMP): requirements.txt requirements-nodeps.txt pyproject.toml
	test -x $(VPY) || $(PY) -m venv $(VENV)
	$(VPY) -m pip install -q --upgrade pip
	$(VPY) -m pip install -q -r requirements.txt
	$(VPY) -m pip install -q --no-deps -r requirements-nodeps.txt
	$(VPY) -m pip install -q --no-deps --no-build-isolation -e .
	touch $(STAMP)

# optional extra: the Unsloth backend (tests/test_backends_unsloth.py runs once it is installed)
venv-unsloth: $(STAMP)
	$(VPY) -m pip install -q --no-deps -r requirements-unsloth.txt

demo: $(STAMP)
	$(VPY) data_prepare.py --dataset sample
	$(VPY) run_rerank.py --dataset sample --model smollm2-135m --mode text --max_users 80 --output_dir runs/demo

test: $(STAMP)
	$(VPY) -m pytest -q tests

clean:
	rm -rf $(VENV) runs .pytest_cache
