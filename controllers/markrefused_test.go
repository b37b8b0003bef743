package controllers

import (
	"errors"
	"strings"
	"testing"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/util/validation/field"
	"sigs.k8s.io/controller-runtime/pkg/client"

	cdv1 "github.com/credops/cd-credentials-operator/api/v1alpha1"
)

// A refresh-token Secret whose in-flight mark the API server refuses for good (an
// admission policy, RBAC, a write too large) cannot be rotated: nothing is
// sent, and the grant says why, with the API server's words, instead of staying Ready
// while its access token runs out. A conflict is no refusal: it is retried as before.
func TestARefusedInFlightMarkIsOnTheGrantAndNothingIsSent(t *testing.T) {
	cases := map[string]struct {
		err       error
		reported  bool
		apiReason string
	}{
		"annotations over the API server's limit": {
			err: apierrors.NewInvalid(schema.GroupKind{Kind: "Secret"}, "acme-refresh",
				field.ErrorList{field.TooLong(field.NewPath("metadata", "annotations"), "", 262144)}),
			reported: true, apiReason: "Invalid",
		},
		"an admission policy": {
			err:      apierrors.NewForbidden(schema.GroupResource{Resource: "secrets"}, "acme-refresh", errors.New("denied by policy tenant-secrets-frozen")),
			reported: true, apiReason: "Forbidden",
		},
		"a request too large": {
			err:      apierrors.NewRequestEntityTooLargeError("limit is 3145728"),
			reported: true, apiReason: "RequestEntityTooLarge",
		},
		"a conflict (someone wrote the Secret)": {
			err: apierrors.NewConflict(schema.GroupResource{Resource: "secrets"}, "acme-refresh", errors.New("the object has been modified")),
		},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			w := newWorld(t)
			res, err := w.reconcileGrant("acme")
			if err != nil {
				t.Fatal(err)
			}
			w.recorded()
			w.clock.Step(res.RequeueAfter)
			refuse := true
			w.setFault(func(verb string, obj client.Object) error {
				if refuse && verb == "update" && obj.GetName() == "acme-refresh" && obj.GetAnnotations()[cdv1.RotationInFlightAnnotation] != "" {
					return tc.err
				}
				return nil
			})
			if _, err := w.reconcileGrant("acme"); err == nil {
				t.Error("a pass whose mark was refused ended without an error: nothing would retry it on a backoff")
			}
			if n := len(w.tokens.refreshes()); n != 1 {
				t.Fatalf("%d refreshes, want only the first: a refresh token is never sent unmarked", n)
			}
			g := w.grant("acme")
			if !tc.reported {
				wantCondition(t, g.Status.Conditions, cdv1.ReadyCondition, metav1.ConditionTrue, cdv1.TokenIssuedReason)
				return
			}
			wantCondition(t, g.Status.Conditions, cdv1.ReadyCondition, metav1.ConditionFalse, cdv1.SecretWriteFailedReason)
			wantCondition(t, g.Status.Conditions, cdv1.ReconcilingCondition, metav1.ConditionTrue, cdv1.SecretWriteFailedReason)
			ready := condition(t, g.Status.Conditions, cdv1.ReadyCondition)
			var status apierrors.APIStatus
			errors.As(tc.err, &status)
			if !strings.Contains(ready.Message, "acme-refresh") || !strings.Contains(ready.Message, "("+tc.apiReason+")") || !strings.Contains(ready.Message, status.Status().Message) {
				t.Errorf("Ready message %q, want the Secret, the API server's reason %s and its message %q", ready.Message, tc.apiReason, status.Status().Message)
			}
			if events := w.recorded(); len(events) != 1 || !strings.HasPrefix(events[0], "Warning "+cdv1.SecretWriteFailedReason) {
				t.Errorf("events %q, want one SecretWriteFailed warning", events)
			}
			if g.Status.LastFailure != nil {
				t.Errorf("failure memory %+v: nothing was sent, so nothing counts against the request budget", g.Status.LastFailure)
			}

			// Refused again: no news, no write.
			if _, err := w.reconcileGrant("acme"); err == nil {
				t.Error("the second refused pass ended without an error")
			}
			if writes := w.takeWrites(); len(writes) != 0 {
				t.Errorf("writes %q on a pass refused as the last one was, want none", writes)
			}
			if events := w.recorded(); len(events) != 0 {
				t.Errorf("events %q on a pass refused as the last one was, want none", events)
			}

			// The Secret trimmed (a change the watch brings at once): the rotation goes on.
			refuse = false
			if _, err := w.reconcileGrant("acme"); err != nil {
				t.Fatal(err)
			}
			if n := len(w.tokens.refreshes()); n != 2 {
				t.Errorf("%d refreshes, want 2 once the mark can be written", n)
			}
			wantCondition(t, w.grant("acme").Status.Conditions, cdv1.ReadyCondition, metav1.ConditionTrue, cdv1.TokenIssuedReason)
		})
	}
}
