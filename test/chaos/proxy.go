package chaos

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"sync"
	"time"

	"github.com/credops/cd-credentials-operator/internal/cdsandbox"
)

// FaultMode is how the proxy misbehaves on a token request.
type FaultMode int

const (
	// AnswerStatus answers with Status (and Retry-After) without asking the sandbox.
	AnswerStatus FaultMode = iota + 1
	// DropAnswer forwards the request, so the sandbox consumes the refresh token, then
	// closes the client's connection without an answer.
	DropAnswer
	// HoldRequest keeps the request for Delay before forwarding it, and forwards it only
	// if the client is still waiting (a slow network in front of the identity server).
	HoldRequest
	// HoldAnswer forwards the request at once and keeps the sandbox's answer for Delay,
	// delivering it only if the client is still waiting (a slow identity server).
	HoldAnswer
	// Intercept calls Hook with the presented refresh token's hash before forwarding:
	// the request is mid-rotation (marked in flight, not yet answered) while Hook runs.
	Intercept
	// InterceptAnswer forwards the request at once and calls AnswerHook with the presented
	// token's hash and the sandbox's status before delivering the answer: the sandbox has
	// answered and the operator does not have the answer yet while AnswerHook runs.
	InterceptAnswer
)

// Fault is armed on the proxy and applies to the next Count refresh-token requests.
type Fault struct {
	Mode       FaultMode
	Count      int
	Status     int
	RetryAfter string
	Delay      time.Duration
	// Hook runs for Intercept; it must return quickly (the client is waiting).
	Hook func(presented string)
	// AnswerHook runs for InterceptAnswer; the answer waits for it, and is lost if the
	// client gives up meanwhile.
	AnswerHook func(presented string, status int)
	// Label names the kind of chaos event in the ledger; Event is its number.
	Label string
	Event int

	left int
	used chan struct{}
}

// Outcome is what became of one token request at the proxy.
type Outcome string

// Outcomes. Only OutcomeDelivered and OutcomeDeliveredLate put the sandbox's answer in
// the operator's hands.
const (
	OutcomeDelivered     Outcome = "delivered"
	OutcomeDeliveredLate Outcome = "delivered late"
	OutcomeDropped       Outcome = "dropped by the proxy after the sandbox answered"
	OutcomeLate          Outcome = "held by the proxy until the client gave up"
	OutcomeClientGone    Outcome = "client gone before the sandbox's answer"
	OutcomeAnsweredProxy Outcome = "answered by the proxy"
	OutcomeNotForwarded  Outcome = "held by the proxy; the client gave up before it was forwarded"
	OutcomeUpstreamError Outcome = "sandbox unreachable"
)

// Exchange is the proxy's record of one token request.
type Exchange struct {
	ID    string
	Start time.Time
	End   time.Time
	// PID is the manager process that sent the request (0 when unknown).
	PID       int
	GrantType string
	// Presented is the hash of the refresh token in the request (cdsandbox.TokenHash).
	Presented string
	// Fault and Event name the chaos event that faulted the request, if any.
	Fault     string
	Event     int
	Forwarded bool
	Status    int // the status the client was sent, 0 when none
	Outcome   Outcome
}

// lostAnswer reports whether the sandbox answered but the operator never got it.
func (e Exchange) lostAnswer() bool {
	return e.Forwarded && e.Outcome != OutcomeDelivered && e.Outcome != OutcomeDeliveredLate
}

// Proxy sits between the managers and the sandbox's token endpoint and injects faults.
type Proxy struct {
	URL      string
	upstream *url.URL
	client   *http.Client
	srv      *http.Server

	mu     sync.Mutex
	seq    int
	faults []*Fault
	ledger []Exchange
}

type connKey struct{}

// connInfo holds the process that sent a connection's requests, resolved once per
// connection. The lookup starts as the connection is accepted, while the client's socket
// certainly exists: a client that times out closes it, and a lookup started only when
// its request had been read could then find nothing (it did, on a loaded CI machine,
// with a 200 ms client timeout).
type connInfo struct {
	done chan struct{}
	pid  int
}

