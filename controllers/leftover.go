package controllers

import (
	"context"
	"fmt"
	"slices"
	"strings"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"

	cdv1 "github.com/credops/cd-credentials-operator/api/v1alpha1"
	"github.com/credops/cd-credentials-operator/internal/secrets"
)

// Output Secrets a CR left behind: the one it wrote before spec.secretName was changed,
// or (a CDCredential) before it was switched to AuthorizationCode. They are kept, not
// deleted: pods may still mount them (a deleted Secret stops new pods from starting),
// and the request budget counts from the token in them. Nothing renews that token any
// more, so Ready names them until they are deleted.

// leftoverMark is in every note naming Secrets left behind: Ready carrying it is what
// tells a pass to look for them again (noteLeftovers).
const leftoverMark = "which is no longer renewed"

// leftoversNamed is how many Secrets left behind a note names; the rest it counts. A CR
// renamed many times leaves as many, with names up to 253 characters: listing them all
// passes metav1.Condition's 32768-character message limit, and the API server refuses
// the whole status patch, on every pass.
const leftoversNamed = 3

// leftoverNote names Secrets left behind (the first leftoversNamed, and how many more);
// origin says whose last token they hold.
func leftoverNote(names []string, origin, kind string) string {
	if len(names) == 0 {
		return ""
	}
	named := strings.Join(names[:min(len(names), leftoversNamed)], ", ")
	if more := len(names) - leftoversNamed; more > 0 {
		named += fmt.Sprintf(" and %d more", more)
	}
	return "; Secret " + named + " still holds the last token " + origin + ", " + leftoverMark +
		" and expires within its lifetime: delete it once no pod mounts it (deleting this " + kind + " deletes it too)"
}

// renamedNote names the Secrets a rename of spec.secretName left behind.
func renamedNote(names []string, kind string) string {
	return leftoverNote(names, "written before spec.secretName was changed", kind)
}

// leftoverOutputs lists the output Secrets owner controls but current (the one its token
// is in), sorted. It reads the cache, by the output labels: an orphaned output or
// another CR's is not owner's.
func leftoverOutputs(ctx context.Context, c client.Reader, owner client.Object, kind, current string) ([]string, error) {
	list := &corev1.SecretList{}
	// Only names and owners are read.
	if err := c.List(ctx, list, client.InNamespace(owner.GetNamespace()), client.MatchingLabels(secrets.OutputLabels(kind, owner.GetName())), client.UnsafeDisableDeepCopy); err != nil {
		return nil, err
	}
	var names []string
	for i := range list.Items {
		if s := &list.Items[i]; s.Name != current && metav1.IsControlledBy(s, owner) {
			names = append(names, s.Name)
		}
	}
	slices.Sort(names)
	return names, nil
}

// noteLeftovers adds to an outcome whose token is in the Secret status names (secret) the
// other outputs the CR still controls. previous and conds are status before the pass.
//
// It lists them only when they can have changed: on the pass that moves the token to
// another Secret (secret is not previous, a rename done), and while Ready names some, so
// the note stays on later passes and goes once they are deleted (a deletion is an event
// for the owner). A routine pass lists nothing: the cache has no index by owner, and a
// label-selected list scans every Secret of the namespace (20,000 for 10,000 grants in
// one), once per rotation; an index would cost every output Secret an index entry for
// what is rare. The price: a Ready rewritten in between (a failed renewal) drops the
// note, and a later recovery does not bring it back.
func noteLeftovers(ctx context.Context, c client.Reader, owner client.Object, kind, secret, previous string, conds []metav1.Condition, out outcome) outcome {
	switch out.(type) {
	case fresh, stored, deferred:
	default:
		return out
	}
	renamed := previous != "" && secret != previous
	if ready := meta.FindStatusCondition(conds, cdv1.ReadyCondition); !renamed && (ready == nil || !strings.Contains(ready.Message, leftoverMark)) {
		return out
	}
	names, err := leftoverOutputs(ctx, c, owner, kind, secret)
	if err != nil {
		// Only a word on Ready is missing; the token's status must still be written.
		ctrl.LoggerFrom(ctx).Error(err, "Listing output Secrets left behind failed")
		return out
	}
	switch o := out.(type) {
	case fresh:
		o.leftover = names
		return o
	case stored:
		o.leftover = names
		return o
	case deferred:
		o.leftover = names
		return o
	}
	return out
}
