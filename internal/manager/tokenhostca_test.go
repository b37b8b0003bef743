package manager

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"io"
	"log"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	clocktesting "k8s.io/utils/clock/testing"

	"github.com/credops/cd-credentials-operator/internal/tokenclient"
)

// testCA signs token hosts' certificates.
type testCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	pem  []byte
}

func newTestCA(t *testing.T, name string) testCA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: newSerial(t), Subject: pkix.Name{CommonName: name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	return testCA{cert: cert, key: key, pem: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})}
}

func newSerial(t *testing.T) *big.Int {
	t.Helper()
	n, err := rand.Int(rand.Reader, big.NewInt(1<<62))
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// tokenHost is a TLS token host on 127.0.0.1 whose certificate (for 127.0.0.1 only) ca
// signs; it answers every request 200, which a revocation takes for success.
func tokenHost(t *testing.T, ca testCA) *httptest.Server {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.CreateCertificate(rand.Reader, &x509.Certificate{SerialNumber: newSerial(t),
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)},
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) {}))
	srv.TLS = &tls.Config{Certificates: []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: key}}}
	srv.Config.ErrorLog = log.New(io.Discard, "", 0) // the refused handshakes are the point
	srv.StartTLS()
	t.Cleanup(srv.Close)
	return srv
}

// revokeAt sends one revocation to base (a URL), the cheapest request the token client
// makes, and returns its error.
func revokeAt(tokens *tokenclient.Client, base string) error {
	ep := tokenclient.Endpoint{TokenURL: base + "/token", AuthMethod: tokenclient.ClientSecretPost, ClientID: "client-id", ClientSecret: "client-secret-value"}
	return tokens.Revoke(context.Background(), ep, base+"/revoke", "refresh-token-value", "")
}

// caMount is a CA file the way the kubelet mounts a ConfigMap key: <dir>/<key> links to
// ..data/<key>, and ..data to a directory of the current contents. An update writes a
// new directory and swaps ..data by renaming a new link over it, so the file's path
// never changes while what it holds does.
type caMount struct {
	dir, file string
	version   int
}

func newCAMount(t *testing.T, data []byte) *caMount {
	t.Helper()
	m := &caMount{dir: t.TempDir()}
	m.file = filepath.Join(m.dir, "ca-bundle.crt")
	m.update(t, data)
	if err := os.Symlink(filepath.Join("..data", "ca-bundle.crt"), m.file); err != nil {
		t.Fatal(err)
	}
	return m
}

