package cdsandbox

import (
	"html"
	"io"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// refusal is the part of an error answer a profile decides.
type refusal struct {
	Status             int
	Error, Description string
}

// asRefusal reads an error answer; Entra's trace lines after the message are left out.
func asRefusal(status int, body map[string]any) refusal {
	code, _ := body["error"].(string)
	description, _ := body["error_description"].(string)
	description, _, _ = strings.Cut(description, "\r\n")
	return refusal{status, code, description}
}

func withProfile(p Profile) func(*Options) { return func(o *Options) { o.Profile = p } }

// spendTwice refreshes a new grant's first refresh token twice, the second time past
// any grace period (Okta's), and returns the second answer, and the refresh token the
// first answer issued.
func spendTwice(h *harness) (refusal, string) {
	h.t.Helper()
	rt := h.s.SeedGrant("login", "cust", []string{"marketplace", "offline_access"})
	status, body := h.post(refreshForm(rt), false)
	if status != http.StatusOK {
		h.t.Fatalf("first refresh: %d %v", status, body)
	}
	h.now = h.now.Add(RotationGrace + time.Second)
	return asRefusal(h.post(refreshForm(rt), false)), body["refresh_token"].(string)
}

func askUnknownScope(h *harness) refusal {
	return asRefusal(h.post(url.Values{"grant_type": {"client_credentials"}, "client_id": {"scoped-api"}, "client_secret": {"scoped-api-secret"},
		"scope": {"marketplace pricing"}}, false))
}

func useWrongGrantType(h *harness) refusal {
	return asRefusal(h.post(url.Values{"grant_type": {"client_credentials"}, "client_id": {"login"}, "client_secret": {"login-secret"}}, false))
}

// TestEachProfileAnswersWithItsProvidersWords: the three refusals a profile changes,
// with the status and body of the provider it imitates (sources in profile.go).
func TestEachProfileAnswersWithItsProvidersWords(t *testing.T) {
	type answers struct{ spent, rejected, scope, grantType refusal }
	cases := map[Profile]answers{
		ProfileCD: {
			spent:     refusal{400, "invalid_grant", "refresh token reuse detected: the grant is revoked"},
			rejected:  refusal{400, "invalid_grant", ""},
			scope:     refusal{400, "invalid_scope", ""},
			grantType: refusal{400, "unauthorized_client", "The client is not authorized to use the client_credentials grant type"},
		},
		ProfileDex: {
			spent:     refusal{400, "invalid_request", "Refresh token is invalid or has already been claimed by another client."},
			rejected:  refusal{400, "invalid_request", "Refresh token is invalid or has already been claimed by another client."},
			scope:     refusal{400, "invalid_scope", `Unrecognized scope(s) ["pricing"]`},
			grantType: refusal{400, "unsupported_grant_type", ""},
		},
		ProfileKeycloak: {
			spent:     refusal{400, "invalid_grant", "Maximum allowed refresh token reuse exceeded"},
			rejected:  refusal{400, "invalid_grant", "Session not active"},
			scope:     refusal{400, "invalid_scope", "Invalid scopes: marketplace pricing"},
			grantType: refusal{401, "unauthorized_client", "Client not enabled to retrieve service account"},
		},
		ProfileEntra: {
			spent:     refusal{400, "invalid_grant", "AADSTS50173: The provided grant has expired due to it being revoked, and a fresh auth token is needed."},
			rejected:  refusal{400, "invalid_grant", "AADSTS50173: The provided grant has expired due to it being revoked, and a fresh auth token is needed."},
			scope:     refusal{400, "invalid_scope", "AADSTS70011: The provided value for the input parameter 'scope' isn't valid. The scope pricing isn't valid."},
			grantType: refusal{400, "unsupported_grant_type", "AADSTS70003: The app returned an unsupported grant type."},
		},
		ProfileOkta: {
			spent:     refusal{400, "invalid_grant", "The refresh token is invalid or expired."},
			rejected:  refusal{400, "invalid_grant", "The refresh token is invalid or expired."},
			scope:     refusal{400, "invalid_scope", "One or more scopes are not configured for the authorization server resource."},
			grantType: refusal{400, "unauthorized_client", "The client is not authorized to use the provided grant type. Configured grant types: [authorization_code, refresh_token]."},
		},
		ProfileAuth0: {
			spent:     refusal{403, "invalid_grant", "Unknown or invalid refresh token."},
			rejected:  refusal{403, "invalid_grant", "Unknown or invalid refresh token."},
			scope:     refusal{403, "access_denied", "Client has not been granted scopes: pricing"},
			grantType: refusal{403, "unauthorized_client", "Grant type 'client_credentials' not allowed for the client."},
		},
		ProfileGoogle: {
			spent:     refusal{400, "invalid_grant", "Token has been expired or revoked."},
			rejected:  refusal{400, "invalid_grant", "Token has been expired or revoked."},
			scope:     refusal{400, "invalid_scope", "Some requested scopes were invalid. {valid=[marketplace], invalid=[pricing]}"},
			grantType: refusal{400, "unsupported_grant_type", "Invalid grant_type: client_credentials"},
		},
	}
	for profile, want := range cases {
		t.Run(string(profile), func(t *testing.T) {
			h := newHarness(t, withProfile(profile))
			var got answers
			reuses := 0
			switch profile.Rotation() {
			case RotateKeepOld, NoRotation:
				// Nothing is ever spent: the one refusal is of a token the server
				// never issued (or revoked).
				got.spent = asRefusal(h.post(refreshForm("rt_never_issued"), false))
				got.rejected = got.spent
			default:
				var newest string
				got.spent, newest = spendTwice(h)
				// The reuse revoked the grant, so its newest token is refused too.
				got.rejected = asRefusal(h.post(refreshForm(newest), false))
				reuses = 1
			}
			got.scope = askUnknownScope(h)
			got.grantType = useWrongGrantType(h)
			if diff := cmp.Diff(want, got, cmp.AllowUnexported(answers{})); diff != "" {
				t.Errorf("answers (-want +got):\n%s", diff)
			}
			if st := h.s.Stats(); st.RefreshTokensReused != reuses || st.GrantsRevoked != reuses {
				t.Errorf("reused %d, revoked %d; want %d and %d", st.RefreshTokensReused, st.GrantsRevoked, reuses, reuses)
			}
		})
	}
}

func TestEntraAnswersCarryItsErrorCodesAndTraceLines(t *testing.T) {
	h := newHarness(t, withProfile(ProfileEntra))
	_, body := h.post(url.Values{"grant_type": {"client_credentials"}, "client_id": {"scoped-api"}, "client_secret": {"scoped-api-secret"}, "scope": {"pricing"}}, false)
	description, _ := body["error_description"].(string)
	if !regexp.MustCompile(`^AADSTS70011: .*\r\nTrace ID: [0-9a-f-]{36}\r\nCorrelation ID: [0-9a-f-]{36}\r\nTimestamp: 2026-11-23 10:00:00Z$`).MatchString(description) {
		t.Errorf("error_description %q", description)
	}
	if diff := cmp.Diff([]any{float64(70011)}, body["error_codes"]); diff != "" {
		t.Errorf("error_codes (-want +got):\n%s", diff)
	}
}

// authorizeAs sends an authorization request for the scoped login client and returns
// the answer's status and, for a redirect, its query.
func (h *harness) authorizeAs(scope string) (int, url.Values) {
	h.t.Helper()
	q := authorizeQuery("")
	q.Set("client_id", "scoped-login")
	q.Set("scope", scope)
	noFollow := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err := noFollow.Get(h.url + "/connect/authorize?" + q.Encode())
	if err != nil {
		h.t.Fatal(err)
	}
	resp.Body.Close()
	loc, _ := url.Parse(resp.Header.Get("Location"))
	return resp.StatusCode, loc.Query()
}

func TestTheAuthorizationEndpointRefusesScopesAsEachProviderDoes(t *testing.T) {
	redirected := func(status int, description string) func() (int, url.Values) {
		q := url.Values{"error": {"invalid_scope"}, "state": {"st-1"}}
		if description != "" {
			q.Set("error_description", description)
		}
		return func() (int, url.Values) { return status, q }
	}
	cases := map[string]struct {
		profile Profile
		scope   string
		want    func() (int, url.Values)
	}{
		"cd: an unknown scope is redirected as RFC 6749 says":    {ProfileCD, "marketplace pricing", redirected(302, "")},
		"dex: an unknown scope":                                  {ProfileDex, "openid pricing", redirected(303, `Unrecognized scope(s) ["pricing"]`)},
		"dex: a login without openid":                            {ProfileDex, "marketplace offline_access", redirected(303, `Missing required scope(s) ["openid"].`)},
		"dex: openid is enough":                                  {ProfileDex, "openid offline_access", func() (int, url.Values) { return 200, url.Values{} }},
		"keycloak: an unknown scope":                             {ProfileKeycloak, "marketplace pricing", redirected(302, "Invalid scopes: marketplace pricing")},
		"entra: an unknown scope":                                {ProfileEntra, "marketplace pricing", redirected(302, "AADSTS70011: The provided value for the input parameter 'scope' isn't valid. The scope pricing isn't valid.")},
		"okta: an unknown scope":                                 {ProfileOkta, "marketplace pricing", redirected(302, "One or more scopes are not configured for the authorization server resource.")},
		"auth0: an unknown scope is redirected as RFC 6749 says": {ProfileAuth0, "marketplace pricing", redirected(302, "")},
		"google: an unknown scope gets an error page":            {ProfileGoogle, "marketplace pricing", func() (int, url.Values) { return 400, url.Values{} }},
		"cd: a login without openid is fine":                     {ProfileCD, "marketplace offline_access", func() (int, url.Values) { return 200, url.Values{} }},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			h := newHarness(t, withProfile(tc.profile))
			status, q := h.authorizeAs(tc.scope)
			wantStatus, wantQuery := tc.want()
			if diff := cmp.Diff([]any{wantStatus, wantQuery}, []any{status, q}); diff != "" {
				t.Errorf("status and redirect query (-want +got):\n%s", diff)
			}
		})
	}
}

