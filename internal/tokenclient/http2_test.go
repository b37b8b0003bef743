package tokenclient

import (
	"bytes"
	"compress/gzip"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/net/http2"
)

// h2Resetter is a raw HTTP/2 token endpoint: it reads each whole request (headers and
// body, so a refresh token in it has arrived and may be spent) and answers the stream
// with RST_STREAM of the given code, as a proxy that forwarded the request upstream and
// then failed may do.
type h2Resetter struct {
	ln    net.Listener
	code  http2.ErrCode
	mu    sync.Mutex
	got   [][]byte
	roots *x509.CertPool
}

// h2Listener is a TLS listener offering only HTTP/2 (ALPN h2), for a raw HTTP/2 server
// written frame by frame, and the roots that trust its certificate (httptest's).
func h2Listener(t *testing.T) (net.Listener, *x509.CertPool) {
	t.Helper()
	hs := httptest.NewUnstartedServer(http.NotFoundHandler())
	hs.StartTLS()
	cert := hs.TLS.Certificates[0]
	roots := x509.NewCertPool()
	roots.AddCert(hs.Certificate())
	hs.Close()
	ln, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{Certificates: []tls.Certificate{cert}, NextProtos: []string{"h2"}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	return ln, roots
}

func newH2Resetter(t *testing.T, code http2.ErrCode) *h2Resetter {
	t.Helper()
	ln, roots := h2Listener(t)
	s := &h2Resetter{ln: ln, code: code, roots: roots}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go s.serve(c)
		}
	}()
	return s
}

// serveFrames speaks raw HTTP/2 on c: it reads the client's preface, sends and
// acknowledges settings, and hands every other frame the client sends to each, until
// the connection ends.
func serveFrames(c net.Conn, each func(fr *http2.Framer, f http2.Frame)) {
	defer c.Close()
	preface := make([]byte, len(http2.ClientPreface))
	if _, err := io.ReadFull(c, preface); err != nil {
		return
	}
	fr := http2.NewFramer(c, c)
	if err := fr.WriteSettings(); err != nil {
		return
	}
	for {
		f, err := fr.ReadFrame()
		if err != nil {
			return
		}
		if sf, ok := f.(*http2.SettingsFrame); ok {
			if !sf.IsAck() {
				_ = fr.WriteSettingsAck()
			}
			continue
		}
		each(fr, f)
	}
}

func (s *h2Resetter) serve(c net.Conn) {
	bodies := map[uint32]*bytes.Buffer{}
	serveFrames(c, func(fr *http2.Framer, f http2.Frame) {
		switch f := f.(type) {
		case *http2.HeadersFrame:
			bodies[f.StreamID] = &bytes.Buffer{}
		case *http2.DataFrame:
			b := bodies[f.StreamID]
			b.Write(f.Data())
			if f.StreamEnded() {
				s.mu.Lock()
				s.got = append(s.got, append([]byte(nil), b.Bytes()...))
				s.mu.Unlock()
				_ = fr.WriteRSTStream(f.StreamID, s.code)
			}
		}
	})
}

func (s *h2Resetter) received() [][]byte {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([][]byte(nil), s.got...)
}

// A refresh token is sent at most once, whatever happens. Over HTTP/2 (which
// newTransport negotiates with every https token host) net/http re-sends a request whose
// stream the peer reset with PROTOCOL_ERROR or REFUSED_STREAM, rewinding the body with
// GetBody, which x/oauth2's http.NewRequest sets; after PROTOCOL_ERROR it dials a new
// connection each time, so one RoundTrip call sent the token hundreds of times a second
// until the request's timeout.
func TestARefreshIsNeverResentByTheHTTP2Transport(t *testing.T) {
	for _, code := range []http2.ErrCode{http2.ErrCodeProtocol, http2.ErrCodeRefusedStream} {
		t.Run(code.String(), func(t *testing.T) {
			s := newH2Resetter(t, code)
			host := s.ln.Addr().String()
			c := New(Options{AllowedHosts: []string{host}, Transport: newTransport(s.roots), Timeout: 2500 * time.Millisecond})
			ep := Endpoint{TokenURL: "https://" + host + "/connect/token", AuthMethod: ClientSecretPost, ClientID: testClientID, ClientSecret: testSecret}
			_, err := c.Refresh(context.Background(), ep, testRefresh)
			var te *Error
			if !errors.As(err, &te) {
				t.Fatalf("err %v is not a *Error", err)
			}
			got := s.received()
			withToken := 0
			for _, b := range got {
				if strings.Contains(string(b), "refresh_token="+testRefresh) {
					withToken++
				}
			}
			if withToken != 1 {
				// On the old code: 800 sends in 2.5 s after PROTOCOL_ERROR, 3 after REFUSED_STREAM.
				t.Errorf("the refresh token reached the server %d times (want exactly once); the caller was told %+v", withToken, *te)
			}
			if !te.Ambiguous {
				t.Errorf("a reset after the whole form arrived was reported as %+v; want Ambiguous: the server may have spent the token", *te)
			}
		})
	}
}

// The response limit holds after decompression: a small gzipped answer that inflates to
// 64 MiB is cut at the limit, not read whole into memory.
func TestAGzipBombIsCutAtTheResponseLimit(t *testing.T) {
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	_, _ = zw.Write([]byte(`{"access_token":"at","refresh_token":"rt","x":"`))
	zeros := make([]byte, 1<<20)
	for i := 0; i < 64; i++ {
		_, _ = zw.Write(zeros)
	}
	_ = zw.Close()
	s := newIDP(t, reply(200, map[string]string{"Content-Encoding": "gzip"}, buf.String()))
	_, err := s.client(Options{}).Refresh(context.Background(), s.endpoint(ClientSecretPost), testRefresh)
	var te *Error
	if !errors.As(err, &te) || !strings.Contains(te.Description, "larger than") {
		t.Errorf("err %v", err)
	}
}
