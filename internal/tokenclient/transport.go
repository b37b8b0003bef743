package tokenclient

import (
	"bytes"
	"errors"
	"io"
	"net/http"
	"net/http/httptrace"
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
	// wrote is set once request bytes went to a connection: from then on the server may
	// have processed the request even if no answer arrives. Set from the transport's
	// writing goroutine, hence atomic.
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
type onceTransport struct {
	base http.RoundTripper
	ex   *exchange
}

func (t *onceTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	if t.ex.calls.Add(1) > 1 {
		// Nothing in this package sends twice; this holds should x/oauth2 ever change.
		return nil, errSentTwice
	}
	trace := &httptrace.ClientTrace{WroteHeaders: func() { t.ex.wrote.Store(true) }}
	req = req.Clone(httptrace.WithClientTrace(req.Context(), trace))
	// Without GetBody no transport below can rewind the form to send it again. net/http
	// re-sends a request whose HTTP/2 stream the peer reset (PROTOCOL_ERROR after a new
	// dial, REFUSED_STREAM after a backoff) though the whole form arrived, and one such
	// peer made this call send a refresh token hundreds of times a second. A request whose
	// body was never read may still be re-sent: nothing of it reached the server.
	req.GetBody = nil
	req.Header.Set("User-Agent", userAgent)
	t.ex.url = req.URL.String()
	resp, err := t.base.RoundTrip(req)
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

func is2xx(status int) bool { return status >= 200 && status < 300 }
