package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"sort"
	"time"

	corev1 "k8s.io/api/core/v1"
	eventsv1 "k8s.io/api/events/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"

	cdv1 "github.com/credops/cd-credentials-operator/api/v1alpha1"
	"github.com/credops/cd-credentials-operator/internal/manager"
	"github.com/credops/cd-credentials-operator/internal/rotation"
	"github.com/credops/cd-credentials-operator/internal/secrets"
)

// The writes mode (`make bench-writes`) measures what each of the operator's writes costs
// the API server and etcd, in CPU per write: one kind of write at a time over n grants,
// built by the operator's own functions (the mark, the binding, the stored refresh token,
// the output Secret's apply configuration) and sent as the operator sends them (Secret
// updates in protobuf, the apply and the status patch read back as metadata), with an
// informer watching Secrets and grants as the manager does. A cold start is bounded by
// the sum over a grant's first rotation: that sum, times N, over the cores the API server
// and etcd get, is the shortest time in which N grants can be Ready.

// writeKind is one kind of write, measured over every grant.
type writeKind struct {
	name string
	// first: part of a grant's first rotation (a cold start); otherwise of a routine one.
	first bool
	do    func(ctx context.Context, g *writeGrant) error
}

// writeGrant is one grant as the writes left it.
type writeGrant struct {
	grant   *cdv1.CDUserGrant
	refresh *corev1.Secret
	status  cdv1.CDUserGrantStatus
	round   int
}

// writeCost is the API server's and etcd's CPU per write of one kind, the median of its
// rounds.
type writeCost struct {
	name  string
	first bool
	ms    float64
}

// writesRounds is how often each routine write is measured; a first rotation's writes
// happen once per grant.
const writesRounds = 3

func runWrites(n int) error {
	step("writes: starting a fresh control plane")
	env := &envtest.Environment{CRDDirectoryPaths: []string{"config/crd/bases"}, ErrorIfCRDPathMissing: true}
	restCfg, err := env.Start()
	if err != nil {
		return fmt.Errorf("starting the control plane (run `make bench-writes`): %w", err)
	}
	defer func() { _ = env.Stop() }()
	restCfg.QPS, restCfg.Burst = -1, 0
	restCfg.UserAgent = "cd-credentials-operator/bench-writes"
	cp := controlPlanePIDs(restCfg.Host)
	if cp == nil {
		return fmt.Errorf("the API server's and etcd's processes were not found")
	}
	k8s, err := client.New(restCfg, client.Options{Scheme: manager.Scheme()})
	if err != nil {
		return err
	}
	ctx := context.Background()
	idp, _, issuer, _ := startSandbox(time.Hour)
	step("writes: seeding %d CDUserGrants and their refresh tokens", n)
	if err := seed(ctx, k8s, idp, benchNS, issuer, n); err != nil {
		return err
	}
	grants, err := writeGrants(ctx, k8s, n)
	if err != nil {
		return err
	}
	// The manager's watches: the API server sends every write to them.
	informers, err := cache.New(restCfg, cache.Options{Scheme: manager.Scheme()})
	if err != nil {
		return err
	}
	for _, obj := range []client.Object{&corev1.Secret{}, &cdv1.CDUserGrant{}} {
		if _, err := informers.GetInformer(ctx, obj); err != nil {
			return err
		}
	}
	cctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() { _ = informers.Start(cctx) }()
	informers.WaitForCacheSync(ctx)

	var costs []writeCost
	for _, kind := range operatorWrites(k8s) {
		rounds := writesRounds
		if kind.first {
			rounds = 1
		}
		var ms []float64
		for range rounds {
			cpu0 := controlPlaneCPU(cp)
			if err := parallel(n, func(i int) error { return kind.do(ctx, grants[i]) }); err != nil {
				return fmt.Errorf("%s: %w", kind.name, err)
			}
			ms = append(ms, (controlPlaneCPU(cp)-cpu0)*1000/float64(n))
		}
		sort.Float64s(ms)
		costs = append(costs, writeCost{name: kind.name, first: kind.first, ms: ms[len(ms)/2]})
		step("writes: %s: %.2f ms", kind.name, ms[len(ms)/2])
	}
	printWriteCosts(os.Stdout, n, nproc(), costs)
	return nil
}

func controlPlaneCPU(pids []int) (s float64) {
	for _, pid := range pids {
		s += procCPU(pid)
	}
	return s
}

