package controllers

import (
	"errors"
	"fmt"
	"strings"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"

	cdv1 "github.com/credops/cd-credentials-operator/api/v1alpha1"
	"github.com/credops/cd-credentials-operator/internal/metabound"
	"github.com/credops/cd-credentials-operator/internal/rotation"
	"github.com/credops/cd-credentials-operator/internal/secrets"
)

// outcome is what one reconcile pass found or did, in the protocol's terms. Each kind has
// one report function, the only place that turns an outcome into conditions, events,
// failure memory and a requeue.
type outcome interface{ isOutcome() }

type (
	// clientUnusable: the client Secret is missing, not opted in, or unusable.
	clientUnusable struct{ err error }
	// credentialMissing: a grant's CDCredential is not in this manager's cache: it does
	// not exist, or (outsideShard) it exists without the shard label the manager serves.
	credentialMissing struct {
		name         string
		outsideShard bool
	}
	// wrongFlow: a grant names a ClientCredentials CDCredential.
	wrongFlow struct{ name string }
	// credentialNotReady: a grant's CDCredential is not Ready.
	credentialNotReady struct{ name string }
	// refreshTokenMissing: there is no refresh token to spend.
	refreshTokenMissing struct {
		secret, key string
		err         error
	}
	// refreshTokenSpent: the refresh-token Secret holds a token the operator already
	// spent and replaced (secrets.Spent): it was set back, and is not sent.
	refreshTokenSpent struct{ secret string }
	// refreshSecretUnusable: the refresh-token Secret is not opted in, or is bound to
	// another grant.
	refreshSecretUnusable struct{ err error }
	// outputBlocked: the output Secret could not be written whatever the token: its
	// name is taken, or the template is invalid. Nothing is requested.
	outputBlocked struct{ err error }
	// metadataTooLarge: the CR carries more than metabound.Max of labels, annotations,
	// owner references and finalizers; the cache keeps a stub of it, on which nothing is
	// done but storing what a rotation left held. kind names the CR's kind.
	metadataTooLarge struct{ kind string }
	// clientReady: an AuthorizationCode CDCredential's client is usable. leftover names
	// the output Secrets it still controls from a ClientCredentials flow it was
	// switched from.
	clientReady struct{ leftover []string }
	// fresh: the output Secret holds a token that is not due yet (see freshUntil).
	// leftover names the other outputs the CR still controls (noteLeftovers).
	// refreshLife is the stored refresh token's (a grant's; zero when unknown), whether
	// it came with the access token or with a login since, for the words about it.
	fresh struct {
		schedule    rotation.Schedule
		leftover    []string
		refreshLife rotation.Schedule
	}
	// holding: another process is spending the refresh token right now, or (here) a
	// pass of this one for another grant.
	holding struct {
		until time.Time
		here  bool
	}
	// throttled: the CR's namespace has used its part of the token requests
	// (tokenclient.Share); the request goes at its turn, until, and no worker waits for
	// it meanwhile. failure is the failure memory the pass acted on (nil: none).
	throttled struct {
		until   time.Time
		failure *rotation.Failure
	}
	// remembered: a failure remembered in status still holds, terminal or backing off.
	remembered struct{ failure rotation.Failure }
	// deferred: the request changed (an edit) sooner than the request budget allows
	// (rotation.Defer); it goes out at until. failure is the failure memory the pass
	// acted on, nil when there is none; afterFailure says the budget counts from it.
	// last is the token in the output Secret the budget counts from (rotation.Input.Last),
	// nil when there is none. leftover as for fresh.
	deferred struct {
		until        time.Time
		afterFailure bool
		failure      *rotation.Failure
		last         *rotation.Schedule
		leftover     []string
	}
	// abandoned: the stored refresh token was sent twice without an answer.
	abandoned struct{ request string }
	// answered: a token request was sent (or refused before sending) and yielded no
	// token to store; hint adds what the operator knows of the likely cause.
	answered struct {
		outcome rotation.Outcome
		request string
		hint    string
		// scopes are the scopes the request asked for (client credentials).
		scopes []string
		// next, when set, is the request the next pass makes: the answer spent the
		// refresh token sent and left its successor stored (an unusable answer that
		// carried one). The failure is remembered under it (retriedAs).
		next string
		// refreshLife is when the grant's live refresh token was issued and dies, zero
		// when unknown: no retry waits past it (rotation.Retry.RefreshExpires).
		refreshLife rotation.Schedule
	}
	// stored: a token is in the output Secret. leftover as for fresh.
	stored struct {
		token    *issued
		leftover []string
	}
	// writeFailed: the API server refused to store a token the operator holds.
	writeFailed struct {
		err     error
		request string
		// holding: a new refresh token that exists only in memory is waiting for
		// this write, so it is retried at the shortest interval until its deadline.
		holding bool
		// inherited: the token belongs to a grant that is gone (storeInherited). This
		// grant sent nothing, so it remembers no failure of its own: a failure memory
		// under another grant's request would hold its first request to the budget
		// after a failed one.
		inherited bool
		// refreshLife as for answered.
		refreshLife rotation.Schedule
	}
	// expiredUnstored: an issued access token expired before it could be written: it
	// lives shorter than the round trip (a slow identity server), or the API server
	// refused its writes until then. A new refresh token that came with it is stored.
	// request is what the next pass sends, for the failure memory (for a grant, the
	// request of that stored successor). answered is the request that was sent, when
	// it differs: the failure remembered under it is carried over to request
	// (retriedAs), so a chain of such expiries counts on and backs off further.
	expiredUnstored struct {
		lifetime time.Duration
		request  string
		answered string
		// refreshLife as for answered.
		refreshLife rotation.Schedule
	}
	// markRefused: the API server refused the in-flight mark on the refresh-token Secret
	// (secret) for a reason retrying at once does not fix (writeRefused). Nothing was sent.
	markRefused struct {
		secret string
		err    error
	}
)

