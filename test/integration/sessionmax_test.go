package integration

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/watch"
	"sigs.k8s.io/controller-runtime/pkg/client"

	cdv1 "github.com/credops/cd-credentials-operator/api/v1alpha1"
	"github.com/credops/cd-credentials-operator/internal/cdsandbox"
	"github.com/credops/cd-credentials-operator/internal/manager"
)

// Keycloak ends a session SSO Session Max after the customer's login however often it is
// refreshed: refresh_expires_in runs down to the session's end, and the refresh after it
// is refused with invalid_grant "Session not active"; expires_in runs down to it too.
// The sandbox's Keycloak profile plays that with a 30-second session, 12-second refresh
// tokens (SSO Session Idle) and 20-second access tokens, without offline_access (offline
// sessions have no max). The
// real manager, from a login through its callback, stores each refresh token's expiry
// as the session runs down, sends the dead session's token once and asks for a new
// login (ReauthorizationRequired, RefreshTokenRejected) without trying again; after
// the customer logs in again, the grant rotates again.
func TestAKeycloakSessionEndsAtSessionMaxAndANewLoginResumesIt(t *testing.T) {
	const accessTTL, idle, sessionMax = 20 * time.Second, 12 * time.Second, 30 * time.Second
	f := newOnboardingFixture(t, asProvider(cdsandbox.ProfileKeycloak),
		func(c *fixtureConfig) {
			c.sandbox.AccessTokenTTL, c.sandbox.RefreshTokenTTL, c.sandbox.SessionMax = accessTTL, idle, sessionMax
		},
		withCredential(func(c *cdv1.CDCredential) { c.Spec.Scopes = []string{"openid", "marketplace"} }))
	authURL := f.awaiting("acme")
	stored := watchRefreshLives(t, f.ns, "acme-refresh")

	// The session is the login's: it ends sessionMax after the code exchange, which
	// happens during the callback.
	loginFrom := time.Now()
	if status, body := f.callback(f.login(authURL, "login")); status != 200 {
		t.Fatalf("callback: %d %s", status, body)
	}
	ends := span{loginFrom.Add(sessionMax), time.Now().Add(sessionMax)}

	var rotated int64
	eventually(t, 2*sessionMax+accessTTL, "the session's end refused and reported", func() error {
		g, err := getGrant(f.ns, "acme")
		if err != nil {
			return err
		}
		rotated = g.Status.RotationCount
		if err := conditionIs(g.Status.Conditions, cdv1.ReauthorizationRequiredCondition, metav1.ConditionTrue, cdv1.RefreshTokenRejectedReason); err != nil {
			return err
		}
		if err := conditionIs(g.Status.Conditions, cdv1.ReadyCondition, metav1.ConditionFalse, cdv1.RefreshTokenRejectedReason); err != nil {
			return err
		}
		if g.Status.AuthorizationURL == "" {
			return fmt.Errorf("no authorizationURL for the new login")
		}
		authURL = g.Status.AuthorizationURL
		return nil
	})
	// (a) Every refresh token stored lives the lesser of SSO Session Idle and what was left
	// of the session, as the answer said: the last ones live shorter and shorter.
	lives := stored()
	if err := runDown(lives, idle, ends); err != nil {
		t.Error(err)
	}
	// (b) The session's end brings at most one renewal more than SSO Session Idle alone
	// would over the session, and none back to back: planned from the shrinking life of
	// a capped refresh token, the renewals came ever closer as the end neared.
	if err := paced(lives, idle, sessionMax); err != nil {
		t.Error(err)
	}
	for _, l := range lives {
		t.Logf("refresh token stored %s after the login lives %s", l.issued.Sub(loginFrom.Truncate(time.Second)), l.expires.Sub(l.issued))
	}
	// (c) One refused request: the dead session's token was sent once.
	refreshes := f.idp.Stats().TokenRequests["refresh_token"]
	assertOneSessionEnded := func(when string) {
		t.Helper()
		st := f.idp.Stats()
		if st.SessionsEnded != 1 || st.Rejected["invalid_grant"] != 1 || st.RefreshTokensExpired != 0 || st.RefreshTokensReused != 0 {
			t.Errorf("%s: the identity server saw %d refreshes of an ended session, %d invalid_grant answers, %d expired and %d spent refresh tokens; want 1, 1, 0, 0",
				when, st.SessionsEnded, st.Rejected["invalid_grant"], st.RefreshTokensExpired, st.RefreshTokensReused)
		}
	}
	assertOneSessionEnded("at the refusal")
	if rotated < 2 {
		t.Errorf("%d rotations in a %s session of %s refresh tokens, want at least 2", rotated, sessionMax, idle)
	}

	// (d) A new login is a new session, and the grant rotates in it.
	if status, body := f.callback(f.login(authURL, "login")); status != 200 {
		t.Fatalf("the new login's callback: %d %s", status, body)
	}
	if n := f.idp.Stats().TokenRequests["refresh_token"]; n != refreshes {
		t.Errorf("%d refresh requests between the refusal and the new login, want none", n-refreshes)
	}
	eventually(t, 2*idle, "a rotation after the new login", func() error {
		g, err := getGrant(f.ns, "acme")
		if err != nil {
			return err
		}
		if g.Status.RotationCount <= rotated {
			return fmt.Errorf("%d rotations, want more than %d", g.Status.RotationCount, rotated)
		}
		if err := conditionIs(g.Status.Conditions, cdv1.ReauthorizationRequiredCondition, metav1.ConditionFalse, cdv1.RefreshTokenValidReason); err != nil {
			return err
		}
		return conditionIs(g.Status.Conditions, cdv1.ReadyCondition, metav1.ConditionTrue, cdv1.TokenIssuedReason)
	})
	assertOneSessionEnded("after the new login's rotation")
}

