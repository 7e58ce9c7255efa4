# The mas image: the `mas` distribution with every extra (`mas[all]`: console scripts `mas`,
# `mas-operator`; `mas sidecar` runs the sidecar, `mas redis-server` the chart's Valkey) in a
# virtual environment, plus the examples in /opt/mas/examples.
#
#   docker build -t mas:0.1.0 .
#
# Dependencies are installed at the versions of constraints.txt (the lock CI tests with).
# Offline builds: put wheels of the dependencies (and setuptools) for the base image's Python in
# ./wheelhouse and pip installs from there with --no-index; e2e/README.md shows how to fill it.
# Another base image (same Python in both stages): --build-arg BASE_IMAGE=...
ARG BASE_IMAGE=python:3.12-slim

FROM ${BASE_IMAGE} AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1 PIP_ROOT_USER_ACTION=ignore
# pyproject.toml is listed so the COPY has a source when there is no wheelhouse/.
COPY pyproject.toml wheelhous[e] /wheels/
COPY pyproject.toml README.md constraints.txt /src/
# The dependencies (the SDK's and those of the extras sidecar, operator, local and otel, which
# make `all`) get their own layer, rebuilt only when pyproject.toml or the lock changes.
RUN set -eu; \
    if ls /wheels/*.whl >/dev/null 2>&1; then set -- --no-index --find-links /wheels; fi; \
    python3 -m venv /opt/venv; \
    python3 -c 'import tomllib; d = tomllib.load(open("/src/pyproject.toml", "rb")); \
extras = d["project"]["optional-dependencies"]; \
image = [r for e in ("sidecar", "operator", "local", "otel") for r in extras[e] if not r.startswith("mas[")]; \
print("\n".join(d["project"]["dependencies"] + image + d["build-system"]["requires"]))' \
        > /tmp/requirements.txt; \
    /opt/venv/bin/python -m pip install "$@" -c /src/constraints.txt -r /tmp/requirements.txt
COPY core/ /src/core/
COPY sdk/ /src/sdk/
COPY control/ /src/control/
COPY sidecar/ /src/sidecar/
COPY operator/ /src/operator/
COPY cli/ /src/cli/
RUN set -eu; \
    /opt/venv/bin/python -m pip install --no-deps --no-build-isolation /src; \
    /opt/venv/bin/python -m pip uninstall -y -q setuptools pip; \
    /opt/venv/bin/python -c 'import mas, mas_cli.main, mas_operator.main, mas_operator.run, mas_sidecar.main'

FROM ${BASE_IMAGE}
LABEL org.opencontainers.image.title="mas" \
      org.opencontainers.image.description="Multi-agent messaging: sidecar, operator and CLI" \
      org.opencontainers.image.licenses="Apache-2.0"
# The sidecar runs with a read-only root filesystem: no bytecode writes at run time (the
# installed packages were compiled at build time).
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    LANG=C.UTF-8
COPY --from=build /opt/venv /opt/venv
COPY examples/ /opt/mas/examples/
WORKDIR /opt/mas
USER 65532:65532
CMD ["mas", "--help"]
