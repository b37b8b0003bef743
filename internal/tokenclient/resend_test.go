package tokenclient

import (
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/net/http2"
)

// A token host (nginx after keepalive_requests, Envoy at max_connection_duration, any
// server in graceful shutdown) sends GOAWAY with a last stream id below a stream the
// client just opened: RFC 9113 §6.8 says that stream was not processed, so sending it
// again on a new connection is no second send of the token. Without GetBody net/http
// gives up, and the request was reported as Ambiguous (the token may be spent): a grant
// burnt its one resend for nothing. onceTransport sends it again itself.
func TestAStreamAGracefulGoAwayRefusedIsSentAgainOnce(t *testing.T) {
	ln, roots := h2Listener(t)
	var conns atomic.Int32
	var mu sync.Mutex
	processed := 0
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		mu.Lock()
		if strings.Contains(string(b), "refresh_token="+testRefresh) {
			processed++
		}
		mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		_, _ = io.WriteString(w, `{"access_token":"at-1","token_type":"Bearer","expires_in":3600,"refresh_token":"rt-next-0002"}`)
	})
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			if conns.Add(1) == 1 {
				go goAwayFirstStream(c)
				continue
			}
			go func() {
				if err := c.(*tls.Conn).Handshake(); err != nil {
					c.Close()
					return
				}
				(&http2.Server{}).ServeConn(c, &http2.ServeConnOpts{Handler: h})
			}()
		}
	}()
	host := ln.Addr().String()
	c := New(Options{AllowedHosts: []string{host}, Transport: newTransport(roots), Timeout: 5 * time.Second})
	ep := Endpoint{TokenURL: "https://" + host + "/connect/token", AuthMethod: ClientSecretPost, ClientID: testClientID, ClientSecret: testSecret}
	tok, err := c.Refresh(context.Background(), ep, testRefresh)
	if err != nil {
		var te *Error
		amb := false
		if e, ok := err.(*Error); ok {
			te, amb = e, e.Ambiguous
		}
		t.Fatalf("a stream the server refused by GOAWAY (never processed) failed the refresh: %v (Ambiguous=%v, %+v)", err, amb, te)
	}
	if tok.RefreshToken != "rt-next-0002" {
		t.Errorf("token %+v", tok)
	}
	mu.Lock()
	defer mu.Unlock()
	if processed != 1 {
		t.Errorf("processed %d times", processed)
	}
}

// goAwayFirstStream reads the client's first request and answers it with a graceful
// GOAWAY whose last stream id (0) says the request was not processed.
func goAwayFirstStream(c net.Conn) {
	serveFrames(c, func(fr *http2.Framer, f http2.Frame) {
		if _, ok := f.(*http2.HeadersFrame); ok {
			_ = fr.WriteGoAway(0, http2.ErrCodeNo, nil)
		}
	})
}

// deadAfterFirst is a kept-alive connection the server closed while idle: its first
// use works, any later write fails before a byte leaves (EPIPE after the peer's RST), or,
// with partly, after half of it went out.
type deadAfterFirst struct {
	net.Conn
	idle, partly atomic.Bool
}

func (c *deadAfterFirst) Write(b []byte) (int, error) {
	if !c.idle.Load() {
		return c.Conn.Write(b)
	}
	n := 0
	if c.partly.Load() {
		n, _ = c.Conn.Write(b[:len(b)/2])
	}
	return n, &net.OpError{Op: "write", Net: "tcp", Err: io.ErrClosedPipe}
}

// dyingConnections is a transport whose connections die after their first use, as
// deadAfterFirst, when kill is called; dialed counts the connections it made.
type dyingConnections struct {
	*http.Transport
	mu    sync.Mutex
	conns []*deadAfterFirst
}

func newDyingConnections() *dyingConnections {
	t := &dyingConnections{Transport: http.DefaultTransport.(*http.Transport).Clone()}
	d := &net.Dialer{}
	t.DialContext = func(ctx context.Context, network, addr string) (net.Conn, error) {
		c, err := d.DialContext(ctx, network, addr)
		if err != nil {
			return nil, err
		}
		t.mu.Lock()
		defer t.mu.Unlock()
		dc := &deadAfterFirst{Conn: c}
		t.conns = append(t.conns, dc)
		return dc, nil
	}
	return t
}

// kill makes every connection dialed so far fail its next write, before a byte or after
// half of them.
func (t *dyingConnections) kill(partly bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	for _, c := range t.conns {
		c.partly.Store(partly)
		c.idle.Store(true)
	}
}

func (t *dyingConnections) dialed() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return len(t.conns)
}

// HTTP/1.1: net/http re-sends a request on a new connection when not one byte of it was
// written to a reused one (nothingWrittenError), but only if it can rewind the body with
// GetBody. Nothing reached the server, yet without GetBody the refresh failed, and as
// Ambiguous (WroteHeaders fires when the headers enter the write buffer). onceTransport
// sends a request that never went out again itself.
func TestARequestNeverWrittenIsSentAgainOnce(t *testing.T) {
	s := newIDP(t, reply(200, nil, tokenJSON(nil)))
	tr := newDyingConnections()
	c := s.client(Options{Transport: tr})
	if _, err := c.Refresh(context.Background(), s.endpoint(ClientSecretPost), testRefresh); err != nil {
		t.Fatal(err)
	}
	tr.kill(false) // the server closed the idle connection; the client has not noticed yet
	_, err := c.Refresh(context.Background(), s.endpoint(ClientSecretPost), "rt-next-0002")
	if err != nil {
		amb := false
		if e, ok := err.(*Error); ok {
			amb = e.Ambiguous
		}
		t.Fatalf("a request of which not a byte was written failed: %v (Ambiguous=%v)", err, amb)
	}
	s.assertRequests(t, 2)
}

// Bytes of the request went out before the connection failed: the server may hold the
// whole form, so the request is never sent again, and its failure is ambiguous.
func TestARequestPartlyWrittenIsNeverSentAgain(t *testing.T) {
	s := newIDP(t, reply(200, nil, tokenJSON(nil)))
	tr := newDyingConnections()
	c := s.client(Options{Transport: tr})
	if _, err := c.Refresh(context.Background(), s.endpoint(ClientSecretPost), testRefresh); err != nil {
		t.Fatal(err)
	}
	tr.kill(true)
	_, err := c.Refresh(context.Background(), s.endpoint(ClientSecretPost), "rt-next-0002")
	var te *Error
	if !errors.As(err, &te) || !te.Ambiguous {
		t.Errorf("a request half of which went out: err %v, want an ambiguous *Error", err)
	}
	if n := tr.dialed(); n != 1 {
		t.Errorf("%d connections dialed: the request half of which went out was sent again", n)
	}
}
