# cd-credentials-operator
#
# `make demo` runs the operator's main job end to end on a local control plane;
# `make test` runs every test. Both need nothing but Go: tools and the envtest
# control plane are built into ./bin on first use.

SHELL := /usr/bin/env bash -o pipefail
.SHELLFLAGS := -ec

LOCALBIN ?= $(CURDIR)/bin
CONTROLLER_TOOLS_VERSION ?= v0.23.0
CONTROLLER_GEN ?= $(LOCALBIN)/controller-gen-$(CONTROLLER_TOOLS_VERSION)
GO_TEST_FLAGS ?= -race -count=1 -timeout 40m
# envtest gives kube-apiserver 20 s to start by default; with several suites starting
# their own while others compile, a loaded 2-core machine needs longer.
export KUBEBUILDER_CONTROLPLANE_START_TIMEOUT ?= 2m

# The release being built: the chart's appVersion unless given (make release VERSION=v0.2.0).
CHART_DIR := charts/cd-credentials-operator
VERSION ?= $(shell awk '$$1 == "appVersion:" { print $$2 }' $(CHART_DIR)/Chart.yaml)
COMMIT ?= $(shell git rev-parse HEAD 2>/dev/null || echo unknown)
SOURCE_DATE_EPOCH ?= $(shell git log -1 --format=%ct 2>/dev/null || echo 0)
export SOURCE_DATE_EPOCH
IMAGE_REPO ?= ghcr.io/credops/cd-credentials-operator
IMG ?= $(IMAGE_REPO):$(VERSION)
PLATFORMS ?= linux/amd64,linux/arm64

# helm, kustomize and helm-docs are Go tools of their own module (hack/tools), pinned
# there and built into ./bin under their versioned names.
TOOLS_MOD := hack/tools/go.mod
tool_version = $(shell awk '$$1 == "$(1)" && $$2 ~ /^v/ { print $$2 }' $(TOOLS_MOD))
HELM ?= $(LOCALBIN)/helm-$(call tool_version,helm.sh/helm/v4)
KUSTOMIZE ?= $(LOCALBIN)/kustomize-$(call tool_version,sigs.k8s.io/kustomize/kustomize/v5)
HELM_DOCS ?= $(LOCALBIN)/helm-docs-$(call tool_version,github.com/norwoodj/helm-docs)

.PHONY: all
all: build

##@ Development

.PHONY: manifests
manifests: $(CONTROLLER_GEN) ## Generate the CRDs and the manager's ClusterRole from markers.
	$(CONTROLLER_GEN) rbac:roleName=manager-role crd paths="./api/...;./controllers/..." output:crd:artifacts:config=config/crd/bases output:rbac:artifacts:config=config/rbac

.PHONY: generate
generate: $(CONTROLLER_GEN) ## Generate DeepCopy methods.
	$(CONTROLLER_GEN) object:headerFile="hack/boilerplate.go.txt" paths="./api/..."

.PHONY: fmt
fmt: ## Run gofmt.
	gofmt -l -w $$(git ls-files '*.go'; git ls-files --others --exclude-standard '*.go')

.PHONY: vet
vet: ## Run go vet.
	go vet ./...

.PHONY: envtest
envtest: ## Build or fetch kube-apiserver and etcd for envtest into ./bin.
	@hack/setup-envtest.sh >/dev/null

.PHONY: test
test: manifests generate fmt vet envtest chart $(HELM) $(KUSTOMIZE) ## Run every test (unit, envtest integration, e2e, the hardened install, the image, a short chaos run) and a short fuzz pass.
	KUBEBUILDER_ASSETS="$$(hack/setup-envtest.sh)" HELM="$(HELM)" KUSTOMIZE="$(KUSTOMIZE)" go test $(GO_TEST_FLAGS) ./...
	$(MAKE) fuzz

# A count, not a duration: with a duration, Go 1.26's fuzz coordinator can report its own
# -fuzztime deadline as a failure (golang/go#75804, fixed in Go 1.27), which failed CI
# with no crashing input. A count has no deadline to race.
FUZZ_TIME ?= 20000x
.PHONY: fuzz
fuzz: ## Run each fuzz target briefly (longer: make fuzz FUZZ_TIME=5000000x).
	go test -run='^$$' -fuzz='^FuzzParseTokenResponse$$' -fuzztime=$(FUZZ_TIME) ./internal/tokenclient
	go test -run='^$$' -fuzz='^FuzzSecretValue$$' -fuzztime=$(FUZZ_TIME) ./internal/secrets

