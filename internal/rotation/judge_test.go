package rotation

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/credops/cd-credentials-operator/internal/tokenclient"
)

func TestJudge(t *testing.T) {
	tok := &tokenclient.Token{AccessToken: "at", TokenType: "Bearer"}
	kind := func(k tokenclient.ErrorKind) *tokenclient.Error { return &tokenclient.Error{Kind: k, StatusCode: 400} }
	cases := map[string]struct {
		tok      *tokenclient.Token
		err      error
		resumed  bool
		want     Verdict
		maySpend bool
		retry    Retry
	}{
		"a token is issued": {
			tok: tok, want: Issued, maySpend: true,
		},
		"invalid_grant rejects the refresh token for good": {
			err: kind(tokenclient.KindInvalidGrant), want: Rejected, maySpend: true, retry: Retry{Terminal: true},
		},
		"invalid_grant after a resend means the lost attempt spent it": {
			err: kind(tokenclient.KindInvalidGrant), resumed: true, want: Interrupted, maySpend: true, retry: Retry{Terminal: true},
		},
		"no answer after the request was written may have spent the token": {
			err: &tokenclient.Error{Kind: tokenclient.KindTransient, Ambiguous: true}, want: Lost, maySpend: true,
		},
		"a connection refused before anything was written spent nothing": {
			err: &tokenclient.Error{Kind: tokenclient.KindTransient}, want: Transient,
		},
		"a server error answered, so it handed out no successor we could lose": {
			err: &tokenclient.Error{Kind: tokenclient.KindTransient, StatusCode: 502, Ambiguous: true}, want: Transient,
		},
		"a rate limit waits as long as asked": {
			err: &tokenclient.Error{Kind: tokenclient.KindRateLimited, StatusCode: 429, RetryAfter: 42 * time.Second}, want: RateLimited, retry: Retry{After: 42 * time.Second},
		},
		// Refusals of the client's registration can be fixed at the identity server
		// alone (a grant type enabled, a scope granted, a new client secret activated),
		// with nothing in the cluster to change: they are asked again, seldom.
		"a grant type not allowed is flow misuse, rechecked": {
			err: kind(tokenclient.KindGrantTypeNotAllowed), want: Misuse, retry: Retry{Recheck: true},
		},
		"a refused scope is rechecked": {
			err: kind(tokenclient.KindInvalidScope), want: ScopeRefused, retry: Retry{Recheck: true},
		},
		"a wrong client secret is rechecked": {
			err: kind(tokenclient.KindInvalidClient), want: ClientRejected, retry: Retry{Recheck: true},
		},
		"a host off the allow-list is rechecked (nothing is sent while it is off)": {
			err: &tokenclient.Error{Kind: tokenclient.KindHostNotAllowed}, want: HostRefused, retry: Retry{Recheck: true},
		},
		"a 402 is rechecked": {
			err: kind(tokenclient.KindProductNotAllocated), want: NotAllocated, retry: Retry{Recheck: true},
		},
		// A wrong spec.issuer or spec.tokenURL answers the same each time: asking three
		// times tells the user nothing the first answer did not.
		"a URL that is no token endpoint is rechecked, and spent nothing": {
			err: &tokenclient.Error{Kind: tokenclient.KindEndpointNotFound, StatusCode: 404}, want: WrongEndpoint, retry: Retry{Recheck: true},
		},
		"an unplaced 4xx is tried three times in all": {
			err: kind(tokenclient.KindRefused), want: Refused, retry: Retry{MaxAttempts: 3},
		},
		"an unusable answer carrying a new refresh token spent the old one": {
			err: &tokenclient.Error{Kind: tokenclient.KindInvalidResponse, StatusCode: 200, Token: &tokenclient.Token{RefreshToken: "rt-2"}}, want: Unusable, maySpend: true,
		},
		"an unreadable success may have spent the token": {
			err: &tokenclient.Error{Kind: tokenclient.KindInvalidResponse, StatusCode: 200, Ambiguous: true}, want: Unusable, maySpend: true,
		},
		"a redirect spent nothing, and is tried three times in all, as it comes back each time": {
			err: &tokenclient.Error{Kind: tokenclient.KindInvalidResponse, StatusCode: 302}, want: Unusable, retry: Retry{MaxAttempts: 3},
		},
		"an error from elsewhere is transient": {
			err: errors.New("boom"), want: Transient,
		},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			o := Judge(tc.tok, tc.err, tc.resumed)
			if o.Verdict != tc.want {
				t.Errorf("verdict %s, want %s", o.Verdict, tc.want)
			}
			if o.MaySpend() != tc.maySpend {
				t.Errorf("MaySpend %v, want %v", o.MaySpend(), tc.maySpend)
			}
			if o.Verdict != Issued {
				if diff := cmp.Diff(tc.retry, o.Retry()); diff != "" {
					t.Errorf("Retry (-want +got):\n%s", diff)
				}
			}
		})
	}
}

