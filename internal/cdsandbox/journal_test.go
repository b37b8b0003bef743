package cdsandbox

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	"k8s.io/apimachinery/pkg/util/wait"
)

// journalHarness is a sandbox with the journal on, served over HTTP.
func journalHarness(t *testing.T) (*Server, string) {
	t.Helper()
	s := New(Options{
		Clients:        []Client{{ID: "login", Secret: "login-secret", GrantTypes: []string{"authorization_code"}, RedirectURIs: []string{redirect}}},
		AccessTokenTTL: 90 * time.Second,
	})
	s.EnableJournal()
	srv := httptest.NewServer(s)
	t.Cleanup(srv.Close)
	s.SetIssuer(srv.URL)
	return s, srv.URL
}

// refresh presents rt with a request id and a client timeout, and returns the new
// refresh token ("" when there is none or the answer never came).
func refresh(t *testing.T, base, rt, id string, timeout time.Duration) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, base+"/connect/token", strings.NewReader(refreshForm(rt).Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set(RequestIDHeader, id)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return ""
	}
	defer resp.Body.Close()
	var body map[string]any
	_ = json.NewDecoder(resp.Body).Decode(&body)
	next, _ := body["refresh_token"].(string)
	return next
}

// settled waits until the journal holds n entries: an answer is settled once its
// handler returned, which for a dropped connection is a moment after the client saw it.
func settled(t *testing.T, s *Server, n int) []JournalEntry {
	t.Helper()
	var got []JournalEntry
	_ = wait.PollUntilContextTimeout(context.Background(), 10*time.Millisecond, 5*time.Second, true, func(context.Context) (bool, error) {
		got = s.Journal(0)
		return len(got) >= n, nil
	})
	return got
}

func TestTheJournalRecordsWhatHappenedToEachRefreshToken(t *testing.T) {
	cases := map[string]struct {
		fault  *Fault
		twice  bool
		client time.Duration
		want   []JournalEntry
	}{
		"a refresh answered in full is consumed and delivered": {
			want: []JournalEntry{{Consumed: true, Status: 200, Delivered: true}},
		},
		"a spent refresh token presented again is a reuse that revokes the grant": {
			twice: true,
			want: []JournalEntry{
				{Consumed: true, Status: 200, Delivered: true},
				{Reused: true, Revoked: true, Status: 400, Error: "invalid_grant", Delivered: true},
			},
		},
		"an answer the sandbox drops after processing is consumed but not delivered": {
			fault: &Fault{After: true, Mode: FaultDropConnection},
			want:  []JournalEntry{{Consumed: true, Status: 200}},
		},
		"an answer replaced by a 503 after processing is consumed but not delivered": {
			fault: &Fault{After: true, Mode: FaultStatus, Status: 503},
			want:  []JournalEntry{{Consumed: true, Status: 200}},
		},
		"an answer that comes after the client gave up is consumed but not delivered": {
			fault:  &Fault{After: true, Mode: FaultHang, Delay: 2 * time.Second},
			client: 200 * time.Millisecond,
			want:   []JournalEntry{{Consumed: true, Status: 200}},
		},
		"a request held before processing and then answered is recorded when processed": {
			fault: &Fault{Mode: FaultHang, Delay: 50 * time.Millisecond},
			want:  []JournalEntry{{Consumed: true, Status: 200, Delivered: true}},
		},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			s, base := journalHarness(t)
			rt := s.SeedGrant("login", "cust", []string{"offline_access"})
			if tc.fault != nil {
				s.InjectFault(*tc.fault)
			}
			if tc.client == 0 {
				tc.client = 5 * time.Second
			}
			next := refresh(t, base, rt, "req-1", tc.client)
			if tc.twice {
				refresh(t, base, rt, "req-2", tc.client)
			}
			got := settled(t, s, len(tc.want))
			if len(got) != len(tc.want) {
				t.Fatalf("%d journal entries, want %d: %+v", len(got), len(tc.want), got)
			}
			s.mu.Lock()
			grant := s.refresh[rt].grant.id
			s.mu.Unlock()
			for i := range tc.want {
				w := &tc.want[i]
				w.Seq, w.RequestID, w.GrantType, w.ClientID = int64(i+1), fmt.Sprintf("req-%d", i+1), "refresh_token", "login"
				w.Grant, w.Presented = grant, TokenHash(rt)
				if w.Consumed {
					w.IssuedRefresh = got[i].IssuedRefresh
				}
			}
			ignore := cmpopts.IgnoreFields(JournalEntry{}, "Time", "IssuedAccess", "AccessExpiresAt")
			if diff := cmp.Diff(tc.want, got, ignore); diff != "" {
				t.Errorf("journal (-want +got):\n%s", diff)
			}
			if next != "" && got[0].IssuedRefresh != TokenHash(next) {
				t.Errorf("the journal names a different successor than the answer carried")
			}
			if c := got[0]; c.Consumed && (c.IssuedAccess == "" || c.AccessExpiresAt.IsZero()) {
				t.Errorf("a consumed refresh does not name its access token and expiry: %+v", c)
			}
		})
	}
}

func TestTheJournalIsServedReadOnlyWithoutTokens(t *testing.T) {
	s, base := journalHarness(t)
	rt := s.SeedGrant("login", "cust", []string{"offline_access"})
	next := refresh(t, base, rt, "a", 5*time.Second)
	refresh(t, base, next, "b", 5*time.Second)
	settled(t, s, 2)

	get := func(query string) (int, string) {
		resp, err := http.Get(base + JournalPath + query)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	status, all := get("")
	var entries []JournalEntry
	if err := json.Unmarshal([]byte(all), &entries); status != 200 || err != nil || len(entries) != 2 {
		t.Fatalf("GET %s: HTTP %d, %d entries, %v", JournalPath, status, len(entries), err)
	}
	if _, page := get("?after=1"); !strings.Contains(page, `"requestID":"b"`) || strings.Contains(page, `"requestID":"a"`) {
		t.Errorf("after=1 did not page past the first entry: %s", page)
	}
	for _, token := range []string{rt, next, "login-secret"} {
		if strings.Contains(all, token) {
			t.Errorf("the journal holds a token or secret")
		}
	}
	resp, err := http.PostForm(base+JournalPath, url.Values{})
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode == http.StatusOK {
		t.Errorf("POST %s answered 200: the journal must be read-only", JournalPath)
	}
}

func TestTheJournalIsOffUnlessEnabled(t *testing.T) {
	h := newHarness(t)
	resp, err := http.Get(h.url + JournalPath)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNotFound {
		t.Errorf("GET %s without --journal: HTTP %d, want 404", JournalPath, resp.StatusCode)
	}
	if got := h.s.Journal(0); got != nil {
		t.Errorf("Journal() without EnableJournal = %v, want nil", got)
	}
}
