package controllers

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"

	cdv1 "github.com/credops/cd-credentials-operator/api/v1alpha1"
)

// secretLists counts the Secret lists a reconciler makes.
type secretLists struct {
	client.Client
	n *int
}

func (c secretLists) List(ctx context.Context, list client.ObjectList, opts ...client.ListOption) error {
	if _, ok := list.(*corev1.SecretList); ok {
		*c.n++
	}
	return c.Client.List(ctx, list, opts...)
}

// A renamed output (spec.secretName edited) leaves the old Secret behind, controlled by
// the CR, holding a token nothing renews any more: pods that still mount it fail once it
// expires. It is not deleted (pods may mount it, and the request budget counts from its
// token); once the token is in the new Secret, Ready names the old one, as it does for a
// flow switch, until it is deleted. Finding it costs a routine pass nothing: Secrets are
// listed only on the pass that moves the token, and while Ready names some.
func TestARenamedOutputIsNamedOnReadyUntilItIsDeleted(t *testing.T) {
	type kind struct {
		pass   func(w *world, name string) (ctrl.Result, error)
		rename func(w *world, secret string)
		status func(w *world) (string, []metav1.Condition)
		lists  func(w *world, n *int)
		// edit changes what is sent, within the request budget (a deferred request);
		// nil for a grant, whose deferral keeps Ready as it was.
		edit    func(w *world)
		cr, old string
	}
	cases := map[string]kind{
		"a ClientCredentials CDCredential": {
			pass: func(w *world, name string) (ctrl.Result, error) { return w.reconcileCred(name) },
			rename: func(w *world, secret string) {
				c := w.cred("pricing")
				w.update(c, func() { c.Spec.SecretName = secret; c.Generation++ })
			},
			status: func(w *world) (string, []metav1.Condition) {
				c := w.cred("pricing")
				return c.Status.SecretName, c.Status.Conditions
			},
			lists: func(w *world, n *int) { w.creds.Client = secretLists{Client: w.client, n: n} },
			edit: func(w *world) {
				c := w.cred("pricing")
				w.update(c, func() { c.Spec.Scopes = []string{"pricing:read"}; c.Generation++ })
			},
			cr: "pricing", old: "pricing-token",
		},
		"a CDUserGrant": {
			pass: func(w *world, name string) (ctrl.Result, error) { return w.reconcileGrant(name) },
			rename: func(w *world, secret string) {
				g := w.grant("acme")
				w.update(g, func() { g.Spec.SecretName = secret; g.Generation++ })
			},
			status: func(w *world) (string, []metav1.Condition) {
				g := w.grant("acme")
				return g.Status.SecretName, g.Status.Conditions
			},
			lists: func(w *world, n *int) { w.grants.Client = secretLists{Client: w.client, n: n} },
			cr:    "acme", old: "acme-token",
		},
	}
	for name, k := range cases {
		t.Run(name, func(t *testing.T) {
			w := newWorld(t)
			var lists int
			k.lists(w, &lists)
			pass := func() ctrl.Result {
				t.Helper()
				res, err := k.pass(w, k.cr)
				if err != nil {
					t.Fatal(err)
				}
				return res
			}
			pass()
			if lists != 0 {
				t.Errorf("the first token's pass listed Secrets %d times, want none", lists)
			}
			k.rename(w, "renamed")
			w.clock.Step(11 * time.Minute) // past a third of the 30-minute lifetime: the new Secret gets its token
			pass()

			secret, conds := k.status(w)
			wantCondition(t, conds, cdv1.ReadyCondition, metav1.ConditionTrue, cdv1.TokenIssuedReason)
			if secret != "renamed" {
				t.Fatalf("status.secretName %q, want renamed", secret)
			}
			old := w.secret(k.old)
			if len(old.Data[cdv1.AccessTokenKey]) == 0 || len(old.OwnerReferences) != 1 || old.OwnerReferences[0].Name != k.cr {
				t.Fatalf("the old output %s: keys %d, owners %v; want it left as it was", k.old, len(old.Data), old.OwnerReferences)
			}
			msg := condition(t, conds, cdv1.ReadyCondition).Message
			if !strings.Contains(msg, "Secret "+k.old+" still holds") || !strings.Contains(msg, "delete it once no pod mounts it") {
				t.Errorf("Ready %q does not name the old output %s, left behind and never renewed again", msg, k.old)
			}

			// A pass that finds the token fresh says the same and writes nothing; the
			// renewal says it again.
			pass()
			if writes := w.takeWrites(); len(writes) != 0 {
				t.Errorf("a pass with a fresh token wrote %v", writes)
			}
			w.clock.Step(pass().RequeueAfter)
			pass()
			if _, conds := k.status(w); condition(t, conds, cdv1.ReadyCondition).Message != msg {
				t.Errorf("Ready after the renewal %q, want %q", condition(t, conds, cdv1.ReadyCondition).Message, msg)
			}
			if k.edit != nil {
				k.edit(w)
				pass()
				_, conds := k.status(w)
				wantCondition(t, conds, cdv1.ReconcilingCondition, metav1.ConditionTrue, cdv1.ReconcilingReason)
				if got := condition(t, conds, cdv1.ReadyCondition).Message; got != msg {
					t.Errorf("Ready while an edit waits for the request budget %q, want %q", got, msg)
				}
			}

			// Deleted (its deletion is an event for its owner): no longer named, and
			// routine passes list nothing again.
			if err := w.client.Delete(t.Context(), old); err != nil {
				t.Fatal(err)
			}
			pass()
			_, conds = k.status(w)
			wantCondition(t, conds, cdv1.ReadyCondition, metav1.ConditionTrue, cdv1.TokenIssuedReason)
			if msg := condition(t, conds, cdv1.ReadyCondition).Message; strings.Contains(msg, k.old) {
				t.Errorf("Ready %q after %s was deleted still names it", msg, k.old)
			}
			lists = 0
			pass()
			w.clock.Step(pass().RequeueAfter)
			pass()
			if lists != 0 {
				t.Errorf("routine passes listed Secrets %d times, want none", lists)
			}
		})
	}
}

