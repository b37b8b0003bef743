package rotation

import (
	"errors"
	"time"

	"github.com/credops/cd-credentials-operator/internal/tokenclient"
)

// Verdict is what one answer of the token endpoint means for the CR that asked.
type Verdict int

const (
	// Issued: a usable token (for a refresh, with or without a new refresh token).
	Issued Verdict = iota
	// Rejected: the refresh token (or code) is refused for good, in any provider's words.
	Rejected
	// Interrupted: a resent token (an interrupted rotation) was rejected: it was spent
	// by the attempt whose answer was lost.
	Interrupted
	// Lost: the request went out and no answer came back; a refresh token may be spent.
	Lost
	// Transient: a server error, a network error or a timeout before anything was sent.
	Transient
	// RateLimited: the server asked to wait, or throttled without saying how long
	// (Outcome.Err.RetryAfter, RetryAfterGuessed).
	RateLimited
	// Misuse: the server refused this grant type for this client: the wrong credential
	// set (FlowMisuse).
	Misuse
	// ScopeRefused: a requested scope is not allowed for this client.
	ScopeRefused
	// ClientRejected: the client id or secret is wrong.
	ClientRejected
	// HostRefused: the token endpoint is not on the allow-list; nothing was sent.
	HostRefused
	// NotAllocated: HTTP 402, the subscription lacks the product.
	NotAllocated
	// WrongEndpoint: the token URL is no token endpoint (a 404 or 405): a wrong
	// spec.issuer or spec.tokenURL, or a route the server lacks.
	WrongEndpoint
	// Refused: a 4xx no known wording places; retried a bounded number of times.
	Refused
	// Unusable: a success answer that cannot be used. Outcome.NewRefreshToken holds a
	// refresh token it still carried, which replaces the spent one.
	Unusable
)

var verdictNames = [...]string{"Issued", "Rejected", "Interrupted", "Lost", "Transient", "RateLimited", "Misuse", "ScopeRefused", "ClientRejected", "HostRefused", "NotAllocated", "WrongEndpoint", "Refused", "Unusable"}

func (v Verdict) String() string { return verdictNames[v] }

// Outcome is one answer, judged.
type Outcome struct {
	Verdict Verdict
	// Token is the issued token (Issued only).
	Token *tokenclient.Token
	// NewRefreshToken is a refresh token an otherwise unusable answer carried.
	NewRefreshToken string
	// NewRefreshLifetime is that token's own lifetime (refresh_expires_in), 0 when the
	// answer gave none.
	NewRefreshLifetime time.Duration
	// Err is the token client's error (every verdict but Issued).
	Err *tokenclient.Error
}

// MaySpend reports whether the stored refresh token may have been spent by this
// attempt, so its in-flight mark must stay until a successor is stored. When false the
// server answered without spending it (or nothing was sent), and the mark goes back to
// what it was before the attempt.
func (o Outcome) MaySpend() bool {
	switch o.Verdict {
	case Issued, Lost, Rejected, Interrupted:
		return true
	case Unusable:
		return o.NewRefreshToken != "" || o.Err.Ambiguous
	}
	return false
}

// Judge turns the token client's answer into an Outcome. resumed says the refresh token
// was sent before without an answer (Send.Resume).
func Judge(tok *tokenclient.Token, err error, resumed bool) Outcome {
	if err == nil {
		return Outcome{Verdict: Issued, Token: tok}
	}
	var te *tokenclient.Error
	if !errors.As(err, &te) {
		te = &tokenclient.Error{Kind: tokenclient.KindTransient, Description: "token request failed"}
	}
	o := Outcome{Err: te}
	switch te.Kind {
	case tokenclient.KindInvalidGrant:
		o.Verdict = Rejected
		if resumed {
			o.Verdict = Interrupted
		}
	case tokenclient.KindInvalidResponse:
		o.Verdict = Unusable
		if te.Token != nil {
			o.NewRefreshToken, o.NewRefreshLifetime = te.Token.RefreshToken, te.Token.RefreshLifetime
		}
	case tokenclient.KindRateLimited:
		o.Verdict = RateLimited
	case tokenclient.KindGrantTypeNotAllowed:
		o.Verdict = Misuse
	case tokenclient.KindInvalidScope:
		o.Verdict = ScopeRefused
	case tokenclient.KindInvalidClient:
		o.Verdict = ClientRejected
	case tokenclient.KindHostNotAllowed:
		o.Verdict = HostRefused
	case tokenclient.KindProductNotAllocated:
		o.Verdict = NotAllocated
	case tokenclient.KindEndpointNotFound:
		o.Verdict = WrongEndpoint
	case tokenclient.KindRefused:
		o.Verdict = Refused
	default:
		o.Verdict = Transient
		// Only an attempt with no answer at all may have spent the token: a server that
		// answered, even with a 5xx, did not hand out a successor we could have lost.
		if te.Ambiguous && te.StatusCode == 0 {
			o.Verdict = Lost
		}
	}
	return o
}

// Retry says how the attempt that led to o is retried: a refused refresh token is
// terminal until the request changes; refusals of the client's registration (grant
// type, scope, client secret, product), a host off the allow-list and a URL that is no
// token endpoint are terminal but asked again seldom (Recheck), as the identity server
// (a route added), or a restart with another allow-list, may fix them with nothing in
// the CR to change, and the same answer would come back meanwhile; an unplaced 4xx is tried
// three times in all, so no answer makes the operator loop on one token; the rest back
// off.
func (o Outcome) Retry() Retry {
	switch o.Verdict {
	case Rejected, Interrupted:
		return Retry{Terminal: true}
	case Misuse, ScopeRefused, ClientRejected, NotAllocated, HostRefused, WrongEndpoint:
		return Retry{Recheck: true}
	case Refused:
		return Retry{MaxAttempts: 3}
	case Unusable:
		if o.NewRefreshToken == "" && !o.Err.Ambiguous {
			// A redirect (a gateway's login page, a moved endpoint): it is never
			// followed, and the same answer comes back each time, so it is tried as
			// often as a refusal nobody placed.
			return Retry{MaxAttempts: 3}
		}
	case RateLimited:
		if o.Err.RetryAfterGuessed {
			return Retry{Wait: o.Err.RetryAfter}
		}
		return Retry{After: o.Err.RetryAfter}
	}
	return Retry{}
}