# The chaos suite (test/chaos): the real manager (two replicas, leader election), the
# sandbox behind a fault proxy and envtest's API server, with faults injected at random
# from a printed seed; `make test` runs a short variant (50 events, 20 grants, one 10 s outage).
CHAOS_EVENTS ?= 200
CHAOS_GRANTS ?= 50
CHAOS_OUTAGE ?= 60s
CHAOS_MAX_OUTAGES ?= 0
CHAOS_SETTLE ?= 3m
CHAOS_SEED ?=
.PHONY: chaos
chaos: manifests envtest ## Run the chaos suite and print its table (CHAOS_EVENTS, CHAOS_GRANTS, CHAOS_SEED, CHAOS_OUTAGE).
	KUBEBUILDER_ASSETS="$$(hack/setup-envtest.sh)" CHAOS_EVENTS=$(CHAOS_EVENTS) CHAOS_GRANTS=$(CHAOS_GRANTS) CHAOS_OUTAGE=$(CHAOS_OUTAGE) CHAOS_MAX_OUTAGES=$(CHAOS_MAX_OUTAGES) CHAOS_SETTLE=$(CHAOS_SETTLE) CHAOS_SEED=$(CHAOS_SEED) \
		go test -count=1 -timeout 8h -run '^TestChaos$$' -v ./test/chaos/

.PHONY: verify
verify: manifests generate fmt chart build-installer helm-lint ## Fail if generated or formatted files (CRDs, RBAC, deepcopy, the chart's generated parts and README, dist/install.yaml) are stale.
	@git diff --exit-code -- . ':!go.sum' ':!hack/tools/go.sum' || { echo "generated files are stale: run 'make manifests generate fmt chart build-installer' and commit"; exit 1; }
	@test -z "$$(git status --porcelain --untracked-files=all -- api config controllers internal cmd charts dist/install.yaml)" || { git status --porcelain -- api config controllers internal cmd charts dist/install.yaml; echo "untracked generated files"; exit 1; }

##@ Build and run

.PHONY: build
build: manifests generate fmt vet ## Build the manager, the sandbox and the kubectl plugin (kubectl-cd) into ./bin.
	go build -o $(LOCALBIN)/manager ./cmd/manager
	go build -o $(LOCALBIN)/cd-sandbox ./cmd/cd-sandbox
	go build -o $(LOCALBIN)/kubectl-cd ./cmd/kubectl-cd

.PHONY: run
RUN_NAMESPACE ?= default
run: manifests generate fmt vet ## Run the manager against the current kubeconfig (its key Secret in RUN_NAMESPACE).
	go run ./cmd/manager --key-secret=$(RUN_NAMESPACE)/cd-credentials-operator-key

.PHONY: demo
demo: manifests ## Run the whole product on a local control plane and the sandbox identity server.
	@echo "==> Preparing: kube-apiserver and etcd in ./bin (built from the Go module proxy on the first run: ~7 minutes, once)"
	@hack/setup-envtest.sh >/dev/null
	@echo "==> Preparing: building the manager"
	go build -o $(LOCALBIN)/manager ./cmd/manager
	KUBEBUILDER_ASSETS="$$(hack/setup-envtest.sh)" go run ./hack/demo --manager $(LOCALBIN)/manager

