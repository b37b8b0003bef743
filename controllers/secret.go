package controllers

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/validation"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"

	cdv1 "github.com/credops/cd-credentials-operator/api/v1alpha1"
	"github.com/credops/cd-credentials-operator/internal/secrets"
)

var (
	// errTemplateInvalid wraps a secretTemplate that would make an invalid Secret.
	errTemplateInvalid = errors.New("spec.secretTemplate is invalid")
	// errOutputNameInvalid wraps an output Secret name the API server would refuse: the
	// default <name>-token of a CR whose name is over 247 characters. Admission refuses
	// such a CR since the rule came in; this stops one created before it.
	errOutputNameInvalid = errors.New("the output Secret name is invalid")
	// errBoundElsewhere wraps a refresh-token Secret bound to another live grant.
	errBoundElsewhere = errors.New("the refresh-token Secret is bound to another CDUserGrant")
)

// boundElsewhereError is errBoundElsewhere naming the grant the Secret is bound to.
type boundElsewhereError struct{ grant types.NamespacedName }

func (e boundElsewhereError) Error() string {
	return errBoundElsewhere.Error() + " (" + e.grant.String() + ")"
}

func (boundElsewhereError) Unwrap() error { return errBoundElsewhere }

// wrapTemplate marks a template validation error as errTemplateInvalid.
func wrapTemplate(err error) error { return fmt.Errorf("%w: %w", errTemplateInvalid, err) }

// checkOutputName refuses, before any token is requested, an output Secret name the API
// server would refuse: the token would be spent and could never be stored.
func checkOutputName(name string) error {
	errs := validation.IsDNS1123Subdomain(name)
	if len(errs) == 0 {
		return nil
	}
	return fmt.Errorf("%w: %q (%d characters) %s. Set spec.secretName to a valid Secret name", errOutputNameInvalid, name, len(name), strings.Join(errs, "; "))
}

// clientProblem turns a failed client read into the outcome that reports it; a failed
// API call is returned as an error instead.
func clientProblem(err error) (outcome, error) {
	var notOptedIn *secrets.NotOptedInError
	var invalid *secrets.InvalidError
	if apierrors.IsNotFound(err) || errors.As(err, &notOptedIn) || errors.As(err, &invalid) {
		return clientUnusable{err: err}, nil
	}
	return nil, err
}

// outputProblem turns a blocked output Secret into the outcome that reports it.
func outputProblem(err error) (outcome, error) {
	if errors.Is(err, secrets.ErrNameConflict) || errors.Is(err, secrets.ErrOutputTooLarge) || errors.Is(err, errTemplateInvalid) || errors.Is(err, errOutputNameInvalid) {
		return outputBlocked{err: err}, nil
	}
	return nil, err
}

// existingOutput returns a CR's output Secret (nil when there is none) after checking
// that the CR may write it. The cache holds every output the operator wrote; a miss is
// confirmed around it, since a user's Secret of that name is not in the cache. An
// immutable Secret the CR does not control (an orphaned output) can take no token and is
// not the CR's to replace (replaceImmutableOutput): a name conflict.
func existingOutput(ctx context.Context, r secrets.Readers, key types.NamespacedName, owner client.Object) (*corev1.Secret, error) {
	s := &corev1.Secret{}
	err := r.Cache.Get(ctx, key, s)
	if apierrors.IsNotFound(err) {
		m := &metav1.PartialObjectMetadata{}
		m.SetGroupVersionKind(corev1.SchemeGroupVersion.WithKind("Secret"))
		if err := r.API.Get(ctx, key, m); err != nil {
			return nil, client.IgnoreNotFound(err)
		}
		// It exists but is not in the cache: not written by this operator as an output
		// (or not yet seen); judge it by its metadata, never read its data.
		s = &corev1.Secret{ObjectMeta: m.ObjectMeta}
	} else if err != nil {
		return nil, err
	}
	if err := secrets.CheckOwner(s, owner); err != nil {
		return nil, err
	}
	if err := secrets.CheckOutputSize(s); err != nil {
		return nil, err
	}
	if isImmutable(s) && !metav1.IsControlledBy(s, owner) {
		return nil, immutableOutputConflict(s.Name)
	}
	return s, nil
}

// applyOutput writes an output Secret with server-side apply, leaving what others added.
// It sends the apply configuration as an apply patch whose answer is read for its
// metadata only (metadataTarget): client.Apply decodes the whole Secret the API server
// sends back, as JSON (its json.Unmarshal alone was 1.7 % of the manager's CPU at 10,000
// grants), and nothing reads it.
func applyOutput(ctx context.Context, c client.Client, owner client.Object, gvk schema.GroupVersionKind, name string, tmpl *cdv1.SecretTemplate, t *issued) error {
	out := secrets.Output{
		Owner: owner, OwnerGVK: gvk, Name: name, Template: tmpl,
		AccessToken: t.token, TokenType: t.tokenType, Scopes: t.scopes, Schedule: t.schedule, Fingerprint: t.fingerprint,
	}
	body, err := json.Marshal(out.Apply())
	if err != nil {
		return err
	}
	target := metadataTarget(corev1.SchemeGroupVersion.WithKind("Secret"), types.NamespacedName{Namespace: owner.GetNamespace(), Name: name})
	return c.Patch(context.WithoutCancel(ctx), target, client.RawPatch(types.ApplyPatchType, body), client.FieldOwner(secrets.FieldOwner), client.ForceOwnership)
}

// syncTemplate brings an edit of spec.secretTemplate (tmpl) onto the CR's output Secret
// (current, as the cache has it) at once, instead of at the next token, which may be
// hours away; an edit of the template is no reason to ask for one (it is not part of the
// request). It is one merge patch of the Secret's metadata, under its own field manager,
// sent only when the Secret's record of its template differs from the spec's: no write
// when nothing changed, and no read, since the cache holds the Secret's metadata. The
// data (the token, which the cache does not hold) is not touched. A Secret this CR does
// not control gets its template with the token it takes.
//
// It returns only an outage, which retrying fixes. A refusal of the write (an admission
// policy, a quota) is logged and the pass goes on: the template is valid (checked before
// this), the token write carries the same template and reports such a refusal, and a
// label must not keep a token from being renewed.
func syncTemplate(ctx context.Context, c client.Client, owner client.Object, current *corev1.Secret, tmpl *cdv1.SecretTemplate) error {
	if current == nil || !metav1.IsControlledBy(current, owner) {
		return nil
	}
	patch := secrets.TemplatePatch(current, tmpl)
	if patch == nil {
		return nil
	}
	target := metadataTarget(corev1.SchemeGroupVersion.WithKind("Secret"), client.ObjectKeyFromObject(current))
	err := client.IgnoreNotFound(c.Patch(ctx, target, client.RawPatch(types.MergePatchType, patch), client.FieldOwner(secrets.TemplateFieldOwner)))
	if err == nil || isTransientAPIError(err) {
		return err
	}
	ctrl.LoggerFrom(ctx).Info("Output Secret's template not updated", "secret", current.Name, "error", err.Error())
	return nil
}

// isTransientAPIError reports whether an API error is an outage that passes by itself
// (the server unreachable, overloaded, timing out), as opposed to a refusal of this very
// write (forbidden, invalid, too large, a quota) that retrying at once cannot fix.
func isTransientAPIError(err error) bool {
	if unavailable(err) || apierrors.IsUnexpectedServerError(err) {
		return true
	}
	var status apierrors.APIStatus
	return !errors.As(err, &status) // not an API answer at all: the connection failed
}