// StartProxy listens on a loopback port and forwards to upstream. pids maps a connection,
// by its client's address and the proxy's, to the process that owns the client's socket
// (nil: unknown).
func StartProxy(upstream string, pids func(client, server string) int) (*Proxy, error) {
	u, err := url.Parse(upstream)
	if err != nil {
		return nil, err
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	p := &Proxy{
		URL:      "http://" + l.Addr().String(),
		upstream: u,
		client:   &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 16}},
	}
	p.srv = &http.Server{
		Handler:           p,
		ReadHeaderTimeout: 10 * time.Second,
		ConnContext: func(ctx context.Context, c net.Conn) context.Context {
			if pids == nil {
				return ctx
			}
			ci := &connInfo{done: make(chan struct{})}
			go func() {
				defer close(ci.done)
				ci.pid = pids(c.RemoteAddr().String(), c.LocalAddr().String())
			}()
			return context.WithValue(ctx, connKey{}, ci)
		},
	}
	go func() { _ = p.srv.Serve(l) }()
	return p, nil
}

// Close stops the proxy.
func (p *Proxy) Close() error { return p.srv.Close() }

// Arm queues a fault and returns a channel closed once it has been applied Count times.
func (p *Proxy) Arm(f Fault) <-chan struct{} {
	f.left = max(f.Count, 1)
	f.used = make(chan struct{})
	p.mu.Lock()
	defer p.mu.Unlock()
	p.faults = append(p.faults, &f)
	return f.used
}

// Disarm drops the faults that were not applied (yet); it returns how many uses each
// left, by event number.
func (p *Proxy) Disarm() map[int]int {
	p.mu.Lock()
	defer p.mu.Unlock()
	left := map[int]int{}
	for _, f := range p.faults {
		left[f.Event] += f.left
	}
	p.faults = nil
	return left
}

// Ledger returns a copy of the records of finished exchanges.
func (p *Proxy) Ledger() []Exchange {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]Exchange(nil), p.ledger...)
}

func (p *Proxy) take(grantType string) *Fault {
	if grantType != "refresh_token" {
		return nil
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if len(p.faults) == 0 {
		return nil
	}
	f := p.faults[0]
	f.left--
	if f.left == 0 {
		p.faults = p.faults[1:]
		close(f.used)
	}
	return f
}

// ServeHTTP forwards token requests through the armed faults and anything else as is.
func (p *Proxy) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(io.LimitReader(r.Body, 1<<20))
	if err != nil {
		return
	}
	if r.Method != http.MethodPost || r.URL.Path != "/connect/token" {
		p.forwardPlain(w, r, body)
		return
	}
	form, _ := url.ParseQuery(string(body))
	p.mu.Lock()
	p.seq++
	ex := Exchange{ID: "chaos-" + strconv.Itoa(p.seq), Start: time.Now(), GrantType: form.Get("grant_type"), Presented: cdsandbox.TokenHash(form.Get("refresh_token"))}
	p.mu.Unlock()
	if ci, ok := r.Context().Value(connKey{}).(*connInfo); ok {
		<-ci.done
		ex.PID = ci.pid
	}
	f := p.take(ex.GrantType)
	if f != nil {
		ex.Fault, ex.Event = f.Label, f.Event
	}
	p.exchange(w, r, body, f, &ex)
	ex.End = time.Now()
	p.mu.Lock()
	p.ledger = append(p.ledger, ex)
	p.mu.Unlock()
}