# The benchmark, tuned from the environment or the command line:
#   BENCH_SERIES=1000,5000,10000,20000  run each N on a fresh control plane (default: BENCH_N)
#   BENCH_N=1000         grants when no series is given
#   BENCH_TTL=30         access token lifetime, seconds (use 300 from N=10,000 on)
#   BENCH_WINDOW=        steady-state window, seconds (default: two token lifetimes)
#   BENCH_UNRELATED=50000  unrelated Secrets for the memory check (0 skips it)
#   BENCH_TOKEN_RPS=500  the manager's --token-requests-per-second
#   BENCH_MANAGER_ARGS=  extra manager flags, to measure a lever against the defaults
#   BENCH_MANAGER_ENV=   extra manager environment, e.g. GOMEMLIMIT=300MiB
#   BENCH_SCRAPE_EVERY=30  seconds between whole-endpoint metrics scrapes, as Prometheus would (0 never)
# Tables go to stdout; CSV, SVG plots, pprof profiles and manager logs to bench-out/.
.PHONY: bench
bench: manifests ## Measure N CDUserGrants (or a BENCH_SERIES of Ns) against a bare client-go loop; results in bench-out/.
	@hack/setup-envtest.sh >/dev/null
	go build -o $(LOCALBIN)/manager ./cmd/manager
	go build -o $(LOCALBIN)/bench ./hack/bench
	KUBEBUILDER_ASSETS="$$(hack/setup-envtest.sh)" $(LOCALBIN)/bench --manager $(LOCALBIN)/manager --out $(CURDIR)/bench-out

# What each of the operator's writes costs the API server and etcd, and its own client and
# informer, beside the loop's; and the shortest cold start of 10,000 grants that follows on
# this machine (BENCH_N grants, 3000 by default).
.PHONY: bench-writes
bench-writes: manifests ## Measure the CPU each kind of write the operator makes costs the API server and the client.
	@hack/setup-envtest.sh >/dev/null
	go build -o $(LOCALBIN)/bench ./hack/bench
	KUBEBUILDER_ASSETS="$$(hack/setup-envtest.sh)" $(LOCALBIN)/bench --writes -n $${BENCH_N:-3000}

.PHONY: install
install: manifests $(KUSTOMIZE) ## Install the CRDs into the current cluster.
	$(KUSTOMIZE) build config/crd | kubectl apply --server-side -f -

.PHONY: uninstall
uninstall: manifests $(KUSTOMIZE) ## Remove every CR, then the CRDs, from the current cluster; with the operator running (`make run`), so Delete-policy grants revoke their tokens.
	$(MAKE) --no-print-directory delete-crs
	$(KUSTOMIZE) build config/crd | kubectl delete --ignore-not-found -f -

.PHONY: deploy
deploy: build-installer ## Deploy the operator (image $(IMG)) into the current cluster, as dist/install.yaml does.
	kubectl apply --server-side -f dist/install.yaml

.PHONY: undeploy
undeploy: $(KUSTOMIZE) ## Remove the operator, every CR and the CRDs: the CRs while the manager runs (Delete-policy grants revoke their tokens), then the manager, then the CRDs.
	$(MAKE) --no-print-directory delete-crs
	kubectl delete --ignore-not-found clusterrole,clusterrolebinding -l app.kubernetes.io/part-of=cd-credentials-operator
	kubectl delete --ignore-not-found namespace cd-credentials-operator
	$(KUSTOMIZE) build config/crd | kubectl delete --ignore-not-found -f -

# delete-crs deletes every CDUserGrant, then every CDCredential, and waits for them: a
# grant of deletionPolicy Delete holds a finalizer only a running operator removes.
.PHONY: delete-crs
delete-crs:
	@for kind in cdusergrants.cd.credops.io cdcredentials.cd.credops.io; do \
		if kubectl get crd $$kind >/dev/null 2>&1; then kubectl delete $$kind --all --all-namespaces; fi; \
	done

##@ Packaging and release

.PHONY: image
image: ## Build the multi-arch image without a daemon or registry: OCI layout dist/image/ (SBOMs attached), dist/sbom-linux-<arch>.cdx.json, dist/image-linux-amd64.tar for docker load.
	go run ./hack/image --version $(VERSION) --commit $(COMMIT) --repository $(IMAGE_REPO) --platforms $(PLATFORMS) --out dist

.PHONY: build-installer
build-installer: manifests $(KUSTOMIZE) ## Write dist/install.yaml: CRDs, namespace, RBAC and the Deployment of image $(IMG).
	@mkdir -p dist
	cd config/manager && $(KUSTOMIZE) edit set image controller=$(IMG)
	$(KUSTOMIZE) build config/default > dist/install.yaml

