package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"runtime"
	"time"

	corev1 "k8s.io/api/core/v1"
	eventsv1 "k8s.io/api/events/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"

	cdv1 "github.com/credops/cd-credentials-operator/api/v1alpha1"
	"github.com/credops/cd-credentials-operator/internal/manager"
	"github.com/credops/cd-credentials-operator/internal/rotation"
	"github.com/credops/cd-credentials-operator/internal/secrets"
	"github.com/credops/cd-credentials-operator/internal/statuspatch"
)

// The writes mode (`make bench-writes`) measures what each of the operator's writes costs
// in CPU per write: one kind of write at a time over n grants, built by the operator's
// own functions (the mark, the binding, the stored refresh token, the output Secret's
// apply configuration) and sent as the operator sends them (Secret updates in protobuf,
// the apply and the status patch read back as metadata), with an informer watching
// Secrets and grants as the manager does. Two costs are read for each: the API server's
// and etcd's, and this process's, that is the client's and its informer's, which decodes
// the watch event the write causes. The loop's writes (a read and two JSON updates, no
// informer) are measured the same way.
//
// A cold start is bounded by the API server's sum over a grant's first rotation: that
// sum, times N, over the cores the API server and etcd get, is the shortest time in which
// N grants can be Ready. The client's sums show how much of the manager's CPU per
// rotation, against the loop's, its writes and their watch events alone account for.

// writeKind is one kind of write, measured over every grant.
type writeKind struct {
	name string
	// part is the rotation it belongs to.
	part writePart
	do   func(ctx context.Context, i int) error
}

type writePart int

const (
	firstRotation   writePart = iota // a grant's first rotation (a cold start)
	routineRotation                  // the operator's routine rotation
	loopRotation                     // the loop's rotation, the identity server left out
)

// writeGrant is one grant as the writes left it.
type writeGrant struct {
	grant   *cdv1.CDUserGrant
	refresh *corev1.Secret
	round   int
}

