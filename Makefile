# kiln — the targets people and CI both use.
SHELL := /bin/bash
PY    := .venv/bin/python
export DS_ACCELERATOR ?= cpu
export KUBECONFIG ?= $(CURDIR)/.kiln/kubeconfig

.PHONY: venv demo test test-unit test-reliability test-integration test-e2e lint cluster-build host-deps cluster-up cluster-images cluster-down images chart bench crd

venv:            ## the project virtualenv from requirements.lock
	@scripts/venv.sh

cluster-build: venv  ## build the embedded cluster's binaries (cached in ~/.cache/kiln)
	@devcluster/build.sh

host-deps:       ## containerd, runc, CNI plugins, iptables, busybox for the real nodes (apt-get only when missing)
	@devcluster/host-deps.sh

cluster-up: cluster-build host-deps  ## start etcd, apiserver, controllers, scheduler, S3, the node(s) (KILN_NODE=real|process)
	@$(PY) -m kiln_devcluster.cli up

cluster-images: cluster-up  ## build the project's changed images (buildah) and import them into every real node (cluster-up does it too)
	@$(PY) -m kiln_devcluster.cli images

cluster-down:    ## stop everything cluster-up started
	@if [ -x $(PY) ]; then $(PY) -m kiln_devcluster.cli down; fi

demo: cluster-up  ## the whole flow: chart, tiny run, training, export, Triton, generated text
	@$(PY) -m kiln_devcluster.demo

test: venv lint test-unit test-reliability test-integration test-e2e  ## what CI runs

test-unit: venv
	@scripts/pytest.sh tests/unit

test-reliability: cluster-build host-deps  ## kills, outages, bad versions; prints each figure
	@scripts/pytest.sh tests/reliability

test-integration: cluster-build host-deps
	@scripts/pytest.sh tests/integration

test-e2e: cluster-build host-deps
	@scripts/pytest.sh tests/e2e

lint: venv
	.venv/bin/ruff check api operator trainer devcluster tests bench
	.venv/bin/mypy api/kiln_api operator/kiln_operator
	.venv/bin/lint-imports

crd: venv        ## regenerate the CRD in the chart from api/
	$(PY) -m kiln_api.crd > charts/kiln/crds/trainingrun.yaml

images:          ## build the container images with Docker (the dev cluster builds them with buildah: cluster-images)
	@# One shell for the whole recipe: an `exit 0` on its own line would not stop the lines after it.
	@if ! command -v docker >/dev/null 2>&1; then \
		echo "images: no docker command on this machine; nothing built (make cluster-images builds them with buildah)"; \
	elif ! docker info >/dev/null 2>&1; then \
		echo "images: docker cannot reach a Docker engine; nothing built (make cluster-images builds them with buildah)"; \
	else \
		set -e; for image in operator trainer serving; do \
			docker build -t kiln/$$image:dev -f images/$$image/Dockerfile .; \
		done; \
	fi

chart: cluster-build  ## lint and package the Helm chart with the built helm
	$$(devcluster/build.sh --print-bin)/helm lint charts/kiln
	$$(devcluster/build.sh --print-bin)/helm package charts/kiln -d .kiln/

bench: venv
	@for b in bench/bench_*.py; do echo "== $$b"; $(PY) $$b || exit 1; done
