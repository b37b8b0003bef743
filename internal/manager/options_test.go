package manager

import (
	"strings"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/client-go/rest"
)

// Shards left on the default Lease would elect one leader among them: every other
// shard's CRs would get no token, and nothing would say why. Each shard's default Lease
// is its own, and the same selector always names the same Lease (a restart, a replica).
func TestEachShardElectsItsOwnLeaderByDefault(t *testing.T) {
	lease := func(selector string) string {
		t.Helper()
		sel, err := labels.Parse(selector)
		if err != nil {
			t.Fatal(err)
		}
		return withDefaults(Options{ShardSelector: sel}).LeaderElectionID
	}
	if got := lease(""); got != Defaults.LeaderElectionID {
		t.Errorf("unsharded Lease %q, want %q", got, Defaults.LeaderElectionID)
	}
	a, b := lease("shard=a"), lease("shard=b")
	if a == b || a == Defaults.LeaderElectionID || a != lease("shard=a") {
		t.Errorf("shard=a Lease %q, shard=b %q: want two stable Leases of their own", a, b)
	}
	if got := withDefaults(Options{ShardSelector: labels.SelectorFromSet(labels.Set{"shard": "a"}), LeaderElectionID: "mine"}).LeaderElectionID; got != "mine" {
		t.Errorf("a given --leader-election-id became %q", got)
	}
}

func TestTimingsNoProcessCanRunSafelyWithAreRefused(t *testing.T) {
	cases := map[string]struct {
		opts Options
		want string
	}{
		"the defaults":                     {Options{LeaderElection: true}, ""},
		"a negative in-flight timeout":     {Options{HolderTimeout: -time.Minute}, "--in-flight-timeout -1m0s is negative"},
		"a negative token request timeout": {Options{TokenRequestTimeout: -time.Second}, "--token-request-timeout -1s is negative"},
		// A new leader would take the old leader's live mark while its request is out.
		"an in-flight timeout shorter than a token request": {Options{LeaderElection: true, HolderTimeout: 5 * time.Second}, "--in-flight-timeout 5s must be longer than --token-request-timeout 20s"},
		"a short in-flight timeout without leader election": {Options{HolderTimeout: 5 * time.Second}, ""},
		// A link is replaced once it has a minute left: at a minute or less, on every pass,
		// a status write a second for each grant waiting for its customer.
		"an authorization link of a minute":  {Options{AuthorizationStateTTL: time.Minute}, "--authorization-link-ttl 1m0s is shorter than 2m0s"},
		"an authorization link of 2 minutes": {Options{AuthorizationStateTTL: 2 * time.Minute}, ""},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			err := checkTimings(withDefaults(tc.opts))
			if tc.want == "" {
				if err != nil {
					t.Fatalf("refused: %v", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err %v, want %q", err, tc.want)
			}
		})
	}
}

// --callback-url without --callback-bind-address used to start a manager with the
// callback off, offering no login link, and nothing said why.
func TestACallbackURLWithoutABindAddressIsRefused(t *testing.T) {
	_, err := New(t.Context(), &rest.Config{Host: "https://127.0.0.1:1"}, Options{CallbackURL: "https://cd-callback.example.com/callback"})
	if err == nil || !strings.Contains(err.Error(), "--callback-url \"https://cd-callback.example.com/callback\" needs --callback-bind-address") {
		t.Fatalf("err %v, want the missing --callback-bind-address named", err)
	}
}