// writeCost is the CPU per write of one kind, the median of its rounds: the API
// server's and etcd's, and the client's with its informer's.
type writeCost struct {
	name           string
	part           writePart
	server, client float64 // ms
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
	step("writes: seeding %d CDUserGrants and their refresh tokens, and the loop's", n)
	if err := seed(ctx, k8s, idp, benchNS, issuer, n); err != nil {
		return err
	}
	if err := seedBaseline(ctx, k8s, idp, n); err != nil {
		return err
	}
	grants, err := writeGrants(ctx, k8s, n)
	if err != nil {
		return err
	}
	loopCfg := rest.CopyConfig(restCfg)
	loopCfg.QPS, loopCfg.Burst = 500, 1000 // as runBaseline
	loopCfg.UserAgent = "bench-loop"
	l := &loop{cs: kubernetes.NewForConfigOrDie(loopCfg)}
	// The manager's watches, on the grants' namespace: the API server sends every write
	// there to them, and this process decodes it. The loop's namespace is not watched.
	informers, err := cache.New(restCfg, cache.Options{Scheme: manager.Scheme(), DefaultNamespaces: map[string]cache.Config{benchNS: {}}})
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

	// The loop's token Secrets exist from its first rotation on.
	loopWrite := loopWrites(l)
	if err := parallel(n, func(i int) error { return loopWrite.do(ctx, i) }); err != nil {
		return err
	}
	self := os.Getpid()
	var costs []writeCost
	for _, kind := range append(operatorWrites(k8s, grants), loopWrite) {
		rounds := writesRounds
		if kind.part == firstRotation {
			rounds = 1
		}
		var server, own []float64
		for range rounds {
			runtime.GC() // the last kind's garbage is not this one's
			cp0, own0 := controlPlaneCPU(cp), procCPU(self)
			if err := parallel(n, func(i int) error { return kind.do(ctx, i) }); err != nil {
				return fmt.Errorf("%s: %w", kind.name, err)
			}
			// The watch events of the last writes are still on their way.
			time.Sleep(time.Second)
			server = append(server, (controlPlaneCPU(cp)-cp0)*1000/float64(n))
			own = append(own, (procCPU(self)-own0)*1000/float64(n))
		}
		c := writeCost{name: kind.name, part: kind.part, server: median(server), client: median(own)}
		costs = append(costs, c)
		step("writes: %s: %.2f ms API server and etcd, %.2f ms client", kind.name, c.server, c.client)
	}
	printWriteCosts(os.Stdout, n, nproc(), costs)
	return nil
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

// loopWrites is the loop's rotation without the identity server: its read and its two
// writes, through its own code.
func loopWrites(l *loop) writeKind {
	return writeKind{"loop: read the refresh token, store it, write the access token (JSON)", loopRotation, func(ctx context.Context, i int) error {
		name := fmt.Sprintf("b%05d", i)
		s, err := l.cs.CoreV1().Secrets(baselineNS).Get(ctx, name+"-refresh", metav1.GetOptions{})
		if err != nil {
			return err
		}
		l.store(ctx, name, s, loopToken{AccessToken: "at-" + name, RefreshToken: "rt-" + name + s.ResourceVersion, ExpiresIn: 3600})
		return nil
	}}
}

// operatorWrites are a grant's first rotation and then a routine one, in the order the
// operator makes them.
func operatorWrites(k8s client.Client, grants []*writeGrant) []writeKind {
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
		patch, err := rotateStatus(g.grant, time.Now())
		if err != nil {
			return err
		}
		target := metadataOf(cdv1.GroupVersion.String(), "CDUserGrant", benchNS, g.grant.Name)
		return k8s.Status().Patch(ctx, target, client.RawPatch(types.JSONPatchType, patch))
	}
	event := func(ctx context.Context, g *writeGrant) error {
		now := metav1.NowMicro()
		return k8s.Create(ctx, &eventsv1.Event{
			ObjectMeta: metav1.ObjectMeta{Namespace: benchNS, Name: fmt.Sprintf("%s.%x", g.grant.Name, now.UnixNano())},
			EventTime:  now, ReportingController: "cdusergrant-controller", ReportingInstance: "cdusergrant-controller-bench",
			Action: "Reconcile", Reason: cdv1.TokenIssuedReason, Type: corev1.EventTypeNormal, Note: g.grant.Status.Conditions[0].Message,
			Regarding: corev1.ObjectReference{APIVersion: cdv1.GroupVersion.String(), Kind: "CDUserGrant", Namespace: benchNS, Name: g.grant.Name, UID: g.grant.UID},
		})
	}
	next := func(ctx context.Context, g *writeGrant) error { g.round++; return mark(ctx, g) }
	each := func(f func(context.Context, *writeGrant) error) func(context.Context, int) error {
		return func(ctx context.Context, i int) error { return f(ctx, grants[i]) }
	}
	return []writeKind{
		{"first: in-flight mark and binding (refresh Secret update)", firstRotation, each(mark)},
		{"first: refresh token (refresh Secret update)", firstRotation, each(store)},
		{"first: access token (output Secret apply, creating it)", firstRotation, each(output)},
		{"first: status (CR status JSON patch, Ready)", firstRotation, each(status)},
		{"first: first-token Event (events.k8s.io create)", firstRotation, each(event)},
		{"routine: in-flight mark (refresh Secret update)", routineRotation, each(next)},
		{"routine: refresh token (refresh Secret update)", routineRotation, each(store)},
		{"routine: access token (output Secret apply)", routineRotation, each(output)},
		{"routine: status (CR status JSON patch)", routineRotation, each(status)},
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

// rotateStatus moves g's status on by a rotation at now and returns the status patch the
// operator sends for it (internal/statuspatch): a JSON patch that tests g's UID, then sets
// the fields that changed, or the whole status at g's resourceVersion when it had none.
func rotateStatus(g *cdv1.CDUserGrant, now time.Time) ([]byte, error) {
	before := g.DeepCopy()
	g.Status = rotatedStatus(g, before.Status, now)
	return statuspatch.For(g, &before.Status, &g.Status).Data(g)
}

// printWriteCosts prints the table of costs, their sums over a first, a routine and a
// loop's rotation, and what the first rotation's sum makes of a cold start of 10,000
// grants.
func printWriteCosts(w io.Writer, n, cores int, costs []writeCost) {
	fmt.Fprintf(w, "\nCPU per write, %d grants (ms; a routine write the median of %d rounds)\n\n", n, writesRounds)
	fmt.Fprintln(w, "| write | API server and etcd | client and its informer |")
	fmt.Fprintln(w, "|---|---|---|")
	var sums [3]writeCost
	var count [3]int
	for _, c := range costs {
		fmt.Fprintf(w, "| %s | %.2f | %.2f |\n", c.name, c.server, c.client)
		sums[c.part].server += c.server
		sums[c.part].client += c.client
		count[c.part]++
	}
	for part, what := range []string{"a grant's first rotation (cold start)", "the operator's routine rotation", "the loop's rotation"} {
		fmt.Fprintf(w, "| %s (kinds: %d) | %.1f | %.2f |\n", what, count[part], sums[part].server, sums[part].client)
	}
	if loop := sums[loopRotation].client; loop > 0 {
		fmt.Fprintf(w, "\nThe operator's writes and their watch events alone cost its client %.2fx the loop's read and writes (the identity server left out of both).\n", sums[routineRotation].client/loop)
	}
	first := sums[firstRotation].server
	need, floor := coldStartBound(first, 10000, time.Minute, cores)
	fmt.Fprintf(w, "A cold start of 10,000 grants costs the API server and etcd %.0f core-seconds: to be Ready in 1m0s they need %.1f cores for it alone; with all %d cores of this machine it takes at least %s.\n",
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
