package cdsandbox

import (
	"net/http"
	"testing"
	"time"
)

// Keycloak answers a refresh with refresh_expires_in, the refresh token's own lifetime
// (SSO Session Idle, however long the access token lives), and refuses a refresh token
// presented after it with invalid_grant "Token is not active", revoking nothing; every
// refresh issues a token that lives that long again. Offline tokens (offline_access)
// answer 0 and never expire. The other profiles send none.
func TestKeycloakRefreshTokensLiveRefreshExpiresIn(t *testing.T) {
	h := newHarness(t, withProfile(ProfileKeycloak), func(o *Options) { o.RefreshTokenTTL = 45 * time.Second })
	rt := h.s.SeedGrant("login", "alice", []string{"openid", "marketplace"})
	status, body := h.post(refreshForm(rt), false)
	if status != http.StatusOK || body["refresh_expires_in"] != float64(45) {
		t.Fatalf("refresh: HTTP %d %v, want 200 with refresh_expires_in 45", status, body)
	}
	next := body["refresh_token"].(string)

	h.now = h.now.Add(44 * time.Second)
	if status, body := h.post(refreshForm(next), false); status != http.StatusOK {
		t.Fatalf("44 s after its issue, the refresh token was refused: HTTP %d %v", status, body)
	} else {
		next = body["refresh_token"].(string)
	}
	h.now = h.now.Add(45 * time.Second)
	status, body = h.post(refreshForm(next), false)
	if got := asRefusal(status, body); got != (refusal{http.StatusBadRequest, "invalid_grant", "Token is not active"}) {
		t.Errorf("45 s after its issue: %+v, want 400 invalid_grant \"Token is not active\"", got)
	}
	if st := h.s.Stats(); st.RefreshTokensExpired != 1 || st.GrantsRevoked != 0 || st.RefreshTokensReused != 0 {
		t.Errorf("stats %+v, want 1 expired refresh token, nothing revoked or reused", st)
	}

	offline := h.s.SeedGrant("login", "bob", []string{"openid", "offline_access"})
	h.now = h.now.Add(time.Hour)
	if status, body := h.post(refreshForm(offline), false); status != http.StatusOK || body["refresh_expires_in"] != float64(0) {
		t.Errorf("an offline token an hour after its issue: HTTP %d %v, want 200 with refresh_expires_in 0", status, body)
	}

	for _, p := range []Profile{ProfileCD, ProfileDex, ProfileEntra, ProfileOkta, ProfileAuth0, ProfileGoogle} {
		h := newHarness(t, withProfile(p), func(o *Options) { o.RefreshTokenTTL = 45 * time.Second })
		rt := h.s.SeedGrant("login", "alice", []string{"openid", "marketplace"})
		h.now = h.now.Add(time.Hour)
		if status, body := h.post(refreshForm(rt), false); status != http.StatusOK || body["refresh_expires_in"] != nil {
			t.Errorf("%s, an hour after its issue: HTTP %d %v, want 200 without refresh_expires_in", p, status, body)
		}
	}
}

// Without Options.RefreshTokenTTL, Keycloak's refresh tokens live its default SSO
// Session Idle, 30 minutes.
func TestKeycloakRefreshTokensLiveThirtyMinutesByDefault(t *testing.T) {
	h := newHarness(t, withProfile(ProfileKeycloak))
	rt := h.s.SeedGrant("login", "alice", []string{"openid", "marketplace"})
	if status, body := h.post(refreshForm(rt), false); status != http.StatusOK || body["refresh_expires_in"] != float64(1800) {
		t.Fatalf("refresh: HTTP %d %v, want 200 with refresh_expires_in 1800", status, body)
	}
}
