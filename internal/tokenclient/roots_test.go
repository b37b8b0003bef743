package tokenclient

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"io"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-logr/logr"
	"github.com/go-logr/logr/funcr"
	"github.com/google/go-cmp/cmp"
	clocktesting "k8s.io/utils/clock/testing"
)

func selfSignedCA(t *testing.T, name string) (*x509.Certificate, []byte) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	c, _ := x509.ParseCertificate(der)
	return c, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
}

// TestRootsWithTrustsEveryCertificateOfTheBundleOrRefusesIt: a bundle may hold several
// CAs (an OpenShift trusted-CA ConfigMap does), and each is trusted; a file that would
// add nothing is refused, so the manager does not start trusting less than it was told.
func TestRootsWithTrustsEveryCertificateOfTheBundleOrRefusesIt(t *testing.T) {
	dir := t.TempDir()
	a, aPEM := selfSignedCA(t, "Corp CA A")
	b, bPEM := selfSignedCA(t, "Corp CA B")
	write := func(name string, data []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, data, 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	bundle := write("bundle.pem", append(append([]byte("# corp roots\n"), aPEM...), bPEM...))
	roots, err := RootsWith(bundle)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []*x509.Certificate{a, b} {
		if _, err := c.Verify(x509.VerifyOptions{Roots: roots}); err != nil {
			t.Errorf("%s from the bundle is not trusted: %v", c.Subject.CommonName, err)
		}
	}

	for _, tc := range []struct{ name, file, want string }{
		{"a missing file", filepath.Join(dir, "missing.pem"), "no such file"},
		{"a file of no PEM certificate", write("key.pem", pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: []byte{1}})), "holds no PEM certificate"},
		{"a damaged certificate", write("bad.pem", pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: []byte{1}})), "certificate 1:"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := RootsWith(tc.file); err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("RootsWith(%s) = %v, want an error saying %q", tc.file, err, tc.want)
			}
		})
	}
}

// hostSignedBy is a TLS server on 127.0.0.1 whose certificate ca (of key caKey) signs.
// It counts the connections opened to it.
func hostSignedBy(t *testing.T, ca *x509.Certificate, caKey *ecdsa.PrivateKey) (*httptest.Server, *atomic.Int32) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.CreateCertificate(rand.Reader, &x509.Certificate{SerialNumber: big.NewInt(2),
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)},
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}, ca, &key.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	var conns atomic.Int32
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) {}))
	srv.TLS = &tls.Config{Certificates: []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: key}}}
	srv.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateNew {
			conns.Add(1)
		}
	}
	srv.StartTLS()
	t.Cleanup(srv.Close)
	return srv, &conns
}

// TestACAFileTransportKeepsItsConnectionsWhileTheFileIsUnchanged: looking at the file
// costs no TLS handshake; only new contents replace the transport, and its connections.
func TestACAFileTransportKeepsItsConnectionsWhileTheFileIsUnchanged(t *testing.T) {
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "Corp CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign}
	caDER, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	ca, _ := x509.ParseCertificate(caDER)
	caPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER})
	srv, conns := hostSignedBy(t, ca, caKey)
	file := filepath.Join(t.TempDir(), "ca.crt")
	if err := os.WriteFile(file, caPEM, 0o644); err != nil {
		t.Fatal(err)
	}
	clk := clocktesting.NewFakeClock(time.Now())
	tr, err := NewCAFileTransport(file, clk, logr.Discard())
	if err != nil {
		t.Fatal(err)
	}
	get := func() {
		t.Helper()
		resp, err := (&http.Client{Transport: tr}).Get(srv.URL)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
	get()
	clk.Step(CAFileCheckInterval)
	get()
	if n := conns.Load(); n != 1 {
		t.Errorf("%d connections after a check of the unchanged file, want 1", n)
	}
	if err := os.WriteFile(file, append(caPEM, '\n'), 0o644); err != nil {
		t.Fatal(err)
	}
	clk.Step(CAFileCheckInterval)
	get()
	if n := conns.Load(); n != 2 {
		t.Errorf("%d connections after the file changed, want 2 (a transport with the new roots)", n)
	}
}

// TestAnUnusableCAFileIsLoggedOncePerChange: the file is looked at every half minute,
// and a broken one would otherwise fill the log with the same line.
func TestAnUnusableCAFileIsLoggedOncePerChange(t *testing.T) {
	_, caPEM := selfSignedCA(t, "Corp CA")
	file := filepath.Join(t.TempDir(), "ca.crt")
	write := func(data []byte) {
		t.Helper()
		if err := os.WriteFile(file, data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write(caPEM)
	var lines []string
	log := funcr.New(func(prefix, args string) { lines = append(lines, args) }, funcr.Options{})
	clk := clocktesting.NewFakeClock(time.Now())
	tr, err := NewCAFileTransport(file, clk, log)
	if err != nil {
		t.Fatal(err)
	}
	check := func() {
		clk.Step(CAFileCheckInterval)
		tr.current()
	}
	check() // unchanged: nothing to say
	write(nil)
	check()
	check()
	write(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: []byte{1}}))
	check()
	check()
	write(caPEM)
	check()
	var got []string
	for _, l := range lines {
		switch {
		case strings.Contains(l, "holds no PEM certificate"):
			got = append(got, "empty")
		case strings.Contains(l, "certificate 1:"):
			got = append(got, "damaged")
		case strings.Contains(l, "changed"):
			got = append(got, "changed")
		default:
			got = append(got, l)
		}
	}
	if diff := cmp.Diff([]string{"empty", "damaged", "changed"}, got); diff != "" {
		t.Errorf("log lines (-want +got):\n%s", diff)
	}
}
