package tokenclient

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
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
