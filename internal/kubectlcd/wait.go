package kubectlcd

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/watch"

	cdv1 "github.com/credops/cd-credentials-operator/api/v1alpha1"
)

// Ready=False reasons that mean the authorization itself went wrong (not merely that it
// has not happened yet). Terminal errors also carry Stalled=True, which counts too.
var authorizationFailureReasons = map[string]bool{
	"AuthorizationDenied":        true, // the customer (or the identity server) refused
	"AuthorizationFailed":        true, // an OAuth error on the callback
	"RefreshTokenSecretConflict": true, // the refresh-token Secret is bound to another grant
	"RefreshTokenSecretInUse":    true,
	"SecretNotOptedIn":           true,
}

// grantState is what waiting reads of a CDUserGrant.
type grantState struct {
	ready, reauth, stalled *metav1.Condition
	// reauthorize is the cdv1.ReauthorizeAnnotation's value.
	reauthorize string
	url         string
	// lastAuth is status.lastAuthorization, the outcome of the latest login. It is the
	// one place a failed login always shows: during a reauthorization the grant stays
	// Ready, and a second identical denial rewrites the same conditions.
	lastAuth *cdv1.AuthorizationResult
	deleted  bool
}

func stateOf(u *unstructured.Unstructured) grantState {
	g := &cdv1.CDUserGrant{}
	// A status the plugin cannot read is treated as empty: the wait goes on.
	_ = runtime.DefaultUnstructuredConverter.FromUnstructured(u.Object, g)
	return grantState{
		ready:       meta.FindStatusCondition(g.Status.Conditions, cdv1.ReadyCondition),
		reauth:      meta.FindStatusCondition(g.Status.Conditions, cdv1.ReauthorizationRequiredCondition),
		stalled:     meta.FindStatusCondition(g.Status.Conditions, cdv1.StalledCondition),
		reauthorize: u.GetAnnotations()[cdv1.ReauthorizeAnnotation],
		url:         g.Status.AuthorizationURL,
		lastAuth:    g.Status.LastAuthorization,
	}
}

// newerLogin tells whether a is a login that happened after the one seen at the start:
// the initial state is read from the API server when the wait begins, so anything newer
// happened during the wait (compared on the operator's clock, not this machine's).
func newerLogin(a, initial *cdv1.AuthorizationResult) bool {
	switch {
	case a == nil:
		return false
	case initial == nil:
		return true
	}
	return a.Time.After(initial.Time.Time) ||
		(a.Time.Equal(&initial.Time) && (a.Reason != initial.Reason || a.Message != initial.Message))
}

func isTrue(c *metav1.Condition) bool  { return c != nil && c.Status == metav1.ConditionTrue }
func isFalse(c *metav1.Condition) bool { return c != nil && c.Status == metav1.ConditionFalse }

// sameCondition tells whether a condition is still the one seen at the start.
func sameCondition(a, b *metav1.Condition) bool {
	if a == nil || b == nil {
		return a == b
	}
	return a.Status == b.Status && a.Reason == b.Reason && a.Message == b.Message && a.LastTransitionTime.Equal(&b.LastTransitionTime)
}

// describe is a condition as "Reason: message".
func describe(c *metav1.Condition) string {
	if c == nil {
		return "no condition yet"
	}
	if c.Message == "" {
		return c.Reason
	}
	return c.Reason + ": " + oneLine(c.Message)
}

// waitMode says which command waits: they differ in what proves the customer logged in.
type waitMode int

const (
	// authorizeMode: a grant awaiting authorization; the login is done when
	// ReauthorizationRequired turns False.
	authorizeMode waitMode = iota
	// reauthorizeMode: a grant that may be Ready; the login is done when the operator
	// removes the reauthorize annotation.
	reauthorizeMode
)

// outcome is where a wait stands.
type outcome int

const (
	waiting outcome = iota
	succeeded
	failed
)

// verdict is the tracker's reading of one state of the grant.
type verdict struct {
	outcome outcome
	// why is what is awaited (waiting) or what went wrong (failed), or the Ready
	// condition (succeeded).
	why string
}

// tracker decides, from each state of a grant in turn, whether the authorization is
// done, failed or still awaited. It is pure: the watch feeds it.
type tracker struct {
	mode    waitMode
	initial grantState
	// loggedIn: the customer's login has completed (see waitMode).
	loggedIn bool
}

func newTracker(mode waitMode, initial grantState) *tracker {
	return &tracker{mode: mode, initial: initial}
}