// exchangeLogin logs in with params and exchanges the code; it returns the granted
// scope of the redirect and whether the exchange brought a refresh token.
func (h *harness) exchangeLogin(params url.Values, user string) (string, bool) {
	h.t.Helper()
	params.Set("username", user)
	q := h.login(params, "login")
	status, body := h.post(url.Values{"grant_type": {"authorization_code"}, "code": {q.Get("code")}, "redirect_uri": {redirect},
		"client_id": {"login"}, "client_secret": {"login-secret"}}, false)
	if status != http.StatusOK {
		h.t.Fatalf("exchange: %d %v", status, body)
	}
	_, refresh := body["refresh_token"]
	return q.Get("scope"), refresh
}

func TestConsentDecidesWhetherOfflineAccessBringsARefreshToken(t *testing.T) {
	type outcome struct {
		Scope   string
		Refresh bool
	}
	request := func(change map[string]string) url.Values {
		q := authorizeQuery("")
		q.Del("code_challenge")
		q.Del("code_challenge_method")
		for k, v := range change {
			if v == "" {
				q.Del(k)
			} else {
				q.Set(k, v)
			}
		}
		return q
	}
	t.Run("by default, as OpenID Connect Core §11 says", func(t *testing.T) {
		cases := map[string]struct {
			change map[string]string
			want   outcome
		}{
			"offline_access with prompt=consent":              {nil, outcome{"marketplace offline_access", true}},
			"offline_access with consent among other prompts": {map[string]string{"prompt": "login consent"}, outcome{"marketplace offline_access", true}},
			"offline_access without prompt is ignored":        {map[string]string{"prompt": ""}, outcome{"marketplace", false}},
			"offline_access with prompt=login is ignored":     {map[string]string{"prompt": "login"}, outcome{"marketplace", false}},
			"prompt=consent without offline_access":           {map[string]string{"scope": "marketplace"}, outcome{"marketplace", false}},
		}
		for name, tc := range cases {
			t.Run(name, func(t *testing.T) {
				h := newHarness(t)
				scope, refresh := h.exchangeLogin(request(tc.change), "cust")
				if diff := cmp.Diff(tc.want, outcome{scope, refresh}); diff != "" {
					t.Errorf("outcome (-want +got):\n%s", diff)
				}
			})
		}
	})
	t.Run("keycloak: a login without offline_access brings the browser session's refresh token", func(t *testing.T) {
		h := newHarness(t, withProfile(ProfileKeycloak))
		scope, refresh := h.exchangeLogin(request(map[string]string{"scope": "marketplace"}), "cust")
		if diff := cmp.Diff(outcome{"marketplace", true}, outcome{scope, refresh}); diff != "" {
			t.Errorf("outcome (-want +got):\n%s", diff)
		}
	})
	t.Run("OfflineAccessWithoutConsent turns the rule off", func(t *testing.T) {
		h := newHarness(t, func(o *Options) { o.OfflineAccessWithoutConsent = true })
		scope, refresh := h.exchangeLogin(request(map[string]string{"prompt": ""}), "cust")
		if diff := cmp.Diff(outcome{"marketplace offline_access", true}, outcome{scope, refresh}); diff != "" {
			t.Errorf("outcome (-want +got):\n%s", diff)
		}
	})
	t.Run("google: access_type=offline, the first time or with prompt=consent", func(t *testing.T) {
		h := newHarness(t, withProfile(ProfileGoogle), func(o *Options) { o.OfflineAccessWithoutConsent = true })
		steps := []struct {
			name   string
			change map[string]string
			user   string
			want   bool
		}{
			{"offline_access and prompt=consent without access_type bring none", map[string]string{}, "ann", false},
			{"access_type=offline the first time brings one", map[string]string{"access_type": "offline", "prompt": ""}, "ann", true},
			{"access_type=offline again without consent brings none", map[string]string{"access_type": "offline", "prompt": ""}, "ann", false},
			{"access_type=offline with prompt=consent brings one again", map[string]string{"access_type": "offline"}, "ann", true},
			{"another customer's first time brings one", map[string]string{"access_type": "offline", "prompt": ""}, "bob", true},
			{"access_type=online brings none", map[string]string{"access_type": "online"}, "bob", false},
		}
		for _, step := range steps {
			if _, refresh := h.exchangeLogin(request(step.change), step.user); refresh != step.want {
				t.Errorf("%s: refresh token %t, want %t", step.name, refresh, step.want)
			}
		}
	})
}

