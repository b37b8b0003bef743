package tokenclient

import (
	"errors"
	"slices"
	"strings"
	"testing"
	"time"
	"unicode"
	"unicode/utf8"
)

func TestLifetime(t *testing.T) {
	cases := map[string]struct {
		in   string
		want time.Duration
	}{
		"seconds":                     {"3600", time.Hour},
		"with spaces":                 {" 60 ", time.Minute},
		"a decimal is cut to seconds": {"90.9", 90 * time.Second},
		"an exponent":                 {"3.6e3", time.Hour},
		"missing":                     {"", 0},
		"zero":                        {"0", 0},
		"negative":                    {"-1", 0},
		"under a second":              {"0.9", 0},
		"not a number":                {"soon", 0},
		"hex is not a number here":    {"0x10", 0},
		"NaN":                         {"NaN", 0},
		"infinity":                    {"Inf", 0},
		"a JSON null":                 {"null", 0},
		"a day exactly":               {"86400", 24 * time.Hour},
		"more than a day":             {"86401", 24 * time.Hour},
		"beyond float64":              {"1e400", 24 * time.Hour},
		"beyond float64, negative":    {"-1e400", 0},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			if got := lifetime(tc.in); got != tc.want {
				t.Errorf("lifetime(%q) = %s, want %s", tc.in, got, tc.want)
			}
		})
	}
}

// refresh_expires_in (Keycloak's refresh token lifetime) is read as leniently as
// expires_in, and 0 or absent means the refresh token has no limit of its own
// (Keycloak's offline tokens answer 0).
func TestRefreshExpiresIn(t *testing.T) {
	cases := map[string]struct {
		contentType, body string
		want              time.Duration
	}{
		"Keycloak's answer under the default SSO Session Idle": {"application/json", tokenJSON(map[string]any{"expires_in": 3600, "refresh_expires_in": 1800}), 30 * time.Minute},
		"a quoted number":                       {"application/json", tokenJSON(map[string]any{"refresh_expires_in": "1800"}), 30 * time.Minute},
		"a decimal":                             {"application/json", tokenJSON(map[string]any{"refresh_expires_in": 1800.5}), 30 * time.Minute},
		"a form-encoded answer":                 {"application/x-www-form-urlencoded", "access_token=at&refresh_token=rt&expires_in=3600&refresh_expires_in=1800", 30 * time.Minute},
		"absent: no limit":                      {"application/json", tokenJSON(nil), 0},
		"0, Keycloak's offline token: no limit": {"application/json", tokenJSON(map[string]any{"refresh_expires_in": 0}), 0},
		"not a number: no limit":                {"application/json", tokenJSON(map[string]any{"refresh_expires_in": "soon"}), 0},
		"more than a day is a day":              {"application/json", tokenJSON(map[string]any{"refresh_expires_in": 10 * 86400}), 24 * time.Hour},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			tok, err := parseTokenResponse(tc.contentType, []byte(tc.body), nil)
			if err != nil {
				t.Fatal(err)
			}
			if tok.RefreshLifetime != tc.want {
				t.Errorf("RefreshLifetime = %s, want %s", tok.RefreshLifetime, tc.want)
			}
		})
	}
}

