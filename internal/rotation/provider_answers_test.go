package rotation

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/credops/cd-credentials-operator/internal/tokenclient"
)

// entraAnswer is Microsoft Entra ID's error body (MicrosoftDocs/entra-docs
// reference-error-codes.md: error, error_description with the AADSTS code and trace
// lines, error_codes, error_uri).
func entraAnswer(status int, code string, aadsts int, message string) http.HandlerFunc {
	body, _ := json.Marshal(map[string]any{
		"error": code,
		"error_description": fmt.Sprintf("AADSTS%d: %s\r\nTrace ID: 0000aaaa-11bb-cccc-dd33-eeeeee333333\r\n"+
			"Correlation ID: aaaa0000-bb11-2222-33cc-444444dddddd\r\nTimestamp: 2026-11-23 10:00:00Z", aadsts, message),
		"error_codes": []int{aadsts},
		"error_uri":   fmt.Sprintf("https://login.microsoftonline.com/error?code=%d", aadsts),
	})
	return func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json; charset=utf-8")
		w.WriteHeader(status)
		_, _ = w.Write(body)
	}
}

// asked is what asking a server the same thing over and over, as the controllers do
// (Judge, Retry, Fail), came to.
type asked struct {
	// terminal is after how many requests the failure turned terminal with no recheck;
	// 0 when it never did in ten.
	terminal int
	// verdict is the last answer's.
	verdict Verdict
	// firstWait is how long the first failure waited before the next request.
	firstWait time.Duration
}

// askUntilTerminal sends a refresh (a CDUserGrant's request) or a client-credentials
// request (a CDCredential's) to h up to ten times, each when the last failure allows.
// expiresIn, when positive, is how long the token pods hold has left at the start.
func askUntilTerminal(t *testing.T, h http.HandlerFunc, refresh bool, expiresIn time.Duration) asked {
	t.Helper()
	srv := httptest.NewServer(h)
	defer srv.Close()
	c := tokenclient.New(tokenclient.Options{AllowedHosts: []string{srv.Listener.Addr().String()}})
	ep := tokenclient.Endpoint{TokenURL: srv.URL + "/oauth2/v2.0/token", AuthMethod: tokenclient.ClientSecretPost, ClientID: "c", ClientSecret: "s", Scopes: []string{"api://x/.default"}}
	start := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	var expires time.Time
	if expiresIn > 0 {
		expires = start.Add(expiresIn)
	}
	now := start
	var prev *Failure
	var out asked
	for sent := 1; sent <= 10; sent++ {
		var tok *tokenclient.Token
		var err error
		if refresh {
			tok, err = c.Refresh(context.Background(), ep, "rt-1")
		} else {
			tok, err = c.ClientCredentials(context.Background(), ep)
		}
		o := Judge(tok, err, false)
		out.verdict = o.Verdict
		retry := o.Retry()
		retry.Expires = expires
		f := Fail(prev, "req", "X", now, retry, "seed")
		if f.Terminal() && f.Recheck.IsZero() {
			out.terminal = sent
			return out
		}
		next := f.Retry
		if next.IsZero() {
			next = f.Recheck
		}
		if sent == 1 {
			out.firstWait = next.Sub(now)
		}
		prev, now = &f, next
	}
	return out
}

var flows = map[string]bool{"refresh (CDUserGrant)": true, "client credentials (CDCredential)": false}

// Entra answers a client that repeats the same request too often (more than 15 in five
// minutes) with invalid_grant AADSTS50196 (MicrosoftDocs reference-breaking-changes.md,
// "Looping clients will be interrupted"); MSAL.NET names the code AadThrottledErrorCode.
// The refresh token and the client are fine: it is throttling, waited out past Entra's
// five-minute window, and never a dead grant.
func TestEntraLoopDetectionIsWaitedOutNotTakenForADeadGrant(t *testing.T) {
	h := entraAnswer(http.StatusBadRequest, "invalid_grant", 50196,
		"The server terminated an operation because it encountered a client request loop. Please contact your app vendor.")
	for name, refresh := range flows {
		t.Run(name, func(t *testing.T) {
			got := askUntilTerminal(t, h, refresh, 0)
			if got.terminal != 0 || got.verdict != RateLimited {
				t.Fatalf("AADSTS50196 made the CR terminal after %d request(s) (verdict %v), want RateLimited and asked again", got.terminal, got.verdict)
			}
			if got.firstWait < 5*time.Minute {
				t.Errorf("the first retry came %s later, inside Entra's five-minute window", got.firstWait)
			}
		})
		t.Run(name+", token expiring", func(t *testing.T) {
			// The wait is this package's guess, not the server's Retry-After: a token
			// about to expire is asked for by the last safe point all the same.
			got := askUntilTerminal(t, h, refresh, MinRenewMargin+2*time.Minute)
			if got.terminal != 0 || got.firstWait > 2*time.Minute {
				t.Errorf("terminal after %d, first retry %s later: want a retry by the last safe point, 2m0s away", got.terminal, got.firstWait)
			}
		})
	}
}

// RFC 6749 §4.1.2.1 defines temporarily_unavailable and server_error as conditions of
// the server, and Entra sends both from its token endpoint as a 400 JSON body ("Retry
// the request after a small delay", "Retry the request": MicrosoftDocs
// v2-oauth2-auth-code-flow.md, "Error codes for token endpoint errors"). An outage of
// that kind is backed off like a 5xx, never given up after three tries.
func TestTemporarilyUnavailableAndServerErrorAt400AreRetriedLikeAnOutage(t *testing.T) {
	answers := map[string]http.HandlerFunc{
		"temporarily_unavailable": entraAnswer(http.StatusBadRequest, "temporarily_unavailable", 90033, "A transient error has occurred. Please try again."),
		"server_error":            entraAnswer(http.StatusBadRequest, "server_error", 90100, "An unexpected error occurred. Please try again."),
	}
	for code, h := range answers {
		for name, refresh := range flows {
			t.Run(code+", "+name, func(t *testing.T) {
				if got := askUntilTerminal(t, h, refresh, 0); got.terminal != 0 || got.verdict != Transient {
					t.Errorf("a 400 %s made the CR terminal after %d request(s) (verdict %v), want Transient and backed off", code, got.terminal, got.verdict)
				}
			})
		}
	}
	t.Run("temporarily_unavailable with Retry-After waits as asked", func(t *testing.T) {
		h := func(w http.ResponseWriter, _ *http.Request) {
			w.Header().Set("Content-Type", "application/json")
			w.Header().Set("Retry-After", "120")
			w.WriteHeader(http.StatusBadRequest)
			_, _ = w.Write([]byte(`{"error":"temporarily_unavailable"}`))
		}
		got := askUntilTerminal(t, h, true, 0)
		if got.terminal != 0 || got.verdict != RateLimited || got.firstWait < 2*time.Minute {
			t.Errorf("terminal after %d, verdict %v, first retry %s later: want RateLimited, waiting 2m0s", got.terminal, got.verdict, got.firstWait)
		}
	})
}