var hiddenInput = regexp.MustCompile(`<input type="hidden" name="([^"]*)" value="([^"]*)">`)

func TestEveryAuthorizationParameterIsCarriedAndRecorded(t *testing.T) {
	h := newHarness(t)
	q := authorizeQuery("challenge-1")
	q.Set("tenant", "acme")
	q.Set("access_type", "offline")
	q.Set("login_hint", `dispatcher@acme.example"><script>`)
	q["resource"] = []string{"https://a.example.com", "https://b.example.com"}
	resp, err := http.Get(h.url + "/connect/authorize?" + q.Encode())
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	page, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	carried := url.Values{}
	for _, m := range hiddenInput.FindAllStringSubmatch(string(page), -1) {
		carried.Add(html.UnescapeString(m[1]), html.UnescapeString(m[2]))
	}
	if diff := cmp.Diff(q, carried); diff != "" {
		t.Errorf("hidden fields (-want +got):\n%s", diff)
	}
	recorded := h.s.AuthorizationRequests()
	if diff := cmp.Diff([]url.Values{q}, recorded); diff != "" {
		t.Errorf("recorded requests (-want +got):\n%s", diff)
	}
	recorded[0].Set("tenant", "changed")
	if got := h.s.AuthorizationRequests()[0].Get("tenant"); got != "acme" {
		t.Errorf("a caller changed the recorded request: tenant %q", got)
	}
}