func (clientUnusable) isOutcome()        {}
func (credentialMissing) isOutcome()     {}
func (wrongFlow) isOutcome()             {}
func (credentialNotReady) isOutcome()    {}
func (refreshTokenMissing) isOutcome()   {}
func (refreshTokenSpent) isOutcome()     {}
func (refreshSecretUnusable) isOutcome() {}
func (outputBlocked) isOutcome()         {}
func (metadataTooLarge) isOutcome()      {}
func (clientReady) isOutcome()           {}
func (fresh) isOutcome()                 {}
func (holding) isOutcome()               {}
func (throttled) isOutcome()             {}
func (remembered) isOutcome()            {}
func (deferred) isOutcome()              {}
func (abandoned) isOutcome()             {}
func (answered) isOutcome()              {}
func (stored) isOutcome()                {}
func (writeFailed) isOutcome()           {}
func (expiredUnstored) isOutcome()       {}
func (markRefused) isOutcome()           {}

// keepTokenSecret has status keep naming the Secret that holds the token (previous)
// until a pass puts a token in, or finds one in, the Secret the spec names now (name).
// A renamed output must stay a rename to the passes after one that stopped or waited,
// whatever stopped it: renaming the output over and over would otherwise get a token per
// rename (renamedToken).
//
// status.secretName is what pods are told to mount, so it never names a Secret this CR's
// token is not in: none before the first token, and none when the Secret it named is
// taken by another (a user's, or another CR's output holding another client's or a
// customer's token: the mix-up the operator exists to prevent).
func keepTokenSecret(name *string, previous string, out outcome) {
	switch o := out.(type) {
	case stored, fresh, clientReady:
		return
	case outputBlocked:
		if previous == *name && errors.Is(o.err, secrets.ErrNameConflict) {
			*name = ""
			return
		}
	}
	*name = previous
}

// refusal is how an answer that yielded no token is reported: the Ready reason, whether
// it is terminal (Stalled) or retried (Reconciling), and the message's lead.
type refusal struct {
	reason string
	lead   string
}

