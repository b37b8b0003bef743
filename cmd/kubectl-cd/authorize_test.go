package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	cdv1 "github.com/credops/cd-credentials-operator/api/v1alpha1"
)

func authURLFor(grant string) string {
	return "https://id.example.com/connect/authorize?client_id=57fd8af0-login&response_type=code&state=" + grant + "-state"
}

// turnReady plays the operator once the customer has logged in: the refresh token is
// stored and a token issued.
func turnReady(t *testing.T, ns, name string) {
	t.Helper()
	setGrantStatus(t, ns, name, func(g *cdv1.CDUserGrant) { g.Status = readyStatus(time.Hour, 1) })
}

func TestAuthorizeReturnsWhenTheGrantTurnsReady(t *testing.T) {
	fixtures(t)
	newGrant(t, waitingNS, "initech", awaitingStatus(authURLFor("initech")))
	opened := filepath.Join(t.TempDir(), "opened")
	p := start(t, []string{"OPENED_LOG=" + opened}, "--context", "waiting", "authorize", "initech", "--open", "--timeout", "1m")
	p.waitOutput("Open this link in a browser and log in as the customer of CDUserGrant team-waiting/initech:\n\n  " + authURLFor("initech") + "\n")
	eventually(t, 10*time.Second, "the browser opened with the link", func() error {
		if got := readOpened(opened); got != authURLFor("initech")+"\n" {
			return errorf("xdg-open got %q", got)
		}
		return nil
	})
	// Waiting, with a plain progress line on a non-terminal.
	eventually(t, 10*time.Second, "a progress line", func() error {
		if !strings.Contains(p.stderr.String(), "Waiting for the customer to log in (Ready: False AwaitingAuthorization)\n") {
			return errorf("stderr %q", p.stderr.String())
		}
		return nil
	})
	turnReady(t, waitingNS, "initech")
	r := p.wait()
	if r.code != 0 || !strings.HasSuffix(r.stdout, "CDUserGrant team-waiting/initech is Ready: TokenIssued: The access token is current\n") {
		t.Errorf("%s", r)
	}
	if strings.Contains(r.stderr, "\x1b[") {
		t.Errorf("terminal escapes on a non-terminal:\n%q", r.stderr)
	}
}

func TestAuthorizeSaysWhyNot(t *testing.T) {
	fixtures(t)
	cases := map[string]struct {
		grant  string
		turn   func(*cdv1.CDUserGrant)
		wantEr string
	}{
		"the customer refuses": {
			grant: "denied",
			turn: func(g *cdv1.CDUserGrant) {
				metaSet(g, condition(cdv1.ReadyCondition, metav1.ConditionFalse, "AuthorizationDenied", "The customer did not authorize the integration: access_denied"))
			},
			wantEr: "error: CDUserGrant team-waiting/denied is not authorized: AuthorizationDenied: The customer did not authorize the integration: access_denied\n",
		},
		"the refresh-token Secret belongs to another grant": {
			grant: "conflict",
			turn: func(g *cdv1.CDUserGrant) {
				metaSet(g, condition(cdv1.ReadyCondition, metav1.ConditionFalse, "RefreshTokenSecretConflict", "Secret conflict-refresh is bound to another CDUserGrant"))
			},
			wantEr: "error: CDUserGrant team-waiting/conflict is not authorized: RefreshTokenSecretConflict: Secret conflict-refresh is bound to another CDUserGrant\n",
		},
		"the new refresh token is rejected at once": {
			grant: "rejected",
			turn: func(g *cdv1.CDUserGrant) {
				metaSet(g, condition(cdv1.ReauthorizationRequiredCondition, metav1.ConditionFalse, cdv1.RefreshTokenValidReason, "The grant holds a refresh token"))
			},
			wantEr: "error: CDUserGrant team-waiting/rejected is not authorized: the customer must log in again: RefreshTokenRejected: The identity server rejected the refresh token\n",
		},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			newGrant(t, waitingNS, tc.grant, awaitingStatus(authURLFor(tc.grant)))
			p := start(t, nil, "--context", "waiting", "authorize", tc.grant, "--timeout", "1m")
			p.waitOutput(authURLFor(tc.grant))
			setGrantStatus(t, waitingNS, tc.grant, func(g *cdv1.CDUserGrant) { tc.turn(g) })
			if tc.grant == "rejected" {
				// The token was stored, then the identity server rejected it.
				eventually(t, 10*time.Second, "the CLI saw the login", func() error {
					if !strings.Contains(p.stderr.String(), "The customer logged in") {
						return errorf("stderr %q", p.stderr.String())
					}
					return nil
				})
				setGrantStatus(t, waitingNS, tc.grant, func(g *cdv1.CDUserGrant) {
					c := condition(cdv1.ReauthorizationRequiredCondition, metav1.ConditionTrue, cdv1.RefreshTokenRejectedReason, "The identity server rejected the refresh token")
					c.LastTransitionTime = metav1.NewTime(time.Now().Add(time.Second).Truncate(time.Second))
					metaSet(g, c)
				})
			}
			r := p.wait()
			if r.code != 1 || !strings.HasSuffix(r.stderr, tc.wantEr) {
				t.Errorf("want exit 1 and %q:\n%s", tc.wantEr, r)
			}
		})
	}
}