func TestOnlyTheLatestAuthorizationRequestsAreKept(t *testing.T) {
	h := newHarness(t)
	for i := range maxAuthRequests + 5 {
		resp, err := http.Get(h.url + "/connect/authorize?n=" + strings.Repeat("x", i))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
	}
	got := h.s.AuthorizationRequests()
	if len(got) != maxAuthRequests || got[0].Get("n") != strings.Repeat("x", 5) {
		t.Errorf("%d requests kept, the first n=%d x; want %d, the first n=5 x", len(got), len(got[0].Get("n")), maxAuthRequests)
	}
}

func TestARedirectURIKeepsItsOwnQuery(t *testing.T) {
	const withQuery = "https://app.example.com/cb?tenant=acme"
	h := newHarness(t, func(o *Options) {
		o.Clients = append(o.Clients, Client{ID: "tenant-login", Secret: "s", GrantTypes: []string{"authorization_code"}, RedirectURIs: []string{withQuery}})
	})
	q := authorizeQuery("")
	q.Set("client_id", "tenant-login")
	q.Set("redirect_uri", withQuery)
	got := h.login(q, "login")
	if got.Get("tenant") != "acme" || got.Get("code") == "" || got.Get("state") != "st-1" {
		t.Errorf("redirect query %v, want tenant=acme with a code and the state", got)
	}
}