// paced checks the renewals of one session, from the refresh-token lives stored: the
// login's, then the first refresh's (at once: the login brings no access token), then
// the renewals'. No more than the renewals SSO Session Idle alone brings over the
// session (each at least two thirds of idle, less a tenth of jitter, after the one
// before) plus one, and each at least a third of idle after the one before, less the
// second the stored times are rounded to (Plan never renews sooner).
func paced(lives []refreshLife, idle, session time.Duration) error {
	if len(lives) < 2 {
		return fmt.Errorf("%d refresh-token lives stored, want the login's and the first refresh's: %v", len(lives), lives)
	}
	normal := int(session / (idle*2/3 - idle/10))
	if renewals := len(lives) - 2; renewals > normal+1 {
		return fmt.Errorf("%d renewals in a %s session of %s refresh tokens, want at most %d (%d, plus one): %v", renewals, session, idle, normal+1, normal, lives)
	}
	for i := 2; i < len(lives); i++ {
		if gap := lives[i].issued.Sub(lives[i-1].issued); gap < idle/3-time.Second {
			return fmt.Errorf("refresh token %d issued %s after the one before, want at least %s (a third of SSO Session Idle %s): %v", i, gap, idle/3-time.Second, idle, lives)
		}
	}
	return nil
}

// span is a time known to lie between from and to.
type span struct{ from, to time.Time }

// refreshLife is one refresh token's cd.credops.io/refresh-expires-at: when it was
// issued and when it dies.
type refreshLife struct{ issued, expires time.Time }

// String prints a life in a failure message: when it began and how long it lasts.
func (l refreshLife) String() string {
	return fmt.Sprintf("%s+%s", l.issued.UTC().Format(time.TimeOnly), l.expires.Sub(l.issued))
}

// watchRefreshLives records every refresh-token life the operator stores on the named
// Secret, in order, from a watch (polling would miss the quick rotations near a
// session's end). The returned function reads what was recorded so far.
func watchRefreshLives(t *testing.T, ns, name string) func() []refreshLife {
	t.Helper()
	wc, err := client.NewWithWatch(cfg, client.Options{Scheme: manager.Scheme()})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	w, err := wc.Watch(ctx, &corev1.SecretList{}, client.InNamespace(ns), client.MatchingFields{"metadata.name": name})
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	var (
		mu    sync.Mutex
		lives []refreshLife
		seen  = map[string]bool{}
		done  = make(chan struct{})
	)
	go func() {
		defer close(done)
		for ev := range w.ResultChan() {
			s, ok := ev.Object.(*corev1.Secret)
			if !ok || (ev.Type != watch.Added && ev.Type != watch.Modified) {
				continue
			}
			v := s.Annotations[cdv1.RefreshExpiresAtAnnotation]
			parts := strings.Fields(v)
			if len(parts) != 3 || seen[v] {
				continue
			}
			expires, err1 := time.Parse(time.RFC3339, parts[0])
			issued, err2 := time.Parse(time.RFC3339, parts[1])
			if err1 != nil || err2 != nil {
				continue
			}
			mu.Lock()
			seen[v] = true
			lives = append(lives, refreshLife{issued: issued, expires: expires})
			mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		w.Stop()
		cancel()
		<-done
	})
	return func() []refreshLife {
		mu.Lock()
		defer mu.Unlock()
		return append([]refreshLife(nil), lives...)
	}
}

// runDown checks the refresh-token lives stored during one session that ends within
// ends: each is the lesser of idle and what was left of the session (to the whole
// second the operator stores, and the second the answer is rounded to), and once the
// session's end is nearer than idle, none lives longer than the one before.
func runDown(lives []refreshLife, idle time.Duration, ends span) error {
	const slack = 2 * time.Second
	if len(lives) < 3 {
		return fmt.Errorf("%d refresh-token lives stored, want the login's and at least 2 rotations': %v", len(lives), lives)
	}
	shrinking := 0
	for i, l := range lives {
		life := l.expires.Sub(l.issued)
		switch capped := l.issued.Add(idle).After(ends.from.Add(-slack)); {
		case life > idle || l.expires.After(ends.to.Add(slack)):
			return fmt.Errorf("refresh token %d (issued %s) lives %s, to %s: past SSO Session Idle %s or the session's end by %s", i, l.issued, life, l.expires, idle, ends.to)
		case !capped && life != idle:
			return fmt.Errorf("refresh token %d (issued %s) lives %s, want %s: the session's end is far", i, l.issued, life, idle)
		case capped && l.expires.Before(ends.from.Add(-slack)):
			return fmt.Errorf("refresh token %d (issued %s) dies at %s, want the session's end, from %s to %s", i, l.issued, l.expires, ends.from, ends.to)
		case capped && i > 0 && life > lives[i-1].expires.Sub(lives[i-1].issued):
			return fmt.Errorf("refresh token %d (issued %s) lives %s, longer than the one before it: %v", i, l.issued, life, lives)
		case life < idle:
			shrinking++
		}
	}
	if shrinking == 0 {
		return fmt.Errorf("no refresh token lived shorter than SSO Session Idle %s, want the last ones to run down to the session's end: %v", idle, lives)
	}
	return nil
}
