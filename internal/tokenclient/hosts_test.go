package tokenclient

import (
	"context"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// TestHostsOffTheAllowListAreNeverContacted routes every dial, whatever the host, to a
// real server that counts connections: a refused request must reach neither.
func TestHostsOffTheAllowListAreNeverContacted(t *testing.T) {
	s := newIDP(t, reply(200, nil, tokenJSON(nil)))
	var dials atomic.Int32
	everythingToS := &http.Transport{DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
		dials.Add(1)
		return (&net.Dialer{}).DialContext(ctx, network, s.Listener.Addr().String())
	}}
	cases := map[string]struct {
		url  string
		want string
	}{
		"a host not on the list":                        {s.URL + "/connect/token", "host 127.0.0.1 is not on the allowed token hosts"},
		"a look-alike host":                             {"https://id.centraldispatch.com.evil.example/connect/token", "host id.centraldispatch.com.evil.example is not on the allowed token hosts"},
		"plain http to an allowed host not on loopback": {"http://id.centraldispatch.com/connect/token", "plain http is only allowed to loopback hosts; use https for id.centraldispatch.com"},
		"a host:port entry for another port":            {"https://pinned.example:8443/token", "host pinned.example is not on the allowed token hosts"},
		"a host:port entry and no port (443)":           {"https://pinned.example/token", "host pinned.example is not on the allowed token hosts"},
		"another scheme":                                {"ftp://id.centraldispatch.com/connect/token", "the token URL scheme ftp is not https"},
		"a relative URL":                                {"/connect/token", "the token URL is not an absolute http(s) URL"},
		"no URL at all":                                 {"", "the token URL is not an absolute http(s) URL"},
		"credentials in the URL":                        {"https://user:pw@id.centraldispatch.com/connect/token", "the token URL must not carry credentials"},
	}
	c := New(Options{AllowedHosts: []string{"id.centraldispatch.com", "pinned.example:9443"}, HTTPClient: &http.Client{Transport: everythingToS}})
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			ep := s.endpoint(ClientSecretPost)
			ep.TokenURL = tc.url
			_, err := c.ClientCredentials(context.Background(), ep)
			if diff := cmp.Diff(&Error{Kind: KindHostNotAllowed, Description: tc.want}, err, ignoreCause); diff != "" {
				t.Errorf("error (-want +got):\n%s", diff)
			}
		})
	}
	if n := s.conns.Load(); n != 0 {
		t.Errorf("%d connections reached the server, want none", n)
	}
	if n := dials.Load(); n != 0 {
		t.Errorf("%d dials, want none", n)
	}
}

func TestAllowedHostsMatchHowPeopleWriteThem(t *testing.T) {
	s := newIDP(t, reply(200, nil, tokenJSON(nil)))
	port := s.URL[strings.LastIndex(s.URL, ":")+1:]
	cases := map[string]struct {
		allowed []string
		url     string
	}{
		"a bare host allows any port":        {[]string{"127.0.0.1"}, s.URL},
		"a host:port entry":                  {[]string{"127.0.0.1:" + port}, s.URL},
		"host names match in any case":       {[]string{"LocalHost"}, "http://localHOST:" + port},
		"an entry with spaces around it":     {[]string{"  localhost  "}, "http://localhost:" + port},
		"a pasted URL counts as its host":    {[]string{"http://127.0.0.1:" + port + "/connect/token"}, s.URL},
		"an IPv6 loopback entry in brackets": {[]string{"[::1]"}, "http://[::1]:" + port},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			ep := s.endpoint(ClientSecretPost)
			ep.TokenURL = tc.url + "/connect/token"
			c := New(Options{AllowedHosts: tc.allowed, HTTPClient: &http.Client{Transport: &http.Transport{
				DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
					return (&net.Dialer{}).DialContext(ctx, network, s.Listener.Addr().String())
				},
			}}})
			if _, err := c.ClientCredentials(context.Background(), ep); err != nil {
				t.Fatal(err)
			}
		})
	}
}

func TestHTTPSWorksThroughTheGivenTransport(t *testing.T) {
	s := &idp{respond: reply(200, nil, tokenJSON(nil))}
	s.Server = httptest.NewTLSServer(http.HandlerFunc(s.serve))
	t.Cleanup(s.Close)
	c := New(Options{AllowedHosts: []string{s.host()}, HTTPClient: s.Client()})
	tok, err := c.ClientCredentials(context.Background(), s.endpoint(ClientSecretBasic))
	if err != nil {
		t.Fatal(err)
	}
	if tok.AccessToken != "at-new-0001" {
		t.Errorf("AccessToken %q", tok.AccessToken)
	}
	s.assertRequests(t, 1)
}

func TestIsLoopback(t *testing.T) {
	want := map[string]bool{
		"localhost": true, "127.0.0.1": true, "127.1.2.3": true, "::1": true,
		"localhost.evil.example": false, "10.0.0.1": false, "id.centraldispatch.com": false, "": false, "0.0.0.0": false,
	}
	got := map[string]bool{}
	for host := range want {
		got[host] = isLoopback(host)
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("isLoopback (-want +got):\n%s", diff)
	}
}
