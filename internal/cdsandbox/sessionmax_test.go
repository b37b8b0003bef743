package cdsandbox

import (
	"net/http"
	"net/url"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// loginForRefreshToken logs a customer in with the authorization-code flow, without
// offline_access, and returns the exchange's answer: Keycloak gives such a login the
// browser session's refresh token.
func (h *harness) loginForRefreshToken(user string) map[string]any {
	h.t.Helper()
	q := authorizeQuery("")
	q.Del("code_challenge")
	q.Del("code_challenge_method")
	q.Set("scope", "openid marketplace")
	q.Set("username", user)
	code := h.login(q, "login").Get("code")
	status, body := h.post(url.Values{"grant_type": {"authorization_code"}, "code": {code}, "redirect_uri": {redirect},
		"client_id": {"login"}, "client_secret": {"login-secret"}}, false)
	if status != http.StatusOK || body["refresh_token"] == nil {
		h.t.Fatalf("exchange: HTTP %d %v, want 200 with a refresh token", status, body)
	}
	return body
}

// Keycloak ends a session SSO Session Max after the login that created it, however
// often it is refreshed: each refresh answer's refresh_expires_in is the lesser of SSO
// Session Idle and what is left of the session, its expires_in the lesser of the access
// token's lifespan and what is left, and a refresh after the end is refused
// with 400 invalid_grant "Session not active", revoking nothing. The session is the
// login's: a new login starts a new one, which the old one's end does not touch.
func TestKeycloakSessionsEndAtSessionMaxHoweverOftenRefreshed(t *testing.T) {
	const idle, sessionMax = 45 * time.Second, 100 * time.Second
	h := newHarness(t, withProfile(ProfileKeycloak), func(o *Options) { o.RefreshTokenTTL, o.SessionMax = idle, sessionMax })
	body := h.loginForRefreshToken("alice")
	// Refreshed every 30 s from the login on: refresh_expires_in is idle until the
	// session has less than that left, then what is left of it.
	// So is expires_in, once the session has less left than the access token's lifespan
	// (90 s here): an access token does not outlive its session either.
	got, access := []any{body["refresh_expires_in"]}, []any{body["expires_in"]}
	rt := body["refresh_token"].(string)
	for range 3 {
		h.now = h.now.Add(30 * time.Second)
		status, body := h.post(refreshForm(rt), false)
		if status != http.StatusOK {
			t.Fatalf("refresh at %s: HTTP %d %v", h.now, status, body)
		}
		got, rt = append(got, body["refresh_expires_in"]), body["refresh_token"].(string)
		access = append(access, body["expires_in"])
	}
	if diff := cmp.Diff([]any{float64(45), float64(45), float64(40), float64(10)}, got); diff != "" {
		t.Errorf("refresh_expires_in at 0, 30, 60 and 90 s (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]any{float64(90), float64(70), float64(40), float64(10)}, access); diff != "" {
		t.Errorf("expires_in at 0, 30, 60 and 90 s (-want +got):\n%s", diff)
	}

	// 100 s after the login, though the last refresh token is 10 s old.
	h.now = h.now.Add(10 * time.Second)
	status, body := h.post(refreshForm(rt), false)
	if got := asRefusal(status, body); got != (refusal{http.StatusBadRequest, "invalid_grant", "Session not active"}) {
		t.Errorf("a refresh at the session's max: %+v, want 400 invalid_grant \"Session not active\"", got)
	}
	if st := h.s.Stats(); st.SessionsEnded != 1 || st.RefreshTokensExpired != 0 || st.GrantsRevoked != 0 || st.RefreshTokensReused != 0 {
		t.Errorf("stats %+v, want 1 ended session, nothing expired, revoked or reused", st)
	}

	// A new login is a new session, with a whole SSO Session Max ahead of it.
	body = h.loginForRefreshToken("alice")
	h.now = h.now.Add(30 * time.Second)
	status, body = h.post(refreshForm(body["refresh_token"].(string)), false)
	if status != http.StatusOK || body["refresh_expires_in"] != float64(45) {
		t.Errorf("a refresh 30 s after a new login: HTTP %d %v, want 200 with refresh_expires_in 45", status, body)
	}
}

// Offline sessions (offline_access) do not end at SSO Session Max; without
// Options.SessionMax a Keycloak session ends after 10 hours, Keycloak's default; the
// other profiles end none.
func TestSessionMaxIsKeycloaksAndSparesOfflineSessions(t *testing.T) {
	h := newHarness(t, withProfile(ProfileKeycloak), func(o *Options) { o.RefreshTokenTTL, o.SessionMax = time.Hour, 2*time.Hour })
	offline := h.s.SeedGrant("login", "bob", []string{"openid", "offline_access"})
	h.now = h.now.Add(3 * time.Hour)
	if status, body := h.post(refreshForm(offline), false); status != http.StatusOK || body["refresh_expires_in"] != float64(0) {
		t.Errorf("an offline token past SSO Session Max: HTTP %d %v, want 200 with refresh_expires_in 0", status, body)
	}

	h = newHarness(t, withProfile(ProfileKeycloak))
	rt := h.s.SeedGrant("login", "alice", []string{"openid", "marketplace"})
	for elapsed := time.Duration(0); elapsed < 10*time.Hour-20*time.Minute; elapsed += 20 * time.Minute {
		h.now = h.now.Add(20 * time.Minute)
		status, body := h.post(refreshForm(rt), false)
		if status != http.StatusOK {
			t.Fatalf("refresh %s after the login: HTTP %d %v", elapsed+20*time.Minute, status, body)
		}
		rt = body["refresh_token"].(string)
	}
	h.now = h.now.Add(20 * time.Minute)
	if got := asRefusal(h.post(refreshForm(rt), false)); got != (refusal{http.StatusBadRequest, "invalid_grant", "Session not active"}) {
		t.Errorf("a refresh 10 hours after the login: %+v, want 400 invalid_grant \"Session not active\"", got)
	}

	for _, p := range []Profile{ProfileCD, ProfileDex, ProfileEntra, ProfileOkta, ProfileAuth0, ProfileGoogle} {
		h := newHarness(t, withProfile(p), func(o *Options) { o.SessionMax = time.Minute })
		rt := h.s.SeedGrant("login", "alice", []string{"openid", "marketplace", "offline_access"})
		h.now = h.now.Add(time.Hour)
		if status, body := h.post(refreshForm(rt), false); status != http.StatusOK {
			t.Errorf("%s, an hour after the login: HTTP %d %v, want 200", p, status, body)
		}
	}
}
