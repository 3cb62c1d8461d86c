# Two commands for a fresh clone: `make demo` and `make test`. Each creates/updates .venv, installs the
# package and what it needs (Fashion-MNIST from Debian when missing and we are root), then runs.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.counterclip-installed
FMNIST := /usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz

.PHONY: demo test install data clean-venv

install: $(STAMP)

$(STAMP): pyproject.toml constraints/torch.txt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -c constraints/torch.txt -e ".[dev,hf]"
	@# torchattacks (dev-only yardstick for our PGD/APGD) pins requests~=2.25.1, which would downgrade
	@# requests; it imports fine without it, so install it alone
	$(PY) -m pip install -q --no-deps torchattacks==3.5.1
	@# clip-benchmark (dev-only yardstick: its webdataset reader checks ours, and its own `build` must read our
	@# records): its cli imports pycocoevalcap and scikit-learn, so it comes with its dependencies
	$(PY) -m pip install -q -c constraints/torch.txt clip-benchmark==1.6.2
	@touch $(STAMP)

data:
	@if [ -f "$(FMNIST)" ] || [ -n "$$COUNTERCLIP_FMNIST_DIR" ]; then :; \
	elif [ "$$(id -u)" = 0 ]; then \
		echo "installing Fashion-MNIST (Debian package dataset-fashion-mnist)"; \
		(apt-get install -y -qq dataset-fashion-mnist >/dev/null 2>&1 || \
		 (apt-get update -qq && apt-get install -y -qq dataset-fashion-mnist)) ; \
	else \
		echo "Fashion-MNIST is missing: run 'sudo apt-get install dataset-fashion-mnist' or set COUNTERCLIP_FMNIST_DIR to a folder with the *-ubyte.gz files"; \
		exit 1; \
	fi

demo: install data
	$(PY) -m counterclip demo

# pytest exits 5 when it collected no test: for this project that is a broken suite, never a pass.
test: install data
	@$(PY) -m pytest -q $(PYTEST_ARGS); rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "make test: pytest collected no tests (exit 5): the suite is broken" >&2; exit 1; fi; \
	exit $$rc

clean-venv:
	rm -rf $(VENV)