func (m *caMount) update(t *testing.T, data []byte) {
	t.Helper()
	m.version++
	version := "..v" + strings.Repeat("x", m.version)
	if err := os.Mkdir(filepath.Join(m.dir, version), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(m.dir, version, "ca-bundle.crt"), data, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(version, filepath.Join(m.dir, "..data_tmp")); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(filepath.Join(m.dir, "..data_tmp"), filepath.Join(m.dir, "..data")); err != nil {
		t.Fatal(err)
	}
}

// caFile is the file as a CA file, and a way to change what it holds.
type caFile struct {
	path   string
	update func(t *testing.T, data []byte)
}

// caFiles are the two ways a CA file changes under a running manager.
func caFiles(t *testing.T, initial []byte) map[string]caFile {
	plain := filepath.Join(t.TempDir(), "ca.crt")
	write := func(t *testing.T, data []byte) {
		t.Helper()
		if err := os.WriteFile(plain, data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write(t, initial)
	m := newCAMount(t, initial)
	return map[string]caFile{
		"a file rewritten in place":         {plain, write},
		"a ConfigMap's ..data link swapped": {m.file, m.update},
	}
}

// TestARotatedTokenHostCAIsTrustedWithoutARestart: when the CA bundle of
// --token-host-ca-file is rotated (the kubelet swaps the ConfigMap's ..data link, or
// someone rewrites the file), a token host whose certificate the new CA signs is trusted
// within 30 s, without a restart. Read only at start, every token request to that host
// failed x509 verification until the manager was restarted.
func TestARotatedTokenHostCAIsTrustedWithoutARestart(t *testing.T) {
	ca1, ca2 := newTestCA(t, "Corp CA 1"), newTestCA(t, "Corp CA 2")
	host := tokenHost(t, ca2)
	u, _ := url.Parse(host.URL)
	for name, file := range caFiles(t, ca1.pem) {
		t.Run(name, func(t *testing.T) {
			clk := clocktesting.NewFakeClock(time.Now())
			tokens, err := TokenClient(Options{AllowedTokenHosts: []string{u.Host}, TokenHostCAFile: file.path, Clock: clk})
			if err != nil {
				t.Fatal(err)
			}
			if err := revokeAt(tokens, host.URL); err == nil {
				t.Fatal("a host signed by CA 2 is trusted while the file holds CA 1 only")
			}
			file.update(t, ca2.pem)
			clk.Step(30 * time.Second)
			if err := revokeAt(tokens, host.URL); err != nil {
				t.Errorf("30 s after the file came to hold CA 2, a host it signs is still refused: %v", err)
			}
		})
	}
}

// TestAnUnusableTokenHostCAFileKeepsTheRootsItLastHeld: a CA file that turns empty,
// unparsable or unreadable (a half-written file, a deleted ConfigMap) must not take the
// trust of the private token hosts away with it: the roots it last held stay.
func TestAnUnusableTokenHostCAFileKeepsTheRootsItLastHeld(t *testing.T) {
	ca := newTestCA(t, "Corp CA")
	host := tokenHost(t, ca)
	u, _ := url.Parse(host.URL)
	for _, tc := range []struct {
		name  string
		spoil func(t *testing.T, path string)
	}{
		{"an empty file", func(t *testing.T, path string) { writeFile(t, path, nil) }},
		{"a damaged certificate", func(t *testing.T, path string) {
			writeFile(t, path, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: []byte{1}}))
		}},
		{"a removed file", func(t *testing.T, path string) {
			if err := os.Remove(path); err != nil {
				t.Fatal(err)
			}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "ca.crt")
			writeFile(t, path, ca.pem)
			clk := clocktesting.NewFakeClock(time.Now())
			tokens, err := TokenClient(Options{AllowedTokenHosts: []string{u.Host}, TokenHostCAFile: path, Clock: clk})
			if err != nil {
				t.Fatal(err)
			}
			tc.spoil(t, path)
			for range 2 {
				clk.Step(30 * time.Second)
				if err := revokeAt(tokens, host.URL); err != nil {
					t.Fatalf("the host is no longer trusted: %v", err)
				}
			}
		})
	}
}

// TestTokenHostsAreVerifiedAsStrictlyAsByDefault: trusting a CA file, and reloading it,
// loosens nothing: a certificate from a CA the file does not hold, or for another host
// name, is refused as Go refuses it by default.
func TestTokenHostsAreVerifiedAsStrictlyAsByDefault(t *testing.T) {
	trusted, unknown := newTestCA(t, "Corp CA"), newTestCA(t, "Someone else's CA")
	path := filepath.Join(t.TempDir(), "ca.crt")
	writeFile(t, path, trusted.pem)
	signedByTrusted, signedByUnknown := tokenHost(t, trusted), tokenHost(t, unknown)
	// The certificate names 127.0.0.1 only; "localhost" reaches the same server.
	wrongName := strings.Replace(signedByTrusted.URL, "127.0.0.1", "localhost", 1)
	var allowed []string
	for _, s := range []string{signedByTrusted.URL, signedByUnknown.URL, wrongName} {
		u, _ := url.Parse(s)
		allowed = append(allowed, u.Host)
	}
	clk := clocktesting.NewFakeClock(time.Now())
	tokens, err := TokenClient(Options{AllowedTokenHosts: allowed, TokenHostCAFile: path, Clock: clk})
	if err != nil {
		t.Fatal(err)
	}
	check := func(when string) {
		t.Helper()
		if err := revokeAt(tokens, signedByTrusted.URL); err != nil {
			t.Errorf("%s: the host the file's CA signs is refused: %v", when, err)
		}
		for _, tc := range []struct{ name, url, want string }{
			{"a CA the file does not hold", signedByUnknown.URL, "certificate signed by unknown authority"},
			{"another host name", wrongName, "certificate is not valid for any names"},
		} {
			if err := revokeAt(tokens, tc.url); err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("%s: a certificate from %s: %v, want an error saying %q", when, tc.name, err, tc.want)
			}
		}
	}
	check("at start")
	writeFile(t, path, append(append([]byte{}, trusted.pem...), '\n'))
	clk.Step(30 * time.Second)
	check("after a reload")
}

func writeFile(t *testing.T, path string, data []byte) {
	t.Helper()
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
	}
}
