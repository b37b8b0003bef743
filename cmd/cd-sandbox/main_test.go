package main

import (
	"encoding/json"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/credops/cd-credentials-operator/internal/cdsandbox"
)

var quiet = log.New(io.Discard, "", 0)

func TestTheProfileFlagChoosesTheRefusals(t *testing.T) {
	dir := t.TempDir()
	seeded := filepath.Join(dir, "rt")
	s, clients, err := newServer(config{
		clients: []cdsandbox.Client{{ID: "login", Secret: "s", GrantTypes: []string{"authorization_code"}}},
		ttl:     time.Minute, profile: "auth0", seed: "login:cust:" + seeded,
	}, quiet)
	if err != nil || clients != 1 {
		t.Fatalf("newServer: %d clients, %v", clients, err)
	}
	srv := httptest.NewServer(s)
	defer srv.Close()
	rt, err := os.ReadFile(seeded)
	if err != nil {
		t.Fatal(err)
	}
	form := url.Values{"grant_type": {"refresh_token"}, "refresh_token": {string(rt)}, "client_id": {"login"}, "client_secret": {"s"}}
	var statuses []int
	for range 2 {
		resp, err := http.PostForm(srv.URL+"/connect/token", form)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		statuses = append(statuses, resp.StatusCode)
	}
	if statuses[0] != http.StatusOK || statuses[1] != http.StatusForbidden {
		t.Errorf("statuses %v, want [200 403]: Auth0 answers a spent refresh token with 403", statuses)
	}
}

func TestAnUnknownProfileIsRefusedWithTheChoices(t *testing.T) {
	_, _, err := newServer(config{profile: "ping"}, quiet)
	if err == nil || !strings.Contains(err.Error(), "--profile") || !strings.Contains(err.Error(), "cd, dex, keycloak, entra, okta, auth0, google") {
		t.Errorf("err %v, want --profile and the choices", err)
	}
}

func TestOfflineAccessWithoutConsentReachesTheServer(t *testing.T) {
	const redirect = "https://app.example.com/cb"
	for _, without := range []bool{false, true} {
		s, _, err := newServer(config{
			clients: []cdsandbox.Client{{ID: "login", Secret: "s", GrantTypes: []string{"authorization_code"}, RedirectURIs: []string{redirect}}},
			ttl:     time.Minute, offlineAccessWithoutConsent: without,
		}, quiet)
		if err != nil {
			t.Fatal(err)
		}
		srv := httptest.NewServer(s)
		noFollow := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
		resp, err := noFollow.PostForm(srv.URL+"/connect/authorize", url.Values{"client_id": {"login"}, "response_type": {"code"},
			"redirect_uri": {redirect}, "scope": {"offline_access"}, "username": {"cust"}, "action": {"login"}})
		srv.Close()
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		loc, _ := url.Parse(resp.Header.Get("Location"))
		if granted := loc.Query().Get("scope") == "offline_access"; granted != without {
			t.Errorf("--offline-access-without-consent=%t: offline_access granted %t", without, granted)
		}
	}
}

// refreshedOnce starts the sandbox from cfg, seeds a login of client "login" and refreshes
// it at once, returning the answer's refresh_expires_in.
func refreshedOnce(t *testing.T, cfg config) any {
	t.Helper()
	cfg.clients = []cdsandbox.Client{{ID: "login", Secret: "s", GrantTypes: []string{"authorization_code"}}}
	s, _, err := newServer(cfg, quiet)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(s)
	defer srv.Close()
	rt := s.SeedGrant("login", "cust", []string{"marketplace"})
	resp, err := http.PostForm(srv.URL+"/connect/token", url.Values{"grant_type": {"refresh_token"}, "refresh_token": {rt}, "client_id": {"login"}, "client_secret": {"s"}})
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var body map[string]any
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
		t.Fatal(err)
	}
	return body["refresh_expires_in"]
}

func TestTheRefreshTokenTTLFlagReachesTheKeycloakProfile(t *testing.T) {
	if got := refreshedOnce(t, config{ttl: time.Hour, refreshTTL: 90 * time.Second, profile: "keycloak"}); got != float64(90) {
		t.Errorf("--refresh-token-ttl 90s: the answer says refresh_expires_in %v, want 90", got)
	}
}

// --session-max ends a keycloak session that long after the login: a seeded grant (a
// login) refreshed at once gets the lesser of --refresh-token-ttl and what is left.
func TestTheSessionMaxFlagReachesTheKeycloakProfile(t *testing.T) {
	got := refreshedOnce(t, config{ttl: time.Hour, refreshTTL: time.Hour, sessionMax: 90 * time.Second, profile: "keycloak"})
	// Seconds pass between the seeding and the refresh only on a very slow machine.
	if left, _ := got.(float64); left < 88 || left > 90 {
		t.Errorf("--session-max 90s, --refresh-token-ttl 1h: the answer says refresh_expires_in %v, want 90 (88 at the least)", got)
	}
}
