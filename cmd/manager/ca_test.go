package main

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/x509roots/fallback/bundle"

	"github.com/credops/cd-credentials-operator/internal/manager"
	"github.com/credops/cd-credentials-operator/internal/tokenclient"
)

// TestMain runs trustChild instead of the tests when asked: the system roots are read
// once per process, so each environment a case needs is a process of its own.
func TestMain(m *testing.M) {
	if server, ok := os.LookupEnv("TOKEN_HOST_CA_CHILD"); ok {
		fmt.Println(trustChild(server, os.Getenv("TOKEN_HOST_CA_FILE")))
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// trustChild says whether the token client the manager builds (with caFile as
// --token-host-ca-file) trusts the private token host at server, and whether its roots
// hold the compiled-in root a public token host such as id.centraldispatch.com chains to
// (CI has no network: that chain is verified against the same roots, not dialled).
func trustChild(server, caFile string) string {
	u, _ := url.Parse(server)
	tokens, err := manager.TokenClient(manager.Options{AllowedTokenHosts: []string{u.Host}, TokenHostCAFile: caFile})
	if err != nil {
		return "refused: " + err.Error()
	}
	ep := tokenclient.Endpoint{TokenURL: server + "/token", AuthMethod: tokenclient.ClientSecretPost, ClientID: "c", ClientSecret: "s"}
	private := "private trusted"
	if err := tokens.Revoke(context.Background(), ep, server+"/revoke", "t", ""); err != nil {
		private = "private untrusted"
	}
	roots, err := x509.SystemCertPool() // what a token client without a Transport trusts
	if caFile != "" {
		roots, err = tokenclient.RootsWith(caFile) // what manager.TokenClient's CAFileTransport trusts
	}
	public := "public untrusted"
	if err == nil && publicRootTrusted(roots) {
		public = "public trusted"
	}
	return private + ", " + public
}

// publicRootTrusted: the first unconstrained, unexpired root of the compiled-in bundle
// verifies against roots.
func publicRootTrusted(roots *x509.CertPool) bool {
	for r := range bundle.Roots() {
		if r.Constraint != nil {
			continue
		}
		c, err := x509.ParseCertificate(r.Certificate)
		if err != nil || time.Now().After(c.NotAfter) {
			continue
		}
		_, err = c.Verify(x509.VerifyOptions{Roots: roots})
		return err == nil
	}
	return false
}

// privateTokenHost is a TLS server whose certificate a private CA signs; it returns the
// server's URL and the CA's PEM file.
func privateTokenHost(t *testing.T, dir string) (string, string) {
	t.Helper()
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	caTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "Corp Identity CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	ca, _ := x509.ParseCertificate(caDER)
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	leafDER, err := x509.CreateCertificate(rand.Reader, &x509.Certificate{SerialNumber: big.NewInt(2),
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)},
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}, ca, &key.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) {}))
	srv.TLS = &tls.Config{Certificates: []tls.Certificate{{Certificate: [][]byte{leafDER}, PrivateKey: key}}}
	srv.StartTLS()
	t.Cleanup(srv.Close)
	caFile := filepath.Join(dir, "corp-ca.crt")
	if err := os.WriteFile(caFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER}), 0o644); err != nil {
		t.Fatal(err)
	}
	return srv.URL, caFile
}

// TestAPrivateCAAddsToThePublicTokenHostRoots: in the image (no CA files) the manager
// trusts Central Dispatch only through the compiled-in roots, which Go uses only while
// the system pool is empty. SSL_CERT_FILE naming a private identity server's CA (what
// the README and the chart's extraEnv once suggested) replaces them, and every request
// to id.centraldispatch.com fails x509 verification; --token-host-ca-file adds the CA
// to them, and both hosts are trusted.
func TestAPrivateCAAddsToThePublicTokenHostRoots(t *testing.T) {
	dir := t.TempDir()
	noCerts := filepath.Join(dir, "no-certs") // the image has no /etc/ssl/certs
	if err := os.Mkdir(noCerts, 0o755); err != nil {
		t.Fatal(err)
	}
	server, caFile := privateTokenHost(t, dir)
	for _, tc := range []struct {
		name, sslCertFile, flag, want string
	}{
		{"the image as built trusts the public roots only", filepath.Join(dir, "missing.pem"), "", "private untrusted, public trusted"},
		{"SSL_CERT_FILE naming the private CA replaces the public roots", caFile, "", "private trusted, public untrusted"},
		{"--token-host-ca-file naming the private CA adds to them", filepath.Join(dir, "missing.pem"), caFile, "private trusted, public trusted"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cmd := exec.Command(os.Args[0], "-test.run=^$")
			cmd.Env = append(os.Environ(), "TOKEN_HOST_CA_CHILD="+server, "TOKEN_HOST_CA_FILE="+tc.flag,
				"SSL_CERT_DIR="+noCerts, "SSL_CERT_FILE="+tc.sslCertFile)
			out, err := cmd.Output()
			if err != nil {
				t.Fatalf("child: %v", err)
			}
			if got := strings.TrimSpace(string(out)); got != tc.want {
				t.Errorf("got %q, want %q", got, tc.want)
			}
		})
	}
}
