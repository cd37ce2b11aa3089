# Set-up is part of every target: .venv is created when missing; with no CUDA
# GPU the CPU build of torch 2.13.0 is installed first (a plain `torch`
# requirement would pull the multi-GB CUDA build).
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.jumpstart-installed
OUT ?= demo-out

.PHONY: demo test test-zoo bench clean

$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	if ! nvidia-smi -L >/dev/null 2>&1; then $(PY) -m pip install -q torch==2.13.0; fi
	$(PY) -m pip install -q -e '.[test,ray,lightning,surgery]'
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/jumpstart demo --out $(OUT)

test: $(STAMP)
	$(PY) -m pytest -q

# torchvision and timm in their own environment (they cannot import beside the
# CPU torch 2.13.0 of .venv): every torchvision classification model and ten timm
# families, one training step each with Jumpstart attached (tests/test_zoo.py)
ZOO ?= .venv-zoo
$(ZOO)/.installed: pyproject.toml
	test -x $(ZOO)/bin/python || python3 -m venv $(ZOO)
	$(ZOO)/bin/pip install -q torch==2.14.1 torchvision==0.29.1 timm
	$(ZOO)/bin/pip install -q -e '.[test,surgery]'
	touch $(ZOO)/.installed

test-zoo: $(ZOO)/.installed
	$(ZOO)/bin/python -m pytest -q tests/test_zoo.py tests/test_zoo_surgery.py

bench: $(STAMP)
	$(PY) benchmarks/overhead.py

clean:
	rm -rf $(OUT) .pytest_cache
