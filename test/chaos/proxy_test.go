package chaos

import (
	"bufio"
	"context"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"k8s.io/apimachinery/pkg/util/wait"

	"github.com/credops/cd-credentials-operator/internal/cdsandbox"
)

// proxied is a sandbox (journal on) behind a proxy that knows this process's sockets.
func proxied(t *testing.T) (*cdsandbox.Server, *Proxy) {
	t.Helper()
	s := cdsandbox.New(cdsandbox.Options{Clients: []cdsandbox.Client{{ID: clientID, Secret: clientSecret, GrantTypes: []string{"authorization_code"}, RedirectURIs: []string{redirectURI}}}})
	s.EnableJournal()
	srv := httptest.NewServer(s)
	t.Cleanup(srv.Close)
	p, err := StartProxy(srv.URL, func(client, server string) int { return socketOwner(client, server, []int{os.Getpid()}) })
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = p.Close() })
	return s, p
}

// post sends a refresh through the proxy with a client timeout, as the manager does, and
// returns the status and Retry-After, or 0 when no answer came.
func post(p *Proxy, rt string, timeout time.Duration) (int, string) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	form := url.Values{"grant_type": {"refresh_token"}, "refresh_token": {rt}, "client_id": {clientID}, "client_secret": {clientSecret}}
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, p.URL+"/connect/token", strings.NewReader(form.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, ""
	}
	resp.Body.Close()
	return resp.StatusCode, resp.Header.Get("Retry-After")
}

// ledger waits for n exchanges to be recorded (an exchange ends a moment after the
// client saw its outcome).
func ledger(t *testing.T, p *Proxy, n int) []Exchange {
	t.Helper()
	var got []Exchange
	_ = wait.PollUntilContextTimeout(context.Background(), 10*time.Millisecond, 10*time.Second, true, func(context.Context) (bool, error) {
		got = p.Ledger()
		return len(got) >= n, nil
	})
	if len(got) != n {
		t.Fatalf("%d exchanges in the ledger, want %d", len(got), n)
	}
	return got
}

