package tokenclient

import (
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"os"
)

// RootsWith returns the roots a token host's certificate is verified against when a
// private CA signs some token hosts: the system's roots plus every certificate of the
// PEM file caFile. The system's roots are the compiled-in Mozilla bundle in the image,
// which ships no CA files (cmd/manager imports x509roots/fallback); x509.SystemCertPool
// returns that bundle while the system has none. SSL_CERT_FILE would not do: once it
// names a file, the system pool is that file alone and Go drops the bundle, so the
// public token hosts would no longer be trusted.
//
// A file that cannot be read or holds no certificate is an error: a manager started
// with it would fail every request to the private host, with nothing saying why.
func RootsWith(caFile string) (*x509.CertPool, error) {
	data, err := os.ReadFile(caFile)
	if err != nil {
		return nil, err
	}
	roots, err := x509.SystemCertPool()
	if err != nil {
		// No system roots on this platform and none compiled in: the file's alone.
		roots = x509.NewCertPool()
	}
	n := 0
	for rest := data; ; {
		var block *pem.Block
		if block, rest = pem.Decode(rest); block == nil {
			break
		}
		if block.Type != "CERTIFICATE" {
			continue
		}
		cert, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("%s: certificate %d: %w", caFile, n+1, err)
		}
		roots.AddCert(cert)
		n++
	}
	if n == 0 {
		return nil, fmt.Errorf("%s holds no PEM certificate", caFile)
	}
	return roots, nil
}
