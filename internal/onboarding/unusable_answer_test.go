package onboarding

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/credops/cd-credentials-operator/internal/tokenclient"
)

// oddAnswerServer opens a real session at the sandbox for each code, and hands the
// refresh token back the way an identity server does whose 200 the operator cannot use
// as a whole: the answer goes through the real token client, from a real HTTP answer.
type oddAnswerServer struct {
	*identityServer
	answer map[string]any // the 200's JSON; "refresh_token" is filled in
}

func (s *oddAnswerServer) Exchange(ctx context.Context, ep tokenclient.Endpoint, code, redirectURL, verifier string) (*tokenclient.Token, error) {
	rt := s.sb.SeedGrant("login-client", "customer", []string{"marketplace", "offline_access"})
	s.mu.Lock()
	s.issued = append(s.issued, rt)
	s.mu.Unlock()
	body := map[string]any{"refresh_token": rt}
	for k, v := range s.answer {
		body[k] = v
	}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(body)
	}))
	defer srv.Close()
	ep.TokenURL = srv.URL + "/connect/token"
	c := tokenclient.New(tokenclient.Options{AllowedHosts: []string{strings.TrimPrefix(srv.URL, "http://")}})
	return c.Exchange(ctx, ep, code, redirectURL, verifier)
}

// README (Onboarding): "A refresh token the callback obtained and does not store, for
// this or any other reason, is a live session nobody holds: it is revoked at the
// CDCredential's spec.revocationURL". A 200 that carries a refresh token next to an
// access token the operator refuses (token_type "mac", no access_token, one with a
// space) comes back from the token client as an *Error holding the refresh token: the
// code was accepted, so the login failed for its answer, and the session it opened is
// revoked. The callback used to drop it and say the code was refused.
func TestARefreshTokenInAnUnusableExchangeAnswerIsRevoked(t *testing.T) {
	cases := map[string]map[string]any{
		"token_type mac":               {"access_token": "at-1", "token_type": "mac", "expires_in": 3600},
		"no access_token":              {"token_type": "Bearer", "expires_in": 3600},
		"an access token with a space": {"access_token": "at 1", "token_type": "Bearer", "expires_in": 3600},
	}
	for name, answer := range cases {
		t.Run(name, func(t *testing.T) {
			now := time.Date(2026, 11, 30, 18, 0, 0, 0, time.UTC)
			idp := &oddAnswerServer{identityServer: newIdentityServer(t), answer: answer}
			o := newOnboarding(t, now, idp, nil)
			idp.serve(t, o)
			o.cb.Tokens = idp // serve does not touch Tokens; keep the odd one
			rec := o.login("code-A", o.link())
			rt := idp.only(t)
			s := &corev1.Secret{}
			stored := o.client.Get(t.Context(), client.ObjectKey{Namespace: "ns", Name: "acme-refresh"}, s) == nil && string(s.Data["refresh_token"]) == rt
			a := o.current(t).Status.LastAuthorization
			if live := idp.live(t, rt); live && !stored {
				t.Errorf("the login's refresh token is neither stored nor revoked: a live session nobody holds (HTTP %d, lastAuthorization %+v)", rec.Code, a)
			}
			if a == nil || !strings.Contains(a.Message, "accepted the authorization code") || !strings.Contains(a.Message, "was revoked") {
				t.Errorf("lastAuthorization %+v; want it to say the code was accepted, the answer unusable and the session revoked", a)
			}
		})
	}
}