func TestRevocationsAreCounted(t *testing.T) {
	h := newHarness(t)
	rt := h.s.SeedGrant("login", "cust", []string{"offline_access"})
	revoke := func(form url.Values) int {
		resp, err := http.PostForm(h.url+"/connect/revocation", form)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	client := url.Values{"client_id": {"login"}, "client_secret": {"login-secret"}}
	with := func(extra url.Values) url.Values {
		out := cloneValues(client)
		for k, v := range extra {
			out[k] = v
		}
		return out
	}
	got := []int{
		revoke(with(url.Values{"token": {rt}, "token_type_hint": {"refresh_token"}})),
		revoke(with(url.Values{"token": {"rt-unknown"}})),
		revoke(with(nil)),
		revoke(url.Values{"client_id": {"login"}, "client_secret": {"wrong"}, "token": {rt}}),
	}
	if diff := cmp.Diff([]int{200, 200, 400, 401}, got); diff != "" {
		t.Errorf("statuses (-want +got):\n%s", diff)
	}
	st := h.s.Stats()
	if st.Revocations != 2 || st.GrantsRevoked != 1 {
		t.Errorf("revocations %d, grants revoked %d; want 2 and 1", st.Revocations, st.GrantsRevoked)
	}
	if status, _ := h.post(refreshForm(rt), false); status != 400 {
		t.Errorf("a revoked refresh token still works: HTTP %d", status)
	}
}

func TestProfileNames(t *testing.T) {
	for _, name := range []string{"", "cd", "dex", "keycloak", "entra", "okta", "auth0", "google"} {
		if _, err := ParseProfile(name); err != nil {
			t.Errorf("ParseProfile(%q): %v", name, err)
		}
	}
	if _, err := ParseProfile("ping"); err == nil || !strings.Contains(err.Error(), "cd, dex, keycloak, entra, okta, auth0, google") {
		t.Errorf("ParseProfile(ping) = %v, want an error listing the profiles", err)
	}
	defer func() {
		if recover() == nil {
			t.Error("New accepted an unknown profile")
		}
	}()
	New(Options{Profile: "ping"})
}

// Each profile rotates refresh tokens as its provider does. Google answers a refresh
// with no refresh_token and the old one keeps working
// (developers.google.com/identity/protocols/oauth2/web-server, "Refreshing an access
// token"); Entra issues a new one, but "refresh tokens aren't revoked when used to
// acquire new access tokens" (MicrosoftDocs v2-oauth2-auth-code-flow.md); Okta rotates
// with a grace period, 30 s by default, in which the previous token stays valid, and
// takes a later reuse for theft (developer.okta.com refresh-tokens guide, "Grace period
// for token rotation", "Refresh token reuse detection"). The rest rotate single-use
// tokens and revoke the grant on reuse, Central Dispatch first.
func TestProfilesRotateRefreshTokensAsTheirProvidersDo(t *testing.T) {
	type want struct {
		newRefreshToken    bool
		reusedAtOnce       int // status of the spent token sent again at once
		reusedAfterAMinute int // and a minute after it was spent
	}
	strict := want{newRefreshToken: true, reusedAtOnce: http.StatusBadRequest, reusedAfterAMinute: http.StatusBadRequest}
	cases := map[Profile]want{
		ProfileCD:       strict,
		ProfileDex:      strict,
		ProfileKeycloak: strict,
		ProfileAuth0:    {newRefreshToken: true, reusedAtOnce: http.StatusForbidden, reusedAfterAMinute: http.StatusForbidden},
		ProfileOkta:     {newRefreshToken: true, reusedAtOnce: http.StatusOK, reusedAfterAMinute: http.StatusBadRequest},
		ProfileEntra:    {newRefreshToken: true, reusedAtOnce: http.StatusOK, reusedAfterAMinute: http.StatusOK},
		ProfileGoogle:   {newRefreshToken: false, reusedAtOnce: http.StatusOK, reusedAfterAMinute: http.StatusOK},
	}
	if len(cases) != len(Profiles()) {
		t.Fatalf("%d profiles, %d cases", len(Profiles()), len(cases))
	}
	for profile, want := range cases {
		t.Run(string(profile), func(t *testing.T) {
			for _, wait := range []time.Duration{0, time.Minute} {
				h := newHarness(t, withProfile(profile))
				rt := h.s.SeedGrant("login", "cust", []string{"marketplace", "offline_access"})
				status, body := h.post(refreshForm(rt), false)
				if status != http.StatusOK {
					t.Fatalf("first refresh: %d %v", status, body)
				}
				next, got := body["refresh_token"].(string)
				if got != want.newRefreshToken || (got && next == rt) {
					t.Errorf("refresh answer carries a new refresh_token: %v, want %v", got && next != rt, want.newRefreshToken)
				}
				h.now = h.now.Add(wait)
				wantStatus := map[time.Duration]int{0: want.reusedAtOnce, time.Minute: want.reusedAfterAMinute}[wait]
				if status, body = h.post(refreshForm(rt), false); status != wantStatus {
					t.Errorf("the first refresh token sent again %s later: %d %v, want %d", wait, status, body["error"], wantStatus)
				}
				// A reuse the provider takes for theft revokes the grant: its newest
				// refresh token dies too. Any other leaves it working.
				if next != "" {
					status, _ = h.post(refreshForm(next), false)
					if (status == http.StatusOK) != (wantStatus == http.StatusOK) {
						t.Errorf("the newest refresh token after that: %d, want it to work: %v", status, wantStatus == http.StatusOK)
					}
				}
			}
		})
	}
}

// Central Dispatch documents grant_type as a parameter of the authorization request that
// "should always contain the value authorization_code" (its Authorization Code Flow
// page): its profile refuses a request without it, or with another value, as
// invalid_request instead of showing the login page, so an operator that stopped
// sending it fails here. The other profiles' servers ignore the parameter, as RFC 6749
// §3.1 says of one a server does not know.
func TestTheAuthorizeEndpointRequiresGrantTypeAuthorizationCodeOnlyWhereCentralDispatchDoes(t *testing.T) {
	for _, p := range Profiles() {
		h := newHarness(t, withProfile(p))
		for name, gt := range map[string][]string{"grant_type=authorization_code": {"authorization_code"}, "no grant_type": nil, "grant_type=client_credentials": {"client_credentials"}} {
			q := authorizeQuery("challenge")
			q.Set("scope", "openid marketplace offline_access") // Dex requires openid
			q["grant_type"] = gt
			if gt == nil {
				q.Del("grant_type")
			}
			resp, err := http.Get(h.url + "/connect/authorize?" + q.Encode())
			if err != nil {
				t.Fatal(err)
			}
			page, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			refused := p == ProfileCD && name != "grant_type=authorization_code"
			switch {
			case refused && (resp.StatusCode != http.StatusBadRequest || !strings.Contains(string(page), "invalid_request")):
				t.Errorf("%s, %s: HTTP %d %q, want 400 invalid_request", p, name, resp.StatusCode, page)
			case !refused && resp.StatusCode != http.StatusOK:
				t.Errorf("%s, %s: HTTP %d %q, want the login page", p, name, resp.StatusCode, page)
			}
		}
	}
}