// FuzzParseTokenResponse feeds token endpoint answers to the parser and to the code
// that describes error bodies: neither may panic, a usable token must really be
// usable, and nothing that reaches a message may be long or carry control characters.
func FuzzParseTokenResponse(f *testing.F) {
	seeds := []struct{ contentType, body string }{
		{"application/json", tokenJSON(nil)},
		{"application/json", tokenJSON(map[string]any{"expires_in": "600", "scope": []any{"a", 1, nil}})},
		{"application/json", `{"access_token":"x","expires_in":1e400,"token_type":"BEARER"}`},
		{"application/json", `{"access_token":"x","expires_in":"NaN"}`},
		{"application/json", `{"refresh_token":"rt","token_type":"mac"}`},
		{"application/json", `{"access_token":{"nested":true},"refresh_token":["rt"]}`},
		{"application/json", `{"message":"eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ4In0.c2lnbmF0dXJl\u0007"}`},
		{"application/json", `{"access_token":"at\r\nX: 1","refresh_token":"rt\u0000"}`},
		{"application/json", `{"access_token":"a b","refresh_token":"rt é"}`},
		{"application/json", `{}`},
		{"application/json", `[]`},
		{"application/json", `null`},
		{"application/json", `"string"`},
		{"application/json", ``},
		{"text/html; charset=utf-8", `<html><title>502</title></html>`},
		{"text/plain", `access_token=at&expires_in=60&refresh_token=rt`},
		{"application/x-www-form-urlencoded", `access_token=%zz;refresh_token=rt`},
		{"", "\xff\xfe{\"access_token\":\"x\"}"},
		{"multipart/form-data; boundary=", `--`},
		{"invalid_scope", `Unrecognized scope(s) ["a" "b\"c"] {valid=[x], invalid=[y, z]} Invalid scopes: q`},
		{"access_denied", `{"scope":"a b","error_description":"Client has not been granted scopes: r, s"}`},
	}
	for _, s := range seeds {
		f.Add(s.contentType, []byte(s.body))
	}
	f.Fuzz(func(t *testing.T, contentType string, body []byte) {
		tok, err := parseTokenResponse(contentType, body, []string{"marketplace"})
		switch {
		case err == nil && (tok == nil || !b64token.MatchString(tok.AccessToken) || tok.TokenType != "Bearer"):
			t.Fatalf("accepted an unusable token %+v", tok)
		case tok != nil && tok.RefreshToken != "" && !validRefreshToken(tok.RefreshToken):
			t.Fatalf("handed back a refresh token that cannot be stored: %q", tok.RefreshToken)
		case err != nil && !slices.ContainsFunc(parserErrors, func(e error) bool { return errors.Is(err, e) }):
			t.Fatalf("error %v is not one of the parser's own (it might quote the body)", err)
		case tok != nil && (tok.Lifetime < 0 || tok.Lifetime > maxLifetime || tok.Lifetime%time.Second != 0):
			t.Fatalf("lifetime %s out of range", tok.Lifetime)
		}
		for _, msg := range []string{describeBody(contentType, body, newRedactor(Endpoint{ClientSecret: "s"})), scrubPatterns(string(body))} {
			checkMessage(t, msg)
		}
		// The same bytes as an error description: classified without a panic, and any
		// scope names read from it are valid scope tokens fit for a message.
		if p := kindFor(400, contentType, string(body), nil); p.kind == "" {
			t.Fatal("no kind for a 400")
		}
		names := scopesNamed(string(body), body, newRedactor(Endpoint{ClientSecret: "s"}))
		if len(names) > maxScopeNames {
			t.Fatalf("%d scope names", len(names))
		}
		for _, name := range names {
			if !isScopeToken(name) {
				t.Fatalf("scope name %q is not a scope token", name)
			}
			checkMessage(t, name)
		}
	})
}

// parserErrors are the only errors parseTokenResponse may return: fixed texts, none
// quoting the body.
var parserErrors = []error{errNotJSON, errNoAccessToken, errNotBearer, errBadAccessToken, errBadRefreshToken}

func checkMessage(t *testing.T, msg string) {
	t.Helper()
	if n := utf8.RuneCountInString(msg); n > maxDescription {
		t.Fatalf("message of %d runes", n)
	}
	if !utf8.ValidString(msg) {
		t.Fatalf("message %q is not UTF-8", msg)
	}
	if strings.IndexFunc(msg, func(r rune) bool { return unicode.IsControl(r) || unicode.Is(unicode.Cf, r) }) >= 0 {
		t.Fatalf("message %q carries control characters", msg)
	}
}