// refusals maps each verdict to its report. Grants and credentials share it; grantReasons
// overrides what differs for a refresh.
var refusals = map[rotation.Verdict]refusal{
	rotation.Rejected:       {cdv1.TokenRequestRefusedReason, "The identity server rejected the grant"},
	rotation.Lost:           {cdv1.TokenRequestFailedReason, "The identity server's answer was lost; the request is retried with backoff"},
	rotation.Transient:      {cdv1.TokenRequestFailedReason, "Token request failed, retrying with backoff"},
	rotation.RateLimited:    {cdv1.RateLimitedReason, "The identity server asked the operator to slow down; it waits as long as it was told"},
	rotation.Misuse:         {cdv1.GrantTypeNotAllowedReason, "The identity server refused this grant type for the client"},
	rotation.ScopeRefused:   {cdv1.ScopeNotAllowedReason, "The identity server refused a requested scope"},
	rotation.ClientRejected: {cdv1.InvalidClientReason, "The identity server rejected the client id or secret: fix the client Secret"},
	rotation.HostRefused:    {cdv1.TokenHostNotAllowedReason, "The token endpoint's host is not on the manager's --allowed-token-hosts list, or the URL is plain http to a host other than loopback; nothing was sent"},
	rotation.NotAllocated:   {cdv1.ProductNotAllocatedReason, "The identity server answered 402: the subscription behind this client lacks the product, or this is the wrong credential set"},
	rotation.Refused:        {cdv1.TokenRequestRefusedReason, "The identity server refused the request"},
	rotation.Unusable:       {cdv1.InvalidTokenResponseReason, "The identity server's answer cannot be used"},
	rotation.WrongEndpoint:  {cdv1.TokenRequestRefusedReason, "The token URL is wrong"},
}

// grantRefusals are the refresh-specific reports.
var grantRefusals = map[rotation.Verdict]refusal{
	rotation.Rejected:    {cdv1.RefreshTokenRejectedReason, "The identity server rejected the refresh token: it is spent, expired or revoked; the customer must log in again"},
	rotation.Interrupted: {cdv1.RotationInterruptedReason, "A previous rotation was interrupted after the refresh token was sent, and the identity server has since rejected the stored token: the customer must log in again"},
	rotation.Lost:        {cdv1.TokenRequestFailedReason, "The identity server's answer to the refresh was lost; the stored token is sent once more, and if it was spent the customer is asked to log in again"},
	rotation.Refused:     {cdv1.RefreshTokenRefusedReason, "The identity server refused the refresh token"},
}

// refusalOf is the report of an answered request.
func refusalOf(a answered, grant bool) (refusal, string) {
	ref, ok := grantRefusals[a.outcome.Verdict]
	if !grant || !ok {
		ref = refusals[a.outcome.Verdict]
	}
	msg := ref.lead
	if a.hint != "" {
		msg += ": " + a.hint
	}
	if e := a.outcome.Err; e != nil {
		msg += ": " + errorText(a.outcome)
		if a.outcome.Verdict == rotation.ScopeRefused {
			msg += " (requested: " + strings.Join(a.scopes, " ")
			if len(e.Scopes) > 0 {
				msg += "; the server named: " + strings.Join(e.Scopes, ", ")
			}
			msg += "). Check spec.scopes against what the client is allowed at the identity server"
		}
		if a.outcome.Verdict == rotation.WrongEndpoint {
			whose := "" // a grant asks at its CDCredential's URL
			if grant {
				whose = "the CDCredential's "
			}
			msg += ". Check " + whose + "spec.issuer (the operator appends /connect/token to it) or spec.tokenURL"
		}
	}
	return ref, msg
}

// errorText is the token client's words for o's error. A server error the identity
// server answered with is said without "the server may have processed the request":
// rotation.Judge takes an answered request for one that spent nothing, the mark goes
// back and the token is sent again, so the report must not suggest otherwise. An
// attempt with no answer (rotation.Lost) or an unusable 2xx keeps the words.
func errorText(o rotation.Outcome) string {
	e := o.Err
	if o.Verdict == rotation.Transient && e.StatusCode != 0 && e.Ambiguous {
		answered := *e
		answered.Ambiguous = false
		return answered.Error()
	}
	return e.Error()
}

// writeFailure describes an API server's refusal to store a token: its reason and
// message, never a value (the API server does not echo Secret data in errors).
//
// A held access token is written again until it expires; only then, and after the
// failure's backoff, is a new one requested. A new refresh token refused because its
// Secret was made immutable can only be stored into the Secret created again: the
// message says to delete it.
func writeFailure(err error) string {
	var immutable *immutableRefusal
	if errors.As(err, &immutable) {
		return immutable.message()
	}
	var status apierrors.APIStatus
	if errors.As(err, &status) {
		s := status.Status()
		return fmt.Sprintf("The API server refused to store the token (%s): %s. The operator holds the token and writes it again with backoff until it expires; no new token is requested before then", s.Reason, truncate(s.Message, 400))
	}
	return "The token could not be stored: " + truncate(err.Error(), 400) + ". The operator holds the token and writes it again with backoff until it expires"
}

