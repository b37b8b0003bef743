package controllers

import (
	"context"
	"strings"
	"testing"

	"github.com/go-logr/logr"
	"github.com/go-logr/logr/funcr"
	"github.com/google/go-cmp/cmp"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/events"
	"k8s.io/client-go/util/workqueue"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	cdv1 "github.com/credops/cd-credentials-operator/api/v1alpha1"
	"github.com/credops/cd-credentials-operator/internal/secrets"
)

// Two installs of the operator (each its release namespace, so each its own key Secret)
// that both select one CDCredential each write status.clientSecretHash under their own
// key.
var (
	ourKey     = []byte("install-one-key-0123456789abcdef-1")
	theirKey   = []byte("install-two-key-0123456789abcdef-2")
	ourHash    = secrets.KeyedHash(ourKey, "login-secret")
	theirHash  = secrets.KeyedHash(theirKey, "login-secret")
	earlier    = "hmac-sha256:0123456789abcdef0123456789abcdef" // an earlier version's, naming no key
	newSecret  = secrets.KeyedHash(ourKey, "login-secret-2")
	loginTwins = func(hash string) (*cdv1.CDCredential, *cdv1.CDCredential) {
		a := &cdv1.CDCredential{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "login-a", UID: "uid-a"},
			Spec:   cdv1.CDCredentialSpec{Flow: cdv1.FlowAuthorizationCode},
			Status: cdv1.CDCredentialStatus{ClientID: "login-id", ClientSecretHash: hash}}
		b := a.DeepCopy()
		b.Name, b.UID, b.Spec.Flow = "login-b", "uid-b", cdv1.FlowClientCredentials
		return a, b
	}
)

// TestSharersAreRequeuedOnlyForAHashUnderThisManagersKey: a hash written under another
// key is another install's write, not a new client secret; re-queuing the sharers on it
// (or on this manager's write over it) had two installs rewrite two CDCredentials of one
// client id for ever.
func TestSharersAreRequeuedOnlyForAHashUnderThisManagersKey(t *testing.T) {
	cases := map[string]struct {
		old, cur string
		flow     cdv1.Flow // the new flow; the old one is AuthorizationCode
		requeued bool
	}{
		"a new client secret under this manager's key": {old: ourHash, cur: newSecret, requeued: true},
		"the first hash": {old: "", cur: ourHash, requeued: true},
		"an earlier version's hash rewritten, once":               {old: earlier, cur: ourHash, requeued: true},
		"an unchanged hash":                                       {old: ourHash, cur: ourHash},
		"another install's write over this manager's":             {old: ourHash, cur: theirHash},
		"this manager's write over another key's, the first time": {old: theirHash, cur: ourHash, requeued: true},
		"another install's write over an earlier version's":       {old: earlier, cur: theirHash},
		"a flow change, whoever wrote the hash":                   {old: ourHash, cur: theirHash, flow: cdv1.FlowClientCredentials, requeued: true},
		"another install's first hash":                            {old: "", cur: theirHash},
		"this manager's hash cleared (the secret is unusable)":    {old: ourHash, cur: "", requeued: true},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			old, sharer := loginTwins(tc.old)
			cur := old.DeepCopy()
			cur.Status.ClientSecretHash = tc.cur
			if tc.flow != "" {
				cur.Spec.Flow = tc.flow
			}
			q := workqueue.NewTypedRateLimitingQueue(workqueue.DefaultTypedControllerRateLimiter[reconcile.Request]())
			defer q.ShutDown()
			c := clientWith(t, cur, sharer)
			sharersHandler(c, secrets.KeyID(ourKey)).Update(context.Background(), event.UpdateEvent{ObjectOld: old, ObjectNew: cur}, q)
			if got := q.Len() > 0; got != tc.requeued {
				t.Errorf("sharer re-queued: %v, want %v", got, tc.requeued)
			}
		})
	}
}

// This manager writing its hash over another key's re-queues the sharers once per
// CDCredential and key: after a key rotation that is what brings every sharer's hash under
// the new key, and two installs writing over each other must not re-queue each other's
// CRs for ever.
func TestSharersAreRequeuedOnceWhenThisManagerWritesOverAnotherKeysHash(t *testing.T) {
	old, sharer := loginTwins(theirHash)
	cur := old.DeepCopy()
	cur.Status.ClientSecretHash = ourHash
	c := clientWith(t, cur, sharer)
	h := sharersHandler(c, secrets.KeyID(ourKey))
	for i, want := range []bool{true, false, false} {
		q := workqueue.NewTypedRateLimitingQueue(workqueue.DefaultTypedControllerRateLimiter[reconcile.Request]())
		h.Update(context.Background(), event.UpdateEvent{ObjectOld: old, ObjectNew: cur}, q)
		if got := q.Len() > 0; got != want {
			t.Errorf("write %d over another key's hash: sharer re-queued %v, want %v", i+1, got, want)
		}
		q.ShutDown()
	}
}