// exchange carries out one token request under fault f (nil: none) and fills in ex.
func (p *Proxy) exchange(w http.ResponseWriter, r *http.Request, body []byte, f *Fault, ex *Exchange) {
	mode := FaultMode(0)
	if f != nil {
		mode = f.Mode
	}
	switch mode {
	case AnswerStatus:
		ex.Status, ex.Outcome = f.Status, OutcomeAnsweredProxy
		writeStatus(w, f.Status, f.RetryAfter)
		return
	case HoldRequest:
		if !waitOrGone(r.Context(), f.Delay) {
			ex.Outcome = OutcomeNotForwarded
			return
		}
	case Intercept:
		f.Hook(ex.Presented)
		if r.Context().Err() != nil {
			ex.Outcome = OutcomeNotForwarded
			return
		}
	}
	// The sandbox finishes the request even if the client goes away meanwhile: a real
	// identity server does not see a client's timeout either.
	resp, err := p.forward(context.WithoutCancel(r.Context()), r, body, ex.ID)
	if err != nil {
		ex.Outcome = OutcomeUpstreamError
		w.WriteHeader(http.StatusBadGateway)
		return
	}
	ex.Forwarded = true
	switch mode {
	case DropAnswer:
		ex.Outcome = OutcomeDropped
		if conn, _, err := http.NewResponseController(w).Hijack(); err == nil {
			_ = conn.Close()
			return
		}
		panic(http.ErrAbortHandler)
	case HoldAnswer:
		if !waitOrGone(r.Context(), f.Delay) {
			ex.Outcome = OutcomeLate
			return
		}
		ex.Outcome = OutcomeDeliveredLate
	case InterceptAnswer:
		f.AnswerHook(ex.Presented, resp.status)
		ex.Outcome = OutcomeDeliveredLate
	default:
		ex.Outcome = OutcomeDelivered
	}
	if r.Context().Err() != nil {
		if ex.Outcome == OutcomeDelivered {
			ex.Outcome = OutcomeClientGone
		} else {
			ex.Outcome = OutcomeLate
		}
		return
	}
	if !writeResponse(w, resp) {
		ex.Outcome = OutcomeClientGone
		return
	}
	ex.Status = resp.status
}

// upstreamResponse is the sandbox's answer, read in full.
type upstreamResponse struct {
	status int
	header http.Header
	body   []byte
}

func (p *Proxy) forward(ctx context.Context, r *http.Request, body []byte, id string) (*upstreamResponse, error) {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	u := *p.upstream
	u.Path, u.RawQuery = r.URL.Path, r.URL.RawQuery
	req, err := http.NewRequestWithContext(ctx, r.Method, u.String(), bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	req.Header = r.Header.Clone()
	if id != "" {
		req.Header.Set(cdsandbox.RequestIDHeader, id)
	}
	resp, err := p.client.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, err
	}
	return &upstreamResponse{status: resp.StatusCode, header: resp.Header, body: b}, nil
}

func (p *Proxy) forwardPlain(w http.ResponseWriter, r *http.Request, body []byte) {
	resp, err := p.forward(r.Context(), r, body, "")
	if err != nil {
		w.WriteHeader(http.StatusBadGateway)
		return
	}
	writeResponse(w, resp)
}

// writeResponse sends resp and reports whether it reached the connection.
func writeResponse(w http.ResponseWriter, resp *upstreamResponse) bool {
	for k, vs := range resp.header {
		if k == "Content-Length" || k == "Connection" {
			continue
		}
		for _, v := range vs {
			w.Header().Add(k, v)
		}
	}
	w.WriteHeader(resp.status)
	if _, err := w.Write(resp.body); err != nil {
		return false
	}
	return http.NewResponseController(w).Flush() == nil
}

func writeStatus(w http.ResponseWriter, status int, retryAfter string) {
	code := "server_error"
	switch status {
	case http.StatusServiceUnavailable:
		code = "temporarily_unavailable"
	case http.StatusTooManyRequests:
		code = "slow_down"
	}
	w.Header().Set("Content-Type", "application/json")
	if retryAfter != "" {
		w.Header().Set("Retry-After", retryAfter)
	}
	w.WriteHeader(status)
	_, _ = fmt.Fprintf(w, `{"error":%q}`, code)
}

// waitOrGone waits d and reports true, or false as soon as the client goes away.
func waitOrGone(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}