// message says why the token is not in the output Secret. The lifetime is what the
// identity server announced, which stays the same from one attempt to the next, so the
// condition does too.
func (o expiredUnstored) message() string {
	return fmt.Sprintf("The identity server's token expired before it could be stored: its lifetime (%s) is shorter than the round trip (a slow identity server, or an API server that refused the write until then); a new token is requested with backoff", o.lifetime)
}

// writeRefused reports whether the API server refused a write for a reason of its own
// that retrying at once does not fix: the object as written is invalid (an admission
// policy's verdict, annotations over the 256 KiB limit), RBAC forbids it, or it is too
// large. A
// conflict or a Secret gone is settled by a fresh read, an outage by waiting: those are
// not refusals.
func writeRefused(err error) bool {
	return apierrors.IsInvalid(err) || apierrors.IsForbidden(err) || apierrors.IsRequestEntityTooLargeError(err)
}

// markRefusal describes the API server's refusal of the in-flight mark on the
// refresh-token Secret secret: its reason and message, never a value.
func markRefusal(secret string, err error) string {
	why := truncate(err.Error(), 400)
	var status apierrors.APIStatus
	if errors.As(err, &status) {
		s := status.Status()
		why = "(" + string(s.Reason) + "): " + truncate(s.Message, 400)
	}
	return "The API server refused the in-flight mark on refresh-token Secret " + secret + " " + why +
		". The mark must be written before the refresh token is sent, so nothing was sent and the access token is not renewed: " +
		"make the Secret writable again (the admission policy or RBAC that refuses the update). " +
		"The operator tries again with backoff, and at once when the Secret changes"
}

// blockedReason is the Ready reason of a precondition that stops the pass, and whether
// it is terminal: only when a change that ends it is an event for the CR (its spec, a
// Secret it references). A name taken by a Secret outside the cache (a user's), or a
// binding to a grant of another shard (or to one whose spec no longer names the Secret),
// may end without one: those wait and look again.
func blockedReason(err error) (reason string, terminal bool) {
	var notOptedIn *secrets.NotOptedInError
	var invalid *secrets.InvalidError
	var immutable *immutableRefreshSecret
	switch {
	case errors.As(err, &immutable):
		return cdv1.RefreshTokenSecretImmutableReason, true
	case errors.As(err, &notOptedIn):
		return cdv1.SecretNotOptedInReason, true
	case errors.As(err, &invalid):
		return cdv1.ClientSecretInvalidReason, true
	case errors.Is(err, secrets.ErrNameConflict):
		return cdv1.SecretNameConflictReason, false
	case errors.Is(err, errBoundElsewhere):
		return cdv1.RefreshTokenSecretInUseReason, false
	case errors.Is(err, errTemplateInvalid), errors.Is(err, errOutputNameInvalid):
		return cdv1.SecretTemplateInvalidReason, true
	case errors.Is(err, secrets.ErrOutputTooLarge):
		return cdv1.OutputSecretTooLargeReason, true
	}
	return cdv1.ClientSecretNotFoundReason, false
}

func truncate(s string, n int) string {
	if r := []rune(s); len(r) > n {
		return string(r[:n]) + "…"
	}
	return s
}

// The kind label of the two CRs in metrics and logs.
const (
	kindCredential = "CDCredential"
	kindGrant      = "CDUserGrant"
)

// freshUntil is the fresh outcome of the token on schedule s, renewed at until, its
// renewal as rotation counted it (rotation.Wait): sooner than the stored one when a
// clock running ahead stamped it. The expiry stays the stored one, which status mirrors
// and a later pass finds the token's issuance in status by (issuanceOf).
func freshUntil(s rotation.Schedule, until time.Time) fresh {
	s.RenewAt = until
	return fresh{schedule: s}
}

// message says why a CR over metabound.Max is left alone, and what ends it.
func (o metadataTooLarge) message() string {
	return fmt.Sprintf("This %s carries more than %d KiB of labels, annotations, owner references and finalizers: the operator keeps only a stub of it, and does nothing for it (no token requested, no finalizer added or removed) until they are made smaller", o.kind, metabound.Max>>10)
}
