# Fleet — developer commands. Every target installs what it needs first (scripts/bootstrap.sh).
SHELL := /bin/bash
PYTEST_ARGS ?=

# $(BOOTSTRAP) begins every recipe that runs Python: scripts/bootstrap.sh installs what is missing
# (idempotent) and prints uv's path, which the rest of the recipe runs as "$$uv".
BOOTSTRAP = @uv=$$(scripts/bootstrap.sh) &&

.PHONY: help setup dev test test-lowest lint typecheck check deb images central-image images-test \
	bench bench-quick clean chaos soak soak-long

help:
	@echo "make setup       install what Fleet needs; then .venv/bin/ingestd and .venv/bin/pusher are the CLIs"
	@echo "make dev         the local two-stack demo (Ctrl-C stops it; DURATION=60 for a bounded run)"
	@echo "make test        run the whole test suite (starts its own PostgreSQL)"
	@echo "make test-lowest the suite once at the lowest versions pyproject.toml allows (own venv: .venv-lowest)"
	@echo "make check       lint + typecheck + tests"
	@echo "make chaos       fault injection, bad input, security and soak (FLEET_SOAK_S=120), with figures"
	@echo "make soak        the 2-minute soak alone (FLEET_SOAK_S to change; CI runs it)"
	@echo "make soak-long   30 minutes, 500 gateways (FLEET_SOAK_S / FLEET_SOAK_GATEWAYS); not in CI"
	@echo "make bench       all benchmarks, summary vs targets (results in bench/results/; how long: bench/README.md)"
	@echo "make bench-quick the same with smaller sizes"
	@echo "make images      build fleet/ingestd, fleet/pusher, fleet/simulator :dev (podman, or docker)"
	@echo "make images-test build the images and run them as containers against a throwaway PostgreSQL"
	@echo "make central-image the stand-in central database image for make dev CENTRAL=timescale"
	@echo "make deb         dist/fleet-pusher_<version>_<arch>.deb for gateways, checked by lintian (ARCH=arm64 for ARM gateways)"
	@echo "make clean       remove local state and caches"

setup:
	@scripts/bootstrap.sh >/dev/null
	@echo "ready: .venv/bin/ingestd --help, .venv/bin/pusher --help (or: source .venv/bin/activate)"

DURATION ?= 0
CENTRAL ?= local
CENTRAL_IMAGE ?=
dev:
	$(BOOTSTRAP) CENTRAL_IMAGE="$(CENTRAL_IMAGE)" "$$uv" run python -m fleetdev.devstack --duration $(DURATION) --central $(CENTRAL)

test:
	$(BOOTSTRAP) "$$uv" run pytest $(PYTEST_ARGS)

# The suite at the lowest version of every dependency a pyproject.toml declares (uv's
# lowest-direct resolution over all members), in its own environment; uv.lock is not touched.
test-lowest:
	$(BOOTSTRAP) mkdir -p .state && \
	"$$uv" pip compile --quiet --resolution lowest-direct --extra docker --group pyproject.toml:dev \
	    pyproject.toml packages/*/pyproject.toml services/*/pyproject.toml -o .state/lowest-requirements.txt && \
	"$$uv" venv --quiet --allow-existing .venv-lowest && \
	"$$uv" pip sync --quiet --python .venv-lowest .state/lowest-requirements.txt && \
	UV="$$uv" PATH="$$PWD/.venv-lowest/bin:$$PATH" .venv-lowest/bin/python -m pytest $(PYTEST_ARGS)

lint:
	$(BOOTSTRAP) "$$uv" run ruff check . && "$$uv" run ruff format --check .

typecheck:
	$(BOOTSTRAP) "$$uv" run mypy packages/fleetcore/src packages/fleetdev/src packages/fleetservice/src services/ingestd/src services/pusher/src

check: lint typecheck test

# Base images: PYTHON_IMAGE=… UV_IMAGE=… force them; by default the official ones where they can be
# pulled, local stand-ins made from Debian's packages otherwise (fleetdev.standin).
PYTHON_IMAGE ?=
UV_IMAGE ?=
# dist/fleet-pusher_<version>_<arch>.deb for customer gateways (fleetdev.debpkg), checked by lintian.
deb:
	$(BOOTSTRAP) UV="$$uv" "$$uv" run python -m fleetdev.debpkg --out dist $(if $(ARCH),--arch $(ARCH))

images:
	$(BOOTSTRAP) "$$uv" run python -m fleetdev.images --python-image "$(PYTHON_IMAGE)" --uv-image "$(UV_IMAGE)"

# The stand-in central database image for `make dev CENTRAL=timescale` (Debian's PostgreSQL 15).
central-image:
	$(BOOTSTRAP) "$$uv" run python -m fleetdev.images --central-standin

images-test:
	$(BOOTSTRAP) FLEET_IMAGES_TEST=required "$$uv" run pytest tests/deploy/test_containers.py -ra $(PYTEST_ARGS)

bench:
	$(BOOTSTRAP) "$$uv" run python bench/run_all.py

bench-quick:
	$(BOOTSTRAP) "$$uv" run python bench/run_all.py --quick

clean:
	-@for engine in podman docker; do command -v $$engine >/dev/null || continue; \
		$$engine rm -f fleet-dev-central >/dev/null 2>&1; $$engine volume rm fleet-dev-central-data >/dev/null 2>&1; done; true
	rm -rf .state .venv-lowest bench/results .pytest_cache .mypy_cache .ruff_cache

# Long runs are the tests marked `long` (tests/long_runs.py): `make chaos` selects everything, the
# long runs included; `make test` reports them skipped.
chaos:
	$(BOOTSTRAP) "$$uv" run pytest tests/chaos tests/security -m "long or not long" -ra $(PYTEST_ARGS)

soak-long:
	$(BOOTSTRAP) FLEET_SOAK_S=$${FLEET_SOAK_S:-1800} FLEET_SOAK_GATEWAYS=$${FLEET_SOAK_GATEWAYS:-500} FLEET_SOAK_CENTRAL_STOPS=$${FLEET_SOAK_CENTRAL_STOPS:-3} "$$uv" run pytest tests/chaos/test_soak.py -m long -ra -s $(PYTEST_ARGS)

soak:
	$(BOOTSTRAP) "$$uv" run pytest tests/chaos/test_soak.py -m long -ra $(PYTEST_ARGS)
