package tokenclient

import (
	"bytes"
	"crypto/sha256"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"net/http"
	"os"
	"sync"
	"time"

	"github.com/go-logr/logr"
	"k8s.io/utils/clock"
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
	return rootsWithPEM(caFile, data)
}

// rootsWithPEM is RootsWith for the contents data of caFile.
func rootsWithPEM(caFile string, data []byte) (*x509.CertPool, error) {
	roots, err := x509.SystemCertPool()
	if err != nil {
		// No system roots on this platform and none compiled in: the file's alone.
		roots = x509.NewCertPool()
	}
	n := 0
	for rest := data; ; {
		var block *pem.Block
		if block, rest = pem.Decode(rest); block == nil {
			// What pem.Decode leaves is text without a whole block. One that begins
			// a block is one cut short: a bundle read while it was being rewritten,
			// which must not stand for the whole (the CAs after the cut dropped).
			if bytes.Contains(rest, []byte("-----BEGIN")) {
				return nil, fmt.Errorf("%s: a PEM block after certificate %d is cut short or malformed", caFile, n)
			}
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

// CAFileCheckInterval is how often, at most, a CAFileTransport looks at its file for a
// change: the kubelet itself takes up to a minute or so to update a ConfigMap volume,
// and one read of a CA bundle per half minute costs nothing.
const CAFileCheckInterval = 30 * time.Second

// CAFileTransport carries token requests trusting the system's roots plus the
// certificates of a CA file (RootsWith), and re-reads the file when it changes: a CA
// bundle mounted from a ConfigMap (OpenShift's injected trusted-CA bundle) is rotated
// under a running manager, and a manager that kept the old CA would fail every request
// to the hosts the new one signs until restarted.
//
// The file is read again on the first request CAFileCheckInterval after the last read,
// by path, so a ConfigMap's swapped ..data link is followed (a file watch would see the
// link, not the file). Only a change of contents builds a new http.Transport with the
// new roots; verification stays crypto/tls's own, and while the file is unchanged
// connections to token hosts are kept and reused. A file that turns unreadable, empty
// or unparsable keeps the roots it last held, usable: a half-written or deleted bundle
// must not take the trust of every private token host with it.
type CAFileTransport struct {
	file  string
	clock clock.PassiveClock
	log   logr.Logger

	mu        sync.Mutex
	nextCheck time.Time
	// seen fingerprints what the last read found (the contents, or the read error), so
	// a change is acted on, and an unusable file logged, once.
	seen      [sha256.Size]byte
	transport *http.Transport
}

// NewCAFileTransport reads caFile and returns a transport trusting it. Like RootsWith it
// refuses a file that cannot be read or holds no certificate: a manager started with
// it would fail every request to the private host, with nothing saying why.
func NewCAFileTransport(caFile string, clk clock.PassiveClock, log logr.Logger) (*CAFileTransport, error) {
	data, err := os.ReadFile(caFile)
	if err != nil {
		return nil, err
	}
	roots, err := rootsWithPEM(caFile, data)
	if err != nil {
		return nil, err
	}
	return &CAFileTransport{
		file: caFile, clock: clk, log: log,
		nextCheck: clk.Now().Add(CAFileCheckInterval),
		seen:      sha256.Sum256(data),
		transport: newTransport(roots),
	}, nil
}

// RoundTrip sends req through the transport trusting what the file last held.
func (t *CAFileTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	return t.current().RoundTrip(req)
}

// current re-reads the file when a check is due and returns the transport to use.
func (t *CAFileTransport) current() *http.Transport {
	t.mu.Lock()
	defer t.mu.Unlock()
	if now := t.clock.Now(); !now.Before(t.nextCheck) {
		t.nextCheck = now.Add(CAFileCheckInterval)
		t.reread()
	}
	return t.transport
}

// reread takes the file's certificates when its contents changed and are usable.
func (t *CAFileTransport) reread() {
	data, err := os.ReadFile(t.file)
	seen := sha256.Sum256(data)
	if err != nil {
		seen = sha256.Sum256([]byte("unreadable: " + err.Error()))
	}
	if seen == t.seen {
		return
	}
	t.seen = seen
	var roots *x509.CertPool
	if err == nil {
		roots, err = rootsWithPEM(t.file, data)
	}
	if err != nil {
		// The error names the file and what is wrong with it, never a certificate.
		t.log.Error(err, "Token host CA file is unusable; token hosts are still verified against the certificates it last held")
		return
	}
	old := t.transport
	t.transport = newTransport(roots)
	// Requests in flight on old finish; its idle connections would only linger.
	old.CloseIdleConnections()
	t.log.Info("Token host CA file changed; token hosts are verified against its new certificates", "file", t.file)
}
