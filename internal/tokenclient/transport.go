package tokenclient

import (
	"bytes"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptrace"
	"strings"
	"sync/atomic"
)

// exchange is the raw record of one token request. x/oauth2 reports some answers only
// as a string error; keeping the bytes lets every answer be classified exactly, and
// means a new refresh token in an otherwise unusable answer is never lost.
type exchange struct {
	max int64
	// url is where the request went, named in a refusal that does not say what was wrong.
	url string
	// calls counts RoundTrip calls: the second one is refused.
	calls atomic.Int32
	// wrote: the server may have processed the request, even if no whole answer
	// arrived: an answer began, or request bytes went out and nothing proves the server
	// did not act on them (see onceTransport).
	wrote  atomic.Bool
	status int
	header http.Header
	// read: the whole body (up to max) arrived.
	read   bool
	body   []byte
	tooBig bool
}

var (
	errSentTwice        = errors.New("refusing to send a token request a second time")
	errResponseTooLarge = errors.New("token response larger than the limit")
)

// onceTransport sends exactly one request per exchange, names the operator in
// User-Agent, and reads the whole (bounded) body while the request's deadline applies.
//
// Its clone of the request has no GetBody, so no transport below can rewind the form and
// send it again. net/http re-sends a request whose HTTP/2 stream the peer reset
// (PROTOCOL_ERROR after a new dial, REFUSED_STREAM after a backoff) though the whole form
// arrived, and one such peer made a single call send a refresh token hundreds of times a
// second. What net/http would have re-sent safely, onceTransport re-sends itself, once,
// and only when the server provably did not process the request: it was never written
// whole (a kept-alive connection the server had closed), or HTTP/2's graceful GOAWAY
// says the stream was not processed (RFC 9113 §6.8).
type onceTransport struct {
	base http.RoundTripper
	ex   *exchange
}

func (t *onceTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	if t.ex.calls.Add(1) > 1 {
		// Nothing in this package sends twice; this holds should x/oauth2 ever change.
		return nil, errSentTwice
	}
	t.ex.url = req.URL.String()
	resp, a, err := t.send(req, req.Body)
	if err != nil && a.unprocessed(err) && req.GetBody != nil && req.Context().Err() == nil {
		if body, berr := req.GetBody(); berr == nil {
			resp, a, err = t.send(req, body)
		}
	}
	// The server may have acted on the request once an answer began, or once any of it
	// went out and nothing proves the server did not act on it.
	t.ex.wrote.Store(err == nil || (a.started.Load() && !a.unprocessed(err)))
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	t.ex.status, t.ex.header = resp.StatusCode, resp.Header
	body, err := io.ReadAll(io.LimitReader(resp.Body, t.ex.max+1))
	if err != nil {
		return nil, err
	}
	if int64(len(body)) > t.ex.max {
		t.ex.tooBig = true
		return nil, errResponseTooLarge
	}
	t.ex.read, t.ex.body = true, body
	resp.Body = io.NopCloser(bytes.NewReader(body))
	return resp, nil
}

// send makes one attempt with body, recording in the returned attempt how far it got.
func (t *onceTransport) send(req *http.Request, body io.ReadCloser) (*http.Response, *attempt, error) {
	a := &attempt{}
	trace := &httptrace.ClientTrace{
		GotConn: func(info httptrace.GotConnInfo) {
			if tc, ok := info.Conn.(*tls.Conn); ok && tc.ConnectionState().NegotiatedProtocol == "h2" {
				a.h2.Store(true)
			}
		},
		WroteHeaders: func() { a.started.Store(true) },
	}
	r := req.Clone(httptrace.WithClientTrace(req.Context(), trace))
	r.Body, r.GetBody = body, nil
	r.Header.Set("User-Agent", userAgent)
	resp, err := t.base.RoundTrip(r)
	return resp, a, err
}

// attempt is how far one attempt got. Set from the transport's goroutines, hence atomic.
type attempt struct {
	// started: the request's headers were written (to the connection's buffer, at
	// least), so request bytes may have gone out.
	started atomic.Bool
	// h2: the attempt went over HTTP/2.
	h2 atomic.Bool
}

// goAwayUnprocessed is net/http's error for an HTTP/2 stream above the last stream id of
// the server's graceful GOAWAY, which RFC 9113 §6.8 says was not processed. net/http
// would re-send it by GetBody; without GetBody it reports this, with no error value to
// match but its text.
const goAwayUnprocessed = "Transport received Server's graceful shutdown GOAWAY"

// http1BytesWentOut is how net/http wraps an HTTP/1.1 connection's failure once bytes of
// the request had gone out; a failure before the first byte comes back as the write's
// own error.
const http1BytesWentOut = "transport connection broken"

// unprocessed reports whether the server provably did not process the attempt that
// failed with err: nothing of it was written; over HTTP/2, a graceful GOAWAY refused its
// stream; over HTTP/1.1, the connection's write failed before a byte of it went out, as
// when a kept-alive connection the server had closed is reused.
func (a *attempt) unprocessed(err error) bool {
	if !a.started.Load() {
		return true
	}
	if a.h2.Load() {
		return strings.Contains(err.Error(), goAwayUnprocessed)
	}
	var oe *net.OpError
	return errors.As(err, &oe) && oe.Op == "write" && !strings.Contains(err.Error(), http1BytesWentOut)
}

func is2xx(status int) bool { return status >= 200 && status < 300 }