func TestTheProxyInjectsFaultsAndRecordsWhatBecameOfEachAnswer(t *testing.T) {
	type result struct {
		Status     int
		RetryAfter string
		Outcome    Outcome
		Forwarded  bool
		Consumed   bool
		Hooked     bool
	}
	cases := map[string]struct {
		fault  *Fault
		client time.Duration
		want   result
	}{
		"without a fault the answer is delivered": {
			want: result{Status: 200, Outcome: OutcomeDelivered, Forwarded: true, Consumed: true},
		},
		"a dropped answer leaves the token consumed and the client without an answer": {
			fault: &Fault{Mode: DropAnswer},
			want:  result{Outcome: OutcomeDropped, Forwarded: true, Consumed: true},
		},
		"a 429 burst answers without asking the sandbox": {
			fault: &Fault{Mode: AnswerStatus, Status: 429, RetryAfter: "2"},
			want:  result{Status: 429, RetryAfter: "2", Outcome: OutcomeAnsweredProxy},
		},
		"a request held past the client's timeout never reaches the sandbox": {
			fault:  &Fault{Mode: HoldRequest, Delay: 2 * time.Second},
			client: time.Second,
			want:   result{Outcome: OutcomeNotForwarded},
		},
		"an answer held past the client's timeout is consumed and lost": {
			fault:  &Fault{Mode: HoldAnswer, Delay: 2 * time.Second},
			client: time.Second,
			want:   result{Outcome: OutcomeLate, Forwarded: true, Consumed: true},
		},
		"an answer held less than the client's timeout arrives late": {
			fault: &Fault{Mode: HoldAnswer, Delay: 50 * time.Millisecond},
			want:  result{Status: 200, Outcome: OutcomeDeliveredLate, Forwarded: true, Consumed: true},
		},
		"an intercepted request runs the hook before it reaches the sandbox": {
			fault: &Fault{Mode: Intercept},
			want:  result{Status: 200, Outcome: OutcomeDelivered, Forwarded: true, Consumed: true, Hooked: true},
		},
		"an intercepted answer runs the hook after the sandbox consumed the token, then arrives": {
			fault: &Fault{Mode: InterceptAnswer},
			want:  result{Status: 200, Outcome: OutcomeDeliveredLate, Forwarded: true, Consumed: true, Hooked: true},
		},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			s, p := proxied(t)
			rt := s.SeedGrant(clientID, "cust", []string{"offline_access"})
			hooked := ""
			if tc.fault != nil {
				f := *tc.fault
				f.Label = name
				f.Hook = func(presented string) {
					if len(s.Journal(0)) == 0 {
						hooked = presented
					}
				}
				f.AnswerHook = func(presented string, status int) {
					if j := s.Journal(0); len(j) == 1 && j[0].Consumed && status == 200 {
						hooked = presented
					}
				}
				used := p.Arm(f)
				defer func() {
					select {
					case <-used:
					default:
						t.Errorf("the fault was not used")
					}
				}()
			}
			if tc.client == 0 {
				tc.client = 5 * time.Second
			}
			status, retryAfter := post(p, rt, tc.client)
			ex := ledger(t, p, 1)[0]
			journal := s.Journal(0)
			got := result{Status: status, RetryAfter: retryAfter, Outcome: ex.Outcome, Forwarded: ex.Forwarded,
				Consumed: len(journal) == 1 && journal[0].Consumed, Hooked: hooked == cdsandbox.TokenHash(rt)}
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("(-want +got):\n%s", diff)
			}
			if ex.Presented != cdsandbox.TokenHash(rt) || ex.PID != os.Getpid() {
				t.Errorf("ledger names token %s from pid %d, want %s from pid %d", ex.Presented, ex.PID, cdsandbox.TokenHash(rt), os.Getpid())
			}
			if len(journal) == 1 && journal[0].RequestID != ex.ID {
				t.Errorf("the journal's request id %q does not join the ledger's %q", journal[0].RequestID, ex.ID)
			}
		})
	}
}