func TestFailureMemory(t *testing.T) {
	cases := map[string]struct {
		prev          *Failure
		request       string
		retry         Retry
		wantAttempts  int
		wantTerminal  bool
		minWait, most time.Duration
		recheck       time.Duration
	}{
		"a first failure backs off 5 to 6 seconds": {
			request: "r", wantAttempts: 1, minWait: 5 * time.Second, most: 6 * time.Second,
		},
		"a fourth failure at the same request backs off 40 to 48 seconds": {
			prev: &Failure{Request: "r", Attempts: 3}, request: "r", wantAttempts: 4, minWait: 40 * time.Second, most: 48 * time.Second,
		},
		"the backoff never exceeds 12 minutes": {
			prev: &Failure{Request: "r", Attempts: 40}, request: "r", wantAttempts: 41, minWait: 8 * time.Minute, most: 10 * time.Minute,
		},
		"a failure of a request changed only in a secret value (a new login) counts from one again": {
			prev: &Failure{Request: Request([]string{"spec"}, []string{"old"}), Attempts: 7}, request: Request([]string{"spec"}, []string{"new"}), wantAttempts: 1, minWait: 5 * time.Second, most: 6 * time.Second,
		},
		// DESIGN §5, §8: an edit must not earn a fresh round of retries per flip.
		"a failure of an edited request counts on": {
			prev: &Failure{Request: Request([]string{"spec-1"}, []string{"s"}), Attempts: 3}, request: Request([]string{"spec-2"}, []string{"s"}), wantAttempts: 4, minWait: 40 * time.Second, most: 48 * time.Second,
		},
		"a bounded failure of an edited request after the last attempt is terminal at once": {
			prev: &Failure{Request: Request([]string{"spec-1"}, []string{"s"}), Attempts: 3}, request: Request([]string{"spec-2"}, []string{"s"}), retry: Retry{MaxAttempts: 3}, wantAttempts: 4, wantTerminal: true,
		},
		"a server's Retry-After longer than the backoff wins": {
			request: "r", retry: Retry{After: time.Minute}, wantAttempts: 1, minWait: time.Minute, most: time.Minute,
		},
		"a third failure renewing a 30 second token waits a third of its lifetime, not 20 seconds": {
			prev: &Failure{Request: "r", Attempts: 2}, request: "r", retry: Retry{Lifetime: 30 * time.Second}, wantAttempts: 3, minWait: 8 * time.Second, most: 10 * time.Second,
		},
		"the lifetime bound never shortens the first backoff below 5 seconds": {
			request: "r", retry: Retry{Lifetime: 3 * time.Second}, wantAttempts: 1, minWait: 5 * time.Second, most: 6 * time.Second,
		},
		"an hour's token keeps the 10 minute ceiling": {
			prev: &Failure{Request: "r", Attempts: 40}, request: "r", retry: Retry{Lifetime: time.Hour}, wantAttempts: 41, minWait: 8 * time.Minute, most: 10 * time.Minute,
		},
		"a server's Retry-After beats the lifetime bound": {
			prev: &Failure{Request: "r", Attempts: 2}, request: "r", retry: Retry{Lifetime: 30 * time.Second, After: time.Minute}, wantAttempts: 3, minWait: time.Minute, most: time.Minute,
		},
		"a refresh token held in memory is written again within 6 seconds however often it failed": {
			prev: &Failure{Request: "r", Attempts: 6}, request: "r", retry: Retry{Holding: true, Lifetime: time.Hour}, wantAttempts: 7, minWait: 5 * time.Second, most: 6 * time.Second,
		},
		// Rechecks are held to the request budget as edits are: a third of the lifetime
		// after the failure, so at most 3 requests per lifetime (DESIGN §8).
		"a refusal the identity server may fix is terminal, rechecked a third of a 30-minute lifetime later": {
			prev: &Failure{Request: "r", Attempts: 9}, request: "r", retry: Retry{Recheck: true, Lifetime: 30 * time.Minute}, wantAttempts: 10, wantTerminal: true, recheck: 10 * time.Minute,
		},
		"a recheck without a known lifetime comes 10 minutes later": {
			request: "r", retry: Retry{Recheck: true}, wantAttempts: 1, wantTerminal: true, recheck: 10 * time.Minute,
		},
		"a recheck of a day-long token's refusal comes a third of a day later": {
			request: "r", retry: Retry{Recheck: true, Lifetime: 24 * time.Hour}, wantAttempts: 1, wantTerminal: true, recheck: 8 * time.Hour,
		},
		"a server's Retry-After beats the recheck interval": {
			request: "r", retry: Retry{Recheck: true, After: 2 * time.Hour, Lifetime: 30 * time.Minute}, wantAttempts: 1, wantTerminal: true, recheck: 2 * time.Hour,
		},
		// DESIGN §9: every token renewed before it expires. No backoff runs past the last
		// safe point before the token pods hold expires...
		"a backoff never runs past the last safe point before the token expires": {
			prev: &Failure{Request: "r", Attempts: 8}, request: "r", retry: Retry{Lifetime: time.Hour, Expires: t0.Add(5 * time.Minute)}, wantAttempts: 9, minWait: 3 * time.Minute, most: 3 * time.Minute,
		},
		// ...nor ten minutes past it, once pods hold (almost) nothing.
		"past the safe point, retries are at most a minute apart": {
			prev: &Failure{Request: "r", Attempts: 8}, request: "r", retry: Retry{Lifetime: time.Hour, Expires: t0.Add(time.Minute)}, wantAttempts: 9, minWait: 5 * time.Second, most: ExpiringRetry,
		},
		// DESIGN §6: a lost answer leaves one resend; it goes when a passing outage that
		// swallowed the first is likely over, not seconds later inside it.
		"a lost answer's one resend waits for the last safe point": {
			request: "r", retry: Retry{Lifetime: time.Hour, Expires: t0.Add(20 * time.Minute), ResendLate: true}, wantAttempts: 1, minWait: 18 * time.Minute, most: 18 * time.Minute,
		},
		"a server's Retry-After still wins over the expiry": {
			request: "r", retry: Retry{After: 5 * time.Minute, Expires: t0.Add(3 * time.Minute)}, wantAttempts: 1, minWait: 5 * time.Minute, most: 5 * time.Minute,
		},
		"a terminal failure has no retry time": {
			request: "r", retry: Retry{Terminal: true}, wantAttempts: 1, wantTerminal: true,
		},
		"a bounded failure turns terminal at its last attempt": {
			prev: &Failure{Request: "r", Attempts: 2}, request: "r", retry: Retry{MaxAttempts: 3}, wantAttempts: 3, wantTerminal: true,
		},
		"a bounded failure before its last attempt backs off": {
			prev: &Failure{Request: "r", Attempts: 1}, request: "r", retry: Retry{MaxAttempts: 3}, wantAttempts: 2, minWait: 10 * time.Second, most: 12 * time.Second,
		},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			f := Fail(tc.prev, tc.request, "Reason", t0, tc.retry, "uid")
			if f.Attempts != tc.wantAttempts || f.Terminal() != tc.wantTerminal {
				t.Fatalf("attempts %d terminal %v, want %d %v", f.Attempts, f.Terminal(), tc.wantAttempts, tc.wantTerminal)
			}
			if !tc.wantTerminal {
				if wait := f.Retry.Sub(t0); wait < tc.minWait || wait > tc.most {
					t.Errorf("retry after %s, want within [%s, %s]", wait, tc.minWait, tc.most)
				}
			}
			if got := f.Recheck.Sub(t0); (tc.recheck == 0 && !f.Recheck.IsZero()) || (tc.recheck != 0 && got != tc.recheck) {
				t.Errorf("recheck at %v, want %s after the failure", f.Recheck, tc.recheck)
			}
		})
	}
}

