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
KUSTOMIZE ?= kubectl kustomize
IMG ?= cd-credentials-operator:dev
GO_TEST_FLAGS ?= -race -count=1 -timeout 40m

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
test: manifests generate fmt vet envtest ## Run every test (unit, envtest integration, e2e, a short chaos run) and a short fuzz pass.
	KUBEBUILDER_ASSETS="$$(hack/setup-envtest.sh)" go test $(GO_TEST_FLAGS) ./...
	$(MAKE) fuzz

# A count, not a duration: with a duration, Go 1.26's fuzz coordinator can report its own
# -fuzztime deadline as a failure (golang/go#75804, fixed in Go 1.27), which failed CI
# with no crashing input. A count has no deadline to race.
FUZZ_TIME ?= 20000x
.PHONY: fuzz
fuzz: ## Run each fuzz target briefly (longer: make fuzz FUZZ_TIME=5000000x).
	go test -run='^$$' -fuzz='^FuzzParseTokenResponse$$' -fuzztime=$(FUZZ_TIME) ./internal/tokenclient
	go test -run='^$$' -fuzz='^FuzzSecretValue$$' -fuzztime=$(FUZZ_TIME) ./controllers

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
verify: manifests generate fmt ## Fail if generated or formatted files are stale.
	@git diff --exit-code -- . ':!go.sum' || { echo "generated files are stale: run 'make manifests generate fmt' and commit"; exit 1; }
	@test -z "$$(git status --porcelain --untracked-files=all -- api config controllers internal cmd)" || { git status --porcelain -- api config controllers internal cmd; echo "untracked generated files"; exit 1; }

##@ Build and run

.PHONY: build
build: manifests generate fmt vet ## Build the manager, the sandbox and the kubectl plugin (kubectl-cd) into ./bin.
	go build -o $(LOCALBIN)/manager ./cmd/manager
	go build -o $(LOCALBIN)/cd-sandbox ./cmd/cd-sandbox
	go build -o $(LOCALBIN)/kubectl-cd ./cmd/kubectl-cd

.PHONY: run
run: manifests generate fmt vet ## Run the manager against the current kubeconfig.
	go run ./cmd/manager

.PHONY: demo
demo: manifests ## Run the whole product on a local control plane and the sandbox identity server.
	@echo "==> Preparing: kube-apiserver and etcd in ./bin (built from the Go module proxy on the first run: ~7 minutes, once)"
	@hack/setup-envtest.sh >/dev/null
	@echo "==> Preparing: building the manager"
	go build -o $(LOCALBIN)/manager ./cmd/manager
	KUBEBUILDER_ASSETS="$$(hack/setup-envtest.sh)" go run ./hack/demo --manager $(LOCALBIN)/manager

.PHONY: bench
bench: manifests ## Measure N CDUserGrants against a baseline loop (BENCH_N, BENCH_TTL, BENCH_UNRELATED) and print a table.
	@hack/setup-envtest.sh >/dev/null
	go build -o $(LOCALBIN)/manager ./cmd/manager
	go build -o $(LOCALBIN)/bench ./hack/bench
	KUBEBUILDER_ASSETS="$$(hack/setup-envtest.sh)" $(LOCALBIN)/bench --manager $(LOCALBIN)/manager

.PHONY: install
install: manifests ## Install the CRDs into the current cluster.
	$(KUSTOMIZE) config/crd | kubectl apply --server-side -f -

.PHONY: uninstall
uninstall: manifests ## Remove the CRDs from the current cluster.
	$(KUSTOMIZE) config/crd | kubectl delete --ignore-not-found -f -

.PHONY: deploy
deploy: manifests ## Deploy the operator (image $(IMG)) into the current cluster.
	cd config/manager && $(KUSTOMIZE) . >/dev/null
	$(KUSTOMIZE) config/default | sed 's|image: controller:latest|image: $(IMG)|' | kubectl apply --server-side -f -

.PHONY: undeploy
undeploy: ## Remove the operator from the current cluster.
	$(KUSTOMIZE) config/default | kubectl delete --ignore-not-found -f -

##@ Tools

$(CONTROLLER_GEN):
	@mkdir -p $(LOCALBIN)
	GOBIN=$(LOCALBIN)/.gobin go install sigs.k8s.io/controller-tools/cmd/controller-gen@$(CONTROLLER_TOOLS_VERSION)
	mv $(LOCALBIN)/.gobin/controller-gen $(CONTROLLER_GEN)

.PHONY: help
help: ## Show this help.
	@awk 'BEGIN {FS = ":.*##"} /^[a-zA-Z_-]+:.*?##/ { printf "  %-12s %s\n", $$1, $$2 } /^##@/ { printf "\n%s\n", substr($$0, 5) }' $(MAKEFILE_LIST)