// A client that times out closes its socket, after which no process owns it: the proxy
// must name the sender while the connection is fresh, not once its request has been read.
func TestTheProxyNamesTheSenderAsSoonAsItConnects(t *testing.T) {
	s := cdsandbox.New(cdsandbox.Options{})
	srv := httptest.NewServer(s)
	t.Cleanup(srv.Close)
	looked := make(chan string, 1)
	p, err := StartProxy(srv.URL, func(client, server string) int {
		looked <- client
		return socketOwner(client, server, []int{os.Getpid()})
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = p.Close() })

	conn, err := net.Dial("tcp", strings.TrimPrefix(p.URL, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	// Nothing has been sent yet.
	select {
	case remote := <-looked:
		if remote != conn.LocalAddr().String() {
			t.Errorf("looked up %s, want the client's %s", remote, conn.LocalAddr())
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the proxy did not look up the sender of a connection that has sent nothing yet")
	}
	// The request the connection then sends is charged to this process.
	if _, err := conn.Write([]byte("POST /connect/token HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: 24\r\n\r\ngrant_type=refresh_token")); err != nil {
		t.Fatal(err)
	}
	if _, err := http.ReadResponse(bufio.NewReader(conn), nil); err != nil {
		t.Fatal(err)
	}
	if ex := ledger(t, p, 1)[0]; ex.PID != os.Getpid() {
		t.Errorf("ledger names pid %d, want %d", ex.PID, os.Getpid())
	}
}

func TestABurstFaultsExactlyCountRequestsThenDisarms(t *testing.T) {
	s, p := proxied(t)
	rt := s.SeedGrant(clientID, "cust", []string{"offline_access"})
	used := p.Arm(Fault{Mode: AnswerStatus, Status: 503, Count: 2})
	var statuses []int
	for range 3 {
		st, _ := post(p, rt, 5*time.Second)
		statuses = append(statuses, st)
	}
	<-used
	if diff := cmp.Diff([]int{503, 503, 200}, statuses); diff != "" {
		t.Errorf("statuses (-want +got):\n%s", diff)
	}
	p.Arm(Fault{Mode: AnswerStatus, Status: 500, Count: 3, Event: 7})
	if diff := cmp.Diff(map[int]int{7: 3}, p.Disarm()); diff != "" {
		t.Errorf("uses left by event (-want +got):\n%s", diff)
	}
}

// The table as a busy machine prints it: the proxy listening on port 8080 (1F90); its
// client's connection from port 50000 (C350); before it, the same local port's earlier
// connection to another server waiting out TIME_WAIT (state 06, no inode), and a live
// connection of another process from the same port to etcd on 2379 (094B), which the
// kernel allows because the peers differ. Only the whole pair of addresses names the
// client's socket (CI once charged a request to no process: the first line with its
// local address was a TIME_WAIT one).
func TestFindInodeReadsTheKernelsSocketTable(t *testing.T) {
	table := `  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1111 1 0000000000000000 100 0 0 10 0
   1: 0100007F:C350 0100007F:1F91 06 00000000:00000000 03:00000A3C 00000000     0        0 0 3 0000000000000000
   2: 0100007F:C350 0100007F:094B 01 00000000:00000000 00:00000000 00000000     0        0 3333 1 0000000000000000 20 4 30 10 -1
   3: 0100007F:C350 0100007F:1F90 01 00000000:00000000 00:00000000 00000000     0        0 2222 1 0000000000000000 20 4 30 10 -1
   4: 0100007F:1F90 0100007F:C350 01 00000000:00000000 00:00000000 00000000     0        0 4444 1 0000000000000000 20 4 30 10 -1
`
	cases := map[string]struct{ local, remote, want string }{
		"the client socket of a loopback connection": {"127.0.0.1:50000", "127.0.0.1:8080", "2222"},
		"the proxy's end of it":                      {"127.0.0.1:8080", "127.0.0.1:50000", "4444"},
		"the same port's live connection elsewhere":  {"127.0.0.1:50000", "127.0.0.1:2379", "3333"},
		"a connection waiting out TIME_WAIT":         {"127.0.0.1:50000", "127.0.0.1:8081", ""},
		"no such socket":                             {"127.0.0.1:50001", "127.0.0.1:8080", ""},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			got, err := findInode(strings.NewReader(table), tc.local, tc.remote)
			if err != nil || got != tc.want {
				t.Errorf("findInode(%s, %s) = %q, %v; want %q", tc.local, tc.remote, got, err, tc.want)
			}
		})
	}
}

func TestAPlanIsReplayedFromItsSeedAndCoversEveryKind(t *testing.T) {
	a := Plan(42, 60, 50, 0, time.Second, 0)
	if diff := cmp.Diff(a, Plan(42, 60, 50, 0, time.Second, 0)); diff != "" {
		t.Errorf("the same seed gave another plan (-first +second):\n%s", diff)
	}
	if cmp.Equal(a, Plan(43, 60, 50, 0, time.Second, 0)) {
		t.Errorf("another seed gave the same plan")
	}
	seen := map[Kind]bool{}
	for _, ev := range a[:len(Kinds())] {
		seen[ev.Kind] = true
	}
	if len(seen) != len(Kinds()) {
		t.Errorf("the first %d events cover %d kinds, want all", len(Kinds()), len(seen))
	}
	outages := 0
	for _, ev := range Plan(42, 300, 50, 0, time.Second, 1) {
		if ev.Kind == APIOutage {
			outages++
		}
	}
	if outages != 1 {
		t.Errorf("a plan capped at 1 outage has %d", outages)
	}
	for _, ev := range a {
		if ev.Grant < 0 || ev.Grant >= 50 || ev.Burst < 1 || ev.Gap < 0 || ev.Gap >= time.Second {
			t.Errorf("event out of bounds: %+v", ev)
		}
	}
}