// A token endpoint that answers with a redirect (a gateway sending the request to its
// login page, a moved endpoint) answers the same way every time: the token client never
// follows it, and the answer spends nothing, so the in-flight mark does not bound the
// resends. The failure memory does: three sends of one refresh token, then none
// (DESIGN §5, never an unbounded loop on one token).
func TestARedirectFromTheTokenEndpointIsSentThreeTimesInAll(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, "https://login.example.com/sso?return=/token", http.StatusFound)
	}))
	defer srv.Close()
	c := tokenclient.New(tokenclient.Options{AllowedHosts: []string{srv.Listener.Addr().String()}})
	ep := tokenclient.Endpoint{TokenURL: srv.URL + "/token", AuthMethod: tokenclient.ClientSecretPost, ClientID: "c", ClientSecret: "s"}
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	var prev *Failure
	for sent := 1; sent <= 10; sent++ {
		tok, err := c.Refresh(context.Background(), ep, "rt-1")
		o := Judge(tok, err, false)
		if o.MaySpend() {
			t.Fatalf("send %d: verdict %v may have spent the token", sent, o.Verdict)
		}
		f := Fail(prev, "req", "InvalidTokenResponse", now, o.Retry(), "seed")
		if f.Terminal() {
			if sent != 3 {
				t.Errorf("terminal after %d sends, want 3", sent)
			}
			return
		}
		prev, now = &f, f.Retry
	}
	t.Errorf("the refresh token was sent 10 times to a token endpoint that redirects, and would be again at %s", prev.Retry)
}
