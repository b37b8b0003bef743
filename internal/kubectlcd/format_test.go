package kubectlcd

import (
	"bytes"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

var now = time.Date(2026, 11, 23, 19, 0, 0, 0, time.UTC)

func at(d time.Duration) *metav1.Time { t := metav1.NewTime(now.Add(d)); return &t }

func TestRelative(t *testing.T) {
	cases := map[string]struct {
		when time.Duration
		want string
	}{
		"forty-one minutes ahead":       {41 * time.Minute, "in 41m"},
		"three hours and five ahead":    {3*time.Hour + 5*time.Minute, "in 3h5m"},
		"three minutes past":            {-3 * time.Minute, "3m ago"},
		"under a second ahead is now":   {300 * time.Millisecond, "now"},
		"two days ahead":                {49 * time.Hour, "in 2d1h"},
		"ninety seconds ahead in whole": {90*time.Second + 400*time.Millisecond, "in 90s"},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			if got := relative(now.Add(tc.when), now); got != tc.want {
				t.Errorf("relative = %q, want %q", got, tc.want)
			}
		})
	}
}

func TestTrim(t *testing.T) {
	cases := map[string]struct {
		in    string
		width int
		want  string
	}{
		"a short message is kept":             {"Token issued", 60, "Token issued"},
		"a long message is cut with dots":     {"The identity server refused this grant type for the client", 20, "The identity serv..."},
		"lines are joined":                    {"first line\n  second line", 60, "first line second line"},
		"runes are not split":                 {"ééééééééé", 5, "éé..."},
		"a message exactly the width is kept": {"12345", 5, "12345"},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			if got := trim(tc.in, tc.width); got != tc.want {
				t.Errorf("trim = %q, want %q", got, tc.want)
			}
		})
	}
}

func readyGrant() Summary {
	rotations := int64(8)
	return Summary{
		Kind: grantKind, Namespace: "team-a", Name: "acme", Ready: "True", Reason: "TokenIssued", Message: "The access token in Secret acme-token is current",
		Credential: "login", Rotations: &rotations, Subject: "dispatcher@acme.example", SecretName: "acme-token",
		GrantedScopes: []string{"marketplace", "offline_access"},
		ExpiresAt:     at(41 * time.Minute), RenewalTime: at(20 * time.Minute), LastRenewal: at(-5 * time.Minute),
		Generation: 1, ObservedGeneration: 1,
		Conditions: []metav1.Condition{
			{Type: "Ready", Status: "True", Reason: "TokenIssued", Message: "The access token in Secret acme-token is current", LastTransitionTime: *at(-2 * time.Hour)},
			{Type: "ReauthorizationRequired", Status: "False", Reason: "RefreshTokenValid", Message: "The grant holds a refresh token", LastTransitionTime: *at(-2 * time.Hour)},
		},
	}
}

func TestPrintTable(t *testing.T) {
	misused := Summary{Kind: credentialKind, Namespace: "team-a", Name: "cd-api-misused", Ready: "False", Reason: "GrantTypeNotAllowed",
		Message: "The identity server refused this grant type for the client: this client id is probably registered for the authorization-code flow"}
	waiting := Summary{Kind: grantKind, Namespace: "team-b", Name: "globex", Ready: "False", Reason: "AwaitingAuthorization", Message: "No refresh token in Secret globex-refresh"}
	cases := map[string]struct {
		all  bool
		want string
	}{
		"one namespace": {false, `
NAME                          READY   REASON                  EXPIRES   MESSAGE
cdcredential/cd-api-misused   False   GrantTypeNotAllowed     <none>    The identity server refused this grant type for the clien...
cdusergrant/acme              True    TokenIssued             in 41m    The access token in Secret acme-token is current
cdusergrant/globex            False   AwaitingAuthorization   <none>    No refresh token in Secret globex-refresh
`},
		"every namespace": {true, `
NAMESPACE   NAME                          READY   REASON                  EXPIRES   MESSAGE
team-a      cdcredential/cd-api-misused   False   GrantTypeNotAllowed     <none>    The identity server refused this grant type for the clien...
team-a      cdusergrant/acme              True    TokenIssued             in 41m    The access token in Secret acme-token is current
team-b      cdusergrant/globex            False   AwaitingAuthorization   <none>    No refresh token in Secret globex-refresh
`},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			var buf bytes.Buffer
			ss := []Summary{waiting, readyGrant(), misused}
			sortSummaries(ss)
			if err := printTable(&buf, ss, tc.all, now); err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(strings.TrimPrefix(tc.want, "\n"), buf.String()); diff != "" {
				t.Errorf("table (-want +got):\n%s", diff)
			}
		})
	}
}

