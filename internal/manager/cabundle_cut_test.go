package manager

import (
	"net/url"
	"path/filepath"
	"testing"
	"time"

	clocktesting "k8s.io/utils/clock/testing"
)

// TestAHalfWrittenCABundleKeepsTheRootsItLastHeld: a bundle of two CAs rewritten in
// place (cp, an editor, a sidecar) and read while the second is half written is no
// bundle of one CA: the roots it last held stay, the second CA's host still trusted.
func TestAHalfWrittenCABundleKeepsTheRootsItLastHeld(t *testing.T) {
	ca1, ca2 := newTestCA(t, "Corp CA 1"), newTestCA(t, "Corp CA 2")
	host := tokenHost(t, ca2)
	u, _ := url.Parse(host.URL)
	path := filepath.Join(t.TempDir(), "ca.crt")
	full := append(append([]byte{}, ca1.pem...), ca2.pem...)
	writeFile(t, path, full)
	clk := clocktesting.NewFakeClock(time.Now())
	tokens, err := TokenClient(Options{AllowedTokenHosts: []string{u.Host}, TokenHostCAFile: path, Clock: clk})
	if err != nil {
		t.Fatal(err)
	}
	if err := revokeAt(tokens, host.URL); err != nil {
		t.Fatalf("at start: %v", err)
	}
	writeFile(t, path, full[:len(ca1.pem)+len(ca2.pem)/2]) // read mid-write
	clk.Step(30 * time.Second)
	if err := revokeAt(tokens, host.URL); err != nil {
		t.Errorf("a bundle read half written dropped CA 2: %v", err)
	}
}
