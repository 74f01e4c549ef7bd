# Rewind — every target a developer or CI needs. `make help` lists them.
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

CARGO ?= cargo
CLUSTER_DIR := $(CURDIR)/target/cluster
export KUBECONFIG_LOCAL := $(CLUSTER_DIR)/kubeconfig

.PHONY: help build crds crds-check lint fmt unit test run cluster-up cluster-down cluster-status
.PHONY: image deploy deploy-check install-plugin

help: ## List the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-15s %s\n", $$1, $$2}'

build: ## Build the operator (target/debug/rewind)
	$(CARGO) build --locked --bins

crds: ## Regenerate crds/ and the chart's CRD copy from src/api
	$(CARGO) run --quiet --locked --bin rewind -- crds > crds/rewind.dev.yaml
	cp crds/rewind.dev.yaml charts/rewind/crds/rewind.dev.yaml

crds-check: ## Fail when the committed CRDs differ from what `rewind crds` prints
	@mkdir -p target
	@$(CARGO) run --quiet --locked --bin rewind -- crds > target/crds.check.yaml
	@diff -u crds/rewind.dev.yaml target/crds.check.yaml || { echo "crds/ is stale: run 'make crds' and commit" >&2; exit 1; }
	@diff -u charts/rewind/crds/rewind.dev.yaml target/crds.check.yaml || { echo "charts/rewind/crds/ is stale: run 'make crds' and commit" >&2; exit 1; }
	@echo "CRDs match the types"

deploy: ## Render deploy/rewind.yaml from the chart (default values, namespace rewind-system)
	deploy/render.sh > deploy/rewind.yaml.tmp && mv deploy/rewind.yaml.tmp deploy/rewind.yaml

deploy-check: ## Fail when deploy/rewind.yaml differs from the chart's render
	@mkdir -p target
	@deploy/render.sh > target/deploy.check.yaml
	@diff -u deploy/rewind.yaml target/deploy.check.yaml || { echo "deploy/rewind.yaml is stale: run 'make deploy' and commit" >&2; exit 1; }
	@echo "deploy/ matches the chart"

# Where `make install-plugin` puts kubectl-rewind: cargo's bin dir (~/.cargo/bin) unless
# PREFIX is given (then PREFIX/bin).
PREFIX ?=

install-plugin: ## Install the kubectl plugin (kubectl-rewind, run as `kubectl rewind`) into ~/.cargo/bin or PREFIX/bin
	$(CARGO) install --locked --path . --bin kubectl-rewind $(if $(PREFIX),--root $(PREFIX))
	@echo "kubectl-rewind installed; with its directory on PATH, try: kubectl rewind --help"

fmt: ## Format the code
	$(CARGO) fmt --all

# Test-only fault hooks (REWIND_TEST_EXIT_AFTER_PHASE) the integration tests need; never in
# `make build` or a release build.
TEST_FEATURES := --features test-faults

SHELL_SCRIPTS := $(shell git ls-files '*.sh' .ci/run)

lint: ## rustfmt, clippy (with and without the test faults), helm lint --strict, shellcheck
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --locked --all-targets -- -D warnings
	$(CARGO) clippy --locked --all-targets --features test-faults,cluster-faults -- -D warnings
	"$$(tests/tools/build.sh helm)" lint --strict charts/rewind --kube-version 1.34.0
	"$$(tests/tools/build.sh helm)" lint --strict charts/rewind --kube-version 1.34.0 --set 'watchNamespaces={team-a,team-b}' --set registry.readPullSecrets=false
	shellcheck $(SHELL_SCRIPTS)

unit: ## Unit tests only (no cluster)
	$(CARGO) test --locked --lib --bins

cluster-up: ## Build (if needed) and start the local cluster; writes target/cluster/kubeconfig
	tests/cluster/up.sh

cluster-down: ## Stop the local cluster and remove its state
	tests/cluster/down.sh

cluster-status: ## Show what runs in the local cluster
	tests/cluster/status.sh

test: lint crds-check deploy-check cluster-up ## Everything CI runs: lint, CRD drift, unit and integration tests on the local cluster
	@# The generated CRDs must be accepted by kubectl as they are.
	$(CARGO) run --quiet --locked --bin rewind -- crds | "$$(tests/cluster/build.sh --print-bin-dir)/kubectl" --kubeconfig $(KUBECONFIG_LOCAL) apply --dry-run=client -f -
	@# The image's release build first, alone (the slowest step; tests/image.rs then finds it built).
	$(MAKE) --no-print-directory image
	KUBECONFIG=$(KUBECONFIG_LOCAL) $(CARGO) test --locked --all-targets $(TEST_FEATURES) -- --test-threads=4
	@# These stop the API server: alone, after everything else, one at a time.
	KUBECONFIG=$(KUBECONFIG_LOCAL) $(CARGO) test --locked --features test-faults,cluster-faults --test outages -- --test-threads=1

image: ## Build the operator's image without a container engine and push it to the local cluster's registry (IMAGE=... to choose where)
	IMAGE="$(IMAGE)" deploy/image/build.sh

run: build cluster-up ## The demo on the local cluster: a bad release rolled back
	deploy/demo/run.sh