func TestPrintDetail(t *testing.T) {
	cases := map[string]struct {
		summary func() Summary
		want    string
	}{
		"a Ready grant": {readyGrant, `
Name:             acme
Namespace:        team-a
Kind:             CDUserGrant
Credential:       login
Ready:            True (TokenIssued)
Message:          The access token in Secret acme-token is current
Secret:           acme-token
Expires:          2026-11-23T19:41:00Z (in 41m)
Renewal:          2026-11-23T19:20:00Z (in 20m)
Last rotation:    2026-11-23T18:55:00Z (5m ago)
Rotations:        8
Subject:          dispatcher@acme.example
Granted scopes:   marketplace offline_access
Conditions:
  TYPE                      STATUS   REASON              AGE    MESSAGE
  Ready                     True     TokenIssued         120m   The access token in Secret acme-token is current
  ReauthorizationRequired   False    RefreshTokenValid   120m   The grant holds a refresh token
`},
		"a grant awaiting its customer, behind its spec, after failures": {func() Summary {
			return Summary{
				Kind: grantKind, Namespace: "team-b", Name: "globex", Ready: "False", Reason: "AuthorizationDenied", Message: "The customer did not authorize the integration: access_denied",
				Credential: "login", Rotations: new(int64), Generation: 3, ObservedGeneration: 2,
				AuthorizationURL:         "https://id.example.com/connect/authorize?client_id=c&state=S",
				ReauthorizationRequested: "2026-11-23T18:50:00Z",
				LastFailure:              map[string]any{"lastFailureTime": "2026-11-23T18:58:00Z", "failedAttempts": int64(2)},
			}
		}, `
Name:                        globex
Namespace:                   team-b
Kind:                        CDUserGrant
Credential:                  login
Ready:                       False (AuthorizationDenied)
Message:                     The customer did not authorize the integration: access_denied
Observed generation:         2 (the spec is at 3: the operator has not caught up yet)
Secret:                      <none>
Expires:                     <none>
Renewal:                     <none>
Last rotation:               <none>
Rotations:                   0
Subject:                     <none>
Granted scopes:              <none>
Reauthorization requested:   2026-11-23T18:50:00Z (10m ago)
Authorization URL:           https://id.example.com/connect/authorize?client_id=c&state=S
Conditions: <none>
Last failure:
  failedAttempts:    2
  lastFailureTime:   2026-11-23T18:58:00Z (2m ago)
`},
		"a client-credentials credential": {func() Summary {
			return Summary{Kind: credentialKind, Namespace: "team-a", Name: "cd-api", Ready: "True", Reason: "TokenIssued", Flow: "ClientCredentials", ClientID: "57fd8af0-api",
				SecretName: "cd-api-token", ExpiresAt: at(time.Hour), RenewalTime: at(40 * time.Minute), LastRenewal: at(-20 * time.Minute)}
		}, `
Name:             cd-api
Namespace:        team-a
Kind:             CDCredential
Flow:             ClientCredentials
Client ID:        57fd8af0-api
Ready:            True (TokenIssued)
Secret:           cd-api-token
Expires:          2026-11-23T20:00:00Z (in 60m)
Renewal:          2026-11-23T19:40:00Z (in 40m)
Last issued:      2026-11-23T18:40:00Z (20m ago)
Granted scopes:   <none>
Conditions: <none>
`},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			var buf bytes.Buffer
			if err := printDetail(&buf, tc.summary(), now); err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(strings.TrimPrefix(tc.want, "\n"), buf.String()); diff != "" {
				t.Errorf("detail (-want +got):\n%s", diff)
			}
		})
	}
}

func TestParseObjectRef(t *testing.T) {
	cases := map[string]struct {
		arg       string
		wantKinds []string
		wantName  string
		wantErr   string
	}{
		"a bare name may be either kind":       {arg: "acme", wantKinds: []string{credentialKind, grantKind}, wantName: "acme"},
		"the table's own form for a grant":     {arg: "cdusergrant/acme", wantKinds: []string{grantKind}, wantName: "acme"},
		"a short name":                         {arg: "cdcred/cd-api", wantKinds: []string{credentialKind}, wantName: "cd-api"},
		"a fully qualified plural":             {arg: "cdusergrants.cd.credops.io/acme", wantKinds: []string{grantKind}, wantName: "acme"},
		"another kind is refused":              {arg: "secret/acme", wantErr: `unknown kind "secret"`},
		"a kind without a name is refused":     {arg: "cdgrant/", wantErr: "is not NAME or KIND/NAME"},
		"more than one slash is not a name":    {arg: "cdgrant/a/b", wantErr: "is not NAME or KIND/NAME"},
		"kinds are matched case-insensitively": {arg: "CDUserGrant/acme", wantKinds: []string{grantKind}, wantName: "acme"},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			kinds, n, err := parseObjectRef(tc.arg)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err %v, want %q", err, tc.wantErr)
				}
				return
			}
			if err != nil || n != tc.wantName || !cmp.Equal(kinds, tc.wantKinds) {
				t.Errorf("got %v %q %v, want %v %q", kinds, n, err, tc.wantKinds, tc.wantName)
			}
		})
	}
}