// A CR renamed many times leaves many outputs behind, with names up to 253 characters.
// Ready names a few and counts the rest: a message listing them all passes
// metav1.Condition's 32768-character limit, and the API server then refuses the whole
// status patch on every pass (status.secretName and expiresAt stay stale). No condition
// message passes the limit, whatever builds it.
func TestManyLongLeftoverSecretsKeepReadysMessageWithinItsLimit(t *testing.T) {
	var names []string
	for i := range 130 {
		names = append(names, fmt.Sprintf("%s-%03d", strings.Repeat("p", 249), i))
	}
	note := renamedNote(names, kindCredential)
	for _, named := range names[:leftoversNamed] {
		if !strings.Contains(note, named) {
			t.Errorf("note does not name %s…", named[245:])
		}
	}
	if strings.Contains(note, names[leftoversNamed]) || !strings.Contains(note, fmt.Sprintf("and %d more", 130-leftoversNamed)) {
		t.Errorf("note %q, want the first %d names and a count of the rest", note, leftoversNamed)
	}
	if !strings.Contains(note, leftoverMark) {
		t.Errorf("note %q lacks %q, which has later passes look for the leftovers again", note, leftoverMark)
	}
	if n := utf8.RuneCountInString(note); n > 2000 {
		t.Errorf("note of %d characters for 130 leftovers, want a few names' worth", n)
	}

	var conds []metav1.Condition
	c := newConditions(&conds, 1, epoch)
	c.set(cdv1.ReadyCondition, true, cdv1.TokenIssuedReason, strings.Repeat("é", 40000))
	if n := utf8.RuneCountInString(condition(t, conds, cdv1.ReadyCondition).Message); n > maxConditionMessage {
		t.Errorf("condition message of %d characters, want at most %d: the API server refuses the status patch", n, maxConditionMessage)
	}
}
