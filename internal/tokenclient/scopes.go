package tokenclient

import (
	"encoding/json"
	"regexp"
	"slices"
	"strings"
)

const (
	// maxScopeNames bounds what a refusal can put into a condition message.
	maxScopeNames = 16
	// maxScopeName is longer than any real scope (Google's are URLs) and short enough
	// for a message.
	maxScopeName = 128
)

// scopeLists find the scope names in the known shapes of scope refusals. Each pattern's
// first group is a list; splitList takes it apart.
var scopeLists = []struct {
	pattern *regexp.Regexp
	split   func(string) []string
}{
	// Google: "Some requested scopes were invalid. {valid=[a, b], invalid=[c, d]}"
	{regexp.MustCompile(`(?i)\binvalid=\[([^\]]*)\]`), splitCommas},
	// Dex: `Unrecognized scope(s) ["a" "b"]`, `Requested scopes contain unauthorized
	// scope(s): ["a"].`, `Missing required scope(s) ["openid"].`
	{regexp.MustCompile(`(?i)scope\(s\):?\s*\[([^\]]*)\]`), quoted},
	// Ory Hydra: "… is not allowed to request scope 'a'."
	{regexp.MustCompile(`(?i)request scope '([^']+)'`), splitSpaces},
	// Auth0: "Client has not been granted scopes: a, b"
	{regexp.MustCompile(`(?i)granted scopes:\s*(.+)$`), splitCommas},
	// Keycloak: "Invalid scopes: a b"
	{regexp.MustCompile(`(?i)^invalid scopes:\s*(.+)$`), splitSpaces},
	// Microsoft Entra ID: "AADSTS70011: … The scope a b isn't valid."
	{regexp.MustCompile(`(?i)\bthe scope (.+?) (?:isn't|is not) valid`), splitSpaces},
}

var quotedName = regexp.MustCompile(`"([^"]*)"`)

// scopesNamed returns the scope names a scope refusal named: the `scope` member of the
// error body (oidc-provider), or a list in a known shape of the description. Names are
// kept only when they are valid scope tokens and survive scrubbing untouched; nil when
// nothing could be read with confidence.
func scopesNamed(description string, body []byte, red redactor) []string {
	var fields struct {
		Scope string `json:"scope"`
	}
	if json.Unmarshal(body, &fields) == nil && strings.TrimSpace(fields.Scope) != "" {
		return cleanScopes(strings.Fields(fields.Scope), red)
	}
	return cleanScopes(scopesInDescription(description), red)
}

// ScopesIn returns the scope names an error description names, in the shapes the token
// endpoints and authorization endpoints of known providers use ("Unrecognized
// scope(s) [\"x\"]", "invalid=[x]", "Invalid scopes: x", …), scrubbed like a
// description. The callback can use it on an authorization response's
// error_description. It returns nil when it cannot read any name with confidence.
func ScopesIn(description string) []string {
	return cleanScopes(scopesInDescription(description), nil)
}

func scopesInDescription(description string) []string {
	d := strings.Join(strings.Fields(strings.Map(dropControl, description)), " ")
	for _, l := range scopeLists {
		if m := l.pattern.FindStringSubmatch(d); m != nil {
			return l.split(m[1])
		}
	}
	return nil
}

func splitCommas(s string) []string {
	return strings.FieldsFunc(s, func(r rune) bool { return r == ',' || r == ' ' })
}

func splitSpaces(s string) []string { return strings.Fields(s) }

func quoted(s string) []string {
	var out []string
	for _, m := range quotedName.FindAllStringSubmatch(s, -1) {
		out = append(out, m[1])
	}
	return out
}

// cleanScopes trims punctuation around each candidate and keeps the valid, unredacted,
// distinct ones, at most maxScopeNames.
func cleanScopes(candidates []string, red redactor) []string {
	var out []string
	for _, c := range candidates {
		name := strings.TrimRight(strings.Trim(c, `"'`), ".,;")
		if !isScopeToken(name) || red.scrub(name) != name || slices.Contains(out, name) {
			continue
		}
		if out = append(out, name); len(out) == maxScopeNames {
			break
		}
	}
	return out
}

// isScopeToken reports whether s is an RFC 6749 §3.3 scope-token:
// 1*( %x21 / %x23-5B / %x5D-7E ), here also at most maxScopeName long.
func isScopeToken(s string) bool {
	if s == "" || len(s) > maxScopeName {
		return false
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x21 || c > 0x7e || c == '"' || c == '\\' {
			return false
		}
	}
	return true
}
