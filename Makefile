# Convenience targets; each is one documented command (see e2e/README.md).
PYTHON ?= python
IMAGE ?= mas:0.1.0

.PHONY: help test lock image wheelhouse e2e e2e-kind cluster-up cluster-down

help:
	@echo "make test         fast test suite"
	@echo "make lock         refresh constraints.txt (newest versions pyproject.toml allows)"
	@echo "make image        docker build -t $(IMAGE) . (uses ./wheelhouse if present)"
	@echo "make wheelhouse   wheels of the dependencies in ./wheelhouse (for offline builds)"
	@echo "make e2e          e2e tests on a local single-node Kubernetes (root, Debian)"
	@echo "make e2e-kind     e2e tests on a kind cluster"
	@echo "make cluster-up / cluster-down   the local cluster alone"

test:
	$(PYTHON) -m pytest

# The lock: every dependency and extra (and the build backend), for every Python >= 3.11 and
# platform at once, resolved by uv; installs then use plain pip with `-c constraints.txt`.
lock:
	$(PYTHON) -m pip install -q 'uv>=0.5'
	echo 'setuptools>=77' | $(PYTHON) -m uv pip compile pyproject.toml - --all-extras \
	  --universal --python-version 3.11 --upgrade --custom-compile-command 'make lock' \
	  --output-file constraints.txt

image:
	docker build -t $(IMAGE) .

# Wheels for the Python of the image's base: run this with that Python (python:3.12-slim → 3.12);
# the SDK's dependencies and those of the extras the image installs (see the Dockerfile).
wheelhouse:
	$(PYTHON) -c 'import tomllib; d = tomllib.load(open("pyproject.toml", "rb")); \
	extras = d["project"]["optional-dependencies"]; \
	image = [r for e in ("sidecar", "operator", "local", "otel") for r in extras[e] if not r.startswith("mas[")]; \
	print("\n".join(d["project"]["dependencies"] + image + d["build-system"]["requires"]))' \
	  > wheelhouse.requirements.txt
	$(PYTHON) -m pip wheel --wheel-dir wheelhouse -c constraints.txt -r wheelhouse.requirements.txt
	rm -f wheelhouse.requirements.txt

e2e:
	$(PYTHON) -m pytest e2e

e2e-kind:
	e2e/kind.sh

cluster-up:
	$(PYTHON) -m e2e.cluster up

cluster-down:
	$(PYTHON) -m e2e.cluster down