.PHONY: chart
chart: manifests $(HELM_DOCS) ## Regenerate the chart's CRDs, RBAC rules, alert rules (from config/) and README (from values.yaml), and config/prometheus-exported-namespace's alert rules.
	go run ./hack/chartgen --config config --chart $(CHART_DIR)
	$(HELM_DOCS) --chart-search-root $(CHART_DIR) --template-files README.md.gotmpl --sort-values-order file --skip-version-footer --log-level warning

.PHONY: helm-lint
helm-lint: chart $(HELM) ## helm lint --strict and helm template with the default and the all-features values.
	$(HELM) lint --strict $(CHART_DIR)
	$(HELM) lint --strict $(CHART_DIR) -f $(CHART_DIR)/ci/all-features-values.yaml
	$(HELM) template cd-credentials-operator $(CHART_DIR) -n cd-credentials-operator >/dev/null
	$(HELM) template cd-credentials-operator $(CHART_DIR) -n cd-credentials-operator -f $(CHART_DIR)/ci/all-features-values.yaml >/dev/null

.PHONY: helm-package
helm-package: chart $(HELM) ## Package the chart into dist/ with version $(VERSION).
	@mkdir -p dist
	$(HELM) package $(CHART_DIR) --version $(VERSION:v%=%) --app-version $(VERSION) --destination dist

.PHONY: set-version
set-version: ## Set the chart's version and appVersion to VERSION (build-installer then points config/manager at its image).
	sed -i.bak -e 's/^version: .*/version: $(VERSION:v%=%)/' -e 's/^appVersion: .*/appVersion: $(VERSION)/' $(CHART_DIR)/Chart.yaml && rm $(CHART_DIR)/Chart.yaml.bak

.PHONY: release
release: ## Fill dist/ for release VERSION=vX.Y.Z: image, SBOMs, install.yaml, chart, kubectl-cd archives, krew manifest, SHA256SUMS.
	@[[ "$(VERSION)" =~ ^v[0-9]+\.[0-9]+\.[0-9]+(-[0-9A-Za-z.-]+)?$$ ]] || { echo "VERSION=$(VERSION) is not vX.Y.Z"; exit 1; }
	rm -rf dist/image dist/*.tar dist/*.tgz dist/*.tar.gz dist/*.cdx.json dist/cd.yaml dist/SHA256SUMS
	$(MAKE) set-version
	$(MAKE) image build-installer helm-package
	go run ./hack/release plugin --version $(VERSION) --commit $(COMMIT) --out dist
	go run ./hack/release checksums --out dist
	@echo "Release $(VERSION) is in dist/; commit the version change (Chart.yaml, config/manager, dist/install.yaml) and tag $(VERSION)."

##@ Tools

$(CONTROLLER_GEN):
	@mkdir -p $(LOCALBIN)
	GOBIN=$(LOCALBIN)/.gobin go install sigs.k8s.io/controller-tools/cmd/controller-gen@$(CONTROLLER_TOOLS_VERSION)
	mv $(LOCALBIN)/.gobin/controller-gen $(CONTROLLER_GEN)

# Built to a temporary name and renamed, so a build cut short leaves no half-written tool;
# the version in the name means a changed pin builds anew.
$(HELM):
	@mkdir -p $(LOCALBIN)
	cd hack/tools && go build -o $@.tmp helm.sh/helm/v4/cmd/helm && mv $@.tmp $@

$(KUSTOMIZE):
	@mkdir -p $(LOCALBIN)
	cd hack/tools && go build -o $@.tmp sigs.k8s.io/kustomize/kustomize/v5 && mv $@.tmp $@

$(HELM_DOCS):
	@mkdir -p $(LOCALBIN)
	cd hack/tools && go build -o $@.tmp github.com/norwoodj/helm-docs/cmd/helm-docs && mv $@.tmp $@

.PHONY: tools
tools: $(CONTROLLER_GEN) $(HELM) $(KUSTOMIZE) $(HELM_DOCS) ## Build every pinned tool into ./bin.

.PHONY: help
help: ## Show this help.
	@awk 'BEGIN {FS = ":.*##"} /^[a-zA-Z_-]+:.*?##/ { printf "  %-12s %s\n", $$1, $$2 } /^##@/ { printf "\n%s\n", substr($$0, 5) }' $(MAKEFILE_LIST)
