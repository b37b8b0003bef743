package tokenclient

import (
	"encoding/json"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
)

const (
	testClientID = "client-1"
	testSecret   = "s3cret-Value+42"
	testRefresh  = "rt-spent-0001"
)

// idp is a tiny token endpoint speaking the real protocol: a form-encoded POST in, the
// answer of respond out. It counts requests and connections, so a test can prove that
// something was sent exactly once, or never.
type idp struct {
	*httptest.Server
	requests atomic.Int32
	conns    atomic.Int32
	mu       sync.Mutex
	seen     []seenRequest
	respond  http.HandlerFunc
}

// seenRequest is what arrived: where the client's credentials were, and the form.
type seenRequest struct {
	Method, ContentType, UserAgent string
	Form                           url.Values
	BasicUser, BasicPass           string
	HasBasic                       bool
}

func newIDP(t *testing.T, respond http.HandlerFunc) *idp {
	t.Helper()
	s := &idp{respond: respond}
	s.Server = httptest.NewUnstartedServer(http.HandlerFunc(s.serve))
	s.Config.ConnState = func(_ net.Conn, state http.ConnState) {
		if state == http.StateNew {
			s.conns.Add(1)
		}
	}
	s.Start()
	t.Cleanup(s.Close)
	return s
}

func (s *idp) serve(w http.ResponseWriter, r *http.Request) {
	s.requests.Add(1)
	_ = r.ParseForm()
	seen := seenRequest{Method: r.Method, ContentType: r.Header.Get("Content-Type"), UserAgent: r.Header.Get("User-Agent"), Form: r.PostForm}
	seen.BasicUser, seen.BasicPass, seen.HasBasic = r.BasicAuth()
	s.mu.Lock()
	s.seen = append(s.seen, seen)
	s.mu.Unlock()
	s.respond(w, r)
}

func (s *idp) last(t *testing.T) seenRequest {
	t.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.seen) == 0 {
		t.Fatal("the endpoint received no request")
	}
	return s.seen[len(s.seen)-1]
}

func (s *idp) host() string {
	return strings.TrimPrefix(strings.TrimPrefix(s.URL, "http://"), "https://")
}

// tokenPath is where s.endpoint sends token requests.
const tokenPath = "/connect/token"

func (s *idp) endpoint(m AuthMethod) Endpoint {
	return Endpoint{TokenURL: s.URL + tokenPath, AuthMethod: m, ClientID: testClientID, ClientSecret: testSecret, Scopes: []string{"marketplace"}}
}

// at is want as this server's answer: an expected Error names its Endpoint by path
// alone, as the server's address changes from run to run.
func (s *idp) at(want *Error) *Error {
	if want == nil || want.Endpoint == "" {
		return want
	}
	w := *want
	w.Endpoint = s.URL + w.Endpoint
	return &w
}

func (s *idp) client(opts Options) *Client {
	opts.AllowedHosts = append(opts.AllowedHosts, s.host())
	return New(opts)
}

func (s *idp) assertRequests(t *testing.T, want int32) {
	t.Helper()
	if got := s.requests.Load(); got != want {
		t.Errorf("the endpoint received %d requests, want exactly %d", got, want)
	}
}

// reply answers with a fixed status, headers and body; JSON unless a header says not.
func reply(status int, header map[string]string, body string) http.HandlerFunc {
	return func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		for k, v := range header {
			w.Header().Set(k, v)
		}
		w.WriteHeader(status)
		_, _ = w.Write([]byte(body))
	}
}

// tokenJSON is a Central Dispatch success answer, with fields changed (nil deletes).
func tokenJSON(changes map[string]any) string {
	m := map[string]any{
		"access_token":  "at-new-0001",
		"token_type":    "Bearer",
		"expires_in":    1800,
		"scope":         "marketplace offline_access",
		"refresh_token": "rt-new-0002",
	}
	for k, v := range changes {
		if v == nil {
			delete(m, k)
		} else {
			m[k] = v
		}
	}
	b, _ := json.Marshal(m)
	return string(b)
}