// TestAnotherInstallsWriteIsWarnedOnce: a CDCredential whose hash another install's key
// wrote says so, once per such write, with a Warning event and a log line naming it.
func TestAnotherInstallsWriteIsWarnedOnce(t *testing.T) {
	cases := map[string]struct {
		old, cur string
		warned   bool
	}{
		"another install's write over this manager's":       {old: ourHash, cur: theirHash, warned: true},
		"another install's first hash":                      {old: "", cur: theirHash, warned: true},
		"another install's write over an earlier version's": {old: earlier, cur: theirHash, warned: true},
		"another status write of that install's, same hash": {old: theirHash, cur: theirHash},
		"this manager's write over another install's":       {old: theirHash, cur: ourHash},
		"this manager's write over an earlier version's":    {old: earlier, cur: ourHash},
		"a new client secret under this manager's key":      {old: ourHash, cur: newSecret},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			old, _ := loginTwins(tc.old)
			cur := old.DeepCopy()
			cur.Status.ClientSecretHash = tc.cur
			rec := events.NewFakeRecorder(10)
			var logged []string
			ctx := logr.NewContext(context.Background(), funcr.New(func(prefix, args string) { logged = append(logged, args) }, funcr.Options{}))
			q := workqueue.NewTypedRateLimitingQueue(workqueue.DefaultTypedControllerRateLimiter[reconcile.Request]())
			defer q.ShutDown()
			anotherInstallHandler(rec, secrets.KeyID(ourKey)).Update(ctx, event.UpdateEvent{ObjectOld: old, ObjectNew: cur}, q)
			close(rec.Events)
			var got []string
			for e := range rec.Events {
				got = append(got, e)
			}
			if q.Len() != 0 {
				t.Errorf("%d requests queued: a pass would only write this manager's hash back", q.Len())
			}
			if !tc.warned {
				if len(got)+len(logged) != 0 {
					t.Errorf("events %q, log %q, want none", got, logged)
				}
				return
			}
			theirs := secrets.KeyID(theirKey)
			want := []string{"Warning AnotherInstall Another operator install, with another key (id " + theirs + "; this install's is " + secrets.KeyID(ourKey) + "), writes this CDCredential: two installs must never select the same objects (or, while moving between installs, must share one key Secret)"}
			if diff := cmp.Diff(want, got); diff != "" {
				t.Errorf("events (-want +got):\n%s", diff)
			}
			if len(logged) != 1 || !strings.Contains(logged[0], `"Another operator install with another key writes this CDCredential`) || !strings.Contains(logged[0], `"cdcredential"={"name"="login-a" "namespace"="ns"}`) || !strings.Contains(logged[0], theirs) {
				t.Errorf("log %q, want one line naming login-a and key id %s", logged, theirs)
			}
		})
	}
}

// TestAnEarlierVersionsHashIsRewrittenOnce: a hash of the earlier format (no key id) is
// replaced by one pass, and the next pass writes nothing.
func TestAnEarlierVersionsHashIsRewrittenOnce(t *testing.T) {
	w := newWorld(t)
	c := w.cred("login")
	c.Status.ClientSecretHash = earlier
	if err := w.client.Status().Update(context.Background(), c); err != nil {
		t.Fatal(err)
	}
	for i, want := range [][]string{{"status login"}, nil} {
		if _, err := w.reconcileCred("login"); err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff(want, w.takeWrites()); diff != "" {
			t.Errorf("pass %d: writes (-want +got):\n%s", i+1, diff)
		}
	}
	if got, want := w.cred("login").Status.ClientSecretHash, secrets.KeyedHash(w.creds.Key, "login-secret"); got != want {
		t.Errorf("clientSecretHash %q, want %q", got, want)
	}
}

func clientWith(t *testing.T, objs ...client.Object) client.Client {
	t.Helper()
	scheme := runtime.NewScheme()
	_ = cdv1.AddToScheme(scheme)
	return fake.NewClientBuilder().WithScheme(scheme).WithObjects(objs...).
		WithIndex(&cdv1.CDCredential{}, credentialClientIDIndex, indexClientID).Build()
}

// A client id is public: a namespace may declare a victim's in as many CDCredentials as
// it likes, each with a secret of its own. A change of the victim's credential re-queues
// only what shares its client across flows (or has no hash yet), not every declarer: each
// of those passes lists every declarer again, so N of them made every change of the
// victim's cost N passes of N.
func TestDeclaringAnotherClientsIDQueuesNothingOnItsChanges(t *testing.T) {
	victim, sharer := loginTwins(ourHash)
	var objs []client.Object
	objs = append(objs, victim, sharer)
	for i, flow := range []cdv1.Flow{cdv1.FlowClientCredentials, cdv1.FlowAuthorizationCode, cdv1.FlowClientCredentials} {
		s := victim.DeepCopy()
		s.Namespace, s.Name, s.UID = "tenant", "spoof-"+string(rune('a'+i)), types.UID("uid-spoof-"+string(rune('a'+i)))
		s.Spec.Flow, s.Status.ClientSecretHash = flow, secrets.KeyedHash(ourKey, "junk")
		objs = append(objs, s)
	}
	cur := victim.DeepCopy()
	cur.Status.ClientSecretHash = newSecret
	q := workqueue.NewTypedRateLimitingQueue(workqueue.DefaultTypedControllerRateLimiter[reconcile.Request]())
	defer q.ShutDown()
	sharersHandler(clientWith(t, objs...), secrets.KeyID(ourKey)).Update(context.Background(), event.UpdateEvent{ObjectOld: victim, ObjectNew: cur}, q)
	var queued []string
	for q.Len() > 0 {
		req, _ := q.Get()
		queued = append(queued, req.String())
		q.Done(req)
	}
	if diff := cmp.Diff([]string{"ns/login-b"}, queued); diff != "" {
		t.Errorf("queued on the victim's new secret (-want +got):\n%s", diff)
	}
}
