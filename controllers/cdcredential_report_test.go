package controllers

import (
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	cdv1 "github.com/credops/cd-credentials-operator/api/v1alpha1"
	"github.com/credops/cd-credentials-operator/internal/rotation"
)

// An edit deferred after a failure says when it goes in terms of status fields, as
// rotation's tooSoonAfterFailure holds it: a third of the lifetime after the failure at
// the latest, or the end of a backoff that ends later (a retried failure only). It leaves
// status.renewalTime to the token's schedule, which the expiry alert reads.
func TestADeferredEditAfterAFailureNamesTheFieldsThatHoldItsTime(t *testing.T) {
	failed := epoch.Add(time.Minute)
	cases := map[string]struct {
		failure rotation.Failure
		want    string
	}{
		"terminal": {
			rotation.Failure{Reason: cdv1.RefreshTokenRefusedReason, Time: failed, Attempts: 3},
			"The last request failed (RefreshTokenRefused); the spec changed since, and the request for it is sent no later than 10m0s after status.lastFailure.lastFailureTime (at most 3 requests per token lifetime)",
		},
		"retried": {
			rotation.Failure{Reason: cdv1.RefreshTokenRefusedReason, Time: failed, Attempts: 1, Retry: failed.Add(20 * time.Minute)},
			"The last request failed (RefreshTokenRefused); the spec changed since, and the request for it is sent no later than 10m0s after status.lastFailure.lastFailureTime, or at status.lastFailure.retryTime if that is later (at most 3 requests per token lifetime)",
		},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			var list []metav1.Condition
			c := newConditions(&list, 1, failed.Add(time.Minute))
			renewal := &metav1.Time{Time: epoch.Add(20 * time.Minute)}
			was := renewal
			reportDeferred(c, deferred{until: failed.Add(10 * time.Minute), afterFailure: true, failure: &tc.failure}, "acme-token", &renewal, 30*time.Minute)
			if got := condition(t, list, cdv1.ReconcilingCondition); got.Status != metav1.ConditionTrue || got.Message != tc.want {
				t.Errorf("Reconciling %s %q, want True %q", got.Status, got.Message, tc.want)
			}
			if renewal != was {
				t.Errorf("renewalTime %v, want %v: the token's schedule", renewal, was)
			}
		})
	}
}