// writeGrants reads the seeded grants and their refresh-token Secrets.
func writeGrants(ctx context.Context, k8s client.Client, n int) ([]*writeGrant, error) {
	out := make([]*writeGrant, n)
	err := parallel(n, func(i int) error {
		g := &writeGrant{grant: &cdv1.CDUserGrant{}, refresh: &corev1.Secret{}}
		key := types.NamespacedName{Namespace: benchNS, Name: fmt.Sprintf("g%05d", i)}
		if err := k8s.Get(ctx, key, g.grant); err != nil {
			return err
		}
		key.Name = g.grant.Spec.RefreshTokenSecretRef.Name
		if err := k8s.Get(ctx, key, g.refresh); err != nil {
			return err
		}
		out[i] = g
		return nil
	})
	return out, err
}

// operatorWrites are a grant's first rotation and then a routine one, in the order the
// operator makes them.
func operatorWrites(k8s client.Client) []writeKind {
	mark := func(ctx context.Context, g *writeGrant) error {
		secrets.Bind(g.refresh, g.grant)
		rotation.WriteMark(g.refresh.Annotations, rotation.Mark{Hash: fmt.Sprintf("%064x", g.round), Holder: "bench-writes", Since: time.Now()})
		return k8s.Update(ctx, g.refresh)
	}
	store := func(ctx context.Context, g *writeGrant) error {
		secrets.StoreRefreshToken(g.refresh, secrets.RefreshKey(g.grant), fmt.Sprintf("rt-%s-%d", g.grant.Name, g.round))
		return k8s.Update(ctx, g.refresh)
	}
	output := func(ctx context.Context, g *writeGrant) error {
		now := time.Now()
		out := secrets.Output{
			Owner: g.grant, OwnerGVK: cdv1.GroupVersion.WithKind("CDUserGrant"), Name: secrets.OutputName(g.grant.Name, ""),
			AccessToken: fmt.Sprintf("at-%s-%d", g.grant.Name, g.round), TokenType: "Bearer", Scopes: []string{"offline_access"},
			Schedule: rotation.Schedule{Issued: now, ExpiresAt: now.Add(time.Hour), RenewAt: now.Add(40 * time.Minute)}, Fingerprint: "bench-writes",
		}
		body, err := json.Marshal(out.Apply())
		if err != nil {
			return err
		}
		target := metadataOf("v1", "Secret", benchNS, out.Name)
		return k8s.Patch(ctx, target, client.RawPatch(types.ApplyPatchType, body), client.FieldOwner(secrets.FieldOwner), client.ForceOwnership)
	}
	status := func(ctx context.Context, g *writeGrant) error {
		before := g.status
		g.status = rotatedStatus(g.grant, before, time.Now())
		patch, err := json.Marshal(map[string]any{"status": statusDiff(before, g.status)})
		if err != nil {
			return err
		}
		target := metadataOf(cdv1.GroupVersion.String(), "CDUserGrant", benchNS, g.grant.Name)
		return k8s.Status().Patch(ctx, target, client.RawPatch(types.MergePatchType, patch))
	}
	event := func(ctx context.Context, g *writeGrant) error {
		now := metav1.NowMicro()
		return k8s.Create(ctx, &eventsv1.Event{
			ObjectMeta: metav1.ObjectMeta{Namespace: benchNS, Name: fmt.Sprintf("%s.%x", g.grant.Name, now.UnixNano())},
			EventTime:  now, ReportingController: "cdusergrant-controller", ReportingInstance: "cdusergrant-controller-bench",
			Action: "Reconcile", Reason: cdv1.TokenIssuedReason, Type: corev1.EventTypeNormal, Note: g.status.Conditions[0].Message,
			Regarding: corev1.ObjectReference{APIVersion: cdv1.GroupVersion.String(), Kind: "CDUserGrant", Namespace: benchNS, Name: g.grant.Name, UID: g.grant.UID},
		})
	}
	next := func(ctx context.Context, g *writeGrant) error { g.round++; return mark(ctx, g) }
	return []writeKind{
		{"first: in-flight mark and binding (refresh Secret update)", true, mark},
		{"first: refresh token (refresh Secret update)", true, store},
		{"first: access token (output Secret apply, creating it)", true, output},
		{"first: status (CR status merge patch, Ready)", true, status},
		{"first: first-token Event (events.k8s.io create)", true, event},
		{"routine: in-flight mark (refresh Secret update)", false, next},
		{"routine: refresh token (refresh Secret update)", false, store},
		{"routine: access token (output Secret apply)", false, output},
		{"routine: status (CR status merge patch)", false, status},
	}
}