func TestAuthorizeGivesUpAfterItsTimeout(t *testing.T) {
	fixtures(t)
	r := kubectlCD(t, "", "--context", "waiting", "authorize", "globex", "--timeout", "2s")
	want := "error: CDUserGrant team-waiting/globex is not Ready after 2s (waiting for the customer to log in (Ready: False AwaitingAuthorization)); run the command again to keep waiting\n"
	if r.code != 1 || !strings.HasSuffix(r.stderr, want) || !strings.Contains(r.stdout, globexURL) {
		t.Errorf("want %q:\n%s", want, r)
	}
}

func TestAuthorizeInterruptedSaysWhereItStood(t *testing.T) {
	fixtures(t)
	p := start(t, nil, "--context", "waiting", "authorize", "globex")
	p.waitOutput(globexURL)
	eventually(t, 10*time.Second, "waiting", func() error {
		if !strings.Contains(p.stderr.String(), "Waiting for the customer") {
			return errorf("stderr %q", p.stderr.String())
		}
		return nil
	})
	if err := p.cmd.Process.Signal(os.Interrupt); err != nil {
		t.Fatal(err)
	}
	r := p.wait()
	want := "error: interrupted: CDUserGrant team-waiting/globex is not Ready yet (waiting for the customer to log in (Ready: False AwaitingAuthorization)); run the command again to keep waiting\n"
	if r.code != 1 || !strings.HasSuffix(r.stderr, want) {
		t.Errorf("want %q:\n%s", want, r)
	}
}

func TestAuthorizeOnAReadyGrantHasNothingToDo(t *testing.T) {
	fixtures(t)
	r := kubectlCD(t, "", "authorize", "acme")
	if r.code != 0 || r.stdout != "CDUserGrant team-ready/acme is already authorized and Ready (TokenIssued: The access token is current); `kubectl cd reauthorize acme` starts a new login.\n" {
		t.Errorf("%s", r)
	}
}

func TestReauthorize(t *testing.T) {
	fixtures(t)
	t.Run("refuses without --yes when stdin is not a terminal, and changes nothing", func(t *testing.T) {
		newGrant(t, readyNS, "hooli", readyStatus(time.Hour, 5))
		r := kubectlCD(t, "y\n", "reauthorize", "hooli")
		want := "error: standard input is not a terminal, so there is no one to confirm: pass --yes to reauthorize without asking\n"
		if r.code != 1 || r.stderr != want {
			t.Errorf("want %q:\n%s", want, r)
		}
		if _, ok := getGrant(t, readyNS, "hooli").Annotations[cdv1.ReauthorizeAnnotation]; ok {
			t.Errorf("the annotation was set without confirmation")
		}
	})
	t.Run("sets the annotation, prints the fresh link, waits for the login", func(t *testing.T) {
		newGrant(t, readyNS, "umbrella", readyStatus(time.Hour, 5))
		before := time.Now().Truncate(time.Second)
		p := start(t, nil, "reauthorize", "umbrella", "--yes", "--timeout", "1m")
		var requested string
		eventually(t, 20*time.Second, "the reauthorize annotation", func() error {
			requested = getGrant(t, readyNS, "umbrella").Annotations[cdv1.ReauthorizeAnnotation]
			if requested == "" {
				return errorf("no annotation; stderr %q", p.stderr.String())
			}
			return nil
		})
		at, err := time.Parse(time.RFC3339, requested)
		if err != nil || at.Before(before) || at.After(time.Now()) {
			t.Errorf("annotation %q is not the time of the request (RFC 3339): %v", requested, err)
		}
		eventually(t, 10*time.Second, "waiting for the link", func() error {
			if !strings.Contains(p.stderr.String(), "Waiting for the operator to publish an authorization link (Ready: True TokenIssued)") {
				return errorf("stderr %q", p.stderr.String())
			}
			return nil
		})
		// The operator publishes a fresh link; the grant stays Ready meanwhile.
		setGrantStatus(t, readyNS, "umbrella", func(g *cdv1.CDUserGrant) { g.Status.AuthorizationURL = authURLFor("umbrella") })
		p.waitOutput("Open this link in a browser and log in as the customer of CDUserGrant team-ready/umbrella:\n\n  " + authURLFor("umbrella") + "\n")
		select {
		case <-p.done:
			t.Fatalf("returned while the reauthorization is pending: %s", p.wait())
		default:
		}
		// The callback stores the new refresh token and removes the annotation.
		g := getGrant(t, readyNS, "umbrella")
		delete(g.Annotations, cdv1.ReauthorizeAnnotation)
		if err := k8s.Update(t.Context(), g); err != nil {
			t.Fatal(err)
		}
		setGrantStatus(t, readyNS, "umbrella", func(g *cdv1.CDUserGrant) { g.Status = readyStatus(time.Hour, 6) })
		r := p.wait()
		if r.code != 0 || !strings.HasSuffix(r.stdout, "CDUserGrant team-ready/umbrella is Ready: TokenIssued: The access token is current\n") ||
			!strings.Contains(r.stderr, "Requested a new authorization for CDUserGrant team-ready/umbrella.\n") {
			t.Errorf("%s", r)
		}
	})
}

func metaSet(g *cdv1.CDUserGrant, c metav1.Condition) {
	for i := range g.Status.Conditions {
		if g.Status.Conditions[i].Type == c.Type {
			g.Status.Conditions[i] = c
			return
		}
	}
	g.Status.Conditions = append(g.Status.Conditions, c)
}