func (t *tracker) observe(s grantState) verdict {
	if s.deleted {
		return verdict{failed, "the CDUserGrant was deleted"}
	}
	switch t.mode {
	case authorizeMode:
		t.loggedIn = t.loggedIn || (isTrue(t.initial.reauth) && isFalse(s.reauth))
	case reauthorizeMode:
		t.loggedIn = t.loggedIn || s.reauthorize == ""
	}
	if a := s.lastAuth; newerLogin(a, t.initial.lastAuth) && a.Reason != cdv1.CustomerAuthorizedReason && !t.loggedIn {
		// The customer tried and it did not work (declined, no refresh token): waiting on
		// would only run out the timeout. The message says whether the link still works.
		return verdict{failed, a.Reason + ": " + oneLine(a.Message)}
	}
	if isTrue(s.reauth) && s.reauth.Reason != cdv1.RefreshTokenMissingReason {
		if t.loggedIn {
			return verdict{failed, "the customer must log in again: " + describe(s.reauth)}
		}
	}
	if isTrue(s.stalled) && !sameCondition(s.stalled, t.initial.stalled) && !isTrue(s.reauth) {
		return verdict{failed, describe(s.stalled)}
	}
	if isFalse(s.ready) && authorizationFailureReasons[s.ready.Reason] && !sameCondition(s.ready, t.initial.ready) {
		return verdict{failed, describe(s.ready)}
	}
	if noLoginLink(s) {
		// The manager runs without its callback server: no link will ever be published,
		// and the message says what to do instead.
		if isTrue(s.reauth) && s.reauth.Reason == cdv1.ReauthorizationRequestedReason {
			return verdict{failed, describe(s.reauth)}
		}
		return verdict{failed, describe(s.ready)}
	}
	if isTrue(s.ready) && !isTrue(s.reauth) && s.reauthorize == "" && (t.mode == authorizeMode || t.loggedIn) {
		return verdict{succeeded, describe(s.ready)}
	}
	return verdict{waiting, t.awaited(s)}
}

// noLoginLink tells whether the grant awaits a login that its manager offers no link
// for (cdv1.NoLoginLinkMessage): a first login (Ready) or a requested one
// (ReauthorizationRequired).
func noLoginLink(s grantState) bool {
	if s.url != "" {
		return false
	}
	awaiting := isFalse(s.ready) && s.ready.Reason == cdv1.AwaitingAuthorizationReason && strings.Contains(s.ready.Message, cdv1.NoLoginLinkMessage)
	requested := isTrue(s.reauth) && s.reauth.Reason == cdv1.ReauthorizationRequestedReason && strings.Contains(s.reauth.Message, cdv1.NoLoginLinkMessage)
	return awaiting || requested
}

// awaited says what the wait is for, for the progress line.
func (t *tracker) awaited(s grantState) string {
	switch {
	case t.loggedIn:
		return "the customer logged in; waiting for the operator to store a fresh token (Ready: " + readyWord(s) + ")"
	case s.url == "":
		return "waiting for the operator to publish an authorization link (Ready: " + readyWord(s) + ")"
	}
	return "waiting for the customer to log in (Ready: " + readyWord(s) + ")"
}

func readyWord(s grantState) string {
	if s.ready == nil {
		return "Unknown"
	}
	return string(s.ready.Status) + " " + s.ready.Reason
}

// watchGrant calls handle with the grant's current state and then with every change,
// until handle says stop, an error arrives on interrupts, or ctx ends. A dropped or
// expired watch is re-established from a fresh read.
func watchGrant(ctx context.Context, k *kube, name string, interrupts <-chan error, handle func(grantState) (bool, error)) error {
	ri := k.grants(k.namespace)
	for {
		u, err := ri.Get(ctx, name, metav1.GetOptions{})
		state := grantState{deleted: true}
		if err == nil {
			state = stateOf(u)
		} else if !apierrors.IsNotFound(err) {
			return explainAPIError(err, "reading CDUserGrant "+name)
		}
		if stop, err := handle(state); stop || err != nil || u == nil {
			return err
		}
		w, err := ri.Watch(ctx, metav1.ListOptions{
			FieldSelector:   fields.OneTermEqualSelector("metadata.name", name).String(),
			ResourceVersion: u.GetResourceVersion(),
		})
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			return explainAPIError(err, "watching CDUserGrant "+name)
		}
		stop, err := drain(ctx, w, interrupts, handle)
		w.Stop()
		if stop || err != nil {
			return err
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
	}
}

// drain feeds one watch's events to handle; it returns (false, nil) when the watch
// closes or expires, to be re-established.
func drain(ctx context.Context, w watch.Interface, interrupts <-chan error, handle func(grantState) (bool, error)) (bool, error) {
	for {
		select {
		case <-ctx.Done():
			return false, ctx.Err()
		case err := <-interrupts:
			if err != nil {
				return true, err
			}
		case ev, ok := <-w.ResultChan():
			if !ok {
				return false, nil
			}
			var state grantState
			switch ev.Type {
			case watch.Added, watch.Modified:
				u, ok := ev.Object.(*unstructured.Unstructured)
				if !ok {
					continue
				}
				state = stateOf(u)
			case watch.Deleted:
				state = grantState{deleted: true}
			case watch.Error:
				if err := apierrors.FromObject(ev.Object); isExpired(err) {
					return false, nil
				} else {
					return true, fmt.Errorf("watching the CDUserGrant: %w", err)
				}
			default:
				continue
			}
			if stop, err := handle(state); stop || err != nil {
				return true, err
			}
		}
	}
}

// isExpired: the watch's resourceVersion is too old; a fresh read starts a new one.
func isExpired(err error) bool {
	var status apierrors.APIStatus
	return apierrors.IsGone(err) || apierrors.IsResourceExpired(err) ||
		(errors.As(err, &status) && status.Status().Code == http.StatusGone)
}