func metadataOf(apiVersion, kind, ns, name string) *metav1.PartialObjectMetadata {
	m := &metav1.PartialObjectMetadata{TypeMeta: metav1.TypeMeta{APIVersion: apiVersion, Kind: kind}}
	m.Namespace, m.Name = ns, name
	return m
}

// rotatedStatus is a grant's status after a rotation at now, as the operator reports it.
func rotatedStatus(g *cdv1.CDUserGrant, before cdv1.CDUserGrantStatus, now time.Time) cdv1.CDUserGrantStatus {
	s := *before.DeepCopy()
	at := metav1.NewTime(now.Truncate(time.Second))
	expires, renew := metav1.NewTime(at.Add(time.Hour)), metav1.NewTime(at.Add(40*time.Minute))
	s.ObservedGeneration, s.ExpiresAt, s.RenewalTime, s.LastRotationTime = g.Generation, &expires, &renew, &at
	s.RotationCount++
	if len(s.Conditions) == 0 {
		s.SecretName, s.Subject, s.GrantedScopes = secrets.OutputName(g.Name, ""), g.Name, []string{"offline_access"}
		cond := func(typ string, status metav1.ConditionStatus, reason, message string) metav1.Condition {
			return metav1.Condition{Type: typ, Status: status, Reason: reason, Message: message, ObservedGeneration: g.Generation, LastTransitionTime: at}
		}
		s.Conditions = []metav1.Condition{
			cond(cdv1.ReadyCondition, metav1.ConditionTrue, cdv1.TokenIssuedReason, "Access token is in Secret "+s.SecretName),
			cond(cdv1.FlowMisuseCondition, metav1.ConditionFalse, cdv1.FlowCorrectReason, "The grant uses an AuthorizationCode credential"),
			cond(cdv1.ReauthorizationRequiredCondition, metav1.ConditionFalse, cdv1.RefreshTokenValidReason, "The grant holds a refresh token the identity server last accepted"),
		}
	}
	return s
}

// statusDiff is the merge patch of a status by top-level field, as the operator sends it:
// the fields that changed, whole.
func statusDiff(before, after cdv1.CDUserGrantStatus) map[string]json.RawMessage {
	var b, a map[string]json.RawMessage
	bj, _ := json.Marshal(before)
	aj, _ := json.Marshal(after)
	_ = json.Unmarshal(bj, &b)
	_ = json.Unmarshal(aj, &a)
	diff := map[string]json.RawMessage{}
	for k, v := range a {
		if string(b[k]) != string(v) {
			diff[k] = v
		}
	}
	return diff
}

// printWriteCosts prints the table of costs, their sums over a first and a routine
// rotation, and what the first rotation's sum makes of a cold start of 10,000 grants.
func printWriteCosts(w io.Writer, n, cores int, costs []writeCost) {
	fmt.Fprintf(w, "\nAPI server and etcd CPU per write, %d grants (ms; routine writes the median of %d rounds)\n\n", n, writesRounds)
	fmt.Fprintln(w, "| write | ms |")
	fmt.Fprintln(w, "|---|---|")
	var first, routine float64
	var firstN, routineN int
	for _, c := range costs {
		fmt.Fprintf(w, "| %s | %.2f |\n", c.name, c.ms)
		if c.first {
			first, firstN = first+c.ms, firstN+1
		} else {
			routine, routineN = routine+c.ms, routineN+1
		}
	}
	fmt.Fprintf(w, "| a grant's first rotation (cold start), %d writes | %.1f |\n", firstN, first)
	fmt.Fprintf(w, "| a routine rotation, %d writes | %.1f |\n", routineN, routine)
	need, floor := coldStartBound(first, 10000, time.Minute, cores)
	fmt.Fprintf(w, "\nA cold start of 10,000 grants costs the API server and etcd %.0f core-seconds: to be Ready in 1m0s they need %.1f cores for it alone; with all %d cores of this machine it takes at least %s.\n",
		first*10, need, cores, floor.Round(time.Second))
}

// coldStartBound is, for n grants whose first rotation costs the API server and etcd
// firstMs of CPU each, the cores they need to make them all Ready within within, and the
// shortest cold start with the given cores.
func coldStartBound(firstMs float64, n int, within time.Duration, cores int) (need float64, floor time.Duration) {
	coreSeconds := firstMs * float64(n) / 1000
	need = coreSeconds / within.Seconds()
	if cores > 0 {
		floor = time.Duration(coreSeconds / float64(cores) * float64(time.Second))
	}
	return need, floor
}
